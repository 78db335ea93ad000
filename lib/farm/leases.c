/* diskfarm: cache leases (see farm.h).
 *
 * Each decision reads the row and writes it in one write scope
 * (df_farm_try), so two servers racing for one lapsed lease cannot both
 * win: SQLite's BEGIN IMMEDIATE serialises them, PostgreSQL's serializable
 * transaction fails one of them, which re-runs and then finds the lease
 * held.  Renewal and release are one conditional UPDATE each: a server
 * that lost its lease changes nothing. */
#include "farm.h"
#include "farm-private.h"
#include "common.h"

#define LEASE_COLS \
  "device, kind, holder, epoch, generation, expires_ms, acquired_ms"

/* The fields of LEASE_COLS, in its order; kind (a name) is read by
 * lease_finish. */
static const DfField lease_fields[] = {
  DF_FIELD (TEXT, DfCacheLease, device),
  DF_FIELD (SKIP, DfCacheLease, kind),
  DF_FIELD (TEXT, DfCacheLease, holder),
  DF_FIELD (INT64, DfCacheLease, epoch),
  DF_FIELD (INT64, DfCacheLease, generation),
  DF_FIELD (INT64, DfCacheLease, expires_ms),
  DF_FIELD (INT64, DfCacheLease, acquired_ms),
};

static void
lease_finish (gpointer obj, DfDbStmt *st)
{
  DfCacheLease *l = obj;
  l->kind = g_strcmp0 (df_db_col_text (st, 1), "local") == 0
                ? DF_LEASE_LOCAL : DF_LEASE_SHARED;
}

static const DfRowType lease_row =
  DF_ROW_TYPE (DfCacheLease, lease_fields, lease_finish, df_cache_lease_free);

void
df_cache_lease_free (DfCacheLease *l)
{
  df_farm_row_free (&lease_row, l);
}

static const char *
kind_name (DfLeaseKind k)
{
  return k == DF_LEASE_LOCAL ? "local" : "shared";
}

DfCacheLease *
df_farm_lease_get (DfFarm *farm, const char *device, GError **err)
{
  return df_farm_row_find (farm,
                           "SELECT " LEASE_COLS " FROM cache_leases "
                           "WHERE device = ?", device, &lease_row, err);
}

static bool
check_args (const char *device, const char *holder, GError **err)
{
  return df_validate_name ("device", device, err)
         && df_validate_name ("server", holder, err);
}

/* Write the row as l says (insert or replace). */
static bool
lease_put (DfFarm *farm, const DfCacheLease *l, GError **err)
{
  const DfParam p[] = {
    DF_TEXT (l->device), DF_TEXT (kind_name (l->kind)), DF_TEXT (l->holder),
    DF_INT (l->epoch), DF_INT (l->generation), DF_INT (l->expires_ms),
    DF_INT (l->acquired_ms)
  };
  return df_farm_exec (farm,
    "INSERT INTO cache_leases (" LEASE_COLS ") VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (device) DO UPDATE SET kind = excluded.kind, "
    "holder = excluded.holder, epoch = excluded.epoch, "
    "generation = excluded.generation, expires_ms = excluded.expires_ms, "
    "acquired_ms = excluded.acquired_ms", p, G_N_ELEMENTS (p), err);
}

/* A new lease for holder after old (nullable): the next epoch. */
static DfCacheLease *
lease_next (const char *device, const DfCacheLease *old, DfLeaseKind kind,
            const char *holder, gint64 generation, gint64 now_ms,
            gint64 expires_ms)
{
  DfCacheLease *l = g_new0 (DfCacheLease, 1);
  l->device = g_strdup (device);
  l->kind = kind;
  l->holder = g_strdup (holder);
  l->epoch = old ? old->epoch + 1 : 1;
  l->generation = generation;
  l->expires_ms = expires_ms;
  l->acquired_ms = now_ms;
  return l;
}

/* Whether holder may take old's shared lease at now_ms. */
static bool
lease_takeable (const DfCacheLease *old, const char *holder, gint64 now_ms,
                gint64 margin_ms)
{
  return !old || old->kind == DF_LEASE_LOCAL || old->expires_ms == 0
         || g_strcmp0 (old->holder, holder) == 0
         || now_ms > old->expires_ms + margin_ms;
}

