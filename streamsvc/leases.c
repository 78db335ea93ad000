/* streamsvc: the cache leases this server holds (see leases.h).
 *
 * Threads: the keeper's tick thread wakes every TICK_US; it loses every
 * held lease whose local deadline passed (so its sessions close even
 * while the DB hangs) and, every ttl/3, hands one renewal round to a
 * one-thread pool, skipping a round while the previous one still waits
 * for the DB.  k->lock protects held, k->farm belongs to the round. */
#define G_LOG_DOMAIN "streamsvc-lease"

#include "leases.h"

#include "common.h"

#define TICK_US (100 * 1000)
#define WHO "streamsvc"

typedef struct
{
  DfLease *lease; /* owned ref */
  char *device;
  bool counted;   /* its loss is in k->losses */
} Held;

struct DfLeaseKeeper
{
  char *farm_dir;
  char *db;
  char *server;
  gint64 ttl_ms, margin_ms;
  GMutex lock;
  GCond cond;
  GPtrArray *held; /* Held*, under lock */
  bool stop;       /* under lock */
  GThread *tick;
  GThreadPool *rounds; /* one thread: renewal rounds */
  gint round_busy;     /* atomic */
  DfFarm *farm;        /* the rounds' own handle (NULL: reopen) */
  gint takeovers, losses; /* atomic */
};

static void
held_free (gpointer p)
{
  Held *h = p;

  df_lease_unref (h->lease);
  g_free (h->device);
  g_free (h);
}

/* ---- renewal ------------------------------------------------------------ */

/* Test hook (a partition between this server and the farm DB): while the
 * file DISKFARM_FAULT_LEASE_DB_DOWN names exists, renewals and new takes
 * fail as if the DB did not answer. */
static bool
fault_db_down (GError **err)
{
  const char *f = g_getenv ("DISKFARM_FAULT_LEASE_DB_DOWN");

  if (f == NULL || !g_file_test (f, G_FILE_TEST_EXISTS))
    return false;
  g_set_error (err, DF_ERROR, DF_ERROR_IO, "farm DB unreachable (test hook "
               "DISKFARM_FAULT_LEASE_DB_DOWN)");
  return true;
}

static void
renew_one (DfLeaseKeeper *k, DfLease *l, const char *device)
{
  g_autoptr (GError) e = NULL;
  gint64 sent = g_get_monotonic_time ();
  gint64 now_ms = df_farm_now_ms ();

  if (df_lease_lost (l))
    return;
  if (fault_db_down (&e))
    {
      g_warning ("device %s: cannot renew the cache lease: %s", device,
                 e->message);
      return;
    }
  if (k->farm == NULL)
    k->farm = df_farm_open_db (k->farm_dir, k->db, false, WHO, &e);
  if (k->farm != NULL
      && df_farm_lease_renew (k->farm, device, k->server, df_lease_epoch (l),
                              now_ms, k->ttl_ms, &e))
    {
      df_lease_extend (l, sent + (k->ttl_ms - k->margin_ms) * 1000);
      g_debug ("device %s: cache lease epoch %" G_GINT64_FORMAT " renewed "
               "in %" G_GINT64_FORMAT " ms", device, df_lease_epoch (l),
               (g_get_monotonic_time () - sent) / 1000);
      return;
    }
  if (g_error_matches (e, DF_ERROR, DF_ERROR_DENIED))
    {
      df_lease_lose (l, e->message);
      return;
    }
  g_warning ("device %s: cannot renew the cache lease: %s; its writes stop "
             "when the lease runs out", device, e->message);
  g_clear_pointer (&k->farm, df_farm_close);
}

/* A new array of refs of what is held (so a round runs without the lock). */
static GPtrArray *
held_snapshot (DfLeaseKeeper *k)
{
  GPtrArray *all = g_ptr_array_new_with_free_func (held_free);

  g_mutex_lock (&k->lock);
  for (guint i = 0; i < k->held->len; i++)
    {
      Held *h = k->held->pdata[i], *c = g_new0 (Held, 1);
      c->lease = df_lease_ref (h->lease);
      c->device = g_strdup (h->device);
      g_ptr_array_add (all, c);
    }
  g_mutex_unlock (&k->lock);
  return all;
}

