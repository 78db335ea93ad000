/* diskfarm: diskfarm.conf, one schema for every program (see conf.h).
 *
 * The file is read twice: a line scan finds each group and key with its
 * line number (GKeyFile keeps none) and refuses what the schema does not
 * know; GKeyFile then gives the values (escapes, ';' lists), which are
 * checked by type once, here, so programs only read typed values. */
#include "conf.h"
#include "common.h"
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_CONFIG_ENV "DISKFARM_CONFIG"

/* The one table.  Keep it in step with dist/diskfarm.conf and the
 * CONFIGURATION sections of the man pages. */
#define KEY(g, k, t, d, h) { g, k, t, d, h, 0, 0, NULL }
#define INT(g, k, d, lo, hi, h) { g, k, DF_CONF_INT, d, h, lo, hi, NULL }
#define ALIAS(g, k, of, h) { g, k, DF_CONF_PATH, NULL, h, 0, 0, of }
const DfConfKey df_conf_schema[] = {
  KEY ("farm", "dir", DF_CONF_PATH, DF_DEFAULT_FARM,
       "Farm directory: farm.db, store/, cache/, boot/, run/ "
       "(every program; --farm)"),
  KEY ("farm", "database", DF_CONF_STRING, NULL,
       "Farm DB: a PostgreSQL URI (postgresql://...) or conninfo "
       "(host=... dbname=...); default: the farm directory's farm.db "
       "(every program; --db)"),

  ALIAS ("streamsvc", "farm", "farm.dir", "Old spelling of [farm] dir"),
  KEY ("streamsvc", "nbd-listen", DF_CONF_LISTEN_LIST, DF_NBD_DEFAULT_LISTEN,
       "NBD listeners, HOST:PORT or unix:PATH (--nbd-listen)"),
  KEY ("streamsvc", "iscsi-listen", DF_CONF_LISTEN_LIST, NULL,
       "iSCSI portals HOST[:PORT]; no iSCSI unless one is given "
       "(--iscsi-listen)"),
  KEY ("streamsvc", "admin-listen", DF_CONF_LISTEN, NULL,
       "Admin HTTP: HOST:PORT adds TCP (bearer token), unix:PATH moves the "
       "socket (default " DF_RUNTIME_DIR "/" DF_ADMIN_SOCKET "), or none "
       "(--admin-listen)"),
  INT ("streamsvc", "threads", "0", 0, 256,
       "Worker threads, 0 = one per CPU (--threads)"),
  INT ("streamsvc", "tcp-keepalive", G_STRINGIFY (DF_TCP_KEEPALIVE_DEFAULT),
       0, DF_TCP_KEEPALIVE_MAX,
       "Seconds within which a TCP connection whose peer vanished is "
       "dropped; 0 = off, else at least 6 (--tcp-keepalive)"),
  INT ("streamsvc", "iscsi-nop-interval",
       G_STRINGIFY (DF_ISCSI_NOP_INTERVAL_DEFAULT), 0, DF_ISCSI_NOP_MAX,
       "Seconds of silence before an iSCSI session gets a NOP-In ping; "
       "0 = off (--iscsi-nop-interval)"),
  INT ("streamsvc", "iscsi-nop-timeout",
       G_STRINGIFY (DF_ISCSI_NOP_TIMEOUT_DEFAULT), 1, DF_ISCSI_NOP_MAX,
       "Seconds a NOP-In waits for any answer before the connection is "
       "dropped (--iscsi-nop-timeout)"),
  INT ("streamsvc", "handshake-timeout",
       G_STRINGIFY (DF_HANDSHAKE_TIMEOUT_DEFAULT), 0, DF_TIMEOUT_MAX,
       "Seconds a connection has to finish the NBD negotiation or the "
       "iSCSI login (a discovery session: to end); 0 = no limit "
       "(--handshake-timeout)"),
  INT ("streamsvc", "request-timeout",
       G_STRINGIFY (DF_REQUEST_TIMEOUT_DEFAULT), 0, DF_TIMEOUT_MAX,
       "Seconds a started NBD request or iSCSI PDU has to arrive whole; "
       "an idle session is never cut; 0 = no limit (--request-timeout)"),
  INT ("streamsvc", "max-connections-per-source",
       G_STRINGIFY (DF_MAX_CONN_PER_SOURCE_DEFAULT), 0,
       DF_MAX_CONN_PER_SOURCE_MAX,
       "Open TCP connections (NBD and iSCSI) from one client address; "
       "more are closed at once; 0 = no limit "
       "(--max-connections-per-source)"),
  KEY ("streamsvc", "user", DF_CONF_STRING, NULL,
       "User to run as after binding; default diskfarm if it exists, "
       "else nobody (--user)"),
  KEY ("streamsvc", "tls", DF_CONF_STRING, NULL,
       "NBD TLS: off, on or require; unset: the farm's nbd-tls setting, "
       "else off (--tls)"),
  KEY ("streamsvc", "tls-certificates", DF_CONF_PATH, NULL,
       "x509 directory: ca-cert.pem, server-cert.pem, server-key.pem "
       "(--tls-certificates)"),
  KEY ("streamsvc", "tls-psk", DF_CONF_PATH, NULL,
       "Pre-shared key file, identity:hexkey lines (--tls-psk)"),
  KEY ("streamsvc", "tls-verify-peer", DF_CONF_BOOL, "false",
       "x509: refuse TLS clients without a certificate "
       "(--tls-verify-peer)"),

  KEY ("streamsvc", "server-name", DF_CONF_STRING, NULL,
       "Name of this server in the farm's registry: it registers and "
       "heartbeats under it, verifies its store and records the store "
       "state; the console's store commands act for it (--server-name; "
       "default: none, no registry)"),
  KEY ("streamsvc", "server-address", DF_CONF_STRING, NULL,
       "Address targets reach this server at, as registered; default: the "
       "first iSCSI/NBD listen host, else the host name (--server-address)"),
  INT ("streamsvc", "power", "1", 1, 1000,
       "Relative capacity 1-1000 registered: load = sessions / power "
       "(--power)"),
  INT ("streamsvc", "heartbeat-interval", "2000", 100, 600000,
       "Milliseconds between registry heartbeats (--heartbeat-interval)"),
  INT ("streamsvc", "heartbeat-timeout", "0", 0, 86400000,
       "Milliseconds without a heartbeat after which this server is "
       "unhealthy; 0 = 3 intervals (--heartbeat-timeout)"),
  KEY ("streamsvc", "shared-cache-dir", DF_CONF_PATH, NULL,
       "Directory on storage every server reaches (NFS, CephFS) for the "
       "server-persistent device caches, each written by one server at a "
       "time under a cache lease: they fail over (--shared-cache-dir; "
       "needs server-name; default: none, caches in the farm directory)"),
  INT ("streamsvc", "lease-time", "9000", 1000, 600000,
       "Milliseconds a cache lease lasts; renewed every third, a survivor "
       "takes a dead server's caches over after 1.25 x this "
       "(--lease-time)"),
  KEY ("bootstrapsvc", "address", DF_CONF_IPV4, NULL,
       "This server's IPv4 address: next-server, HTTP and TFTP "
       "(--address; required)"),
  KEY ("bootstrapsvc", "interface", DF_CONF_STRING, NULL,
       "Answer DHCP only on this interface (--interface)"),
  INT ("bootstrapsvc", "http-port", G_STRINGIFY (DF_HTTP_PORT), 0, 65535,
       "HTTP port, 0 = any (--http-port)"),
  INT ("bootstrapsvc", "tftp-port", "69", 0, 65535,
       "TFTP port, 0 = any (--tftp-port)"),
  INT ("bootstrapsvc", "dhcp-port", "67", 0, 65535,
       "ProxyDHCP port (--dhcp-port)"),
  INT ("bootstrapsvc", "pxe-port", "4011", 0, 65535,
       "PXE boot server port (--pxe-port)"),
  KEY ("bootstrapsvc", "no-proxydhcp", DF_CONF_BOOL, "false",
       "Do not answer DHCP; the site DHCP sends options 66/67 "
       "(--no-proxydhcp)"),
  KEY ("bootstrapsvc", "chain-ipxe", DF_CONF_BOOL, "false",
       "Make iPXE ROMs chain-load our iPXE binary first (--chain-ipxe)"),
  KEY ("bootstrapsvc", "server-name", DF_CONF_STRING, NULL,
       "Name of this bootstrap server in the farm's registry (kind "
       "bootstrapsvc; --server-name; default: none, not registered)"),
  KEY ("bootstrapsvc", "user", DF_CONF_STRING, NULL,
       "User to run as after binding; default diskfarm if it exists, "
       "else nobody (--user)"),
  INT ("bootstrapsvc", "health-interval", "2000", 100, 600000,
       "Milliseconds between stream server health checks "
       "(--health-interval)"),

  KEY ("console", "admin", DF_CONF_STRING, NULL,
       "streamsvc admin address HOST:PORT or unix:PATH the console asks "
       "for live sessions besides the server table (default: the farm's "
       "admin socket; --admin, $DISKFARM_ADMIN)"),

  KEY ("bdm", "server", DF_CONF_STRING_LIST, NULL,
       "Bootstrap + stream servers HOST[:PORT], up to 4, in failover "
       "order (--server)"),
  KEY ("bdm", "farm-servers", DF_CONF_BOOL, "false",
       "Add the servers of the farm DB ([farm] dir) after those above "
       "(--farm)"),
  INT ("bdm", "http-port", G_STRINGIFY (DF_HTTP_PORT), 1, 65535,
       "Bootstrap HTTP port when a server has none (--http-port)"),
  INT ("bdm", "iscsi-port", G_STRINGIFY (DF_ISCSI_PORT), 1, 65535,
       "iSCSI port of the listed servers (--iscsi-port)"),
  INT ("bdm", "timeout", "0", 0, 3600,
       "Boot menu timeout in seconds, 0 = no menu (--timeout)"),
  INT ("bdm", "retries", "1", 1, 1000,
       "Rounds over all servers before giving up (--retries)"),
  KEY ("bdm", "local-fallback", DF_CONF_BOOL, "false",
       "Boot from the local disk when no server answers "
       "(--local-fallback)"),
  KEY ("bdm", "ipxe-dir", DF_CONF_PATH, NULL,
       "Where ipxe.lkrn/ipxe.efi are; default /usr/lib/ipxe (--ipxe-dir)"),
  KEY ("bdm", "isolinux-dir", DF_CONF_PATH, NULL,
       "Where isolinux.bin/isohdpfx.bin are; default /usr/lib/ISOLINUX "
       "(--isolinux-dir)"),
  KEY ("bdm", "syslinux-dir", DF_CONF_PATH, NULL,
       "syslinux data; default /usr/lib/syslinux (--syslinux-dir)"),
  { NULL, NULL, 0, NULL, NULL, 0, 0, NULL },
};
#undef KEY
#undef INT
#undef ALIAS

