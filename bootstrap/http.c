/* diskfarm bootstrap: HTTP boot scripts and files.  See http.h.
 *
 * Every answer to /boot.ipxe is an iPXE script, even a refusal: iPXE shows
 * a failed fetch as a bare error code, a script can say what is wrong on
 * the target's screen.  Refusals keep an HTTP error status for curl. */
#include "http.h"
#include "beneath.h"
#include "ratelimit.h"
#include "script.h"
#include "tftp_proto.h"
#include "admin-client.h"
#include "common.h"
#include "vdisk.h" /* the cache-mode table: which modes persist */

#include <errno.h>
#include <fcntl.h>
#include <libsoup/soup.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct DfBootHttp {
  SoupServer *server;
  /* The farm a boot request reads: the daemon's (borrowed), or while its
   * PostgreSQL DB is unreachable the local snapshot (offline mode,
   * farm.h), put here by handle_boot for the one request (the HTTP
   * server runs on the main loop: one request at a time). */
  DfFarm *farm;
  DfFarm *online;           /* borrowed: the daemon's farm */
  DfHealth *health;         /* borrowed */
  DfBootTokens *tokens;     /* borrowed, nullable */
  DfRateLimit *auto_add_limit;
  GHashTable *idle;         /* GSocket* -> IdleTimer* (owned) */
  int root_fd;
  char *address;
  DfLogBurst refusal_log;   /* refusal log lines */
};

static void
reply_text (SoupServerMessage *msg, guint status, char *text /* taken */)
{
  soup_server_message_set_status (msg, status, NULL);
  soup_server_message_set_response (msg, "text/plain; charset=utf-8",
                                    SOUP_MEMORY_TAKE, text, strlen (text));
}

static void
reply_message (SoupServerMessage *msg, guint status, const char *title,
               const char *message)
{
  reply_text (msg, status, df_script_message (title, message));
}

/* ---- /boot.ipxe ------------------------------------------------------- */

/* What one boot.ipxe request may do, decided by its token. */
typedef struct {
  bool trusted;             /* valid token: secrets, generation, auto-add */
  DfBootTokenCheck check;   /* token result (MALFORMED when absent) */
  bool has_token;
  const char *peer;         /* client address, for limits and logs */
} BootRequest;

/* The client's address as text (new string). */
static char *
peer_of (SoupServerMessage *msg)
{
  const char *host = soup_server_message_get_remote_host (msg);
  return g_strdup (host ? host : "?");
}

/* Why auto-add may not add a device for this request (static text), or
 * NULL: allowed, or disabled (df_farm_auto_add_device then says so).  A
 * request allowed counts against the rate limits. */
static const char *
auto_add_refusal (DfBootHttp *h, const BootRequest *br)
{
  g_autoptr (DfAutoAdd) aa = df_farm_auto_add_get (h->farm, NULL);
  if (!aa || !aa->enabled)
    return NULL;
  if (!br->trusted)
    return "auto-add needs the one-time token of a ProxyDHCP answer";
  switch (df_rate_limit_take (h->auto_add_limit, br->peer,
                              g_get_monotonic_time ()))
    {
    case DF_RATE_SOURCE:
      return "auto-add limit of this address reached ("
             G_STRINGIFY (DF_AUTO_ADD_PER_SOURCE) " per minute)";
    case DF_RATE_TOTAL:
      return "auto-add limit of the farm reached ("
             G_STRINGIFY (DF_AUTO_ADD_TOTAL) " per minute)";
    case DF_RATE_OK:
      break;
    }
  return NULL;
}

/* The "not registered" script, with why it was not auto-added (nullable;
 * NULL: auto-add is off). */
