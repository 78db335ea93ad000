/* diskfarm: client of streamsvc's admin HTTP API (see admin-client.h). */
#include "admin-client.h"
#include "common.h"

#include <gio/gio.h>
#include <gio/gunixsocketaddress.h>
#include <libsoup/soup.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

/* Decimal 1-65535, nothing else. */
static bool
port_ok (const char *s, guint16 *port)
{
  gsize n = strlen (s);
  if (n > 5 || !df_all_digits (s, n))
    return false;
  guint64 v = g_ascii_strtoull (s, NULL, 10);
  if (v < 1 || v > 65535)
    return false;
  *port = (guint16) v;
  return true;
}

bool
df_admin_addr_parse (const char *addr, char **host, guint16 *port,
                     GError **err)
{
  const char *a = addr ? addr : "";
  g_autofree char *h = NULL;
  const char *port_text = NULL;
  guint16 p = DF_ADMIN_PORT;
  /* the farm's one host rule (df_validate_host: RFC 1123 or a literal) */
  if (!df_split_host_port (a, &h, &port_text)
      || !df_validate_host ("admin address", h, NULL)
      || (port_text && !port_ok (port_text, &p)))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "invalid admin address '%s': expected HOST:PORT (port "
                   "1-65535, IPv6 as [ADDR]:PORT)", a);
      return false;
    }
  *host = g_steal_pointer (&h);
  *port = p;
  return true;
}

/* "host:port", "[v6]:port" for messages (new string). */
static char *
addr_text (const char *host, guint16 port)
{
  return strchr (host, ':') ? g_strdup_printf ("[%s]:%u", host, port)
                            : g_strdup_printf ("%s:%u", host, port);
}

void
df_admin_endpoint_free (DfAdminEndpoint *ep)
{
  if (ep == NULL)
    return;
  g_free (ep->host);
  g_free (ep->unix_path);
  df_secret_free (ep->token);
  g_free (ep);
}

DfAdminEndpoint *
df_admin_endpoint_new (const char *host, guint16 port, const char *unix_path,
                       const char *token)
{
  g_return_val_if_fail ((host == NULL) != (unix_path == NULL), NULL);
  DfAdminEndpoint *ep = g_new0 (DfAdminEndpoint, 1);
  ep->host = g_strdup (host);
  ep->port = port;
  ep->unix_path = g_strdup (unix_path);
  ep->token = g_strdup (token);
  return ep;
}

DfAdminEndpoint *
df_admin_endpoint_parse (const char *addr, GError **err)
{
  if (addr && g_str_has_prefix (addr, "unix:"))
    {
      if (addr[5] != '/')
        {
          g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                       "invalid admin address '%s': unix:PATH needs an "
                       "absolute path", addr);
          return NULL;
        }
      return df_admin_endpoint_new (NULL, 0, addr + 5, NULL);
    }
  g_autofree char *host = NULL;
  guint16 port;
  if (!df_admin_addr_parse (addr, &host, &port, err))
    return NULL;
  return df_admin_endpoint_new (host, port, NULL, NULL);
}

char *
df_admin_endpoint_text (const DfAdminEndpoint *ep)
{
  return ep->unix_path ? g_strdup_printf ("unix:%s", ep->unix_path)
                       : addr_text (ep->host, ep->port);
}

/* The whole body of in, at most DF_ADMIN_MAX_BODY bytes (new bytes, NUL
 * terminated), or NULL + err. */
static GByteArray *
read_body (GInputStream *in, GCancellable *cancel, GError **err)
{
  g_autoptr (GByteArray) body = g_byte_array_new ();
  guint8 buf[16384];
  for (;;)
    {
      gssize n = g_input_stream_read (in, buf, sizeof buf, cancel, err);
      if (n < 0)
        return NULL;
      if (n == 0)
        break;
      if (body->len + (gsize) n > DF_ADMIN_MAX_BODY)
        {
          g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                       "answer larger than %u bytes", DF_ADMIN_MAX_BODY);
          return NULL;
        }
      g_byte_array_append (body, buf, (guint) n);
    }
  g_byte_array_append (body, (const guint8 *) "", 1);
  return g_steal_pointer (&body);
}

/* A whole-request deadline: an I/O timeout alone lets a server that
 * trickles its answer a byte at a time hold the console forever.  A
 * watcher thread cancels the request when DF_ADMIN_TIMEOUT_S have passed
 * since deadline_start and deadline_stop has not been called. */