/* One key's value, parsed by type. */
typedef struct {
  bool has;            /* from the file or the default */
  int line;            /* line in the file, 0: default */
  char *str;           /* STRING PATH IPV4 LISTEN */
  char **list;         /* LISTEN_LIST STRING_LIST */
  gint64 num;          /* INT BOOL */
} Value;

struct DfConf {
  char *file;          /* NULL: no file read */
  Value *values;       /* parallel to df_conf_schema */
};

/* ---- schema ----------------------------------------------------------- */

static guint
schema_len (void)
{
  guint n = 0;
  while (df_conf_schema[n].group != NULL)
    n++;
  return n;
}

const DfConfKey *
df_conf_key_find (const char *group, const char *key)
{
  for (const DfConfKey *k = df_conf_schema; k->group != NULL; k++)
    if (g_str_equal (k->group, group) && g_str_equal (k->key, key))
      return k;
  return NULL;
}

static bool
group_known (const char *group)
{
  for (const DfConfKey *k = df_conf_schema; k->group != NULL; k++)
    if (g_str_equal (k->group, group))
      return true;
  return false;
}

/* "group.key" -> row, or NULL. */
static const DfConfKey *
key_find_dotted (const char *dotted)
{
  const char *dot = strchr (dotted, '.');
  if (dot == NULL)
    return NULL;
  g_autofree char *group = g_strndup (dotted, (gsize) (dot - dotted));
  return df_conf_key_find (group, dot + 1);
}