static void
reply_not_registered (DfBootHttp *h, SoupServerMessage *msg, const char *mac,
                      const BootRequest *br, const char *refusal)
{
  if (df_log_burst_allow (&h->refusal_log, g_get_monotonic_time ()))
    g_message ("http: boot.ipxe for %s from %s: device not registered%s%s",
               mac, br->peer, refusal ? ", not auto-added: " : "",
               refusal ? refusal : "");
  g_autofree char *text = g_strdup_printf (
    "this machine (MAC %s) is not registered in the farm%s%s. Ask an "
    "administrator to run: diskfarm device add NAME --mac %s", mac,
    refusal ? " and was not added: " : "", refusal ? refusal : "", mac);
  /* 200: iPXE runs only scripts fetched with a 2xx status, and the
   * message must reach the screen. */
  soup_message_headers_replace (
    soup_server_message_get_response_headers (msg), "X-Diskfarm-Status",
    refusal ? "not-added" : "not-registered");
  reply_message (msg, 200, "device not registered", text);
}

/* Auto-add mac when the farm allows it and the limits are not reached:
 * the new device's name (new string), or NULL + a script sent. */
static char *
auto_add (DfBootHttp *h, SoupServerMessage *msg, const char *mac,
          const BootRequest *br)
{
  g_autoptr (GError) err = NULL;
  const char *refusal = auto_add_refusal (h, br);
  char *name = NULL;
  if (!refusal && df_farm_auto_add_device (h->farm, mac, &name, &err))
    return name;
  if (!refusal && !g_error_matches (err, DF_ERROR, DF_ERROR_UNSUPPORTED))
    refusal = err->message;
  reply_not_registered (h, msg, mac, br, refusal);
  return NULL;
}

/* The device for mac: existing, or auto-added.  NULL + a script sent. */
static DfDevice *
resolve_device (DfBootHttp *h, SoupServerMessage *msg, const char *mac,
                const BootRequest *br)
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
  g_autofree char *name = auto_add (h, msg, mac, br);
  if (!name)
    return NULL;
  g_message ("http: auto-added device %s for %s (from %s)", name, mac,
             br->peer);
  d = df_farm_device_get (h->farm, name, &err);
  if (!d)
    reply_message (msg, 500, "farm database error", err->message);
  return d;
}

/* Wipe and free a string that held a secret (nullable). */
static void
wipe_free (char *s)
{
  df_script_free (s);
}

#define NO_TOKEN_NOTE "fetched without a valid boot token: CHAP " \
  "credentials left out, the iSCSI login of this device will fail"

/* The sanboot script for d (new string holding the secret when trusted:
 * free with df_script_free). */
