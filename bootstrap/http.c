/* diskfarm bootstrap: HTTP boot scripts and files.  See http.h.
 *
 * Every answer to /boot.ipxe is an iPXE script, even a refusal: iPXE shows
 * a failed fetch as a bare error code, a script can say what is wrong on
 * the target's screen.  Refusals keep an HTTP error status for curl. */
#include "http.h"
#include "beneath.h"
#include "script.h"
#include "tftp_proto.h"
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <libsoup/soup.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct DfBootHttp {
  SoupServer *server;
  DfFarm *farm;             /* borrowed */
  DfHealth *health;         /* borrowed */
  int root_fd;
  char *address;
};

static void
reply_text (SoupServerMessage *msg, guint status, char *text /* taken */)
{
  soup_server_message_set_status (msg, status, NULL);
  soup_server_message_set_response (msg, "text/plain; charset=utf-8",
                                    SOUP_MEMORY_TAKE, text, strlen (text));
}

/* reply_text for a script that may carry a CHAP secret: the body is
 * wiped when libsoup lets go of it. */
static void
reply_secret (SoupServerMessage *msg, guint status, char *text /* taken */)
{
  g_autoptr (GBytes) body = g_bytes_new_with_free_func (
    text, strlen (text), (GDestroyNotify) df_secret_free, text);
  soup_server_message_set_status (msg, status, NULL);
  soup_message_headers_set_content_type (
    soup_server_message_get_response_headers (msg),
    "text/plain; charset=utf-8", NULL);
  soup_message_body_append_bytes (soup_server_message_get_response_body (msg),
                                  body);
}

static void
reply_message (SoupServerMessage *msg, guint status, const char *title,
               const char *message)
{
  reply_text (msg, status, df_script_message (title, message));
}

/* ---- /boot.ipxe ------------------------------------------------------- */

/* The device for mac: existing, or auto-added.  NULL + a script sent. */
static DfDevice *
resolve_device (DfBootHttp *h, SoupServerMessage *msg, const char *mac)
{
  g_autoptr (GError) err = NULL;
  DfDevice *d = df_farm_device_get (h->farm, mac, &err);
  if (d)
    return d;
  if (!g_error_matches (err, DF_ERROR, DF_ERROR_NOT_FOUND))
    {
      g_message ("http: boot.ipxe for %s: %s", mac, err->message);
      reply_message (msg, 500, "farm database error", err->message);
      return NULL;
    }
  g_clear_error (&err);
  g_autofree char *name = NULL;
  if (!df_farm_auto_add_device (h->farm, mac, &name, &err))
    {
      bool disabled = g_error_matches (err, DF_ERROR, DF_ERROR_UNSUPPORTED);
      g_message ("http: boot.ipxe for %s: device not registered%s%s", mac,
                 disabled ? "" : ", auto-add failed: ",
                 disabled ? "" : err->message);
      g_autofree char *text = g_strdup_printf (
        "this machine (MAC %s) is not registered in the farm. Ask an "
        "administrator to run: diskfarm device add NAME --mac %s", mac, mac);
      /* 200: iPXE runs only scripts fetched with a 2xx status, and the
       * message must reach the screen. */
      soup_message_headers_replace (
        soup_server_message_get_response_headers (msg), "X-Diskfarm-Status",
        "not-registered");
      reply_message (msg, 200, "device not registered", text);
      return NULL;
    }
  g_message ("http: auto-added device %s for %s", name, mac);
  d = df_farm_device_get (h->farm, name, &err);
  if (!d)
    reply_message (msg, 500, "farm database error", err->message);
  return d;
}