/* The row that holds the value of k (k itself, or what it aliases). */
static const DfConfKey *
canonical (const DfConfKey *k)
{
  if (k->alias_of == NULL)
    return k;
  const DfConfKey *c = key_find_dotted (k->alias_of);
  g_assert (c != NULL && c->alias_of == NULL);
  return c;
}

static guint
row_index (const DfConfKey *k)
{
  return (guint) (k - df_conf_schema);
}

/* ---- values ----------------------------------------------------------- */

static void
value_clear (Value *v)
{
  g_clear_pointer (&v->str, g_free);
  g_clear_pointer (&v->list, g_strfreev);
  memset (v, 0, sizeof *v);
}

static bool
check_ipv4 (const char *s, GError **err)
{
  struct in_addr ia;
  if (inet_pton (AF_INET, s, &ia) == 1)
    return true;
  g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
               "'%s' is not an IPv4 address", s);
  return false;
}

static bool
check_listen (const char *s, GError **err)
{
  DfListenAddr la = { 0 };
  bool ok = df_parse_listen (s, 1, &la, err);
  df_listen_addr_clear (&la);
  return ok;
}

static bool
parse_int (const DfConfKey *k, const char *raw, Value *v, GError **err)
{
  g_autofree char *s = g_strstrip (g_strdup (raw));
  guint64 u = 0;
  bool neg = s[0] == '-';
  bool ok = g_ascii_string_to_unsigned (s + neg, 10, 0, G_MAXINT64, &u,
                                        NULL);
  gint64 n = neg ? -(gint64) u : (gint64) u;
  if (!ok || n < k->min || n > k->max)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "'%s' is not an integer from %" G_GINT64_FORMAT " to %"
                   G_GINT64_FORMAT, s, k->min, k->max);
      return false;
    }
  v->num = n;
  return true;
}