static char *
render_for (DfBootHttp *h, const DfDevice *d, gint64 generation,
            GPtrArray *servers, const BootRequest *br, GError **err)
{
  char *user = NULL, *secret = NULL;         /* wiped below */
  if (!df_farm_device_chap (h->farm, d->name, &user, &secret, err))
    return NULL;
  bool has_chap = user || secret;
  if (!br->trusted)
    {
      g_clear_pointer (&user, wipe_free);
      g_clear_pointer (&secret, wipe_free);
    }
  g_autofree DfScriptTarget *t = g_new0 (DfScriptTarget, servers->len);
  for (guint i = 0; i < servers->len; i++)
    {
      const DfServerView *v = servers->pdata[i];
      t[i].address = v->iscsi_address;
      t[i].port = v->iscsi_port;
    }
  DfScriptParams p = {
    .device = d->name, .vdisk = d->vdisk, .generation = generation,
    .chap_user = user, .chap_secret = secret, .targets = t,
    .n_targets = servers->len, .rendered_by = h->address,
    .note = has_chap && !br->trusted ? NO_TOKEN_NOTE : NULL,
  };
  g_autoptr (DfVdisk) vd = df_farm_vdisk_get (h->farm, d->vdisk, err);
  if (!vd)
    {
      wipe_free (user);
      wipe_free (secret);
      return NULL;
    }
  /* An EFI loader set by hand makes the vDisk UEFI-bootable. */
  p.no_bios = !df_firmware_boots_bios (vd->firmware);
  p.no_uefi = !vd->efi_loader && !df_firmware_boots_uefi (vd->firmware);
  p.efi_loader = vd->efi_loader;
  gboolean dropped = FALSE;
  char *script = df_script_render (&p, &dropped);
  wipe_free (user);
  wipe_free (secret);
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
  if (has_chap && !br->trusted)
    g_message ("http: boot.ipxe for %s from %s: %s%s: script without CHAP "
               "credentials, its iSCSI login will fail", d->name, br->peer,
               br->has_token ? "token " : "no token",
               br->has_token ? df_boot_token_check_str (br->check) : "");
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

/* Free with wiping: the response body of a script holding a secret. */
static void
bytes_wipe_free (gpointer p)
{
  df_script_free (p);
}

static void
reply_script (SoupServerMessage *msg, char *script /* taken */,
              const BootRequest *br)
{
  soup_message_headers_replace (
    soup_server_message_get_response_headers (msg), "X-Diskfarm-Boot-Token",
    br->trusted ? "valid" : br->has_token ? df_boot_token_check_str (br->check)
                                          : "missing");
  soup_server_message_set_status (msg, 200, NULL);
  soup_message_headers_set_content_type (
    soup_server_message_get_response_headers (msg),
    "text/plain; charset=utf-8", NULL);
  g_autoptr (GBytes) b = g_bytes_new_with_free_func (script, strlen (script),
                                                     bytes_wipe_free, script);
  soup_message_body_append_bytes (soup_server_message_get_response_body (msg),
                                  b);
}

/* Check the request's token (taken from query) into br. */
static void
redeem_token (DfBootHttp *h, const char *token, const char *mac,
              BootRequest *br)
{
  br->has_token = token != NULL;
  br->check = DF_BOOT_TOKEN_MALFORMED;
  if (token && h->tokens)
    br->check = df_boot_token_redeem (h->tokens, token, mac,
                                      g_get_real_time () / G_USEC_PER_SEC);
  br->trusted = br->has_token && br->check == DF_BOOT_TOKEN_OK;
  if (br->has_token && !br->trusted && df_log_burst_allow (&h->refusal_log, g_get_monotonic_time ()))
    g_message ("http: boot.ipxe for %s from %s: token %s: no secrets, no "
               "new boot generation", mac, br->peer,
               df_boot_token_check_str (br->check));
}

/* Drop from servers those that do not hold the version d boots verified
 * (df_farm_store_holds: every server holds it while the farm has no
 * store state).  A device without a bootable version keeps the list: the
 * stream server tells it why. */
static bool
keep_holders (DfBootHttp *h, const DfDevice *d, GPtrArray *servers,
              char **version, GError **err)
{
  GError *e = NULL;
  g_autoptr (DfVersion) v = df_farm_version_for_type (h->farm, d->vdisk,
                                                      d->type, &e);
  if (!v)
    {
      g_clear_error (&e);
      return true;
    }
  *version = g_strdup_printf ("%s@%d", v->vdisk, v->number);
  for (guint i = servers->len; i-- > 0;)
    {
      const DfServerView *sv = servers->pdata[i];
      bool holds = false;
      if (!df_farm_store_holds (h->farm, sv->name, v->vdisk, v->number,
                                &holds, err))
        return false;
      if (!holds)
        g_ptr_array_remove_index (servers, i); /* keeps the order */
    }
  return true;
}

/* A device whose write cache persists (server-persistent, private) is
 * booted from one server: iPXE's multipath sanboot logs in on every URI
 * at once, and two servers opening one persistent cache contend for its
 * lease (tier 2), or each keeps a cache of its own.  The one kept is the
 * holder of the device's cache lease when it is healthy, else the least
 * loaded (servers is in that order).  A dead server still does not stop
 * a boot: the next script names another. */
static void
one_server_for_persistent (DfBootHttp *h, const DfDevice *d,
                           GPtrArray *servers)
{
  DfCacheMode mode;
  g_autoptr (DfCacheLease) lease = NULL;

  if (servers->len < 2 || !df_cache_mode_parse (d->cache_mode, &mode, NULL)
      || !df_cache_mode_desc (&mode)->persistent)
    return;
  lease = df_farm_lease_get (h->farm, d->name, NULL);
  for (guint i = 1; lease != NULL && i < servers->len; i++)
    if (g_strcmp0 (((DfServerView *) servers->pdata[i])->name,
                   lease->holder) == 0)
      {
        gpointer keep = servers->pdata[i];
        servers->pdata[i] = servers->pdata[0];
        servers->pdata[0] = keep;
      }
  g_ptr_array_set_size (servers, 1);
}

static DfFarm *offline_snapshot (DfBootHttp *h);
static void boot_device (DfBootHttp *h, SoupServerMessage *msg,
                         GHashTable *query, const char *mac,
                         BootRequest *br);

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
  if (query_count (msg, "mac") > 1 || query_count (msg, "uuid") > 1
      || query_count (msg, "token") > 1)
    {
      reply_message (msg, 400, "bad request",
                     "boot.ipxe takes one mac= and at most one uuid= and "
                     "one token=");
      return;
    }
  if (!mac_s || !df_parse_mac (mac_s, mac, &err))
    {
      reply_message (msg, 400, "bad request",
                     mac_s ? err->message : "boot.ipxe needs ?mac=");
      return;
    }
  g_autofree char *peer = peer_of (msg);
  BootRequest br = { .peer = peer };
  redeem_token (h, query ? g_hash_table_lookup (query, "token") : NULL, mac,
                &br);
  g_autoptr (DfFarm) snap = offline_snapshot (h);
  if (snap != NULL)
    h->farm = snap;
  boot_device (h, msg, query, mac, &br);
  h->farm = h->online;
}

