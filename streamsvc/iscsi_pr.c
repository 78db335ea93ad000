/* streamsvc: state of a logical unit shared by every session that reaches
 * the same device (or vdisk) target, see iscsi.h:
 *
 *   - persistent reservations (SPC-4 5.7): registrations per I_T nexus,
 *     one reservation, its type and the PRgeneration;
 *   - the SPC-2 reservation of RESERVE(6)/(10);
 *   - the medium lock that makes COMPARE AND WRITE atomic against the
 *     writes of other sessions of the same LU.
 *
 * Kept in memory, in the target's table keyed by the LU name; never
 * persisted (REPORT CAPABILITIES says PTPL_C=0 and APTPL=1 is refused): a
 * restart of streamsvc drops every registration.  Entries live as long as
 * the target (one per device ever opened), so registrations survive the
 * loss of an I_T nexus as SPC-4 wants.
 *
 * Not implemented: REGISTER AND MOVE, SPEC_I_PT, ALL_TG_PT (one target
 * port), the unit attentions that PREEMPT / CLEAR / RELEASE of a shared
 * reservation establish for the other registrants.
 */
#define G_LOG_DOMAIN "streamsvc-iscsi"

#include "iscsi_int.h"

#include <string.h>

#include "common.h"

struct iscsi_lu_shared
{
  GMutex io_lock;      /* COMPARE AND WRITE vs medium writes */
  GMutex lock;         /* everything below */
  uint32_t generation; /* PRgeneration */
  GHashTable *regs;    /* nexus (owned) -> uint64_t key (owned) */
  uint8_t type;        /* PR type, 0 = not reserved */
  char *holder;        /* nexus of the reservation (not for AR types) */
  uint64_t res_key;    /* holder's key when reserved */
  char *spc2_holder;   /* RESERVE(6)/(10) holder nexus, or NULL */
};

enum
{
  PR_WE = 1,
  PR_EA = 3,
  PR_WE_RO = 5,
  PR_EA_RO = 6,
  PR_WE_AR = 7,
  PR_EA_AR = 8,
};

enum
{
  PRO_REGISTER = 0,
  PRO_RESERVE = 1,
  PRO_RELEASE = 2,
  PRO_CLEAR = 3,
  PRO_PREEMPT = 4,
  PRO_PREEMPT_ABORT = 5,
  PRO_REGISTER_IGNORE = 6,
};

enum
{
  PRI_READ_KEYS = 0,
  PRI_READ_RESERVATION = 1,
  PRI_REPORT_CAPS = 2,
  PRI_READ_FULL_STATUS = 3,
};

#define PR_PARAM_LEN 24u

/* In the target: lus_lock, lus (iscsi_int.h). */
static iscsi_lu_shared *
shared_get (DfIscsiTarget *t, const char *name)
{
  iscsi_lu_shared *s;

  g_mutex_lock (&t->lus_lock);
  s = g_hash_table_lookup (t->lus, name);
  if (s == NULL)
    {
      s = g_new0 (iscsi_lu_shared, 1);
      g_mutex_init (&s->io_lock);
      g_mutex_init (&s->lock);
      s->regs
          = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
      g_hash_table_insert (t->lus, g_strdup (name), s);
    }
  g_mutex_unlock (&t->lus_lock);
  return s;
}

void
iscsi_lu_shared_free (iscsi_lu_shared *s)
{
  g_hash_table_destroy (s->regs);
  g_free (s->holder);
  g_free (s->spc2_holder);
  g_mutex_clear (&s->lock);
  g_mutex_clear (&s->io_lock);
  g_free (s);
}

void
iscsi_lu_attach (iscsi_lu *lu, DfIscsiTarget *t, const char *name,
                 const char *initiator, const uint8_t isid[6])
{
  g_autofree char *hex = iscsi_encode_hex (isid, 6);

  g_assert (lu->shared == NULL);
  lu->shared = shared_get (t, name);
  /* iSCSI initiator port name (SPC-4 7.6.4.6): name,i,0x<ISID> */
  lu->nexus = g_strdup_printf ("%s,i,%s", initiator, hex);
}

