/* diskfarm: the version lifecycle verbs (lifecycle.h). */
#include "lifecycle.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "store.h"

struct DfVersions {
  DfFarm *farm;          /* borrowed */
  DfVdisk *vdisk;
  GPtrArray *versions;   /* DfVersion, oldest first */
  DfStore *store;        /* locked when opened with mutate */
};

/* ---- rows ------------------------------------------------------------- */

DfVersion *
df_versions_find (const DfVersions *vs, int number)
{
  for (guint i = 0; i < vs->versions->len; i++)
    if (((DfVersion *) vs->versions->pdata[i])->number == number)
      return vs->versions->pdata[i];
  return NULL;
}

static int
max_number (const DfVersions *vs)
{
  int n = -1;
  for (guint i = 0; i < vs->versions->len; i++)
    n = MAX (n, ((DfVersion *) vs->versions->pdata[i])->number);
  return n;
}

/* Newest sealed (non-maintenance) version, or NULL. */
static DfVersion *
newest_sealed (const DfVersions *vs)
{
  DfVersion *best = NULL;
  for (guint i = 0; i < vs->versions->len; i++)
    {
      DfVersion *v = vs->versions->pdata[i];
      if (v->state != DF_VSTATE_MAINTENANCE
          && (!best || v->number > best->number))
        best = v;
    }
  return best;
}

static DfVersion *
maintenance_version (const DfVersions *vs)
{
  for (guint i = 0; i < vs->versions->len; i++)
    if (((DfVersion *) vs->versions->pdata[i])->state == DF_VSTATE_MAINTENANCE)
      return vs->versions->pdata[i];
  return NULL;
}

/* Versions from v down to its base (borrowed pointers, top first). */
static GPtrArray *
chain_of (const DfVersions *vs, DfVersion *v)
{
  GPtrArray *chain = g_ptr_array_new ();
  for (DfVersion *p = v; p;
       p = p->parent >= 0 ? df_versions_find (vs, p->parent) : NULL)
    {
      g_ptr_array_add (chain, p);
      if (chain->len > vs->versions->len)
        break;                   /* a loop: the DB forbids it, be safe */
    }
  return chain;
}

static char *
version_path (const DfVersions *vs, const DfVersion *v)
{
  return g_build_filename (df_store_dir (vs->store), v->file, NULL);
}

const char *
df_versions_vdisk (const DfVersions *vs)
{
  return vs->vdisk->name;
}

GPtrArray *
df_versions_rows (const DfVersions *vs)
{
  return vs->versions;
}

/* ---- open --------------------------------------------------------------- */

static bool
reload (DfVersions *vs, GError **err)
{
  g_clear_pointer (&vs->versions, g_ptr_array_unref);
  vs->versions = df_farm_version_list (vs->farm, vs->vdisk->name, err);
  return vs->versions != NULL;
}

/* Under the store's lock: remove what interrupted verbs left. */
static bool
sweep (DfVersions *vs, GError **err)
{
  g_autofree int *numbers = g_new0 (int, vs->versions->len + 1);
  int maint = -1;
  for (guint i = 0; i < vs->versions->len; i++)
    {
      DfVersion *v = vs->versions->pdata[i];
      numbers[i] = v->number;
      if (v->state == DF_VSTATE_MAINTENANCE)
        maint = v->number;
    }
  return df_store_sweep (vs->store, numbers, vs->versions->len, maint, err);
}

DfVersions *
df_versions_open (DfFarm *farm, const char *vdisk, bool mutate, GError **err)
{
  g_autoptr (DfVersions) vs = g_new0 (DfVersions, 1);
  vs->farm = farm;
  vs->vdisk = df_farm_vdisk_get (farm, vdisk, err);
  if (!vs->vdisk
      || !df_farm_versions_apply_pending (farm, vdisk, NULL, err))
    return NULL;
  g_autofree char *dir = df_farm_store_dir (farm, vdisk);
  vs->store = df_store_new (dir, vdisk);
  if ((mutate && !df_store_lock (vs->store, err)) || !reload (vs, err)
      || (mutate && !sweep (vs, err)))
    return NULL;
  return g_steal_pointer (&vs);
}