/* The farm DB is unreachable and there is a local snapshot: the snapshot
 * (new), else NULL (the DB answers, or there is nothing to fall back on:
 * the request then fails naming the DB). */
static DfFarm *
offline_snapshot (DfBootHttp *h)
{
  g_autoptr (GError) err = NULL;
  const char *db = df_farm_db_name (h->online);
  if (df_farm_ping (h->online, &err) || !df_farm_error_unreachable (db, err))
    return NULL;
  g_autoptr (GError) serr = NULL;
  DfFarm *snap = df_farm_open_snapshot (df_farm_dir (h->online), db,
                                        "bootstrapsvc", &serr);
  if (snap == NULL)
    g_message ("http: %s", serr->message);
  else if (df_log_burst_allow (&h->refusal_log, g_get_monotonic_time ()))
    g_message ("http: offline: %s; boot scripts from the local snapshot",
               err->message);
  return snap;
}

/* Offline (farm.h "offline boot generations"): tell each of servers the
 * boot generation gen of device, by their admin API; a server that does
 * not take it is dropped from servers (it would open the old generation's
 * cache).  The servers that took it, for the log (new string). */
static char *
tell_servers (DfFarm *snap, const char *device, gint64 gen,
              GPtrArray *servers)
{
  g_autoptr (GError) err = NULL;
  g_autoptr (DfSecret) token = df_farm_admin_token (snap, false, &err);
  g_autoptr (GString) told = g_string_new (NULL);

  for (guint i = 0; i < servers->len;)
    {
      const DfServerView *v = servers->pdata[i];
      g_autoptr (DfAdminEndpoint) ep = df_admin_endpoint_new (
          v->address, v->admin_port, NULL, token);
      g_autoptr (GError) e = NULL;
      if (df_admin_offline_generation_at (ep, device, gen, &e))
        {
          g_string_append_printf (told, "%s%s", told->len ? ", " : "",
                                  v->name);
          i++;
          continue;
        }
      g_message ("http: %s: offline: stream server %s did not take boot "
                 "generation %" G_GINT64_FORMAT ", left out of the script: "
                 "%s", device, v->name, gen, e->message);
      g_ptr_array_remove_index (servers, i);
    }
  return g_string_free (g_steal_pointer (&told), FALSE);
}

/* Offline: device d's new boot generation (journaled here and told to
 * servers, which keeps those that took it) in *gen; false with a reply
 * sent when none did. */