void
iscsi_lu_reset (iscsi_lu *lu)
{
  if (lu->shared == NULL)
    return;
  g_mutex_lock (&lu->shared->lock);
  g_clear_pointer (&lu->shared->spc2_holder, g_free);
  g_mutex_unlock (&lu->shared->lock);
}

void
iscsi_lu_detach (iscsi_lu *lu)
{
  iscsi_lu_shared *s = lu->shared;

  if (s == NULL)
    return;
  g_mutex_lock (&s->lock);
  if (s->spc2_holder != NULL && strcmp (s->spc2_holder, lu->nexus) == 0)
    g_clear_pointer (&s->spc2_holder, g_free);
  g_mutex_unlock (&s->lock);
  lu->shared = NULL;
  g_clear_pointer (&lu->nexus, g_free);
}

void
iscsi_lu_io_lock (iscsi_lu *lu)
{
  g_mutex_lock (&lu->shared->io_lock);
}

void
iscsi_lu_io_unlock (iscsi_lu *lu)
{
  g_mutex_unlock (&lu->shared->io_lock);
}

/* ---- conflicts (caller holds s->lock) -------------------------------------
 */

static bool
type_all_registrants (uint8_t type)
{
  return type == PR_WE_AR || type == PR_EA_AR;
}

static bool
type_valid (uint8_t type)
{
  return type == PR_WE || type == PR_EA || type == PR_WE_RO || type == PR_EA_RO
         || type == PR_WE_AR || type == PR_EA_AR;
}

static const uint64_t *
reg_key (const iscsi_lu_shared *s, const char *nexus)
{
  return g_hash_table_lookup (s->regs, nexus);
}

static bool
is_holder (const iscsi_lu_shared *s, const char *nexus)
{
  if (s->type == 0)
    return false;
  if (type_all_registrants (s->type))
    return reg_key (s, nexus) != NULL;
  return strcmp (s->holder, nexus) == 0;
}

static bool
pr_conflict (const iscsi_lu_shared *s, const char *nexus, unsigned access)
{
  bool registrant = reg_key (s, nexus) != NULL;

  if (s->type == 0 || access == ISCSI_PR_ALLOWED || is_holder (s, nexus))
    return false;
  switch (s->type)
    {
    case PR_WE:
      return access == ISCSI_PR_WRITE;
    case PR_EA:
      return true;
    case PR_WE_RO:
    case PR_WE_AR:
      return access == ISCSI_PR_WRITE && !registrant;
    default: /* EA_RO, EA_AR */
      return !registrant;
    }
}

bool
iscsi_lu_conflict (iscsi_lu *lu, unsigned access, bool spc2_exempt)
{
  iscsi_lu_shared *s = lu->shared;
  bool conflict;

  g_assert (s != NULL);
  g_mutex_lock (&s->lock);
  conflict = (!spc2_exempt && s->spc2_holder != NULL
              && strcmp (s->spc2_holder, lu->nexus) != 0)
             || pr_conflict (s, lu->nexus, access);
  g_mutex_unlock (&s->lock);
  return conflict;
}

static void
reservation_conflict (iscsi_scsi_result *r)
{
  memset (r, 0, sizeof *r);
  r->status = SCSI_RESERVATION_CONFLICT;
}

/* ---- RESERVE / RELEASE (6), (10) ------------------------------------------
 */