typedef struct {
  GMutex lock;
  GCond cond;
  bool done;
  GCancellable *cancel;   /* owned */
  GThread *thread;
} Deadline;

static gpointer
deadline_watch (gpointer data)
{
  Deadline *d = data;
  gint64 end = g_get_monotonic_time ()
               + DF_ADMIN_TIMEOUT_S * G_TIME_SPAN_SECOND;
  g_mutex_lock (&d->lock);
  while (!d->done)
    if (!g_cond_wait_until (&d->cond, &d->lock, end))
      {
        g_cancellable_cancel (d->cancel);
        break;
      }
  g_mutex_unlock (&d->lock);
  return NULL;
}

static void
deadline_start (Deadline *d)
{
  g_mutex_init (&d->lock);
  g_cond_init (&d->cond);
  d->done = false;
  d->cancel = g_cancellable_new ();
  d->thread = g_thread_new ("admin-deadline", deadline_watch, d);
}

/* Stop the watcher; true when the deadline had passed. */
static bool
deadline_stop (Deadline *d)
{
  g_mutex_lock (&d->lock);
  d->done = true;
  g_cond_signal (&d->cond);
  g_mutex_unlock (&d->lock);
  g_thread_join (d->thread);
  bool expired = g_cancellable_is_cancelled (d->cancel);
  g_object_unref (d->cancel);
  g_mutex_clear (&d->lock);
  g_cond_clear (&d->cond);
  return expired;
}

/* The session for ep: no proxy, the request timeout, and for a UNIX
 * socket the socket as the place to connect to (new). */
/* GObject class initialisation must not race between the threads that
 * ask several servers at once (df_live_collect's pool, bootstrap's health
 * probes): two threads creating their first GUnixSocketAddress and
 * SoupSession at the same moment deadlocked in GType.  The first request
 * makes one of each, under a g_once, before any other can start. */
static void
ensure_classes (void)
{
  static gsize done = 0;
  if (g_once_init_enter (&done))
    {
      GObject *made[] = {
        G_OBJECT (g_unix_socket_address_new ("/")),
        G_OBJECT (g_inet_socket_address_new_from_string ("127.0.0.1", 1)),
        G_OBJECT (soup_session_new ()),
        G_OBJECT (soup_message_new ("GET", "http://localhost/")),
      };
      for (guint k = 0; k < G_N_ELEMENTS (made); k++)
        g_object_unref (made[k]);
      g_once_init_leave (&done, 1);
    }
}

static SoupSession *
session_timeout (const DfAdminEndpoint *ep, guint timeout_s)
{
  ensure_classes ();
  if (ep->unix_path == NULL)
    return soup_session_new_with_options (
      "timeout", timeout_s, "proxy-resolver", NULL, NULL);
  g_autoptr (GSocketAddress) sa = g_unix_socket_address_new (ep->unix_path);
  return soup_session_new_with_options (
    "timeout", timeout_s, "proxy-resolver", NULL,
    "remote-connectable", sa, NULL);
}

static SoupSession *
session_for (const DfAdminEndpoint *ep)
{
  return session_timeout (ep, DF_ADMIN_TIMEOUT_S);
}

/* A request (GET, or POST of the JSON body when body is not NULL) of
 * path on ep, with the bearer token over TCP (new). */
static SoupMessage *
request_for (const DfAdminEndpoint *ep, const char *path, const char *body)
{
  g_autoptr (GUri) uri = g_uri_build (
    G_URI_FLAGS_NONE, "http", NULL, ep->unix_path ? "localhost" : ep->host,
    ep->unix_path ? -1 : ep->port, path, NULL, NULL);
  SoupMessage *msg = soup_message_new_from_uri (body ? "POST" : "GET", uri);
  if (body != NULL)
    {
      g_autoptr (GBytes) b = g_bytes_new (body, strlen (body));
      soup_message_set_request_body_from_bytes (msg, "application/json", b);
    }
  if (ep->token && ep->unix_path == NULL)
    {
      g_autoptr (DfSecret) auth = g_strconcat ("Bearer ", ep->token, NULL);
      soup_message_headers_replace (soup_message_get_request_headers (msg),
                                    "Authorization", auth);
    }
  return msg;
}

/* One request (as request_for) within the deadline's cancellable; the
 * body of a 200 answer, or NULL + err (unprefixed). */