static bool
offline_generation (DfBootHttp *h, SoupServerMessage *msg, const DfDevice *d,
                    GPtrArray *servers, gint64 *gen)
{
  g_autoptr (GError) err = NULL;
  if (!df_farm_device_new_generation (h->farm, d->name, gen, &err))
    {
      g_message ("http: %s: offline: boot generation kept at %"
                 G_GINT64_FORMAT " (it cannot be journaled: %s)", d->name,
                 d->generation, err->message);
      *gen = d->generation;
      return true;
    }
  g_autofree char *told = tell_servers (h->farm, d->name, *gen, servers);
  if (servers->len == 0)
    {
      reply_message (msg, 503, "boot server unavailable",
                     "no stream server took the offline boot generation");
      return false;
    }
  g_message ("http: %s: offline: new boot generation %" G_GINT64_FORMAT
             " journaled (the farm DB is unreachable), taken by %s",
             d->name, *gen, told);
  return true;
}

/* The boot script for mac (parsed), from h->farm. */
static void
boot_device (DfBootHttp *h, SoupServerMessage *msg, GHashTable *query,
             const char *mac, BootRequest *in)
{
  BootRequest br = *in;
  g_autoptr (GError) err = NULL;
  g_autoptr (DfDevice) d = resolve_device (h, msg, mac, &br);
  if (!d)
    return;
  gint64 gen = d->generation;
  g_autoptr (GPtrArray) servers = df_health_healthy (h->health);
  g_autofree char *version = NULL;
  if (servers->len > 0 && !keep_holders (h, d, servers, &version, &err))
    {
      g_message ("http: %s: store state: %s", d->name, err->message);
      reply_message (msg, 500, "farm database error", err->message);
      return;
    }
  if (servers->len == 0)
    {
      g_autofree char *none = version
        ? g_strdup_printf ("no healthy stream server holds %s verified",
                           version)
        : g_strdup ("no healthy stream server");
      reply_message (msg, 503, "boot server unavailable", none);
      return;
    }
  one_server_for_persistent (h, d, servers);
  if (br.trusted && df_farm_offline (h->farm))
    {
      if (!offline_generation (h, msg, d, servers, &gen))
        return;
    }
  else if (br.trusted && !df_farm_device_new_generation (h->farm, d->name,
                                                         &gen, &err))
    {
      g_message ("http: %s: new boot generation: %s", d->name, err->message);
      reply_message (msg, 500, "farm database error", err->message);
      return;
    }
  char *script = render_for (h, d, gen, servers, &br, &err);
  if (!script)
    {
      g_message ("http: boot.ipxe for %s: %s", d->name, err->message);
      reply_message (msg, 500, "cannot render the boot script", err->message);
      return;
    }
  const char *uuid = uuid_for_log (query ? g_hash_table_lookup (query, "uuid")
                                          : NULL);
  g_message ("http: boot.ipxe for %s (%s%s%s) %s %" G_GINT64_FORMAT
             ", %u stream server%s, first %s", d->name, mac,
             uuid ? ", uuid " : "", uuid ? uuid : "",
             !br.trusted ? "no token: generation kept at"
             : df_farm_offline (h->farm) ? "offline generation"
                                         : "new generation",
             gen, servers->len, servers->len == 1 ? "" : "s",
             ((DfServerView *) servers->pdata[0])->name);
  reply_script (msg, script, &br);
}

/* ---- static files ----------------------------------------------------- */

/* Boot files are read whole into memory (not mmap'ed: a file truncated in
 * place during a download would SIGBUS the daemon). */
#define FILE_MAX ((goffset) 1 << 30)

/* The first size bytes of fd (new GBytes), NULL + errno on a read error
 * or when the file shrank under us. */
static GBytes *
read_file (int fd, goffset size)
{
  guint8 *buf = g_try_malloc (MAX (size, 1));
  if (!buf)
    {
      errno = ENOMEM;
      return NULL;
    }
  if (size && df_pread_all (fd, buf, (size_t) size, 0) < 0)
    {
      int e = errno;
      g_free (buf);
      errno = e ? e : EIO;            /* short read: the file shrank */
      return NULL;
    }
  return g_bytes_new_take (buf, (gsize) size);
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
  g_autoptr (GBytes) b = st.st_size <= FILE_MAX ? read_file (fd, st.st_size)
                                                : NULL;
  int e = errno;
  close (fd);
  if (!b)
    {
      g_message ("http: %s: %s", rel, st.st_size > FILE_MAX
                 ? "larger than 1 GiB, not served" : g_strerror (e));
      reply_text (msg, 500, g_strdup ("read error\n"));
      return;
    }
  soup_message_body_append_bytes (soup_server_message_get_response_body (msg),
                                  b);
  soup_message_headers_set_content_type (
    soup_server_message_get_response_headers (msg),
    "application/octet-stream", NULL);
  soup_server_message_set_status (msg, 200, NULL);
  g_info ("http: sent %s (%" G_GINT64_FORMAT " bytes)", rel,
          (gint64) st.st_size);
}

