/* streamsvc: this server in the farm's registry.  See registry.h. */
#define G_LOG_DOMAIN "streamsvc"

#include "registry.h"
#include "common.h"

#include <sys/resource.h>
#include <sys/statvfs.h>

struct DfRegistry {
  char *farm_dir;
  DfServer self;            /* strings owned */
  guint interval_ms;
  DfSessions *sessions;     /* borrowed */
  GMutex lock;
  GCond cond;
  bool stop;                /* under lock */
  GThread *beat;
  GThread *verifier;
  gint held;                /* atomics: the verifier's counts */
  gint verified;
  /* heartbeat thread only */
  uint64_t last_bytes;
  gint64 last_mono;
  gint64 last_cpu_us;
};

/* ---- load figures -------------------------------------------------------- */

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

/* The load since the previous call. */
static void
load_sample (DfRegistry *r, DfServerLoad *l)
{
  gint64 now = g_get_monotonic_time ();
  gint64 cpu = cpu_us ();
  uint64_t bytes = df_sessions_bytes_total (r->sessions);
  gint64 dt = MAX (now - r->last_mono, 1);
  l->sessions = df_sessions_count (r->sessions);
  l->bytes_per_s = (gint64) ((bytes - r->last_bytes) * G_USEC_PER_SEC
                             / (uint64_t) dt);
  l->cpu_permille = (cpu - r->last_cpu_us) * 1000 / dt;
  l->free_bytes = store_free_bytes (r->farm_dir);
  l->versions_held = g_atomic_int_get (&r->held);
  l->versions_verified = g_atomic_int_get (&r->verified);
  r->last_mono = now;
  r->last_cpu_us = cpu;
  r->last_bytes = bytes;
}

/* ---- threads ------------------------------------------------------------ */

/* Sleep ms or until stopped; true when stopped. */
static bool
wait_stop (DfRegistry *r, guint ms)
{
  gint64 end = g_get_monotonic_time () + (gint64) ms * 1000;
  g_mutex_lock (&r->lock);
  while (!r->stop && g_cond_wait_until (&r->cond, &r->lock, end))
    ;
  bool stop = r->stop;
  g_mutex_unlock (&r->lock);
  return stop;
}

static bool
stopping (DfRegistry *r)
{
  g_mutex_lock (&r->lock);
  bool stop = r->stop;
  g_mutex_unlock (&r->lock);
  return stop;
}

static bool
heartbeat (DfRegistry *r, DfFarm *farm, GError **err)
{
  DfServerLoad l;
  load_sample (r, &l);
  return df_farm_server_heartbeat (farm, r->self.name, df_farm_now_ms (), &l,
                                   err);
}

static bool
register_self (DfRegistry *r, DfFarm *farm, GError **err)
{
  if (!df_farm_server_register (farm, &r->self, err))
    return false;
  g_message ("registry: registered as server %s (%s, heartbeat every %u ms, "
             "unhealthy after %" G_GINT64_FORMAT " ms)", r->self.name,
             r->self.address, r->interval_ms, r->self.timeout_ms);
  return true;
}

/* One beat: register when not registered yet (or the row was removed by
 * the admin), then heartbeat (so the load is there from the first beat).
 * Logs a change of outcome once. */
static void
beat_once (DfRegistry *r, DfFarm **farm, bool *registered, bool *failing)
{
  g_autoptr (GError) err = NULL;
  if (*farm == NULL)
    *farm = df_farm_open (r->farm_dir, false, "streamsvc", &err);
  bool ok = *farm != NULL;
  if (ok && !*registered)
    ok = *registered = register_self (r, *farm, &err);
  if (ok)
    ok = heartbeat (r, *farm, &err);
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
  DfRegistry *r = data;
  DfFarm *farm = NULL;
  bool registered = false, failing = false;
  r->last_mono = g_get_monotonic_time ();
  r->last_cpu_us = cpu_us ();
  r->last_bytes = df_sessions_bytes_total (r->sessions);
  do
    beat_once (r, &farm, &registered, &failing);
  while (!wait_stop (r, r->interval_ms));
  df_farm_close (farm);
  return NULL;
}

