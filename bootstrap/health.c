/* diskfarm bootstrap: stream server health.  See health.h. */
#include "health.h"
#include "common.h"

#include "admin-client.h"

#include <string.h>

struct DfHealth {
  DfFarm *farm;               /* borrowed */
  GCancellable *cancel;       /* owned: cancels the pending probes */
  GHashTable *views;          /* name -> DfServerView (owned) */
  bool farm_ok;
  guint rounds;
  guint timer;
  GHashTable *pending;        /* name -> Probe* (owned by the probe) */
  bool stopping;              /* df_health_free: outcomes are dropped */
};

/* One pending GET /v1/health, through lib/admin's client (its whole-
 * request deadline, body limit and no proxy); a server gets no new probe
 * while one is pending. */
typedef struct {
  DfHealth *h;
  char *name;
} Probe;

void
df_server_view_free (DfServerView *v)
{
  if (!v)
    return;
  g_free (v->name);
  g_free (v->address);
  g_free (v->iscsi_address);
  g_free (v->error);
  g_free (v);
}

static DfServerView *
view_copy (const DfServerView *v)
{
  DfServerView *c = g_memdup2 (v, sizeof *v);
  c->name = g_strdup (v->name);
  c->address = g_strdup (v->address);
  c->iscsi_address = g_strdup (v->iscsi_address);
  c->error = g_strdup (v->error);
  return c;
}

gint
df_server_view_compare (gconstpointer pa, gconstpointer pb)
{
  const DfServerView *a = *(DfServerView *const *) pa;
  const DfServerView *b = *(DfServerView *const *) pb;
  if (a->healthy != b->healthy)
    return a->healthy ? -1 : 1;
  /* a.sessions / a.power < b.sessions / b.power, without division */
  gint64 la = MAX (a->sessions, 0) * b->power;
  gint64 lb = MAX (b->sessions, 0) * a->power;
  if (la != lb)
    return la < lb ? -1 : 1;
  return g_strcmp0 (a->name, b->name);
}

/* The bootstrap's rule: a server is healthy when it says "status":"ok".
 * One that says it serves another farm is not one of ours: never listed,
 * its sessions never counted.  One that does not say (a streamsvc older
 * than the farm identity) is still listed, so upgrading bootstrap first
 * does not empty the boot scripts.  NULL when healthy, else why (new). */
static char *
health_verdict (const DfAdminHealth *a, const char *farm_uuid)
{
  if (g_strcmp0 (a->status, "ok") != 0)
    return g_strdup_printf ("health status is '%s'",
                            a->status ? a->status : "");
  if (a->farm && g_strcmp0 (a->farm, farm_uuid) != 0)
    {
      g_autofree char *other = df_display_text (a->farm, 64);
      return g_strdup_printf ("it serves farm %s, not this farm (%s)", other,
                              farm_uuid);
    }
  return NULL;
}

/* The registry's word, first: a server whose heartbeats stopped is not
 * healthy even while something still answers its probe. */
static bool
registry_ok (DfServerView *v)
{
  if (v->registry != DF_SERVER_UNHEALTHY)
    return true;
  g_free (v->error);
  v->error = g_strdup ("no heartbeat in the registry within its timeout");
  return false;
}

/* Record the outcome (a NULL: failed with why) in the server's view. */
static void
probe_record (DfHealth *h, const char *name, const DfAdminHealth *a,
              const char *why)
{
  DfServerView *v = h->stopping ? NULL : g_hash_table_lookup (h->views, name);
  if (!v)
    return;
  g_clear_pointer (&v->error, g_free);
  v->error = a ? health_verdict (a, df_farm_uuid (h->farm)) : g_strdup (why);
  bool ok = v->error == NULL && registry_ok (v);
  if (ok != v->healthy)
    g_message ("health: stream server %s is now %s%s%s", v->name,
               ok ? "healthy" : "unhealthy", ok ? "" : ": ",
               ok ? "" : v->error);
  v->healthy = ok;
  v->sessions = ok ? MAX (a->sessions, 0) : -1;
}

static void
probe_done (GObject *src, GAsyncResult *res, gpointer data)
{
  Probe *pr = data;
  g_autoptr (GError) err = NULL;
  g_autoptr (DfAdminHealth) a = df_admin_health_finish (res, &err);
  probe_record (pr->h, pr->name, a, err ? err->message : NULL);
  g_hash_table_remove (pr->h->pending, pr->name);
  g_free (pr->name);
  g_free (pr);
}

static void
probe_start (DfHealth *h, const DfServerView *v, guint16 admin_port)
{
  if (g_hash_table_contains (h->pending, v->name))
    return;                   /* the pending probe's deadline decides */
  Probe *pr = g_new0 (Probe, 1);
  pr->h = h;
  pr->name = g_strdup (v->name);
  g_hash_table_insert (h->pending, pr->name, pr);
  df_admin_health_async (v->address, admin_port, h->cancel, probe_done, pr);
}

/* Replace the views by the DB's list, keeping known health until the
 * new probes answer. */