static bool
acquire_locked (DfFarm *farm, const char *device, const char *holder,
                gint64 generation, gint64 now_ms, gint64 ttl_ms,
                gint64 margin_ms, DfCacheLease **out, GError **err)
{
  GError *e = NULL;
  g_autoptr (DfCacheLease) old = df_farm_lease_get (farm, device, &e);

  if (e != NULL)
    {
      g_propagate_error (err, e);
      return false;
    }
  if (!lease_takeable (old, holder, now_ms, margin_ms))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                   "the write cache of device %s is held by server %s "
                   "(lease epoch %" G_GINT64_FORMAT ", renewed until %"
                   G_GINT64_FORMAT " ms from now; it moves only once "
                   "that server stops renewing it)",
                   device, old->holder, old->epoch,
                   old->expires_ms - now_ms);
      return false;
    }
  g_autoptr (DfCacheLease) l = lease_next (device, old, DF_LEASE_SHARED,
                                           holder, generation, now_ms,
                                           now_ms + ttl_ms);
  if (!lease_put (farm, l, err))
    return false;
  *out = g_steal_pointer (&l);
  return true;
}

bool
df_farm_lease_acquire (DfFarm *farm, const char *device, const char *holder,
                       gint64 generation, gint64 now_ms, gint64 ttl_ms,
                       gint64 margin_ms, DfCacheLease **out, GError **err)
{
  if (!check_args (device, holder, err))
    return false;
  g_return_val_if_fail (ttl_ms > 0 && margin_ms >= 0, false);
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = acquire_locked (farm, device, holder, generation, now_ms, ttl_ms,
                           margin_ms, out, err);
  return t.ok;
}

/* One conditional UPDATE of holder's row at epoch; DENIED when no row
 * matched. */
static bool
lease_update (DfFarm *farm, const char *device, const char *holder,
              gint64 epoch, gint64 expires_ms, bool missing_ok, GError **err)
{
  const DfParam p[] = {
    DF_INT (expires_ms), DF_TEXT (device), DF_TEXT (holder), DF_INT (epoch)
  };
  if (!df_farm_exec (farm,
    "UPDATE cache_leases SET expires_ms = ? WHERE device = ? AND "
    "holder = ? AND epoch = ? AND kind = 'shared'", p, G_N_ELEMENTS (p), err))
    return false;
  if (df_db_changes (df_farm_db (farm)) == 1 || missing_ok)
    return true;
  g_set_error (err, DF_ERROR, DF_ERROR_DENIED,
               "server %s lost the lease of device %s's write cache "
               "(epoch %" G_GINT64_FORMAT " was taken over)", holder, device,
               epoch);
  return false;
}

bool
df_farm_lease_renew (DfFarm *farm, const char *device, const char *holder,
                     gint64 epoch, gint64 now_ms, gint64 ttl_ms,
                     GError **err)
{
  if (!check_args (device, holder, err))
    return false;
  return lease_update (farm, device, holder, epoch, now_ms + ttl_ms, false,
                       err);
}

bool
df_farm_lease_release (DfFarm *farm, const char *device, const char *holder,
                       gint64 epoch, GError **err)
{
  if (!check_args (device, holder, err))
    return false;
  return lease_update (farm, device, holder, epoch, 0, true, err);
}

static bool
claim_local_locked (DfFarm *farm, const char *device, const char *holder,
                    gint64 generation, gint64 now_ms, GError **err)
{
  GError *e = NULL;
  g_autoptr (DfCacheLease) old = df_farm_lease_get (farm, device, &e);

  if (e != NULL)
    {
      g_propagate_error (err, e);
      return false;
    }
  if (old && old->kind == DF_LEASE_LOCAL && old->generation == generation)
    {
      if (g_strcmp0 (old->holder, holder) == 0)
        return true;
      if (generation == DF_LEASE_EVERY_GENERATION)
        g_set_error (err, DF_ERROR, DF_ERROR_DENIED,
                     "device %s has its lasting write cache on server %s's "
                     "local disk: it cannot move to server %s (bring %s "
                     "back, or give every server one --shared-cache-dir "
                     "for server-persistent caches)", device, old->holder,
                     holder, old->holder);
      else
        g_set_error (err, DF_ERROR, DF_ERROR_DENIED,
                     "device %s boot generation %" G_GINT64_FORMAT " has its "
                     "write cache on server %s's local disk: it cannot move "
                     "to server %s (the device must reboot)", device,
                     generation, old->holder, holder);
      return false;
    }
  g_autoptr (DfCacheLease) l = lease_next (device, old, DF_LEASE_LOCAL,
                                           holder, generation, now_ms, 0);
  return lease_put (farm, l, err);
}

bool
df_farm_lease_claim_local (DfFarm *farm, const char *device,
                           const char *holder, gint64 generation,
                           gint64 now_ms, GError **err)
{
  if (!check_args (device, holder, err))
    return false;
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = claim_local_locked (farm, device, holder, generation, now_ms, err);
  return t.ok;
}