void
df_versions_free (DfVersions *vs)
{
  if (vs == NULL)
    return;
  g_clear_pointer (&vs->versions, g_ptr_array_unref);
  g_clear_pointer (&vs->vdisk, df_vdisk_free);
  g_clear_pointer (&vs->store, df_store_free);
  g_free (vs);
}

/* ---- transactions and progress ------------------------------------------ */

/* End the df_farm_begin transaction of a step: roll back when the step's
 * DB work failed (!ok, err already set); else crash point "<step>-in-tx",
 * commit, crash point "<step>-committed". */
static bool
tx_finish (DfFarm *farm, const char *step, bool ok, GError **err)
{
  if (!ok)
    {
      df_farm_rollback (farm);
      return false;
    }
  g_autofree char *in_tx = g_strdup_printf ("%s-in-tx", step);
  g_autofree char *committed = g_strdup_printf ("%s-committed", step);
  df_store_crash_point (in_tx);
  if (!df_farm_commit (farm, err))
    return false;
  df_store_crash_point (committed);
  return true;
}

static void
progress_begin (const DfLifecycleProgress *p, const char *what)
{
  df_interrupt_begin ();   /* Ctrl-C: the .tmp in the store is removed */
  if (p && p->begin)
    p->begin (p->opaque, what);
}

static void
progress_end (const DfLifecycleProgress *p)
{
  if (p && p->end)
    p->end (p->opaque);
  df_interrupt_end ();
}

static df_progress_cb
progress_fn (const DfLifecycleProgress *p)
{
  return p ? p->update : NULL;
}

static void *
progress_data (const DfLifecycleProgress *p)
{
  return p ? p->opaque : NULL;
}

/* ---- live sessions -------------------------------------------------------- */

static bool
parse_version_number (const char *s, int *out)
{
  guint64 n = 0;
  if (!g_ascii_string_to_unsigned (s, 10, 0, G_MAXINT, &n, NULL))
    return false;
  *out = (int) n;
  return true;
}

/* The version number a live session of the vDisk reads, or -1 when it is
 * not one of the vDisk's: "vdisk"/"version" when streamsvc reports them,
 * else its export: vdisk/<v>@N is N; vdisk/<v> and device sessions count
 * on the version their type selects now. */
static int
session_version (const DfVersions *vs, const DfLiveSession *s)
{
  const char *vdisk = vs->vdisk->name;
  if (s->version >= 0 && s->vdisk)
    return strcmp (s->vdisk, vdisk) == 0 ? (int) s->version : -1;
  g_autofree char *prefix = g_strdup_printf ("vdisk/%s", vdisk);
  const char *exp = s->export;
  int number = -1;
  g_autoptr (DfVersion) v = NULL;
  if (exp && g_str_has_prefix (exp, prefix) && exp[strlen (prefix)] == '@')
    parse_version_number (exp + strlen (prefix) + 1, &number);
  else if (g_strcmp0 (exp, prefix) == 0)
    v = df_farm_version_for_type (vs->farm, vdisk, "production", NULL);
  else if (s->device)
    {
      g_autoptr (DfDevice) d = df_farm_device_get (vs->farm, s->device, NULL);
      if (d && strcmp (d->vdisk, vdisk) == 0)
        v = df_farm_version_for_type (vs->farm, vdisk, d->type, NULL);
    }
  return v ? v->number : number;
}

GHashTable *
df_versions_live_counts (const DfVersions *vs, const DfLive *live)
{
  if (live == NULL || df_live_unknown (live))
    return NULL;
  GHashTable *counts = g_hash_table_new (g_direct_hash, g_direct_equal);
  for (guint i = 0; i < live->sessions->len; i++)
    {
      int number = session_version (vs, live->sessions->pdata[i]);
      if (number < 0)
        continue;
      gpointer key = GINT_TO_POINTER (number);
      g_hash_table_insert (counts, key, GINT_TO_POINTER (
        GPOINTER_TO_INT (g_hash_table_lookup (counts, key)) + 1));
    }
  return counts;
}

/* ---- new -------------------------------------------------------------------- */

/* A new maintenance version starts a new boot generation for the vDisk's
 * maintenance devices: ask live about each. */