static char *
render_for (DfBootHttp *h, const DfDevice *d, gint64 generation,
            GPtrArray *servers, GError **err)
{
  g_autoptr (DfChap) chap = df_farm_chap_get (h->farm, d->name, err);
  if (!chap)
    return NULL;
  g_autofree DfScriptTarget *t = g_new0 (DfScriptTarget, servers->len);
  for (guint i = 0; i < servers->len; i++)
    {
      const DfServerView *v = servers->pdata[i];
      t[i].address = v->address;
      t[i].port = v->iscsi_port;
    }
  DfScriptParams p = {
    .device = d->name, .vdisk = d->vdisk, .generation = generation,
    .chap_user = chap->user, .chap_secret = chap->secret, .targets = t,
    .n_targets = servers->len, .rendered_by = h->address,
  };
  gboolean dropped = FALSE;
  char *script = df_script_render (&p, &dropped);
  if (!script)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "device %s: its name or a stream server address has "
                   "characters that cannot go into an iPXE script", d->name);
      return NULL;
    }
  if (dropped)
    g_message ("http: %s: CHAP credentials have characters iPXE cannot "
               "take literally; left out of the script", d->name);
  return script;
}

/* How many times key appears in the request's query string. */
static guint
query_count (SoupServerMessage *msg, const char *key)
{
  const char *q = g_uri_get_query (soup_server_message_get_uri (msg));
  GUriParamsIter it;
  char *k = NULL;
  guint n = 0;
  if (!q)
    return 0;
  g_uri_params_iter_init (&it, q, -1, "&;", G_URI_PARAMS_WWW_FORM);
  while (g_uri_params_iter_next (&it, &k, NULL, NULL))
    {
      n += g_str_equal (k, key);
      g_free (k);
    }
  return n;
}

/* The uuid parameter for the log: a UUID as iPXE's ${uuid} prints it
 * (hex digits and dashes), else a marker; never raw client text. */
static const char *
uuid_for_log (const char *uuid)
{
  if (!uuid)
    return NULL;
  if (!*uuid || strlen (uuid) > 36)
    return "(invalid)";
  for (const char *c = uuid; *c; c++)
    if (!g_ascii_isxdigit (*c) && *c != '-')
      return "(invalid)";
  return uuid;
}

static void
handle_boot (DfBootHttp *h, SoupServerMessage *msg, GHashTable *query)
{
  const char *why = NULL;
  if (!df_health_ok (h->health, &why))
    {
      g_message ("http: boot.ipxe refused: %s", why);
      reply_message (msg, 503, "boot server unavailable", why);
      return;
    }
  const char *mac_s = query ? g_hash_table_lookup (query, "mac") : NULL;
  char mac[18];
  g_autoptr (GError) err = NULL;
  if (query_count (msg, "mac") > 1 || query_count (msg, "uuid") > 1)
    {
      reply_message (msg, 400, "bad request",
                     "boot.ipxe takes one mac= and at most one uuid=");
      return;
    }
  if (!mac_s || !df_parse_mac (mac_s, mac, &err))
    {
      reply_message (msg, 400, "bad request",
                     mac_s ? err->message : "boot.ipxe needs ?mac=");
      return;
    }
  g_autoptr (DfDevice) d = resolve_device (h, msg, mac);
  if (!d)
    return;
  gint64 gen = 0;
  g_autoptr (GPtrArray) servers = df_health_healthy (h->health);
  if (servers->len == 0)
    {
      reply_message (msg, 503, "boot server unavailable",
                     "no healthy stream server");
      return;
    }
  if (!df_farm_device_new_generation (h->farm, d->name, &gen, &err))
    {
      g_message ("http: %s: new boot generation: %s", d->name, err->message);
      reply_message (msg, 500, "farm database error", err->message);
      return;
    }
  char *script = render_for (h, d, gen, servers, &err);
  if (!script)
    {
      g_message ("http: boot.ipxe for %s: %s", d->name, err->message);
      reply_message (msg, 500, "cannot render the boot script", err->message);
      return;
    }
  const char *uuid = uuid_for_log (query ? g_hash_table_lookup (query, "uuid")
                                          : NULL);
  g_message ("http: boot.ipxe for %s (%s%s%s) generation %" G_GINT64_FORMAT
             ", %u stream server%s, first %s", d->name, mac,
             uuid ? ", uuid " : "", uuid ? uuid : "", gen, servers->len,
             servers->len == 1 ? "" : "s",
             ((DfServerView *) servers->pdata[0])->name);
  reply_secret (msg, 200, script);
}

/* ---- static files ----------------------------------------------------- */

static void
free_mapped (gpointer p)
{
  g_mapped_file_unref (p);
}

