/* streamsvc: admin HTTP server (see admin.h).
 *
 * Runs on a GLib main context (the main thread's); handlers only read the
 * session table and the export registry, both of which lock internally. */
#include "admin.h"

#include <gio/gunixsocketaddress.h>
#include <glib/gstdio.h>
#include <libsoup/soup.h>
#include <string.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include "admin_auth.h"
#include "common.h"
#include "config.h"
#include "defaults.h"

#define CT_JSON "application/json"
#define STORE_PREFIX "/v1/store/"
#define CT_METRICS "text/plain; version=0.0.4; charset=utf-8"

struct DfAdmin
{
  SoupServer *server;
  DfSessions *sessions; /* borrowed */
  DfExports *exports;   /* borrowed, nullable */
  char *unix_path;      /* unlinked at stop; NULL for TCP */
  char *instance;       /* random id of this server in /v1/health */
};

/* ---- responses -------------------------------------------------------- */

/* Takes body. */
static void
reply (SoupServerMessage *msg, guint status, const char *content_type,
       char *body)
{
  soup_server_message_set_status (msg, status, NULL);
  soup_server_message_set_response (msg, content_type, SOUP_MEMORY_TAKE, body,
                                    strlen (body));
}

/* Takes node. */
static void
reply_json (SoupServerMessage *msg, JsonNode *node)
{
  char *text = json_to_string (node, FALSE);

  json_node_unref (node);
  reply (msg, SOUP_STATUS_OK, CT_JSON, text);
}

static void
handle_health (DfAdmin *a, SoupServerMessage *msg)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "status");
  json_builder_add_string_value (b, "ok");
  json_builder_set_member_name (b, "sessions");
  json_builder_add_int_value (b, df_sessions_count (a->sessions));
  json_builder_set_member_name (b, "version");
  json_builder_add_string_value (b, DF_VERSION);
  /* One id per process: a console reaching the same server twice (its
   * UNIX socket and a TCP address of the server table) counts it once. */
  json_builder_set_member_name (b, "instance");
  json_builder_add_string_value (b, a->instance);
  /* Which farm this server serves: a console counts only its own farm's
   * servers (null when run without a farm, as some tests do). */
  json_builder_set_member_name (b, "farm");
  if (a->exports != NULL)
    json_builder_add_string_value (b, df_exports_farm_uuid (a->exports));
  else
    json_builder_add_null_value (b);
  json_builder_end_object (b);
  reply_json (msg, json_builder_get_root (b));
}

/* ---- cache figures ---------------------------------------------------- */

typedef struct
{
  char *device;
  char *mode;
  DfCacheStats st;
} CacheRow;

static void
cache_row_free (CacheRow *r)
{
  g_free (r->device);
  g_free (r->mode);
  g_free (r);
}

static void
collect_cache (void *opaque, const char *device, const char *mode,
               const DfCacheStats *st)
{
  CacheRow *r = g_new0 (CacheRow, 1);

  r->device = g_strdup (device);
  r->mode = g_strdup (mode);
  r->st = *st;
  g_ptr_array_add (opaque, r);
}

static gint
cache_row_cmp (gconstpointer a, gconstpointer b)
{
  const CacheRow *x = *(CacheRow *const *)a;
  const CacheRow *y = *(CacheRow *const *)b;

  return strcmp (x->device, y->device);
}

/* Live device caches sorted by device.  Returns a new array. */
static GPtrArray *
cache_rows (DfAdmin *a)
{
  GPtrArray *rows
      = g_ptr_array_new_with_free_func ((GDestroyNotify)cache_row_free);

  if (a->exports != NULL)
    df_exports_foreach_cache (a->exports, collect_cache, rows);
  g_ptr_array_sort (rows, cache_row_cmp);
  return rows;
}

static const CacheRow *
cache_row_find (GPtrArray *rows, const char *device)
{
  for (guint i = 0; i < rows->len; i++)
    {
      const CacheRow *r = g_ptr_array_index (rows, i);

      if (strcmp (r->device, device) == 0)
        return r;
    }
  return NULL;
}

/* ---- /v1/sessions ----------------------------------------------------- */