static bool
allow_maintenance_devices (DfVersions *vs, const DfLifecycleLive *live,
                           GError **err)
{
  g_autoptr (GPtrArray) devices = df_farm_device_list (vs->farm, NULL, err);
  if (devices == NULL)
    return false;
  for (guint i = 0; i < devices->len; i++)
    {
      const DfDevice *d = devices->pdata[i];
      if (strcmp (d->vdisk, vs->vdisk->name) == 0
          && strcmp (d->type, "maintenance") == 0 && live
          && live->allow_device_change
          && !live->allow_device_change (live->opaque, d, err))
        return false;
    }
  return true;
}

bool
df_versions_new (DfVersions *vs, const DfLifecycleLive *live, int *number,
                 GError **err)
{
  const char *vd = vs->vdisk->name;
  DfVersion *m = maintenance_version (vs);
  if (m)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                   "vdisk '%s' already has maintenance version %d (seal or "
                   "delete it first)", vd, m->number);
      return false;
    }
  DfVersion *parent = newest_sealed (vs);
  if (!parent)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
                   "vdisk '%s' has no sealed version", vd);
      return false;
    }
  int n = max_number (vs) + 1;
  g_autofree char *file = df_store_layer_name (vd, n);
  if (!allow_maintenance_devices (vs, live, err)
      || !df_farm_version_add (vs->farm, vd, n, parent->number, file, NULL,
                               parent->virtual_size, 0,
                               DF_VSTATE_MAINTENANCE, err))
    return false;
  *number = n;
  return reload (vs, err);
}

/* ---- merge (also run by seal's automatic merge) ----------------------------- */

/* How many layers of chain (top first, ending at to) from..to spans;
 * from = -1: all of them.  0 + err when the range is no merge. */
static guint
merge_span (const DfVersions *vs, GPtrArray *chain, int from, int to,
            GError **err)
{
  guint n = 0;
  for (guint i = 0; i < chain->len && !n; i++)
    if (((DfVersion *) chain->pdata[i])->number == from)
      n = i + 1;
  if (from < 0)
    n = chain->len;
  if (n == 0 || (n == 1 && chain->len > 1))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   n ? "vdisk '%s': %d..%d is one layer, nothing to merge"
                     : "vdisk '%s': version %d is not in the chain of "
                       "version %d", vs->vdisk->name, from, to);
      return 0;
    }
  return n;
}

/* Record the merged layer (file, sha, size) as version number, with its
 * audit row, in one transaction. */
static bool
merge_record (DfVersions *vs, GPtrArray *chain, guint n_layers, int number,
              DfVersionState state, const char *sha, uint64_t size,
              GError **err)
{
  const char *vd = vs->vdisk->name;
  DfVersion *to = chain->pdata[0];
  DfVersion *below = n_layers < chain->len ? chain->pdata[n_layers] : NULL;
  g_autofree char *file = df_store_layer_name (vd, number);
  g_autofree char *object = g_strdup_printf ("%s@%d", vd, number);
  g_autofree char *detail = g_strdup_printf (
    "{\"kind\":\"%s\",\"from\":%d,\"to\":%d,\"layers\":%u}",
    below ? "updates" : "base",
    ((DfVersion *) chain->pdata[n_layers - 1])->number, to->number, n_layers);
  if (!df_farm_begin (vs->farm, err))
    return false;
  bool ok = df_farm_version_add (vs->farm, vd, number,
                                 below ? below->number : -1, file, sha,
                                 to->virtual_size, size, state, err)
            && df_farm_audit (vs->farm, "version.merge", object, detail, err);
  return tx_finish (vs->farm, "merge", ok, err);
}

bool
df_versions_merge (DfVersions *vs, int from, int to_number,
                   const char *state_name, const DfLifecycleProgress *progress,
                   int *number, GError **err)
{
  DfVersion *to = df_versions_find (vs, to_number);
  DfVersion *top = newest_sealed (vs);
  if (!to || to->state == DF_VSTATE_MAINTENANCE || to != top)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "vdisk '%s': a merge ends at the newest sealed version "
                   "(%d), not at %d", vs->vdisk->name,
                   top ? top->number : -1, to_number);
      return false;
    }
  DfVersionState state = to->state;
  g_autoptr (GPtrArray) chain = chain_of (vs, to);
  guint n_layers = merge_span (vs, chain, from, to_number, err);
  if (n_layers == 0
      || (state_name && !df_version_state_parse (state_name, &state, err)))
    return false;
  DfVersion *below = n_layers < chain->len ? chain->pdata[n_layers] : NULL;
  int n = max_number (vs) + 1;
  g_autofree char *tmp = df_store_tmp_path (vs->store, n);
  g_autofree char *top_path = version_path (vs, to);
  g_autofree char *final = df_store_layer_path (vs->store, n);
  char sha[65];
  progress_begin (progress, below ? "merging updates" : "merging base");
  bool ok = df_vdisk_merge_layers_sha256 (top_path, n_layers, tmp,
                                          below ? below->file : NULL,
                                          progress_fn (progress),
                                          progress_data (progress), sha, err);
  progress_end (progress);
  uint64_t size;
  if (!ok || !df_store_publish_layer ("merge", tmp, final, true, sha, &size,
                                      err)
      || !merge_record (vs, chain, n_layers, n, state, sha, size, err))
    return false;
  *number = n;
  return reload (vs, err);
}