/* ---- idle connections --------------------------------------------------- */

/* Each connection waiting for a request (a new one, or keep-alive between
 * requests, or half-closed) has a timer of DF_BOOT_HTTP_IDLE_S: armed when
 * libsoup starts reading a request and when it has written a response,
 * cancelled when a request's handler runs.  When it fires the socket is shut down, which ends libsoup's read
 * and closes the connection. */
typedef struct {
  DfBootHttp *h;            /* borrowed */
  GSocket *sock;            /* ref */
  guint source;
} IdleTimer;

static void
idle_timer_free (gpointer p)
{
  IdleTimer *t = p;
  if (t->source)
    g_source_remove (t->source);
  g_object_unref (t->sock);
  g_free (t);
}

static gboolean
on_idle_timeout (gpointer data)
{
  IdleTimer *t = data;
  t->source = 0;
  g_debug ("http: closing a connection idle for %u s", DF_BOOT_HTTP_IDLE_S);
  g_socket_shutdown (t->sock, TRUE, TRUE, NULL);
  g_hash_table_remove (t->h->idle, t->sock);     /* frees t */
  return G_SOURCE_REMOVE;
}

static void
idle_arm (SoupServer *server, SoupServerMessage *msg, gpointer data)
{
  DfBootHttp *h = data;
  GSocket *sock = soup_server_message_get_socket (msg);
  if (!sock)
    return;
  IdleTimer *t = g_new0 (IdleTimer, 1);
  t->h = h;
  t->sock = g_object_ref (sock);
  t->source = g_timeout_add_seconds (DF_BOOT_HTTP_IDLE_S, on_idle_timeout, t);
  g_hash_table_replace (h->idle, sock, t);
}

/* The request arrived whole: its connection is not idle. */
static void
idle_cancel (DfBootHttp *h, SoupServerMessage *msg)
{
  GSocket *sock = soup_server_message_get_socket (msg);
  if (sock)
    g_hash_table_remove (h->idle, sock);
}

static void
on_request (SoupServer *server, SoupServerMessage *msg, const char *path,
            GHashTable *query, gpointer data)
{
  DfBootHttp *h = data;
  idle_cancel (h, msg);
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
df_boot_http_new (DfFarm *farm, DfHealth *health, DfBootTokens *tokens,
                  const char *boot_dir, const char *address, GError **err)
{
  int root_fd = open (boot_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root_fd < 0)
    {
      df_set_error_errno (err, errno, "boot directory %s", boot_dir);
      return NULL;
    }
  DfBootHttp *h = g_new0 (DfBootHttp, 1);
  h->farm = h->online = farm;
  h->health = health;
  h->tokens = tokens;
  h->idle = g_hash_table_new_full (NULL, NULL, NULL, idle_timer_free);
  h->auto_add_limit = df_rate_limit_new (DF_AUTO_ADD_PER_SOURCE,
                                         DF_AUTO_ADD_TOTAL, 60);
  h->root_fd = root_fd;
  h->address = g_strdup (address);
  h->server = soup_server_new ("server-header", "diskfarm-bootstrap", NULL);
  soup_server_add_handler (h->server, NULL, on_request, h, NULL);
  g_signal_connect (h->server, "request-started", G_CALLBACK (idle_arm), h);
  g_signal_connect (h->server, "request-finished", G_CALLBACK (idle_arm), h);
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
  g_hash_table_destroy (h->idle);
  close (h->root_fd);
  df_rate_limit_free (h->auto_add_limit);
  g_free (h->address);
  g_free (h);
}
