/* diskfarm: a farm's live sessions from its stream servers (see live.h). */
#include "live.h"
#include "common.h"

#include <string.h>

static void
live_session_free (DfLiveSession *s)
{
  g_free (s->server);
  g_free (s->address);
  g_free (s->proto);
  g_free (s->client);
  g_free (s->export);
  g_free (s->device);
  g_free (s->vdisk);
  g_free (s->cache);
  g_free (s->started);
  g_free (s);
}

static void
live_skip_free (DfLiveSkip *k)
{
  g_free (k->server);
  g_free (k->address);
  g_free (k->reason);
  g_free (k);
}

void
df_live_free (DfLive *live)
{
  if (live == NULL)
    return;
  g_ptr_array_unref (live->sessions);
  g_ptr_array_unref (live->unreachable);
  g_ptr_array_unref (live->foreign);
  g_free (live);
}

/* One admin endpoint to ask. */
typedef struct {
  char *server;   /* nullable */
  DfAdminEndpoint *ep;
  char *address;  /* "host:port" or "unix:PATH", also the dedup key */
} Target;

static void
target_free (Target *t)
{
  g_free (t->server);
  df_admin_endpoint_free (t->ep);
  g_free (t->address);
  g_free (t);
}

/* Takes ep. */
static Target *
target_new (const char *server, DfAdminEndpoint *ep)
{
  Target *t = g_new0 (Target, 1);
  t->server = g_strdup (server);
  t->ep = ep;
  t->address = df_admin_endpoint_text (ep);
  return t;
}

static void
target_add (GPtrArray *targets, Target *t /* taken */)
{
  for (guint i = 0; i < targets->len; i++)
    if (g_ascii_strcasecmp (((Target *) targets->pdata[i])->address,
                            t->address) == 0)
      {
        target_free (t);
        return;
      }
  g_ptr_array_add (targets, t);
}

/* The extra address, or by default the farm's admin socket (new). */
static DfAdminEndpoint *
extra_endpoint (DfFarm *farm, const char *extra, GError **err)
{
  if (extra != NULL)
    return df_admin_endpoint_parse (extra, err);
  g_autofree char *path = df_admin_socket_path (df_farm_dir (farm));
  return df_admin_endpoint_new (NULL, 0, path, NULL);
}

/* The server table, then extra (when not already there).  TCP targets
 * carry the farm's admin token when this user can read it. */
static GPtrArray *
targets_of (DfFarm *farm, const char *extra, GError **err)
{
  g_autoptr (DfAdminEndpoint) xep = extra_endpoint (farm, extra, err);
  if (xep == NULL)
    return NULL;
  g_autoptr (GPtrArray) servers = df_farm_server_list (farm, err);
  if (servers == NULL)
    return NULL;
  g_autoptr (DfSecret) token = df_farm_admin_token (farm, false, NULL);
  GPtrArray *targets
    = g_ptr_array_new_with_free_func ((GDestroyNotify) target_free);
  for (guint i = 0; i < servers->len; i++)
    {
      const DfServer *s = servers->pdata[i];
      target_add (targets, target_new (s->name, df_admin_endpoint_new (
                    s->address, s->admin_port, NULL, token)));
    }
  if (xep->unix_path == NULL && token != NULL)
    xep->token = g_strdup (token);
  target_add (targets, target_new (NULL, g_steal_pointer (&xep)));
  return targets;
}

static void
skip_add (GPtrArray *list, const Target *t, char *reason /* taken */)
{
  DfLiveSkip *k = g_new0 (DfLiveSkip, 1);
  k->server = g_strdup (t->server);
  k->address = g_strdup (t->address);
  k->reason = reason;
  g_ptr_array_add (list, k);
}

/* NULL when t serves farm_uuid, else why its sessions do not count. */
static char *
foreign_reason (const DfAdminHealth *h, const char *farm_uuid)
{
  if (h->farm == NULL)
    return g_strdup ("it does not say which farm it serves (streamsvc "
                     "older than the farm identity?)");
  if (strcmp (h->farm, farm_uuid) != 0)
    {
      g_autofree char *other = df_display_text (h->farm, 64);
      return g_strdup_printf ("it serves farm %s, not this farm (%s)", other,
                              farm_uuid);
    }
  return NULL;
}

/* A text member of a server's answer, made fit for tables and messages
 * (df_display_text), or NULL. */
static char *
member_text (JsonObject *o, const char *name)
{
  g_autofree char *raw = df_json_member_str (o, name);
  return raw ? df_display_text (raw, 256) : NULL;
}

static DfLiveSession *
session_from_json (const Target *t, JsonObject *o)
{
  DfLiveSession *s = g_new0 (DfLiveSession, 1);
  s->server = g_strdup (t->server);
  s->address = g_strdup (t->address);
  s->id = df_json_member_int (o, "id", -1);
  s->proto = member_text (o, "proto");
  s->client = member_text (o, "client");
  s->export = member_text (o, "export");
  s->device = member_text (o, "device");
  s->generation = df_json_member_int (o, "generation", -1);
  s->vdisk = member_text (o, "vdisk");
  s->version = df_json_member_int (o, "version", -1);
  s->cache = member_text (o, "cache");
  s->maintenance = df_json_member_bool (o, "maintenance", false);
  s->started = member_text (o, "started");
  s->bytes_read = df_json_member_int (o, "bytes_read", 0);
  s->bytes_written = df_json_member_int (o, "bytes_written", 0);
  return s;
}

/* What one server said, filled by ask() on a pool thread. */
typedef struct {
  const Target *t;          /* borrowed */
  const char *farm_uuid;    /* borrowed */
  GPtrArray *sessions;      /* DfLiveSession, owned */
  char *instance;           /* the server's process id, or NULL */
  char *unreachable;        /* why, or NULL */
  char *foreign;            /* why, or NULL */
} Answer;