static void
add_cache_bytes (JsonArray *array, guint index, JsonNode *element,
                 gpointer user_data)
{
  JsonObject *o = json_node_get_object (element);
  const char *device
      = json_object_get_string_member_with_default (o, "device", NULL);
  const CacheRow *r = device ? cache_row_find (user_data, device) : NULL;

  if (device == NULL)
    json_object_set_null_member (o, "cache_bytes");
  else
    json_object_set_int_member (o, "cache_bytes",
                                r ? (gint64)r->st.cached_bytes : 0);
}

static void
handle_sessions (DfAdmin *a, SoupServerMessage *msg)
{
  JsonNode *node = df_sessions_to_json (a->sessions);
  g_autoptr (GPtrArray) rows = cache_rows (a);

  json_array_foreach_element (json_node_get_array (node), add_cache_bytes,
                              rows);
  reply_json (msg, node);
}

/* ---- /metrics --------------------------------------------------------- */

/* name{device="...",mode="..."} value  (mode omitted when NULL) */
static void
cache_sample (GString *out, const char *name, const CacheRow *r,
              bool with_mode, uint64_t value)
{
  g_string_append_printf (out, "%s{device=\"", name);
  df_prom_append_escaped (out, r->device);
  if (with_mode)
    {
      g_string_append (out, "\",mode=\"");
      df_prom_append_escaped (out, r->mode);
    }
  g_string_append_printf (out, "\"} %" G_GUINT64_FORMAT "\n", value);
}

static void
metrics_caches (DfAdmin *a, GString *out)
{
  /* One gauge family per figure of DfCacheStats shown. */
  static const struct {
    const char *name;
    const char *help;
    bool with_mode;
    gsize offset;       /* of the uint64_t figure in DfCacheStats */
  } families[] = {
    { "diskfarm_cache_bytes",
      "Bytes held by the device's write cache (RAM + disk).", true,
      G_STRUCT_OFFSET (DfCacheStats, cached_bytes) },
    { "diskfarm_cache_ram_bytes",
      "Bytes of the device's write cache held in RAM.", false,
      G_STRUCT_OFFSET (DfCacheStats, ram_bytes) },
    { "diskfarm_cache_quota_bytes",
      "Write cache quota of the device in bytes (0: none).", false,
      G_STRUCT_OFFSET (DfCacheStats, quota_bytes) },
  };
  g_autoptr (GPtrArray) rows = cache_rows (a);

  for (gsize f = 0; f < G_N_ELEMENTS (families); f++)
    {
      df_prom_family_header (out, families[f].name, "gauge",
                             families[f].help);
      for (guint i = 0; i < rows->len; i++)
        {
          const CacheRow *r = g_ptr_array_index (rows, i);
          const char *st = (const char *) &r->st;

          cache_sample (out, families[f].name, r, families[f].with_mode,
                        *(const uint64_t *) (st + families[f].offset));
        }
    }
}

static void
handle_metrics (DfAdmin *a, SoupServerMessage *msg)
{
  GString *out = g_string_new (NULL);

  df_sessions_metrics (a->sessions, out);
  metrics_caches (a, out);
  if (a->exports != NULL)
    df_exports_metrics (a->exports, out);
  reply (msg, SOUP_STATUS_OK, CT_METRICS, g_string_free (out, FALSE));
}

/* ---- /v1/store/<vdisk>/<N> --------------------------------------------- */

/* "<vdisk>/<N>" after the prefix: *vdisk (new string) and *number. */
static bool
parse_store_path (const char *rest, char **vdisk, int *number)
{
  const char *slash = strchr (rest, '/');
  char *end = NULL;
  guint64 n;

  if (slash == NULL || slash == rest || slash[1] == '\0'
      || !g_ascii_isdigit (slash[1]))
    return false;
  n = g_ascii_strtoull (slash + 1, &end, 10);
  if (*end != '\0' || n > G_MAXINT)
    return false;
  *vdisk = g_strndup (rest, (gsize) (slash - rest));
  *number = (int) n;
  return df_validate_name ("vdisk", *vdisk, NULL);
}