static GByteArray *
http_call_within (const DfAdminEndpoint *ep, const char *path,
                  const char *post, GCancellable *cancel, GError **err)
{
  const char *method = post ? "POST" : "GET";
  g_autoptr (SoupSession) s = session_for (ep);
  g_autoptr (SoupMessage) msg = request_for (ep, path, post);
  g_autoptr (GError) cause = NULL;
  g_autoptr (GInputStream) in = soup_session_send (s, msg, cancel, &cause);
  if (in == NULL)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_IO, "%s", cause->message);
      return NULL;
    }
  guint status = soup_message_get_status (msg);
  if (status == SOUP_STATUS_UNAUTHORIZED)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID, "%s %s: HTTP 401 "
                   "Unauthorized (%s)", method, path, ep->token
                   ? "the farm's admin token was refused"
                   : "no admin token: the farm has none, or farm.db is "
                     "not readable by this user");
      return NULL;
    }
  if (status != SOUP_STATUS_OK)
    {
      const char *phrase = soup_message_get_reason_phrase (msg);
      g_autofree char *reason = df_display_text (phrase ? phrase : "", 64);
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID, "%s %s: HTTP %u %s",
                   method, path, status, reason);
      return NULL;
    }
  GByteArray *body = read_body (in, cancel, &cause);
  if (body == NULL)
    g_set_error (err, DF_ERROR, cause->domain == DF_ERROR ? cause->code
                                                          : DF_ERROR_IO,
                 "%s %s: %s", method, path, cause->message);
  return body;
}

static GByteArray *
http_call (const DfAdminEndpoint *ep, const char *path, const char *post,
           GError **err)
{
  Deadline d;
  g_autoptr (GError) local = NULL;
  deadline_start (&d);
  GByteArray *body = http_call_within (ep, path, post, d.cancel, &local);
  if (deadline_stop (&d) && body == NULL)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_IO,
                   "%s %s: no complete answer within %d s",
                   post ? "POST" : "GET", path, DF_ADMIN_TIMEOUT_S);
      return NULL;
    }
  if (body == NULL)
    g_propagate_error (err, g_steal_pointer (&local));
  return body;
}

JsonNode *
df_admin_get_at (const DfAdminEndpoint *ep, const char *path, GError **err)
{
  g_autofree char *where = df_admin_endpoint_text (ep);
  g_autoptr (GByteArray) body = http_call (ep, path, NULL, err);
  if (body == NULL)
    {
      g_prefix_error (err, "admin API at %s: ", where);
      return NULL;
    }
  g_autoptr (GError) cause = NULL;
  JsonNode *root = json_from_string ((const char *) body->data, &cause);
  if (root == NULL)
    {
      g_autofree char *why = df_display_text (cause ? cause->message
                                                    : "empty answer", 120);
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "admin API at %s: GET %s: not JSON (%s)", where, path, why);
    }
  return root;
}

bool
df_admin_offline_generation_at (const DfAdminEndpoint *ep,
                                const char *device, gint64 generation,
                                GError **err)
{
  g_autofree char *where = df_admin_endpoint_text (ep);
  g_autofree char *body = g_strdup_printf (
      "{\"device\":\"%s\",\"generation\":%" G_GINT64_FORMAT "}", device,
      generation);
  g_autoptr (GByteArray) answer = http_call (ep, DF_ADMIN_OFFLINE_GENERATIONS,
                                             body, err);
  if (answer == NULL)
    g_prefix_error (err, "admin API at %s: ", where);
  return answer != NULL;
}

JsonNode *
df_admin_get (const char *host, guint16 port, const char *path, GError **err)
{
  g_autoptr (DfAdminEndpoint) ep = df_admin_endpoint_new (host, port, NULL,
                                                          NULL);
  return df_admin_get_at (ep, path, err);
}

void
df_admin_health_free (DfAdminHealth *h)
{
  if (h == NULL)
    return;
  g_free (h->status);
  g_free (h->version);
  g_free (h->farm);
  g_free (h->instance);
  g_free (h);
}

/* Member name of o when it is a value of type (borrowed), else NULL. */
static JsonNode *
member_of_type (JsonObject *o, const char *name, GType type)
{
  JsonNode *n = json_object_get_member (o, name);
  return n && JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == type
           ? n : NULL;
}

char *
df_json_member_str (JsonObject *o, const char *name)
{
  JsonNode *n = member_of_type (o, name, G_TYPE_STRING);
  return n ? g_strdup (json_node_get_string (n)) : NULL;
}