static void
round_run (gpointer data, gpointer user_data)
{
  DfLeaseKeeper *k = user_data;
  g_autoptr (GPtrArray) all = held_snapshot (k);

  (void) data;
  for (guint i = 0; i < all->len; i++)
    {
      Held *h = all->pdata[i];
      renew_one (k, h->lease, h->device);
    }
  g_atomic_int_set (&k->round_busy, 0);
}

/* Lose what ran out; count each loss once.  Under k->lock. */
static void
lapse_check_locked (DfLeaseKeeper *k)
{
  for (guint i = 0; i < k->held->len; i++)
    {
      Held *h = k->held->pdata[i];

      if (!df_lease_lost (h->lease) && !df_lease_valid (h->lease))
        df_lease_lose (h->lease, "not renewed in time (farm DB "
                                 "unreachable or too slow)");
      if (df_lease_lost (h->lease) && !h->counted)
        {
          h->counted = true;
          g_atomic_int_inc (&k->losses);
        }
    }
}

static gpointer
tick_main (gpointer data)
{
  DfLeaseKeeper *k = data;
  gint64 next_round = 0, every = k->ttl_ms * 1000 / 3;

  g_mutex_lock (&k->lock);
  while (!k->stop)
    {
      gint64 now = g_get_monotonic_time ();

      lapse_check_locked (k);
      if (now >= next_round && k->held->len > 0
          && g_atomic_int_compare_and_exchange (&k->round_busy, 0, 1))
        {
          next_round = now + every;
          g_thread_pool_push (k->rounds, GINT_TO_POINTER (1), NULL);
        }
      g_cond_wait_until (&k->cond, &k->lock, now + TICK_US);
    }
  g_mutex_unlock (&k->lock);
  return NULL;
}

/* ---- the keeper ------------------------------------------------------------ */

DfLeaseKeeper *
df_lease_keeper_new (const char *farm_dir, const char *db, const char *server,
                     gint64 ttl_ms)
{
  DfLeaseKeeper *k = g_new0 (DfLeaseKeeper, 1);

  g_assert (ttl_ms >= DF_LEASE_MARGIN_DIV * 3);
  k->farm_dir = g_strdup (farm_dir);
  k->db = g_strdup (db);
  k->server = g_strdup (server);
  k->ttl_ms = ttl_ms;
  k->margin_ms = ttl_ms / DF_LEASE_MARGIN_DIV;
  g_mutex_init (&k->lock);
  g_cond_init (&k->cond);
  k->held = g_ptr_array_new_with_free_func (held_free);
  /* exclusive: its thread is its own, never shared with other pools */
  k->rounds = g_thread_pool_new (round_run, k, 1, TRUE, NULL);
  k->tick = g_thread_new ("lease-keeper", tick_main, k);
  return k;
}

void
df_lease_keeper_free (DfLeaseKeeper *k)
{
  if (k == NULL)
    return;
  g_mutex_lock (&k->lock);
  k->stop = true;
  g_cond_signal (&k->cond);
  g_mutex_unlock (&k->lock);
  g_thread_join (k->tick);
  g_thread_pool_free (k->rounds, FALSE, TRUE);
  g_ptr_array_unref (k->held);
  if (k->farm != NULL)
    df_farm_close (k->farm);
  g_mutex_clear (&k->lock);
  g_cond_clear (&k->cond);
  g_free (k->farm_dir);
  g_free (k->db);
  g_free (k->server);
  g_free (k);
}

gint64
df_lease_keeper_ttl_ms (DfLeaseKeeper *k)
{
  return k->ttl_ms;
}

/* Whether row (nullable) lets this server take the lease now. */
static bool
lease_open_to (DfLeaseKeeper *k, const DfCacheLease *row)
{
  return row == NULL || row->kind == DF_LEASE_LOCAL || row->expires_ms == 0
         || g_strcmp0 (row->holder, k->server) == 0
         || df_farm_now_ms () > row->expires_ms + k->margin_ms;
}