void
iscsi_lu_reserve (iscsi_lu *lu, bool reserve, iscsi_scsi_result *r)
{
  iscsi_lu_shared *s = lu->shared;

  g_mutex_lock (&s->lock);
  /* SPC-3 5.6.3: with any registration, RESERVE and RELEASE conflict. */
  if (g_hash_table_size (s->regs) > 0 || s->type != 0)
    reservation_conflict (r);
  else if (!reserve)
    {
      if (s->spc2_holder && strcmp (s->spc2_holder, lu->nexus) == 0)
        g_clear_pointer (&s->spc2_holder, g_free);
      /* a RELEASE by another nexus is a no-op (SPC-2 7.17) */
    }
  else if (s->spc2_holder == NULL)
    s->spc2_holder = g_strdup (lu->nexus);
  else if (strcmp (s->spc2_holder, lu->nexus) != 0)
    reservation_conflict (r);
  g_mutex_unlock (&s->lock);
}

/* ---- PERSISTENT RESERVE OUT -----------------------------------------------
 */

static void
param_invalid (iscsi_scsi_result *r)
{
  iscsi_scsi_sense (r, 0x05, 0x26, 0x00); /* INVALID FIELD IN PARAMETER LIST */
}

static void
release_reservation (iscsi_lu_shared *s)
{
  s->type = 0;
  s->res_key = 0;
  g_clear_pointer (&s->holder, g_free);
}

/* Remove nexus's registration, with what it drags along (SPC-4 5.7.11.3):
 * the reservation of a holder, or an all-registrants reservation once its
 * last registrant leaves. */
static void
unregister (iscsi_lu_shared *s, const char *nexus)
{
  bool holder = s->type != 0 && !type_all_registrants (s->type)
                && strcmp (s->holder, nexus) == 0;

  g_hash_table_remove (s->regs, nexus);
  if (holder
      || (type_all_registrants (s->type) && g_hash_table_size (s->regs) == 0))
    release_reservation (s);
}

static void
pro_register (iscsi_lu_shared *s, const char *nexus, uint64_t key,
              uint64_t sa_key, bool ignore, iscsi_scsi_result *r)
{
  const uint64_t *cur = reg_key (s, nexus);

  if (!ignore && (cur ? *cur != key : key != 0))
    return reservation_conflict (r);
  if (sa_key == 0)
    {
      if (cur == NULL)
        return; /* unregistered nexus, key 0: nothing to do */
      unregister (s, nexus);
    }
  else
    {
      uint64_t *k = g_new (uint64_t, 1);
      *k = sa_key;
      g_hash_table_replace (s->regs, g_strdup (nexus), k);
      if (s->holder && strcmp (s->holder, nexus) == 0)
        s->res_key = sa_key;
    }
  s->generation++;
}

static void
pro_reserve (iscsi_lu_shared *s, const char *nexus, uint8_t type,
             iscsi_scsi_result *r)
{
  const uint64_t *cur = reg_key (s, nexus);

  if (s->type == 0)
    {
      s->type = type;
      s->res_key = *cur;
      s->holder = g_strdup (nexus);
      return;
    }
  if (!is_holder (s, nexus) || s->type != type)
    reservation_conflict (r);
}

static void
pro_release (iscsi_lu_shared *s, const char *nexus, uint8_t type,
             iscsi_scsi_result *r)
{
  if (!is_holder (s, nexus))
    return;            /* no reservation, or another nexus's: a no-op */
  if (s->type != type) /* INVALID RELEASE OF PERSISTENT RESERVATION */
    return iscsi_scsi_sense (r, 0x05, 0x26, 0x04);
  release_reservation (s);
}

/* Remove every registration with key, except keep's.  Returns how many. */
static guint
remove_key (iscsi_lu_shared *s, uint64_t key, const char *keep)
{
  g_autoptr (GPtrArray) gone = g_ptr_array_new_with_free_func (g_free);
  GHashTableIter it;
  gpointer k, v;

  g_hash_table_iter_init (&it, s->regs);
  while (g_hash_table_iter_next (&it, &k, &v))
    if (*(uint64_t *)v == key && (keep == NULL || strcmp (k, keep) != 0))
      g_ptr_array_add (gone, g_strdup (k));
  for (guint i = 0; i < gone->len; i++)
    unregister (s, gone->pdata[i]);
  return gone->len;
}