static guint
store_error_status (const GError *e)
{
  if (g_error_matches (e, DF_ERROR, DF_ERROR_NOT_FOUND))
    return SOUP_STATUS_NOT_FOUND;
  if (g_error_matches (e, DF_ERROR, DF_ERROR_CORRUPT)
      || g_error_matches (e, DF_ERROR, DF_ERROR_INVALID))
    return SOUP_STATUS_CONFLICT;
  return SOUP_STATUS_SERVICE_UNAVAILABLE;
}

/* The whole file of a sealed version this server serves (refused when
 * its store state says missing or corrupt), memory-mapped; libsoup
 * answers a Range request with 206 and the part asked (a resumed
 * `diskfarm store sync`). */
static void
handle_store (DfAdmin *a, SoupServerMessage *msg)
{
  const char *path = g_uri_get_path (soup_server_message_get_uri (msg));
  g_autofree char *vdisk = NULL, *file = NULL;
  g_autoptr (GError) err = NULL;
  g_autoptr (GMappedFile) map = NULL;
  g_autoptr (GBytes) bytes = NULL;
  int number = -1;

  if (a->exports == NULL
      || !parse_store_path (path + strlen (STORE_PREFIX), &vdisk, &number))
    {
      reply (msg, SOUP_STATUS_NOT_FOUND, "text/plain",
             g_strdup ("not found: expected " STORE_PREFIX "VDISK/N\n"));
      return;
    }
  file = df_exports_version_file (a->exports, vdisk, number, &err);
  if (file != NULL)
    map = g_mapped_file_new (file, FALSE, &err);
  if (map == NULL)
    {
      reply (msg, store_error_status (err), "text/plain",
             g_strdup_printf ("%s\n", err->message));
      return;
    }
  bytes = g_mapped_file_get_bytes (map);
  soup_server_message_set_status (msg, SOUP_STATUS_OK, NULL);
  soup_message_headers_set_content_type (
      soup_server_message_get_response_headers (msg),
      "application/octet-stream", NULL);
  soup_message_body_append_bytes (
      soup_server_message_get_response_body (msg), bytes);
}

/* ---- offline boot generations ----------------------------------------- */

/* The body {"device": NAME, "generation": N} of msg: true + *device (new)
 * and *generation, else false with a reply sent. */
static bool
parse_generation_body (SoupServerMessage *msg, char **device,
                       gint64 *generation)
{
  SoupMessageBody *body = soup_server_message_get_request_body (msg);
  g_autoptr (GBytes) bytes = soup_message_body_flatten (body);
  g_autoptr (JsonParser) p = json_parser_new ();
  JsonObject *o = NULL;
  gsize len;
  const char *data = g_bytes_get_data (bytes, &len);

  if (len > 0 && len < 4096 && json_parser_load_from_data (p, data, len, NULL)
      && JSON_NODE_HOLDS_OBJECT (json_parser_get_root (p)))
    o = json_node_get_object (json_parser_get_root (p));
  *device = o != NULL ? g_strdup (json_object_get_string_member_with_default (
                            o, "device", NULL))
                      : NULL;
  *generation = o != NULL ? json_object_get_int_member_with_default (
                                o, "generation", -1)
                          : -1;
  if (*device != NULL && *generation >= 0)
    return true;
  g_clear_pointer (device, g_free);
  reply (msg, SOUP_STATUS_BAD_REQUEST, "text/plain",
         g_strdup ("bad request: expected {\"device\": NAME, "
                   "\"generation\": N}\n"));
  return false;
}

/* POST: a bootstrap server gave a boot generation while the farm DB is
 * unreachable (farm.h "offline boot generations"). */
static void
handle_offline_generation (DfAdmin *a, SoupServerMessage *msg)
{
  g_autofree char *device = NULL;
  g_autoptr (GError) err = NULL;
  gint64 generation;

  if (!parse_generation_body (msg, &device, &generation))
    return;
  if (a->exports == NULL
      || !df_exports_offline_generation (a->exports, device, generation,
                                         &err))
    {
      reply (msg, err != NULL ? store_error_status (err)
                              : SOUP_STATUS_NOT_FOUND, "text/plain",
             g_strdup_printf ("%s\n", err != NULL ? err->message
                                                  : "no farm here"));
      return;
    }
  reply (msg, SOUP_STATUS_OK, CT_JSON,
         g_strdup_printf ("{\"device\":\"%s\",\"generation\":%"
                          G_GINT64_FORMAT "}", device, generation));
}