gint64
df_json_member_int (JsonObject *o, const char *name, gint64 absent)
{
  JsonNode *n = member_of_type (o, name, G_TYPE_INT64);
  return n ? json_node_get_int (n) : absent;
}

bool
df_json_member_bool (JsonObject *o, const char *name, bool absent)
{
  JsonNode *n = member_of_type (o, name, G_TYPE_BOOLEAN);
  return n ? json_node_get_boolean (n) : absent;
}

/* GET path as JSON whose root is a type (type_name names it in the
 * error): the root (caller unrefs) or NULL + err. */
static JsonNode *
get_json_as (const DfAdminEndpoint *ep, const char *path, JsonNodeType type,
             const char *type_name, GError **err)
{
  JsonNode *root = df_admin_get_at (ep, path, err);
  if (root != NULL && JSON_NODE_TYPE (root) != type)
    {
      g_autofree char *where = df_admin_endpoint_text (ep);
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "admin API at %s: %s is not a JSON %s", where, path,
                   type_name);
      g_clear_pointer (&root, json_node_unref);
    }
  return root;
}

DfAdminHealth *
df_admin_health_at (const DfAdminEndpoint *ep, GError **err)
{
  g_autoptr (JsonNode) root = get_json_as (ep, "/v1/health", JSON_NODE_OBJECT,
                                           "object", err);
  if (root == NULL)
    return NULL;
  JsonObject *o = json_node_get_object (root);
  DfAdminHealth *h = g_new0 (DfAdminHealth, 1);
  h->status = df_json_member_str (o, "status");
  h->version = df_json_member_str (o, "version");
  h->farm = df_json_member_str (o, "farm");
  h->instance = df_json_member_str (o, "instance");
  h->sessions = df_json_member_int (o, "sessions", -1);
  return h;
}

DfAdminHealth *
df_admin_health (const char *host, guint16 port, GError **err)
{
  g_autoptr (DfAdminEndpoint) ep = df_admin_endpoint_new (host, port, NULL,
                                                          NULL);
  return df_admin_health_at (ep, err);
}

typedef struct {
  char *host;
  guint16 port;
} HealthReq;

static void
health_req_free (HealthReq *r)
{
  g_free (r->host);
  g_free (r);
}

static void
health_thread (GTask *task, gpointer src, gpointer data, GCancellable *cancel)
{
  HealthReq *r = data;
  GError *err = NULL;
  DfAdminHealth *h = df_admin_health (r->host, r->port, &err);
  if (h)
    g_task_return_pointer (task, h, (GDestroyNotify) df_admin_health_free);
  else
    g_task_return_error (task, err);
}

void
df_admin_health_async (const char *host, guint16 port, GCancellable *cancel,
                       GAsyncReadyCallback done, gpointer data)
{
  HealthReq *r = g_new0 (HealthReq, 1);
  r->host = g_strdup (host);
  r->port = port;
  g_autoptr (GTask) task = g_task_new (NULL, cancel, done, data);
  g_task_set_task_data (task, r, (GDestroyNotify) health_req_free);
  g_task_set_return_on_cancel (task, TRUE);
  g_task_run_in_thread (task, health_thread);
}

DfAdminHealth *
df_admin_health_finish (GAsyncResult *res, GError **err)
{
  return g_task_propagate_pointer (G_TASK (res), err);
}

JsonNode *
df_admin_sessions_at (const DfAdminEndpoint *ep, GError **err)
{
  return get_json_as (ep, "/v1/sessions", JSON_NODE_ARRAY, "array", err);
}

JsonNode *
df_admin_sessions (const char *host, guint16 port, GError **err)
{
  g_autoptr (DfAdminEndpoint) ep = df_admin_endpoint_new (host, port, NULL,
                                                          NULL);
  return df_admin_sessions_at (ep, err);
}

/* ---- file download ------------------------------------------------------ */

/* Sleep so that moved bytes since t0 take at least moved / bwlimit s. */
static void
throttle (guint64 bwlimit, gint64 t0, gint64 moved)
{
  if (bwlimit == 0)
    return;
  gint64 due = t0 + (gint64) ((guint64) moved * G_USEC_PER_SEC / bwlimit);
  gint64 now = g_get_monotonic_time ();
  if (due > now)
    g_usleep ((gulong) (due - now));
}