/* Ask one server (runs on a pool thread: touches only its Answer). */
static void
ask (gpointer data, gpointer unused)
{
  Answer *an = data;
  const Target *t = an->t;
  g_autoptr (GError) e = NULL;
  g_autoptr (DfAdminHealth) h = df_admin_health_at (t->ep, &e);
  if (h == NULL)
    {
      an->unreachable = g_strdup (e->message);
      return;
    }
  if ((an->foreign = foreign_reason (h, an->farm_uuid)) != NULL)
    return;
  an->instance = g_strdup (h->instance);
  g_autoptr (JsonNode) root = df_admin_sessions_at (t->ep, &e);
  if (root == NULL)
    {
      an->unreachable = g_strdup (e->message);
      return;
    }
  JsonArray *a = json_node_get_array (root);
  for (guint i = 0; i < json_array_get_length (a); i++)
    {
      JsonNode *n = json_array_get_element (a, i);
      if (JSON_NODE_HOLDS_OBJECT (n))
        g_ptr_array_add (an->sessions,
                         session_from_json (t, json_node_get_object (n)));
    }
}

/* Move an answer into live (in the caller's thread, targets' order).  A
 * server already heard through another address (its socket and its row
 * in the table) is counted once: seen holds the instances merged. */
static void
answer_merge (DfLive *live, Answer *an, GHashTable *seen)
{
  g_autofree char *instance = g_steal_pointer (&an->instance);
  if (!an->unreachable && !an->foreign && instance
      && !g_hash_table_add (seen, g_steal_pointer (&instance)))
    {
      g_ptr_array_unref (an->sessions);
      return;
    }
  if (an->unreachable)
    skip_add (live->unreachable, an->t, g_steal_pointer (&an->unreachable));
  else if (an->foreign)
    skip_add (live->foreign, an->t, g_steal_pointer (&an->foreign));
  else
    {
      live->answered++;
      g_ptr_array_extend_and_steal (live->sessions,
                                    g_steal_pointer (&an->sessions));
      return;
    }
  g_ptr_array_unref (an->sessions);
}

/* Servers are asked at the same time (at most this many at once), so a
 * farm with dead servers answers in about one request deadline. */
#define ASK_THREADS 16

DfLive *
df_live_collect (DfFarm *farm, const char *extra_admin, GError **err)
{
  g_autoptr (GPtrArray) targets = targets_of (farm, extra_admin, err);
  if (targets == NULL)
    return NULL;
  DfLive *live = g_new0 (DfLive, 1);
  live->sessions
    = g_ptr_array_new_with_free_func ((GDestroyNotify) live_session_free);
  live->unreachable
    = g_ptr_array_new_with_free_func ((GDestroyNotify) live_skip_free);
  live->foreign
    = g_ptr_array_new_with_free_func ((GDestroyNotify) live_skip_free);
  g_autofree Answer *answers = g_new0 (Answer, MAX (targets->len, 1));
  GThreadPool *pool = g_thread_pool_new (ask, NULL,
                                         MIN (targets->len, ASK_THREADS) + 1,
                                         FALSE, NULL);
  for (guint i = 0; i < targets->len; i++)
    {
      answers[i].t = targets->pdata[i];
      answers[i].farm_uuid = df_farm_uuid (farm);
      answers[i].sessions = g_ptr_array_new_with_free_func (
        (GDestroyNotify) live_session_free);
      g_thread_pool_push (pool, &answers[i], NULL);
    }
  g_thread_pool_free (pool, FALSE, TRUE);   /* waits for every answer */
  g_autoptr (GHashTable) seen = g_hash_table_new_full (g_str_hash,
                                                       g_str_equal, g_free,
                                                       NULL);
  for (guint i = 0; i < targets->len; i++)
    answer_merge (live, &answers[i], seen);
  return live;
}

char *
df_live_session_describe (const DfLiveSession *s)
{
  g_autofree char *from = s->client
    ? g_strdup_printf (", %s from %s", s->proto ? s->proto : "session",
                       s->client) : g_strdup ("");
  if (s->server)
    return g_strdup_printf ("server %s (%s, session %" G_GINT64_FORMAT "%s)",
                            s->server, s->address, s->id, from);
  return g_strdup_printf ("server %s (session %" G_GINT64_FORMAT "%s)",
                          s->address, s->id, from);
}

GPtrArray *
df_live_device_sessions (const DfLive *live, const DfDevice *d)
{
  GPtrArray *out = g_ptr_array_new ();
  for (guint i = 0; i < live->sessions->len; i++)
    {
      DfLiveSession *s = live->sessions->pdata[i];
      char mac[18];
      if (s->device == NULL)
        continue;
      if (strcmp (s->device, d->name) == 0
          || (df_parse_mac (s->device, mac, NULL)
              && strcmp (mac, d->mac) == 0))
        g_ptr_array_add (out, s);
    }
  return out;
}

bool
df_live_unknown (const DfLive *live)
{
  return live->answered == 0;
}

bool
df_live_refuse (const DfLive *live, const DfDevice *d, bool force,
                const char *what, GError **err)
{
  if (force)
    return true;
  g_autoptr (GPtrArray) mine = df_live_device_sessions (live, d);
  if (mine->len == 0)
    return true;
  g_autofree char *where = df_live_session_describe (mine->pdata[0]);
  g_autofree char *more = mine->len > 1
    ? g_strdup_printf (" and %u more session(s)", mine->len - 1)
    : g_strdup ("");
  g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
               "%sdevice %s is live on %s%s: stop it first or use --force",
               what ? what : "", d->name, where, more);
  return false;
}