bool
df_lease_keeper_wait (DfLeaseKeeper *k, DfFarm *farm, const char *device,
                      GError **err)
{
  gint64 deadline = g_get_monotonic_time ()
                    + (k->ttl_ms + 2 * k->margin_ms + 1000) * 1000;

  for (;;)
    {
      GError *e = NULL;
      g_autoptr (DfCacheLease) row = df_farm_lease_get (farm, device, &e);

      if (e != NULL)
        {
          g_error_free (e); /* the take that follows reports it */
          return true;
        }
      if (lease_open_to (k, row))
        return true;
      if (g_get_monotonic_time () >= deadline)
        {
          g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                       "the write cache of device %s is held by server %s "
                       "(lease epoch %" G_GINT64_FORMAT "), which keeps "
                       "renewing it: waited %" G_GINT64_FORMAT " ms; "
                       "connect to server %s", device, row->holder,
                       row->epoch, k->ttl_ms + 2 * k->margin_ms + 1000,
                       row->holder);
          return false;
        }
      g_usleep (200 * 1000);
    }
}

/* Log a takeover of prior's lease and count it. */
static void
note_takeover (DfLeaseKeeper *k, const char *device, const DfCacheLease *prior,
               gint64 epoch)
{
  if (prior == NULL || prior->kind != DF_LEASE_SHARED
      || prior->expires_ms == 0 || g_strcmp0 (prior->holder, k->server) == 0)
    {
      g_info ("device %s: cache lease epoch %" G_GINT64_FORMAT " taken",
              device, epoch);
      return;
    }
  g_atomic_int_inc (&k->takeovers);
  g_message ("device %s: cache lease taken over from server %s (epoch %"
             G_GINT64_FORMAT " -> %" G_GINT64_FORMAT ", lapsed %"
             G_GINT64_FORMAT " ms ago); replaying its cache", device,
             prior->holder, prior->epoch, epoch,
             df_farm_now_ms () - prior->expires_ms);
}

DfLease *
df_lease_keeper_take (DfLeaseKeeper *k, DfFarm *farm, const char *device,
                      gint64 generation, const char *token_dir,
                      DfFence *fence, GError **err)
{
  g_autoptr (DfCacheLease) prior = df_farm_lease_get (farm, device, NULL);
  g_autoptr (DfCacheLease) row = NULL;
  gint64 sent = g_get_monotonic_time ();
  DfLease *l;
  Held *h;

  if (fault_db_down (err)
      || !df_farm_lease_acquire (farm, device, k->server, generation,
                                 df_farm_now_ms (), k->ttl_ms, k->margin_ms,
                                 &row, err))
    return NULL;
  l = df_lease_new (k->server, row->epoch,
                    sent + (k->ttl_ms - k->margin_ms) * 1000, token_dir,
                    fence, err);
  if (l == NULL)
    {
      df_farm_lease_release (farm, device, k->server, row->epoch, NULL);
      return NULL;
    }
  note_takeover (k, device, prior, row->epoch);
  h = g_new0 (Held, 1);
  h->lease = df_lease_ref (l);
  h->device = g_strdup (device);
  g_mutex_lock (&k->lock);
  g_ptr_array_add (k->held, h);
  g_mutex_unlock (&k->lock);
  return l;
}

void
df_lease_keeper_drop (DfLeaseKeeper *k, DfLease *l, const char *device)
{
  g_autoptr (GError) e = NULL;
  DfFarm *farm;
  bool ours = df_lease_valid (l);

  g_mutex_lock (&k->lock);
  for (guint i = 0; i < k->held->len; i++)
    if (((Held *) k->held->pdata[i])->lease == l)
      {
        g_ptr_array_remove_index_fast (k->held, i);
        break;
      }
  g_mutex_unlock (&k->lock);
  if (!ours)
    return;
  farm = df_farm_open_db (k->farm_dir, k->db, false, WHO, &e);
  if (farm == NULL
      || !df_farm_lease_release (farm, device, k->server, df_lease_epoch (l),
                                 &e))
    g_warning ("device %s: releasing the cache lease: %s (it lapses by "
               "itself)", device, e->message);
  df_farm_close (farm);
}

guint64
df_lease_keeper_takeovers (DfLeaseKeeper *k)
{
  return (guint64) g_atomic_int_get (&k->takeovers);
}

guint64
df_lease_keeper_losses (DfLeaseKeeper *k)
{
  return (guint64) g_atomic_int_get (&k->losses);
}