static bool
parse_bool (const char *raw, Value *v, GError **err)
{
  g_autofree char *s = g_strstrip (g_strdup (raw));
  if (g_str_equal (s, "true") || g_str_equal (s, "false"))
    {
      v->num = g_str_equal (s, "true");
      return true;
    }
  g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
               "'%s' is not true or false", s);
  return false;
}

/* GKeyFile may return a value and set an error (an invalid escape): the
 * error decides. */
static bool
escape_error (GError *e, GError **err)
{
  if (e == NULL)
    return false;
  g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
               "invalid escape sequence (write a backslash as \\\\)");
  return true;
}

/* A decoded value holds no control character: the escapes \n, \t and \r
 * would make one (and a multi-line error message quoting it). */
static bool
check_no_control (const char *s, GError **err)
{
  for (const char *p = s; *p != '\0'; p++)
    if ((unsigned char) *p < 0x20 || *p == 0x7f)
      {
        g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                     "control character 0x%02x in the value (escapes \\n, "
                     "\\t, \\r are not allowed)", (unsigned) *p);
        return false;
      }
  return true;
}

static bool
parse_list (const DfConfKey *k, GKeyFile *kf, const char *group,
            const char *key, Value *v, GError **err)
{
  g_autoptr (GError) e = NULL;
  v->list = g_key_file_get_string_list (kf, group, key, NULL, &e);
  if (escape_error (e, err) || v->list == NULL)
    return false;
  for (char **s = v->list; *s != NULL; s++)
    {
      if (**s == '\0')
        {
          g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                       "empty item in the list");
          return false;
        }
      if (!check_no_control (*s, err))
        return false;
      if (k->type == DF_CONF_LISTEN_LIST && !check_listen (*s, err))
        return false;
    }
  return true;
}