static void
remove_all_but (iscsi_lu_shared *s, const char *keep)
{
  GHashTableIter it;
  gpointer k;

  g_hash_table_iter_init (&it, s->regs);
  while (g_hash_table_iter_next (&it, &k, NULL))
    if (strcmp (k, keep) != 0)
      g_hash_table_iter_remove (&it);
}

static void
take_reservation (iscsi_lu_shared *s, const char *nexus, uint8_t type)
{
  release_reservation (s);
  s->type = type;
  s->res_key = *reg_key (s, nexus);
  s->holder = g_strdup (nexus);
}

static void
pro_preempt (iscsi_lu_shared *s, const char *nexus, uint8_t type,
             uint64_t sa_key, iscsi_scsi_result *r)
{
  if (s->type != 0 && type_all_registrants (s->type) && sa_key == 0)
    {
      remove_all_but (s, nexus);
      take_reservation (s, nexus, type);
    }
  else if (s->type != 0 && !type_all_registrants (s->type)
           && sa_key == s->res_key)
    {
      remove_key (s, sa_key, nexus);
      take_reservation (s, nexus, type);
    }
  else
    {
      if (sa_key == 0)
        return param_invalid (r);
      if (remove_key (s, sa_key, NULL) == 0)
        return reservation_conflict (r);
    }
  s->generation++;
}

void
iscsi_lu_pr_out (iscsi_lu *lu, const uint8_t *cdb, const uint8_t *p,
                 uint32_t len, iscsi_scsi_result *r)
{
  iscsi_lu_shared *s = lu->shared;
  uint8_t sa = cdb[1] & 0x1f, scope = cdb[2] >> 4, type = cdb[2] & 0x0f;
  uint64_t key, sa_key;
  const uint64_t *cur;

  if (df_get_be32 (cdb + 5) != PR_PARAM_LEN || len < PR_PARAM_LEN)
    return iscsi_scsi_sense (r, 0x05, 0x1a, 0x00); /* PARAM LIST LENGTH */
  if (p[20] & 0x0c) /* SPEC_I_PT, ALL_TG_PT: not supported */
    return param_invalid (r);
  if ((p[20] & 0x01) && (sa == PRO_REGISTER || sa == PRO_REGISTER_IGNORE))
    return param_invalid (r); /* APTPL: nothing here survives a restart */
  if ((sa == PRO_RESERVE || sa == PRO_RELEASE || sa == PRO_PREEMPT
       || sa == PRO_PREEMPT_ABORT)
      && (scope != 0 || !type_valid (type)))
    return iscsi_scsi_sense (r, 0x05, 0x24, 0x00);
  key = df_get_be64 (p);
  sa_key = df_get_be64 (p + 8);
  g_mutex_lock (&s->lock);
  cur = reg_key (s, lu->nexus);
  if (sa == PRO_REGISTER || sa == PRO_REGISTER_IGNORE)
    pro_register (s, lu->nexus, key, sa_key, sa == PRO_REGISTER_IGNORE, r);
  else if (cur == NULL || *cur != key)
    reservation_conflict (r);
  else if (sa == PRO_RESERVE)
    pro_reserve (s, lu->nexus, type, r);
  else if (sa == PRO_RELEASE)
    pro_release (s, lu->nexus, type, r);
  else if (sa == PRO_CLEAR)
    {
      g_hash_table_remove_all (s->regs);
      release_reservation (s);
      s->generation++;
    }
  else
    pro_preempt (s, lu->nexus, type, sa_key, r);
  g_mutex_unlock (&s->lock);
}

/* ---- PERSISTENT RESERVE IN ------------------------------------------------
 */

/* g_ptr_array_sort hands the comparator pointers to the elements. */
static gint
nexus_cmp (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char *const *)a, *(const char *const *)b);
}

