/* streamsvc: the iSCSI target object (see iscsi.h): the state that the
 * sessions of one target share, so two targets in one process share
 * nothing. */
#include "iscsi_int.h"

DfIscsiTarget *
df_iscsi_target_new (DfExports *ex, DfSessions *ss)
{
  DfIscsiTarget *t = g_new0 (DfIscsiTarget, 1);

  t->ex = ex;
  t->ss = ss;
  g_mutex_init (&t->reg_lock);
  t->reg = g_hash_table_new (g_str_hash, g_str_equal);
  g_mutex_init (&t->chal_lock);
  t->chal_seen = g_hash_table_new_full (g_bytes_hash, g_bytes_equal,
                                        (GDestroyNotify) g_bytes_unref, NULL);
  g_queue_init (&t->chal_order);
  g_mutex_init (&t->lus_lock);
  t->lus = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                  (GDestroyNotify) iscsi_lu_shared_free);
  iscsi_authlimit_init (t);
  return t;
}

void
df_iscsi_target_free (DfIscsiTarget *t)
{
  if (t == NULL)
    return;
  g_assert (g_hash_table_size (t->reg) == 0); /* conns freed first */
  g_hash_table_destroy (t->reg);
  g_mutex_clear (&t->reg_lock);
  g_queue_clear (&t->chal_order); /* the set holds the refs */
  g_hash_table_destroy (t->chal_seen);
  g_mutex_clear (&t->chal_lock);
  g_hash_table_destroy (t->lus);
  g_mutex_clear (&t->lus_lock);
  iscsi_authlimit_clear (t);
  g_free (t);
}