/* Parse group/key of kf as k's type into v. */
static bool
parse_value (const DfConfKey *k, GKeyFile *kf, const char *group,
             const char *key, Value *v, GError **err)
{
  g_autofree char *raw = g_key_file_get_value (kf, group, key, err);
  if (raw == NULL)
    return false;
  g_autofree char *stripped = g_strstrip (g_strdup (raw));
  if (*stripped == '\0')
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "empty value (remove the line to get the default)");
      return false;
    }
  v->has = true;
  switch (k->type)
    {
    case DF_CONF_INT:
      return parse_int (k, raw, v, err);
    case DF_CONF_BOOL:
      return parse_bool (raw, v, err);
    case DF_CONF_LISTEN_LIST:
    case DF_CONF_STRING_LIST:
      return parse_list (k, kf, group, key, v, err);
    case DF_CONF_STRING:
    case DF_CONF_PATH:
    case DF_CONF_IPV4:
    case DF_CONF_LISTEN:
    default:
      break;
    }
  g_autoptr (GError) e = NULL;
  v->str = g_key_file_get_string (kf, group, key, &e);
  if (escape_error (e, err) || v->str == NULL
      || !check_no_control (v->str, err))
    return false;
  if (k->type == DF_CONF_IPV4)
    return check_ipv4 (v->str, err);
  if (k->type == DF_CONF_LISTEN && !g_str_equal (v->str, "none"))
    return check_listen (v->str, err);
  return true;
}

/* The schema default of k, parsed like file text. */
static bool
parse_default (const DfConfKey *k, Value *v, GError **err)
{
  g_autoptr (GKeyFile) kf = g_key_file_new ();
  g_key_file_set_value (kf, k->group, k->key, k->def);
  if (parse_value (k, kf, k->group, k->key, v, err))
    return true;
  g_prefix_error (err, "built-in default of [%s] %s: ", k->group, k->key);
  return false;
}

/* ---- the line scan ---------------------------------------------------- */

/* Where one key was set. */
typedef struct {
  const DfConfKey *row;   /* as written (maybe an alias) */
  char *group;            /* as written */
  char *key;
  int line;
} Setting;

static void
setting_clear (gpointer p)
{
  Setting *s = p;
  g_free (s->group);
  g_free (s->key);
}

static bool
line_error (GError **err, const char *name, int line, const char *fmt, ...)
  G_GNUC_PRINTF (4, 5);

static bool
line_error (GError **err, const char *name, int line, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  g_autofree char *msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_set_error (err, DF_ERROR, DF_ERROR_INVALID, "%s:%d: %s", name, line, msg);
  return false;
}

/* "[group]" line: the group name (new string), or NULL + err. */
static char *
scan_group (const char *s, const char *name, int line, GError **err)
{
  gsize len = strlen (s);
  if (len < 3 || s[len - 1] != ']')
    {
      line_error (err, name, line, "malformed group header '%s'", s);
      return NULL;
    }
  g_autofree char *group = g_strndup (s + 1, len - 2);
  if (!group_known (group))
    {
      line_error (err, name, line, "unknown group [%s]", group);
      return NULL;
    }
  return g_steal_pointer (&group);
}