/* ---- dispatch --------------------------------------------------------- */

typedef void (*route_fn) (DfAdmin *a, SoupServerMessage *msg);

static const struct
{
  const char *path;
  bool prefix; /* path and everything under it */
  bool post;   /* POST, else GET and HEAD */
  route_fn fn;
} routes[] = {
  { "/v1/health", false, false, handle_health },
  { "/v1/sessions", false, false, handle_sessions },
  { "/metrics", false, false, handle_metrics },
  { STORE_PREFIX, true, false, handle_store },
  { DF_ADMIN_OFFLINE_GENERATIONS, false, true, handle_offline_generation },
};

static bool
method_allowed (const char *method, bool post)
{
  return post ? strcmp (method, "POST") == 0
              : strcmp (method, "GET") == 0 || strcmp (method, "HEAD") == 0;
}

static void
handle_request (SoupServer *server, SoupServerMessage *msg, const char *path,
                GHashTable *query, gpointer user_data)
{
  const char *method = soup_server_message_get_method (msg);

  for (guint i = 0; i < G_N_ELEMENTS (routes); i++)
    {
      if (routes[i].prefix ? !g_str_has_prefix (path, routes[i].path)
                           : strcmp (path, routes[i].path) != 0)
        continue;
      if (!method_allowed (method, routes[i].post))
        {
          soup_message_headers_replace (
              soup_server_message_get_response_headers (msg), "Allow",
              routes[i].post ? "POST" : "GET, HEAD");
          reply (msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "text/plain",
                 g_strdup ("method not allowed\n"));
          return;
        }
      routes[i].fn (user_data, msg);
      return;
    }
  reply (msg, SOUP_STATUS_NOT_FOUND, "text/plain", g_strdup ("not found\n"));
}

/* ---- listening -------------------------------------------------------- */

/* The socket's directory (DF_RUNTIME_DIR may not exist when streamsvc
 * runs outside systemd): created 0750 in the socket's group. */
static bool
make_socket_dir (const char *path, gid_t group, GError **err)
{
  g_autofree char *dir = g_path_get_dirname (path);

  if (g_file_test (dir, G_FILE_TEST_IS_DIR))
    return true;
  if (g_mkdir_with_parents (dir, 0750) != 0
      || (group != (gid_t)-1 && chown (dir, (uid_t)-1, group) != 0))
    {
      df_set_error_errno (err, errno, "create %s", dir);
      return false;
    }
  return true;
}

/* Who may connect is said by the socket's mode: 0660 in the group. */
static bool
restrict_socket (const char *path, const DfAdminAccess *access, GError **err)
{
  bool give = access->socket_owner != (uid_t)-1
              || access->socket_group != (gid_t)-1;

  if ((give && chown (path, access->socket_owner, access->socket_group) != 0)
      || chmod (path, DF_ADMIN_SOCKET_MODE) != 0)
    {
      df_set_error_errno (err, errno, "%s", path);
      return false;
    }
  return true;
}

bool
df_admin_socket_in_use (const char *path)
{
  g_autoptr (GSocket) sock = g_socket_new (
      G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_DEFAULT,
      NULL);
  g_autoptr (GSocketAddress) sa = g_unix_socket_address_new (path);

  return sock != NULL && g_socket_connect (sock, sa, NULL, NULL);
}

static bool
listen_unix (DfAdmin *a, const char *path, const DfAdminAccess *access,
             GError **err)
{
  g_autoptr (GSocket) sock = NULL;
  g_autoptr (GSocketAddress) sa = g_unix_socket_address_new (path);
  GStatBuf st;

  if (a->unix_path != NULL)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "one UNIX socket only (%s already)", a->unix_path);
      return false;
    }
  if (!make_socket_dir (path, access->socket_group, err))
    return false;
  if (df_admin_socket_in_use (path))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                   "%s: another streamsvc answers there", path);
      return false;
    }
  if (g_lstat (path, &st) == 0 && S_ISSOCK (st.st_mode))
    g_unlink (path); /* stale socket of an earlier run */
  sock = g_socket_new (G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_STREAM,
                       G_SOCKET_PROTOCOL_DEFAULT, err);
  if (sock == NULL || !g_socket_bind (sock, sa, FALSE, err))
    return false;
  a->unix_path = g_strdup (path);
  if (!restrict_socket (path, access, err) || !g_socket_listen (sock, err))
    return false;
  return soup_server_listen_socket (a->server, sock, 0, err);
}

