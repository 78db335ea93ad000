/* diskfarm bootstrap: stream server health.  See health.h. */
#include "health.h"
#include "common.h"

#include <json-glib/json-glib.h>
#include <libsoup/soup.h>
#include <string.h>

#define HEALTH_TIMEOUT_S 2         /* socket I/O */
#define HEALTH_DEADLINE_S 3        /* whole request, connect to last byte */
#define HEALTH_BODY_MAX 65536

struct DfHealth {
  DfFarm *farm;               /* borrowed */
  SoupSession *session;
  GHashTable *views;          /* name -> DfServerView (owned) */
  bool farm_ok;
  guint rounds;
  guint timer;
  GHashTable *pending;        /* name -> Probe* (owned by the probe) */
  bool stopping;              /* df_health_free: outcomes are dropped */
};

/* One pending /v1/health request.  A probe has a total deadline (an I/O
 * timeout alone lets a server that trickles its answer stay "healthy"
 * forever), reads at most HEALTH_BODY_MAX bytes, and a server gets no new
 * probe while one is pending. */
typedef struct {
  DfHealth *h;
  char *name;
  SoupMessage *msg;
  GCancellable *cancel;       /* owned: deadline and shutdown */
  guint deadline;             /* timeout source, 0 once fired */
  bool timed_out;
  guint8 *buf;                /* HEALTH_BODY_MAX + 1 bytes */
} Probe;

void
df_server_view_free (DfServerView *v)
{
  if (!v)
    return;
  g_free (v->name);
  g_free (v->address);
  g_free (v->error);
  g_free (v);
}

