/* streamsvc: this server in the farm's registry.  See registry.h. */
#define G_LOG_DOMAIN "streamsvc"

#include "registry.h"
#include "common.h"
#include "heartbeat.h"

struct DfRegistry {
  char *farm_dir;
  char *db;
  char *name;               /* registry name */
  DfSessions *sessions;     /* borrowed */
  DfHeartbeat *hb;
  GThread *verifier;
  gint held;                /* the verifier's counts, for its log line */
  gint verified;
  uint64_t last_bytes;      /* heartbeat thread only */
  gint64 last_mono;
};

/* The load of a stream server (DfLoadFn, on the heartbeat thread). */
static void
stream_load (gpointer data, DfServerLoad *l)
{
  DfRegistry *r = data;
  gint64 now = g_get_monotonic_time ();
  uint64_t bytes = df_sessions_bytes_total (r->sessions);
  l->sessions = df_sessions_count (r->sessions);
  if (r->last_mono > 0)
    l->bytes_per_s = (gint64) ((bytes - r->last_bytes) * G_USEC_PER_SEC
                               / (uint64_t) MAX (now - r->last_mono, 1));
  r->last_mono = now;
  r->last_bytes = bytes;
}

static bool
stopping (DfRegistry *r)
{
  return df_heartbeat_wait_stop (r->hb, 0);
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
      if (!df_farm_store_verify (farm, r->name, v, &st, &why, &err))
        break;
      if (st != DF_STORE_MISSING)
        r->held++;
      if (st == DF_STORE_VERIFIED)
        r->verified++;
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
  g_autoptr (DfFarm) farm = NULL;
  g_autoptr (GPtrArray) vdisks = NULL;
  while (!df_heartbeat_registered (r->hb))
    if (df_heartbeat_wait_stop (r->hb, 50))
      return NULL;
  farm = df_farm_open_db (r->farm_dir, r->db, false, "streamsvc", &err);
  if (farm)
    vdisks = df_farm_vdisk_list (farm, &err);
  gint64 t0 = g_get_monotonic_time ();
  for (guint i = 0; vdisks && i < vdisks->len && !stopping (r); i++)
    verify_vdisk (r, farm, ((DfVdisk *) vdisks->pdata[i])->name);
  if (err)
    g_warning ("store: cannot verify: %s", err->message);
  else
    g_message ("store: %d of %d present version files verified in %.1f s",
               r->verified, r->held,
               (double) (g_get_monotonic_time () - t0) / G_USEC_PER_SEC);
  return NULL;
}

/* ---- lifecycle ---------------------------------------------------------- */

DfRegistry *
df_registry_start (const DfRegistryConf *c, DfSessions *sessions)
{
  DfRegistry *r = g_new0 (DfRegistry, 1);
  r->farm_dir = g_strdup (c->farm_dir);
  r->db = g_strdup (c->db);
  r->name = g_strdup (c->self->name);
  r->sessions = sessions;
  r->hb = df_heartbeat_start (c->farm_dir, c->db, c->self, c->interval_ms,
                              stream_load, r);
  if (c->verify)
    r->verifier = g_thread_new ("store-verify", verifier_main, r);
  return r;
}

void
df_registry_stop (DfRegistry *r)
{
  if (r == NULL)
    return;
  /* the verifier sees the stop through the heartbeat */
  df_heartbeat_request_stop (r->hb);
  if (r->verifier)
    g_thread_join (r->verifier);
  df_heartbeat_stop (r->hb);
  g_free (r->name);
  g_free (r->farm_dir);
  g_free (r->db);
  g_free (r);
}