/* "key = value" line in group: record it in settings. */
static bool
scan_key (const char *s, const char *group, GArray *settings,
          const char *name, int line, GError **err)
{
  const char *eq = strchr (s, '=');
  if (eq == NULL)
    return line_error (err, name, line,
                       "not a [group], a key=value or a # comment: '%s'", s);
  g_autofree char *key = g_strstrip (g_strndup (s, (gsize) (eq - s)));
  if (group == NULL)
    return line_error (err, name, line, "key '%s' before any [group]", key);
  const DfConfKey *row = df_conf_key_find (group, key);
  if (row == NULL)
    return line_error (err, name, line, "unknown key '%s' in group [%s]",
                       key, group);
  for (guint i = 0; i < settings->len; i++)
    {
      const Setting *o = &g_array_index (settings, Setting, i);
      if (canonical (o->row) != canonical (row))
        continue;
      if (o->row == row)
        return line_error (err, name, line, "[%s] %s is already set on "
                           "line %d", group, key, o->line);
      return line_error (err, name, line, "[%s] %s and [%s] %s (line %d) "
                         "are two spellings of one key", group, key,
                         o->group, o->key, o->line);
    }
  Setting st = { row, g_strdup (group), g_steal_pointer (&key), line };
  g_array_append_val (settings, st);
  return true;
}

/* Check the structure of data line by line; fill settings. */
static bool
scan_lines (const char *data, const char *name, GArray *settings,
            GError **err)
{
  g_auto (GStrv) lines = g_strsplit (data, "\n", -1);
  g_autofree char *group = NULL;
  for (int i = 0; lines[i] != NULL; i++)
    {
      char *s = g_strstrip (lines[i]);
      if (*s == '\0' || *s == '#')
        continue;
      if (*s == '[')
        {
          g_free (group);
          if ((group = scan_group (s, name, i + 1, err)) == NULL)
            return false;
        }
      else if (!scan_key (s, group, settings, name, i + 1, err))
        return false;
    }
  return true;
}

/* ---- load ------------------------------------------------------------- */

void
df_conf_free (DfConf *c)
{
  if (c == NULL)
    return;
  for (guint i = 0; i < schema_len (); i++)
    value_clear (&c->values[i]);
  g_free (c->values);
  g_free (c->file);
  g_free (c);
}

static DfConf *
conf_new (const char *file)
{
  DfConf *c = g_new0 (DfConf, 1);
  c->file = g_strdup (file);
  c->values = g_new0 (Value, schema_len ());
  return c;
}

/* Values of the file's settings, then the defaults of the rest. */
static bool
fill_values (DfConf *c, GKeyFile *kf, GArray *settings, const char *name,
             GError **err)
{
  for (guint i = 0; i < settings->len; i++)
    {
      const Setting *st = &g_array_index (settings, Setting, i);
      Value *v = &c->values[row_index (canonical (st->row))];
      v->line = st->line;
      if (!parse_value (st->row, kf, st->group, st->key, v, err))
        {
          g_prefix_error (err, "%s:%d: [%s] %s: ", name, st->line, st->group,
                          st->key);
          return false;
        }
    }
  for (guint i = 0; i < schema_len (); i++)
    {
      const DfConfKey *k = &df_conf_schema[i];
      if (!c->values[i].has && k->def != NULL && k->alias_of == NULL
          && !parse_default (k, &c->values[i], err))
        return false;
    }
  return true;
}

static DfConf *
load_data (const char *data, const char *name, const char *file,
           GError **err)
{
  g_autoptr (GArray) settings = g_array_new (FALSE, TRUE, sizeof (Setting));
  g_array_set_clear_func (settings, setting_clear);
  g_autoptr (GKeyFile) kf = g_key_file_new ();
  g_autoptr (GError) e = NULL;
  if (!g_utf8_validate (data, -1, NULL))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID, "%s: not UTF-8 text",
                   name);
      return NULL;
    }
  if (!scan_lines (data, name, settings, err))
    return NULL;
  if (!g_key_file_load_from_data (kf, data, (gsize) -1, G_KEY_FILE_NONE, &e))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID, "%s: %s", name,
                   e->message);
      return NULL;
    }
  DfConf *c = conf_new (file);
  if (!fill_values (c, kf, settings, name, err))
    {
      df_conf_free (c);
      return NULL;
    }
  return c;
}

DfConf *
df_conf_load_data (const char *data, const char *name, GError **err)
{
  return load_data (data, name, name, err);
}