/* Keys of every registration, sorted so the order is stable. */
static GPtrArray *
sorted_nexuses (iscsi_lu_shared *s)
{
  GPtrArray *a = g_ptr_array_new ();
  GHashTableIter it;
  gpointer k;

  g_hash_table_iter_init (&it, s->regs);
  while (g_hash_table_iter_next (&it, &k, NULL))
    g_ptr_array_add (a, k);
  g_ptr_array_sort (a, nexus_cmp);
  return a;
}

/* Append a full status descriptor (SPC-4 6.14.5) for nexus, with its
 * TransportID (iSCSI initiator port, format 01b: the name, NUL, padded to
 * a multiple of 4; SPC-4 7.6.4.6). */
static void
full_status (iscsi_lu_shared *s, const char *nexus, GByteArray *b)
{
  size_t n = strlen (nexus) + 1, padded = (n + 3) & ~(size_t)3;
  guint o = b->len;
  uint8_t *d;

  g_byte_array_set_size (b, (guint)(o + 24 + 4 + padded));
  d = b->data + o;
  memset (d, 0, 24 + 4 + padded);
  df_put_be64 (d, *reg_key (s, nexus));
  if (is_holder (s, nexus))
    {
      d[12] = 0x01; /* R_HOLDER */
      d[13] = s->type;
    }
  df_put_be16 (d + 18, 1); /* relative target port identifier */
  df_put_be32 (d + 20, (uint32_t)(4 + padded));
  d[24] = 0x40 | 0x05; /* format 01b, protocol iSCSI */
  df_put_be16 (d + 26, (uint16_t)padded);
  memcpy (d + 28, nexus, n);
}

/* The PERSISTENT RESERVE IN data of service action sa (not REPORT
 * CAPABILITIES), whole: the caller truncates it to the allocation
 * length.  Caller holds s->lock. */
static void
pri_fill (iscsi_lu_shared *s, uint8_t sa, GByteArray *b)
{
  g_autoptr (GPtrArray) ns = sorted_nexuses (s);
  uint8_t hdr[8] = { 0 };

  df_put_be32 (hdr, s->generation);
  g_byte_array_append (b, hdr, 8);
  if (sa == PRI_READ_KEYS)
    for (guint i = 0; i < ns->len; i++)
      {
        uint8_t k[8];
        df_put_be64 (k, *reg_key (s, ns->pdata[i]));
        g_byte_array_append (b, k, 8);
      }
  else if (sa == PRI_READ_RESERVATION && s->type != 0)
    {
      uint8_t d[16] = { 0 };
      df_put_be64 (d, type_all_registrants (s->type) ? 0 : s->res_key);
      d[13] = s->type;
      g_byte_array_append (b, d, 16);
    }
  else if (sa == PRI_READ_FULL_STATUS)
    for (guint i = 0; i < ns->len; i++)
      full_status (s, ns->pdata[i], b);
  df_put_be32 (b->data + 4, b->len - 8);
}

void
iscsi_lu_pr_in (iscsi_lu *lu, const uint8_t *cdb, uint8_t *din,
                uint32_t din_cap, iscsi_scsi_result *r)
{
  uint8_t sa = cdb[1] & 0x1f;
  uint32_t alloc = df_get_be16 (cdb + 7);
  g_autoptr (GByteArray) b = g_byte_array_new ();
  uint32_t n;

  if (sa == PRI_REPORT_CAPS)
    {
      uint8_t c[8] = { 0, 8, 0x00, 0x80 /* TMV */, 0xe0 | 0x08 | 0x02, 0x01 };
      g_byte_array_append (b, c, sizeof c);
    }
  else
    {
      g_mutex_lock (&lu->shared->lock);
      pri_fill (lu->shared, sa, b);
      g_mutex_unlock (&lu->shared->lock);
    }
  n = MIN (MIN (b->len, alloc), din_cap);
  memcpy (din, b->data, n);
  r->data_len = n;
}