static void
handle_file (DfBootHttp *h, SoupServerMessage *msg, const char *path)
{
  char rel[DF_TFTP_NAME_MAX + 1];
  g_autoptr (GError) err = NULL;
  if (strlen (path) > DF_TFTP_NAME_MAX + 1 || !df_tftp_clean_path (path, rel, &err))
    {
      reply_text (msg, 403, g_strdup ("forbidden\n"));
      return;
    }
  int fd = df_open_beneath (h->root_fd, rel);
  struct stat st;
  if (fd < 0 || fstat (fd, &st) < 0 || !S_ISREG (st.st_mode))
    {
      bool missing = fd < 0 && (errno == ENOENT || errno == ENOTDIR);
      if (fd >= 0)
        close (fd);
      reply_text (msg, missing ? 404 : 403,
                  g_strdup (missing ? "not found\n" : "forbidden\n"));
      return;
    }
  GMappedFile *mf = st.st_size ? g_mapped_file_new_from_fd (fd, FALSE, &err)
                               : NULL;
  close (fd);
  if (st.st_size && !mf)
    {
      reply_text (msg, 500, g_strdup ("read error\n"));
      return;
    }
  SoupMessageBody *body = soup_server_message_get_response_body (msg);
  if (mf)
    {
      g_autoptr (GBytes) b = g_bytes_new_with_free_func (
        g_mapped_file_get_contents (mf), g_mapped_file_get_length (mf),
        free_mapped, mf);
      soup_message_body_append_bytes (body, b);
    }
  soup_message_headers_set_content_type (
    soup_server_message_get_response_headers (msg),
    "application/octet-stream", NULL);
  soup_server_message_set_status (msg, 200, NULL);
  g_info ("http: sent %s (%" G_GINT64_FORMAT " bytes)", rel,
          (gint64) st.st_size);
}

static void
on_request (SoupServer *server, SoupServerMessage *msg, const char *path,
            GHashTable *query, gpointer data)
{
  DfBootHttp *h = data;
  const char *method = soup_server_message_get_method (msg);
  if (!g_str_equal (method, "GET") && !g_str_equal (method, "HEAD"))
    {
      soup_message_headers_replace (
        soup_server_message_get_response_headers (msg), "Allow", "GET, HEAD");
      reply_text (msg, 405, g_strdup ("method not allowed\n"));
      return;
    }
  if (g_str_equal (path, "/boot.ipxe"))
    handle_boot (h, msg, query);
  else
    handle_file (h, msg, path);
}

/* ---- server ----------------------------------------------------------- */

DfBootHttp *
df_boot_http_new (DfFarm *farm, DfHealth *health, const char *boot_dir,
                  const char *address, GError **err)
{
  int root_fd = open (boot_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root_fd < 0)
    {
      df_set_error_errno (err, errno, "boot directory %s", boot_dir);
      return NULL;
    }
  DfBootHttp *h = g_new0 (DfBootHttp, 1);
  h->farm = farm;
  h->health = health;
  h->root_fd = root_fd;
  h->address = g_strdup (address);
  h->server = soup_server_new ("server-header", "diskfarm-bootstrap", NULL);
  soup_server_add_handler (h->server, NULL, on_request, h, NULL);
  return h;
}

bool
df_boot_http_listen (DfBootHttp *h, const char *host, guint16 port,
                     guint16 *bound_port, GError **err)
{
  g_autoptr (GInetAddress) ia = g_inet_address_new_from_string (host);
  if (!ia)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "HTTP listen address '%s' is not an IP address", host);
      return false;
    }
  g_autoptr (GSocketAddress) sa = g_inet_socket_address_new (ia, port);
  if (!soup_server_listen (h->server, sa, 0, err))
    return false;
  GSList *uris = soup_server_get_uris (h->server);
  *bound_port = port;
  for (GSList *l = uris; l; l = l->next)
    *bound_port = (guint16) g_uri_get_port (l->data);
  g_slist_free_full (uris, (GDestroyNotify) g_uri_unref);
  return true;
}

void
df_boot_http_free (DfBootHttp *h)
{
  if (!h)
    return;
  soup_server_disconnect (h->server);
  g_object_unref (h->server);
  close (h->root_fd);
  g_free (h->address);
  g_free (h);
}