/* ---- seal --------------------------------------------------------------- */

/* After a seal: merge the updates into one layer when the chain of the new
 * version is deeper than the configured depth.  *merged: new number or -1. */
static bool
maybe_auto_merge (DfVersions *vs, int sealed,
                  const DfLifecycleProgress *progress, int *merged,
                  GError **err)
{
  *merged = -1;
  int depth = df_farm_auto_merge_depth (vs->farm, vs->vdisk->name, NULL);
  g_autoptr (GPtrArray) chain = chain_of (vs, df_versions_find (vs, sealed));
  if (depth < 2 || (int) chain->len <= depth)
    return true;
  int from = ((DfVersion *) chain->pdata[chain->len - 2])->number;
  g_message ("vdisk %s: chain depth %u is past %d: merging updates %d..%d",
             vs->vdisk->name, chain->len, depth, from, sealed);
  return df_versions_merge (vs, from, sealed, NULL, progress, merged, err);
}

/* Write the layer and record it; the .maint cache stays open (flock) until
 * the DB says sealed, so no session can start writing meanwhile. */
static bool
seal_write (DfVersions *vs, DfVersion *m, const DfLifecycleProgress *progress,
            GError **err)
{
  const char *vd = vs->vdisk->name;
  DfVersion *parent = df_versions_find (vs, m->parent);
  g_autofree char *parent_path = version_path (vs, parent);
  g_autofree char *maint = df_store_maint_path (df_store_dir (vs->store), vd,
                                                m->number);
  g_autofree char *tmp = df_store_tmp_path (vs->store, m->number);
  g_autofree char *final = version_path (vs, m);
  g_autoptr (df_blk) base = df_chain_open (parent_path, DF_FMT_UNKNOWN, err);
  if (!base)
    return false;
  /* A file left by a seal killed before its DB commit is redone. */
  if (g_unlink (final) != 0 && errno != ENOENT)
    {
      df_set_error_errno (err, errno, "remove %s", final);
      return false;
    }
  uint64_t written = 0;
  progress_begin (progress, "sealing");
  bool ok = df_vdisk_seal_layer (base, maint, tmp, parent->file,
                                 progress_fn (progress),
                                 progress_data (progress), &written, err);
  progress_end (progress);
  char sha[65];
  uint64_t size;
  if (!ok || !df_store_publish_layer ("seal", tmp, final, false, sha, &size,
                                      err)
      || !df_farm_begin (vs->farm, err))
    return false;
  ok = df_farm_version_seal (vs->farm, vd, m->number, sha, size, err);
  return tx_finish (vs->farm, "seal", ok, err)
         && df_store_remove_maint (maint, err);
}

bool
df_versions_seal (DfVersions *vs, const DfLifecycleProgress *progress,
                  int *number, int *merged, GError **err)
{
  DfVersion *m = maintenance_version (vs);
  if (!m)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
                   "vdisk '%s' has no maintenance version (create one with "
                   "'diskfarm version new %s')", vs->vdisk->name,
                   vs->vdisk->name);
      return false;
    }
  *number = m->number;
  return seal_write (vs, m, progress, err) && reload (vs, err)
         && maybe_auto_merge (vs, *number, progress, merged, err);
}

/* ---- promote / revert ----------------------------------------------------- */