static void
refresh_views (DfHealth *h, GPtrArray *servers, bool offline)
{
  g_autoptr (GHashTable) old = g_steal_pointer (&h->views);
  h->views = g_hash_table_new_full (g_str_hash, g_str_equal, NULL,
                                    (GDestroyNotify) df_server_view_free);
  gint64 now = df_farm_now_ms ();
  for (guint i = 0; i < servers->len; i++)
    {
      const DfServer *s = servers->pdata[i];
      if (g_strcmp0 (s->kind, DF_SERVER_KIND_STREAM) != 0)
        continue;             /* a bootstrapsvc is no stream target */
      DfServerView *v = g_new0 (DfServerView, 1);
      DfServerView *prev = g_hash_table_lookup (old, s->name);
      v->name = g_strdup (s->name);
      v->address = g_strdup (s->address);
      v->iscsi_address = g_strdup (df_server_iscsi_address (s));
      v->iscsi_port = s->iscsi_port;
      v->nbd_port = s->nbd_port;
      v->admin_port = s->admin_port;
      v->power = s->power;
      v->healthy = prev ? prev->healthy : false;
      v->sessions = prev ? prev->sessions : -1;
      v->error = prev ? g_strdup (prev->error) : g_strdup ("not checked yet");
      /* offline: no heartbeat can be recorded, the probe alone decides */
      v->registry = offline ? DF_SERVER_NEVER_SEEN : df_server_state (s, now);
      if (v->healthy && !registry_ok (v))
        {
          g_message ("health: stream server %s is now unhealthy: %s",
                     v->name, v->error);
          v->healthy = false;
          v->sessions = -1;
        }
      g_hash_table_insert (h->views, v->name, v);
      probe_start (h, v, s->admin_port);
    }
}

/* Offline mode (farm.h): the farm DB is unreachable (err says so), the
 * servers of the local snapshot; NULL when there is none (or err says
 * something else). */
static GPtrArray *
offline_servers (DfHealth *h, const GError *err)
{
  const char *db = df_farm_db_name (h->farm);
  if (!df_farm_error_unreachable (db, err))
    return NULL;
  g_autoptr (DfFarm) snap = df_farm_open_snapshot (df_farm_dir (h->farm), db,
                                                   "bootstrapsvc", NULL);
  return snap != NULL ? df_farm_server_list (snap, NULL) : NULL;
}

static gboolean
round_start (gpointer data)
{
  DfHealth *h = data;
  g_autoptr (GError) err = NULL;
  g_autoptr (GPtrArray) servers = df_farm_server_list (h->farm, &err);
  bool offline = servers == NULL && (servers = offline_servers (h, err));
  bool ok = servers != NULL;
  if (ok != h->farm_ok)
    g_message ("health: farm DB is %s%s%s", ok ? "readable" : "unreadable",
               ok ? "" : ": ", ok ? "" : err->message);
  h->farm_ok = ok;
  if (servers)
    refresh_views (h, servers, offline);
  h->rounds++;
  return G_SOURCE_CONTINUE;
}

DfHealth *
df_health_new (DfFarm *farm, guint interval_ms)
{
  DfHealth *h = g_new0 (DfHealth, 1);
  h->farm = farm;
  h->farm_ok = true;
  h->cancel = g_cancellable_new ();
  h->views = g_hash_table_new_full (g_str_hash, g_str_equal, NULL,
                                    (GDestroyNotify) df_server_view_free);
  h->pending = g_hash_table_new (g_str_hash, g_str_equal);
  round_start (h);
  h->timer = g_timeout_add (interval_ms, round_start, h);
  return h;
}

void
df_health_free (DfHealth *h)
{
  if (!h)
    return;
  g_source_remove (h->timer);
  h->stopping = true;
  /* Cancel the pending probes and let each finish (a cancelled task
   * completes at once) before the tables go away. */
  g_cancellable_cancel (h->cancel);
  while (g_hash_table_size (h->pending) > 0)
    g_main_context_iteration (NULL, TRUE);
  g_hash_table_destroy (h->pending);
  g_object_unref (h->cancel);
  g_hash_table_destroy (h->views);
  g_free (h);
}

bool
df_health_ok (DfHealth *h, const char **why)
{
  const char *w = NULL;
  if (!h->farm_ok)
    w = "farm DB unreadable";
  else
    {
      GHashTableIter it;
      gpointer k, v;
      w = "no healthy stream server";
      g_hash_table_iter_init (&it, h->views);
      while (g_hash_table_iter_next (&it, &k, &v))
        if (((DfServerView *) v)->healthy)
          w = NULL;
    }
  if (why)
    *why = w;
  return w == NULL;
}

GPtrArray *
df_health_healthy (DfHealth *h)
{
  GPtrArray *out =
    g_ptr_array_new_with_free_func ((GDestroyNotify) df_server_view_free);
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init (&it, h->views);
  while (g_hash_table_iter_next (&it, &k, &v))
    if (((DfServerView *) v)->healthy)
      g_ptr_array_add (out, view_copy (v));
  g_ptr_array_sort (out, df_server_view_compare);
  return out;
}

guint
df_health_rounds (DfHealth *h)
{
  return h->rounds;
}