/* Verify every sealed version of vdisk; counts into r. */
static void
verify_vdisk (DfRegistry *r, DfFarm *farm, const char *vdisk)
{
  g_autoptr (GError) err = NULL;
  g_autoptr (GPtrArray) vs = df_farm_version_list (farm, vdisk, &err);
  for (guint i = 0; vs && i < vs->len && !stopping (r); i++)
    {
      const DfVersion *v = vs->pdata[i];
      DfStoreState st;
      g_autofree char *why = NULL;
      if (!v->sha256)
        continue;
      if (!df_farm_store_verify (farm, r->self.name, v, &st, &why, &err))
        break;
      if (st != DF_STORE_MISSING)
        g_atomic_int_inc (&r->held);
      if (st == DF_STORE_VERIFIED)
        g_atomic_int_inc (&r->verified);
      else
        g_warning ("store: %s@%d is %s here: %s (not served)", v->vdisk,
                   v->number, df_store_state_name (st), why);
    }
  if (err)
    g_warning ("store: verifying %s: %s", vdisk, err->message);
}

/* Waits for the registration (the store state names this server). */
static gpointer
verifier_main (gpointer data)
{
  DfRegistry *r = data;
  g_autoptr (GError) err = NULL;
  g_autoptr (DfFarm) farm = df_farm_open (r->farm_dir, false, "streamsvc",
                                          &err);
  g_autoptr (GPtrArray) vdisks = NULL;
  while (farm && !stopping (r))
    {
      GError *e = NULL;
      g_autoptr (DfServer) s = df_farm_server_get (farm, r->self.name, &e);
      g_clear_error (&e);
      if (s && s->registered_ms > 0)
        break;
      wait_stop (r, 100);
    }
  if (farm && !stopping (r))
    vdisks = df_farm_vdisk_list (farm, &err);
  gint64 t0 = g_get_monotonic_time ();
  for (guint i = 0; vdisks && i < vdisks->len && !stopping (r); i++)
    verify_vdisk (r, farm, ((DfVdisk *) vdisks->pdata[i])->name);
  if (err)
    g_warning ("store: cannot verify: %s", err->message);
  else if (vdisks)
    g_message ("store: %d of %d present version files verified in %.1f s",
               g_atomic_int_get (&r->verified), g_atomic_int_get (&r->held),
               (double) (g_get_monotonic_time () - t0) / G_USEC_PER_SEC);
  return NULL;
}

/* ---- lifecycle ---------------------------------------------------------- */

DfRegistry *
df_registry_start (const DfRegistryConf *c, DfSessions *sessions)
{
  DfRegistry *r = g_new0 (DfRegistry, 1);
  r->farm_dir = g_strdup (c->farm_dir);
  r->self = *c->self;
  r->self.name = g_strdup (c->self->name);
  r->self.address = g_strdup (c->self->address);
  r->self.kind = g_strdup (c->self->kind);
  r->self.software = g_strdup (c->self->software);
  r->self.created = NULL;
  r->interval_ms = c->interval_ms;
  r->sessions = sessions;
  g_mutex_init (&r->lock);
  g_cond_init (&r->cond);
  r->beat = g_thread_new ("registry", beat_main, r);
  if (c->verify)
    r->verifier = g_thread_new ("store-verify", verifier_main, r);
  return r;
}

void
df_registry_stop (DfRegistry *r)
{
  if (r == NULL)
    return;
  g_mutex_lock (&r->lock);
  r->stop = true;
  g_cond_broadcast (&r->cond);
  g_mutex_unlock (&r->lock);
  g_thread_join (r->beat);
  if (r->verifier)
    g_thread_join (r->verifier);
  g_mutex_clear (&r->lock);
  g_cond_clear (&r->cond);
  g_free (r->self.name);
  g_free (r->self.address);
  g_free (r->self.kind);
  g_free (r->self.software);
  g_free (r->farm_dir);
  g_free (r);
}