bool
df_versions_promote (DfVersions *vs, int number, DfVersionState target,
                     const char *when, GError **err)
{
  const char *vd = vs->vdisk->name;
  df_store_crash_point ("promote-begin");
  if (!df_farm_begin (vs->farm, err))
    return false;
  bool ok = when ? df_farm_version_schedule (vs->farm, vd, number, target,
                                             when, err)
                 : df_farm_version_set_state (vs->farm, vd, number, target,
                                              err);
  return tx_finish (vs->farm, "promote", ok, err)
         && df_farm_versions_apply_pending (vs->farm, vd, NULL, err)
         && reload (vs, err);
}

bool
df_versions_revert (DfVersions *vs, int *number, GError **err)
{
  const char *vd = vs->vdisk->name;
  DfVersion *cur = NULL, *prev = NULL;
  for (guint i = 0; i < vs->versions->len; i++)
    {
      DfVersion *v = vs->versions->pdata[i];
      if (v->state != DF_VSTATE_PRODUCTION)
        continue;
      if (!cur || v->number > cur->number)
        prev = cur, cur = v;
      else if (!prev || v->number > prev->number)
        prev = v;
    }
  if (!cur || !prev)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
                   "vdisk '%s' has no earlier production version to go back "
                   "to", vd);
      return false;
    }
  int back = prev->number;
  g_autofree char *object = g_strdup_printf ("%s@%d", vd, cur->number);
  g_autofree char *detail = g_strdup_printf ("{\"production\":%d}", back);
  if (!df_farm_begin (vs->farm, err))
    return false;
  bool ok = df_farm_version_set_state (vs->farm, vd, cur->number,
                                       DF_VSTATE_TEST, err)
            && df_farm_audit (vs->farm, "version.revert", object, detail,
                              err);
  if (!ok)
    df_farm_rollback (vs->farm);
  if (!ok || !df_farm_commit (vs->farm, err))
    return false;
  *number = back;
  return reload (vs, err);
}

/* ---- delete --------------------------------------------------------------- */

/* An unsealed maintenance version: its row, then its cache. */
static bool
delete_maintenance (DfVersions *vs, DfVersion *m, GError **err)
{
  g_autofree char *maint = df_store_maint_path (df_store_dir (vs->store),
                                                m->vdisk, m->number);
  g_autofree char *what = g_strdup_printf ("maintenance version %s@%d",
                                           m->vdisk, m->number);
  int fd;
  if (!df_store_maint_claim (maint, what, &fd, err))
    return false;
  bool ok = df_farm_version_delete (vs->farm, m->vdisk, m->number, err);
  if (fd >= 0)
    close (fd);
  return ok && df_store_remove_maint (maint, err);
}

/* Refuse while live sessions use version v (unknown: go ahead). */
static bool
check_unused (DfVersions *vs, const DfVersion *v, const DfLifecycleLive *live,
              GError **err)
{
  const DfLive *sessions = live && live->sessions
                           ? live->sessions (live->opaque) : NULL;
  g_autoptr (GHashTable) counts = df_versions_live_counts (vs, sessions);
  guint n = counts ? GPOINTER_TO_UINT (g_hash_table_lookup (
                       counts, GINT_TO_POINTER (v->number))) : 0;
  if (n)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                   "version %s@%d is used by %u live session(s)",
                   v->vdisk, v->number, n);
      return false;
    }
  return true;
}

/* A sealed version: refused while used; the row goes first, then the
 * file. */
static bool
delete_sealed (DfVersions *vs, DfVersion *v, const DfLifecycleLive *live,
               GError **err)
{
  g_autofree char *path = version_path (vs, v);
  if (!check_unused (vs, v, live, err)
      || !df_farm_version_delete (vs->farm, v->vdisk, v->number, err))
    return false;
  df_store_crash_point ("delete-committed");
  if (g_unlink (path) != 0 && errno != ENOENT)
    {
      df_set_error_errno (err, errno, "remove %s", path);
      return false;
    }
  return df_fsync_dir_of (path, err);
}

bool
df_versions_delete (DfVersions *vs, int number, const DfLifecycleLive *live,
                    GError **err)
{
  DfVersion *v = df_versions_find (vs, number);
  if (!v)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
                   "vdisk '%s' has no version %d", vs->vdisk->name, number);
      return false;
    }
  bool ok = v->state == DF_VSTATE_MAINTENANCE
            ? delete_maintenance (vs, v, err)
            : delete_sealed (vs, v, live, err);
  return ok && reload (vs, err);
}
