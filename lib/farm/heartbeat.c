/* diskfarm: registration and heartbeats from a thread (see heartbeat.h). */
#include "heartbeat.h"
#include "common.h"

#include <sys/resource.h>
#include <sys/statvfs.h>

struct DfHeartbeat {
  char *farm_dir;
  char *db;                 /* NULL: farm_dir's farm.db */
  DfServer self;            /* strings owned */
  guint interval_ms;
  DfLoadFn load;
  gpointer data;            /* borrowed */
  GMutex lock;
  GCond cond;
  bool stop;                /* under lock */
  gint registered;          /* atomic */
  GThread *thread;
  gint64 last_mono;         /* heartbeat thread only */
  gint64 last_cpu_us;
};

/* ---- figures every daemon reports ---------------------------------------- */

static gint64
cpu_us (void)
{
  struct rusage ru;
  if (getrusage (RUSAGE_SELF, &ru) != 0)
    return 0;
  return (gint64) (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * G_USEC_PER_SEC
         + ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
}

static gint64
store_free_bytes (const char *farm_dir)
{
  g_autofree char *store = g_build_filename (farm_dir, "store", NULL);
  struct statvfs sv;
  if (statvfs (store, &sv) != 0)
    return 0;
  return (gint64) sv.f_bavail * (gint64) sv.f_frsize;
}

static void
load_sample (DfHeartbeat *hb, DfServerLoad *l)
{
  gint64 now = g_get_monotonic_time (), cpu = cpu_us ();
  *l = (DfServerLoad) { 0 };
  if (hb->load)
    hb->load (hb->data, l);
  l->cpu_permille = (cpu - hb->last_cpu_us) * 1000
                    / MAX (now - hb->last_mono, 1);
  l->free_bytes = store_free_bytes (hb->farm_dir);
  hb->last_mono = now;
  hb->last_cpu_us = cpu;
}

/* ---- the thread ------------------------------------------------------------ */

bool
df_heartbeat_wait_stop (DfHeartbeat *hb, guint ms)
{
  gint64 end = g_get_monotonic_time () + (gint64) ms * 1000;
  g_mutex_lock (&hb->lock);
  while (!hb->stop && g_cond_wait_until (&hb->cond, &hb->lock, end))
    ;
  bool stop = hb->stop;
  g_mutex_unlock (&hb->lock);
  return stop;
}

bool
df_heartbeat_registered (DfHeartbeat *hb)
{
  return g_atomic_int_get (&hb->registered) != 0;
}

static bool
register_self (DfHeartbeat *hb, DfFarm *farm, GError **err)
{
  if (!df_farm_server_register (farm, &hb->self, err))
    return false;
  g_message ("registry: registered as %s %s (%s, heartbeat every %u ms, "
             "unhealthy after %" G_GINT64_FORMAT " ms)", hb->self.kind,
             hb->self.name, hb->self.address, hb->interval_ms,
             hb->self.timeout_ms);
  g_atomic_int_set (&hb->registered, 1);
  return true;
}

static bool
beat (DfHeartbeat *hb, DfFarm *farm, GError **err)
{
  DfServerLoad l;
  load_sample (hb, &l);
  return df_farm_server_heartbeat (farm, hb->self.name, df_farm_now_ms (), &l,
                                   err);
}

/* One beat: register when not registered yet (or the row was removed by
 * the admin), then heartbeat (so the load is there from the first beat).
 * Logs a change of outcome once. */
static void
beat_once (DfHeartbeat *hb, DfFarm **farm, bool *registered, bool *failing)
{
  g_autoptr (GError) err = NULL;
  if (*farm == NULL)
    *farm = df_farm_open_db (hb->farm_dir, hb->db, false, hb->self.kind,
                             &err);
  bool ok = *farm != NULL;
  if (ok && !*registered)
    ok = *registered = register_self (hb, *farm, &err);
  if (ok)
    ok = beat (hb, *farm, &err);
  if (!ok && g_error_matches (err, DF_ERROR, DF_ERROR_NOT_FOUND))
    *registered = false; /* register again at the next beat */
  if (!ok && !*failing)
    g_warning ("registry: %s", err ? err->message : "farm DB unreachable");
  else if (ok && *failing)
    g_message ("registry: farm DB reachable again");
  *failing = !ok;
}

static gpointer
beat_main (gpointer data)
{
  DfHeartbeat *hb = data;
  DfFarm *farm = NULL;
  bool registered = false, failing = false;
  hb->last_mono = g_get_monotonic_time ();
  hb->last_cpu_us = cpu_us ();
  do
    beat_once (hb, &farm, &registered, &failing);
  while (!df_heartbeat_wait_stop (hb, hb->interval_ms));
  df_farm_close (farm);
  return NULL;
}

/* ---- lifecycle ---------------------------------------------------------- */

DfHeartbeat *
df_heartbeat_start (const char *farm_dir, const char *db,
                    const DfServer *self, guint interval_ms, DfLoadFn load,
                    gpointer data)
{
  DfHeartbeat *hb = g_new0 (DfHeartbeat, 1);
  hb->farm_dir = g_strdup (farm_dir);
  hb->db = g_strdup (db);
  hb->self = *self;
  hb->self.name = g_strdup (self->name);
  hb->self.address = g_strdup (self->address);
  hb->self.kind = g_strdup (self->kind);
  hb->self.software = g_strdup (self->software);
  hb->self.created = NULL;
  hb->interval_ms = interval_ms;
  hb->load = load;
  hb->data = data;
  g_mutex_init (&hb->lock);
  g_cond_init (&hb->cond);
  hb->thread = g_thread_new ("heartbeat", beat_main, hb);
  return hb;
}

void
df_heartbeat_request_stop (DfHeartbeat *hb)
{
  g_mutex_lock (&hb->lock);
  hb->stop = true;
  g_cond_broadcast (&hb->cond);
  g_mutex_unlock (&hb->lock);
}

void
df_heartbeat_stop (DfHeartbeat *hb)
{
  if (hb == NULL)
    return;
  df_heartbeat_request_stop (hb);
  g_thread_join (hb->thread);
  g_mutex_clear (&hb->lock);
  g_cond_clear (&hb->cond);
  g_free (hb->self.name);
  g_free (hb->self.address);
  g_free (hb->self.kind);
  g_free (hb->self.software);
  g_free (hb->farm_dir);
  g_free (hb->db);
  g_free (hb);
}