/* The status of msg as an error (unprefixed); true for 200/206/416. */
static bool
download_status (SoupMessage *msg, const char *path, GError **err)
{
  guint status = soup_message_get_status (msg);
  if (status == SOUP_STATUS_OK || status == SOUP_STATUS_PARTIAL_CONTENT
      || status == SOUP_STATUS_REQUESTED_RANGE_NOT_SATISFIABLE)
    return true;
  if (status == SOUP_STATUS_UNAUTHORIZED)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID, "GET %s: HTTP 401 "
                   "Unauthorized (the farm's admin token is missing or was "
                   "refused)", path);
      return false;
    }
  const char *phrase = soup_message_get_reason_phrase (msg);
  g_autofree char *reason = df_display_text (phrase ? phrase : "", 64);
  g_set_error (err, DF_ERROR, status == SOUP_STATUS_NOT_FOUND
                                ? DF_ERROR_NOT_FOUND : DF_ERROR_INVALID,
               "GET %s: HTTP %u %s", path, status, reason);
  return false;
}

/* Copy in to fd from *at on; *at follows. */
static bool
download_body (GInputStream *in, int fd, gint64 *at, gint64 total,
               guint64 bwlimit, DfAdminProgress progress, gpointer data,
               GError **err)
{
  enum { CHUNK = 256 * 1024 };
  g_autofree guint8 *buf = g_malloc (CHUNK);
  gint64 t0 = g_get_monotonic_time (), moved = 0;
  for (;;)
    {
      gssize n = g_input_stream_read (in, buf, CHUNK, NULL, err);
      if (n < 0)
        return false;
      if (n == 0)
        return true;
      if (df_pwrite_all (fd, buf, (size_t) n, (uint64_t) *at) < 0)
        {
          df_set_error_errno (err, errno, "write");
          return false;
        }
      *at += n;
      moved += n;
      if (progress)
        progress (*at, total, data);
      throttle (bwlimit, t0, moved);
    }
}

static bool
download_within (SoupSession *s, SoupMessage *msg, const char *path, int fd,
                 gint64 offset, guint64 bwlimit, DfAdminProgress progress,
                 gpointer data, gint64 *size, GError **err)
{
  g_autoptr (GError) cause = NULL;
  g_autoptr (GInputStream) in = soup_session_send (s, msg, NULL, &cause);
  if (in == NULL)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_IO, "%s", cause->message);
      return false;
    }
  if (!download_status (msg, path, err))
    return false;
  SoupMessageHeaders *h = soup_message_get_response_headers (msg);
  guint status = soup_message_get_status (msg);
  goffset start = 0, end = 0, total = -1;
  if (status == SOUP_STATUS_REQUESTED_RANGE_NOT_SATISFIABLE)
    {
      *size = offset; /* nothing past what is there */
      return true;
    }
  if (status == SOUP_STATUS_PARTIAL_CONTENT
      && (!soup_message_headers_get_content_range (h, &start, &end, &total)
          || start != offset))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "GET %s: a partial answer not starting at %" G_GINT64_FORMAT,
                   path, offset);
      return false;
    }
  gint64 at = status == SOUP_STATUS_OK ? 0 : offset;
  if (status == SOUP_STATUS_OK)
    {
      total = soup_message_headers_get_content_length (h);
      if (ftruncate (fd, 0) < 0)
        {
          df_set_error_errno (err, errno, "truncate");
          return false;
        }
    }
  if (!download_body (in, fd, &at, total, bwlimit, progress, data, &cause))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_IO, "GET %s: %s at byte %"
                   G_GINT64_FORMAT, path, cause->message, at);
      return false;
    }
  *size = at;
  return true;
}

bool
df_admin_download (const DfAdminEndpoint *ep, const char *path, int fd,
                   gint64 offset, guint64 bwlimit, DfAdminProgress progress,
                   gpointer data, gint64 *size, GError **err)
{
  g_autofree char *where = df_admin_endpoint_text (ep);
  g_autoptr (SoupSession) s = session_timeout (ep, DF_ADMIN_IO_TIMEOUT_S);
  g_autoptr (SoupMessage) msg = request_for (ep, path, NULL);
  if (offset > 0)
    soup_message_headers_set_range (soup_message_get_request_headers (msg),
                                    offset, -1);
  if (!download_within (s, msg, path, fd, offset, bwlimit, progress, data,
                        size, err))
    {
      g_prefix_error (err, "admin API at %s: ", where);
      return false;
    }
  return true;
}