static DfServerView *
view_copy (const DfServerView *v)
{
  DfServerView *c = g_memdup2 (v, sizeof *v);
  c->name = g_strdup (v->name);
  c->address = g_strdup (v->address);
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

/* "status":"ok" and the sessions count from a health body.  A server that
 * says it serves another farm is not one of ours: never listed, its
 * sessions never counted.  One that does not say (a streamsvc older than
 * the farm identity) is still listed, so upgrading bootstrap first does
 * not empty the boot scripts. */
static bool
parse_health (GBytes *body, const char *farm_uuid, gint64 *sessions,
              char **error)
{
  g_autoptr (JsonParser) p = json_parser_new ();
  gsize len;
  const char *data = g_bytes_get_data (body, &len);
  g_autoptr (GError) err = NULL;
  if (!json_parser_load_from_data (p, data, (gssize) len, &err))
    {
      *error = g_strdup_printf ("health answer is not JSON: %s",
                                err->message);
      return false;
    }
  JsonNode *root = json_parser_get_root (p);
  if (!JSON_NODE_HOLDS_OBJECT (root))
    {
      *error = g_strdup ("health answer is not a JSON object");
      return false;
    }
  JsonObject *o = json_node_get_object (root);
  const char *status = json_object_get_string_member_with_default (
    o, "status", "");
  if (!g_str_equal (status, "ok"))
    {
      *error = g_strdup_printf ("health status is '%s'", status);
      return false;
    }
  JsonNode *farm = json_object_get_member (o, "farm");
  const char *uuid = farm && JSON_NODE_HOLDS_VALUE (farm)
                     && json_node_get_value_type (farm) == G_TYPE_STRING
                     ? json_node_get_string (farm) : NULL;
  if (uuid && g_strcmp0 (uuid, farm_uuid) != 0)
    {
      *error = g_strdup_printf ("it serves farm %s, not this farm (%s)",
                                uuid, farm_uuid);
      return false;
    }
  *sessions = json_object_get_int_member_with_default (o, "sessions", 0);
  return true;
}

/* Record the outcome (body NULL: failed with error) and free the probe. */
static void
probe_finish (Probe *pr, GBytes *body, const char *error)
{
  DfHealth *h = pr->h;
  DfServerView *v = h->stopping ? NULL
                                  : g_hash_table_lookup (h->views, pr->name);
  if (v)
    {
      g_clear_pointer (&v->error, g_free);
      guint status = soup_message_get_status (pr->msg);
      if (!body)
        v->error = g_strdup (error);
      else if (status != SOUP_STATUS_OK)
        v->error = g_strdup_printf ("health answer HTTP %u", status);
      bool ok = body && status == SOUP_STATUS_OK
                && parse_health (body, df_farm_uuid (h->farm), &v->sessions,
                                 &v->error);
      if (ok != v->healthy)
        g_message ("health: stream server %s is now %s%s%s", v->name,
                   ok ? "healthy" : "unhealthy", ok ? "" : ": ",
                   ok ? "" : v->error);
      v->healthy = ok;
      if (!ok)
        v->sessions = -1;
    }
  g_hash_table_remove (h->pending, pr->name);
  if (pr->deadline)
    g_source_remove (pr->deadline);
  g_object_unref (pr->cancel);
  g_object_unref (pr->msg);
  g_free (pr->buf);
  g_free (pr->name);
  g_free (pr);
}

static const char *
probe_error (Probe *pr, const GError *err)
{
  if (pr->timed_out)
    return "no complete health answer within " G_STRINGIFY (
      HEALTH_DEADLINE_S) " s";
  return err->message;
}

static void
probe_read (GObject *src, GAsyncResult *res, gpointer data)
{
  Probe *pr = data;
  g_autoptr (GError) err = NULL;
  gsize n = 0;
  bool ok = g_input_stream_read_all_finish (G_INPUT_STREAM (src), res, &n,
                                            &err);
  g_input_stream_close (G_INPUT_STREAM (src), NULL, NULL);
  g_object_unref (src);
  if (!ok)
    {
      probe_finish (pr, NULL, probe_error (pr, err));
      return;
    }
  if (n > HEALTH_BODY_MAX)
    {
      probe_finish (pr, NULL, "health answer larger than "
                    G_STRINGIFY (HEALTH_BODY_MAX) " bytes");
      return;
    }
  g_autoptr (GBytes) body = g_bytes_new (pr->buf, n);
  probe_finish (pr, body, NULL);
}

static void
probe_sent (GObject *src, GAsyncResult *res, gpointer data)
{
  Probe *pr = data;
  g_autoptr (GError) err = NULL;
  GInputStream *in = soup_session_send_finish (SOUP_SESSION (src), res,
                                               &err);
  if (!in)
    {
      probe_finish (pr, NULL, probe_error (pr, err));
      return;
    }
  pr->buf = g_malloc (HEALTH_BODY_MAX + 1);
  g_input_stream_read_all_async (in, pr->buf, HEALTH_BODY_MAX + 1,
                                 G_PRIORITY_DEFAULT, pr->cancel, probe_read,
                                 pr);       /* in: unreffed by probe_read */
}

static gboolean
probe_deadline (gpointer data)
{
  Probe *pr = data;
  pr->deadline = 0;
  pr->timed_out = true;
  g_cancellable_cancel (pr->cancel);
  return G_SOURCE_REMOVE;
}

static void
probe_start (DfHealth *h, const DfServerView *v, guint16 admin_port)
{
  if (g_hash_table_contains (h->pending, v->name))
    return;                   /* the pending probe's deadline decides */
  bool v6 = strchr (v->address, ':') != NULL;
  g_autofree char *url = g_strdup_printf ("http://%s%s%s:%u/v1/health",
                                          v6 ? "[" : "", v->address,
                                          v6 ? "]" : "", admin_port);
  SoupMessage *msg = soup_message_new ("GET", url);
  if (!msg)
    {
      DfServerView *cur = g_hash_table_lookup (h->views, v->name);
      cur->healthy = false;
      g_free (cur->error);
      cur->error = g_strdup_printf ("invalid health URL %s", url);
      return;
    }
  Probe *pr = g_new0 (Probe, 1);
  pr->h = h;
  pr->name = g_strdup (v->name);
  pr->msg = msg;
  pr->cancel = g_cancellable_new ();
  pr->deadline = g_timeout_add_seconds (HEALTH_DEADLINE_S, probe_deadline,
                                        pr);
  g_hash_table_insert (h->pending, pr->name, pr);
  soup_session_send_async (h->session, msg, G_PRIORITY_DEFAULT, pr->cancel,
                           probe_sent, pr);
}

/* Replace the views by the DB's list, keeping known health until the
 * new probes answer. */
static void
refresh_views (DfHealth *h, GPtrArray *servers)
{
  g_autoptr (GHashTable) old = g_steal_pointer (&h->views);
  h->views = g_hash_table_new_full (g_str_hash, g_str_equal, NULL,
                                    (GDestroyNotify) df_server_view_free);
  for (guint i = 0; i < servers->len; i++)
    {
      const DfServer *s = servers->pdata[i];
      DfServerView *v = g_new0 (DfServerView, 1);
      DfServerView *prev = g_hash_table_lookup (old, s->name);
      v->name = g_strdup (s->name);
      v->address = g_strdup (s->address);
      v->iscsi_port = s->iscsi_port;
      v->nbd_port = s->nbd_port;
      v->power = s->power;
      v->healthy = prev ? prev->healthy : false;
      v->sessions = prev ? prev->sessions : -1;
      v->error = prev ? g_strdup (prev->error) : g_strdup ("not checked yet");
      g_hash_table_insert (h->views, v->name, v);
      probe_start (h, v, s->admin_port);
    }
}

static gboolean
round_start (gpointer data)
{
  DfHealth *h = data;
  g_autoptr (GError) err = NULL;
  g_autoptr (GPtrArray) servers = df_farm_server_list (h->farm, &err);
  bool ok = servers != NULL;
  if (ok != h->farm_ok)
    g_message ("health: farm DB is %s%s%s", ok ? "readable" : "unreadable",
               ok ? "" : ": ", ok ? "" : err->message);
  h->farm_ok = ok;
  if (servers)
    refresh_views (h, servers);
  h->rounds++;
  return G_SOURCE_CONTINUE;
}

DfHealth *
df_health_new (DfFarm *farm, guint interval_ms)
{
  DfHealth *h = g_new0 (DfHealth, 1);
  h->farm = farm;
  h->farm_ok = true;
  /* Stream servers are reached directly, never through a proxy.  A NULL
   * resolver turns proxying off in soup's GSocketClient; any resolver at
   * all (even a direct one) makes GIO's GProxyAddressEnumerator load the
   * default one, glib-networking's GNOME resolver, whose GSettings open
   * dconf under $HOME after the privilege drop: ten "unable to create
   * directory '/root/.cache/dconf'" criticals at the first probe. */
  h->session = soup_session_new_with_options ("timeout", HEALTH_TIMEOUT_S,
                                              "idle-timeout", 30,
                                              "user-agent", "diskfarm-bootstrap",
                                              "proxy-resolver", NULL,
                                              NULL);
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
  /* Cancel the pending probes and let each finish (a cancelled operation
   * always completes) before the tables go away. */
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init (&it, h->pending);
  while (g_hash_table_iter_next (&it, &k, &v))
    g_cancellable_cancel (((Probe *) v)->cancel);
  while (g_hash_table_size (h->pending) > 0)
    g_main_context_iteration (NULL, TRUE);
  g_hash_table_destroy (h->pending);
  g_object_unref (h->session);
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