/* host is an address literal or a name resolved now (every address). */
static bool
listen_host (DfAdmin *a, const char *host, guint16 port, GError **err)
{
  g_autoptr (GInetAddress) literal = g_inet_address_new_from_string (host);
  g_autolist (GInetAddress) addrs = NULL;

  if (literal != NULL)
    addrs = g_list_prepend (NULL, g_steal_pointer (&literal));
  else
    addrs = g_resolver_lookup_by_name (g_resolver_get_default (), host, NULL,
                                       err);
  if (addrs == NULL)
    return false;
  for (GList *l = addrs; l != NULL; l = l->next)
    {
      g_autoptr (GSocketAddress) sa
          = g_inet_socket_address_new (l->data, port);

      if (!soup_server_listen (a->server, sa, 0, err))
        return false;
      if (port == 0) /* the other addresses share the chosen port */
        port = df_admin_port (a);
    }
  return true;
}

static bool
admin_listen (DfAdmin *a, const DfListenAddr *addr,
              const DfAdminAccess *access, GError **err)
{
  if (addr->unix_path != NULL)
    return listen_unix (a, addr->unix_path, access, err);
  if (addr->host == NULL)
    return soup_server_listen_all (a->server, addr->port, 0, err);
  return listen_host (a, addr->host, addr->port, err);
}

static bool
admin_listen_all (DfAdmin *a, const DfListenAddr *addrs, gsize n,
                  const DfAdminAccess *access, GError **err)
{
  for (gsize i = 0; i < n; i++)
    if (!admin_listen (a, &addrs[i], access, err))
      return false;
  return true;
}

DfAdmin *
df_admin_start (const DfListenAddr *addrs, gsize n_addrs,
                const DfAdminAccess *access, DfSessions *sessions,
                DfExports *exports, GMainContext *ctx, GError **err)
{
  DfAdmin *a = g_new0 (DfAdmin, 1);
  g_autoptr (SoupAuthDomain) auth = df_admin_auth_new (access->token);
  GError *cause = NULL;
  bool ok;

  a->sessions = sessions;
  a->exports = exports;
  a->instance = g_uuid_string_random ();
  /* SoupServer attaches its sources to the thread-default context. */
  g_main_context_push_thread_default (ctx);
  a->server
      = soup_server_new ("server-header", "diskfarm/" DF_VERSION " ", NULL);
  soup_server_add_auth_domain (a->server, auth); /* before every handler */
  soup_server_add_handler (a->server, NULL, handle_request, a, NULL);
  ok = admin_listen_all (a, addrs, n_addrs, access, &cause);
  g_main_context_pop_thread_default (ctx);
  if (!ok)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_IO, "admin HTTP: cannot listen: %s",
                   cause->message);
      g_error_free (cause);
      df_admin_stop (a);
      return NULL;
    }
  return a;
}

void
df_admin_stop (DfAdmin *a)
{
  if (a == NULL)
    return;
  soup_server_disconnect (a->server);
  g_object_unref (a->server);
  if (a->unix_path != NULL)
    g_unlink (a->unix_path);
  g_free (a->unix_path);
  g_free (a->instance);
  g_free (a);
}

guint16
df_admin_port (DfAdmin *a)
{
  GSList *listeners = soup_server_get_listeners (a->server);
  guint16 port = 0;

  for (GSList *l = listeners; l != NULL && port == 0; l = l->next)
    {
      g_autoptr (GSocketAddress) sa
          = g_socket_get_local_address (l->data, NULL);

      if (sa != NULL && G_IS_INET_SOCKET_ADDRESS (sa))
        port = g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (sa));
    }
  g_slist_free (listeners);
  return port;
}