const char *
df_conf_choose_path (const char *path, bool *explicit_out)
{
  const char *env = g_getenv (DEFAULT_CONFIG_ENV);
  *explicit_out = true;
  if (path != NULL)
    return path;
  if (env != NULL && *env != '\0')
    return env;
  *explicit_out = false;
  return DF_DEFAULT_CONFIG;
}

DfConf *
df_conf_load (const char *path, GError **err)
{
  bool explicit_path;
  const char *file = df_conf_choose_path (path, &explicit_path);
  g_autofree char *data = NULL;
  g_autoptr (GError) e = NULL;

  if (access (file, F_OK) < 0 && errno == ENOENT)
    {
      if (!explicit_path)
        return load_data ("", file, NULL, err);
      g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
                   "configuration file %s does not exist", file);
      return NULL;
    }
  if (!g_file_get_contents (file, &data, NULL, &e))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_IO, "configuration file %s: %s",
                   file, e->message);
      return NULL;
    }
  return load_data (data, file, file, err);
}

/* ---- getters ---------------------------------------------------------- */

const char *
df_conf_file (const DfConf *c)
{
  return c->file;
}

static const Value *
value_of (const DfConf *c, const char *group, const char *key)
{
  const DfConfKey *k = df_conf_key_find (group, key);
  g_assert (k != NULL);
  return &c->values[row_index (canonical (k))];
}

static const DfConfKey *
row_of (const char *group, const char *key)
{
  const DfConfKey *k = df_conf_key_find (group, key);
  g_assert (k != NULL);
  return canonical (k);
}

bool
df_conf_is_set (const DfConf *c, const char *group, const char *key)
{
  return value_of (c, group, key)->line > 0;
}

int
df_conf_line (const DfConf *c, const char *group, const char *key)
{
  return value_of (c, group, key)->line;
}

const char *
df_conf_string (const DfConf *c, const char *group, const char *key)
{
  DfConfType t = row_of (group, key)->type;
  g_assert (t == DF_CONF_STRING || t == DF_CONF_PATH || t == DF_CONF_IPV4
            || t == DF_CONF_LISTEN);
  return value_of (c, group, key)->str;
}

char *const *
df_conf_list (const DfConf *c, const char *group, const char *key)
{
  DfConfType t = row_of (group, key)->type;
  g_assert (t == DF_CONF_LISTEN_LIST || t == DF_CONF_STRING_LIST);
  return value_of (c, group, key)->list;
}

gint64
df_conf_int (const DfConf *c, const char *group, const char *key)
{
  g_assert (row_of (group, key)->type == DF_CONF_INT);
  return value_of (c, group, key)->num;
}

bool
df_conf_bool (const DfConf *c, const char *group, const char *key)
{
  g_assert (row_of (group, key)->type == DF_CONF_BOOL);
  return value_of (c, group, key)->num != 0;
}

char *
df_conf_get_text (const DfConf *c, const char *dotted, GError **err)
{
  const DfConfKey *k = key_find_dotted (dotted);
  if (k == NULL)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
                   "unknown configuration key '%s' (GROUP.KEY, e.g. "
                   "farm.dir)", dotted);
      return NULL;
    }
  k = canonical (k);
  const Value *v = &c->values[row_index (k)];
  if (!v->has)
    return NULL;
  switch (k->type)
    {
    case DF_CONF_INT:
      return g_strdup_printf ("%" G_GINT64_FORMAT, v->num);
    case DF_CONF_BOOL:
      return g_strdup (v->num ? "true" : "false");
    case DF_CONF_LISTEN_LIST:
    case DF_CONF_STRING_LIST:
      return g_strjoinv (";", v->list);
    default:
      return g_strdup (v->str);
    }
}

void
df_conf_prefix_error (const DfConf *c, const char *group, const char *key,
                      GError **err)
{
  const Value *v = value_of (c, group, key);
  if (v->line > 0 && c->file != NULL)
    g_prefix_error (err, "%s:%d: [%s] %s: ", c->file, v->line, group, key);
}
