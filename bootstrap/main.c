/* bootstrapsvc: the diskfarm bootstrap service (ProxyDHCP + TFTP + HTTP).
 *
 *   bootstrapsvc [--config FILE] [--farm DIR] --address IP [--interface IF]
 *                [--http-port 80]
 *                [--tftp-port 69] [--dhcp-port 67] [--pxe-port 4011]
 *                [--no-proxydhcp] [--chain-ipxe] [--user USER]
 *                [--server-name NAME]
 *
 * Binds every socket first, then drops to an unprivileged user (started
 * as root) and in every case to no capability at all, then serves
 * everything from one GLib main loop. */
#include "config.h"
#include "common.h"
#include "conf.h"
#include "farm.h"
#include "health.h"
#include "heartbeat.h"
#include "watch.h"
#include "privilege.h"
#include "boottoken.h"
#include "http.h"
#include "proxydhcp.h"
#include "tftp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <locale.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
  char *config;
  char *farm;
  char *db;             /* --db / [farm] database; NULL: <farm>/farm.db */
  char *address;
  char *interface;
  char *user;
  char *server_name;        /* registry name, or NULL: not registered */
  gint http_port, tftp_port, dhcp_port, pxe_port;
  gint health_interval;
  gboolean no_proxydhcp, chain_ipxe, verbose, version;
  GOptionEntry *entries;  /* parse_options' table (df_options_keep), owned */
} Options;

static void
options_clear (Options *o)
{
  df_options_release (o->entries);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (Options, options_clear)

#define GROUP "bootstrapsvc"

/* A string option the command line left unset, from diskfarm.conf. */
static void
conf_str (char **dst, const DfConf *c, const char *group, const char *key)
{
  if (*dst == NULL)
    *dst = g_strdup (df_conf_string (c, group, key));
}

/* An integer option the command line left at -1, from diskfarm.conf. */
static void
conf_int (gint *dst, const DfConf *c, const char *key)
{
  if (*dst < 0)
    *dst = (gint) df_conf_int (c, GROUP, key);
}

/* Fill what the command line left unset from diskfarm.conf ([farm] dir,
 * [bootstrapsvc]), which holds the built-in defaults too. */
static bool
apply_config (Options *o, GError **err)
{
  g_autoptr (DfConf) c = df_conf_load (o->config, err);
  if (c == NULL)
    return false;
  conf_str (&o->farm, c, "farm", "dir");
  conf_str (&o->db, c, "farm", "database");
  conf_str (&o->address, c, GROUP, "address");
  conf_str (&o->interface, c, GROUP, "interface");
  conf_str (&o->user, c, GROUP, "user");
  conf_str (&o->server_name, c, GROUP, "server-name");
  conf_int (&o->http_port, c, "http-port");
  conf_int (&o->tftp_port, c, "tftp-port");
  conf_int (&o->dhcp_port, c, "dhcp-port");
  conf_int (&o->pxe_port, c, "pxe-port");
  conf_int (&o->health_interval, c, "health-interval");
  o->no_proxydhcp = o->no_proxydhcp || df_conf_bool (c, GROUP, "no-proxydhcp");
  o->chain_ipxe = o->chain_ipxe || df_conf_bool (c, GROUP, "chain-ipxe");
  return true;
}

/* The four ports within lo..hi: the command line's before the file
 * fills the unset ones (-1), all of them after. */
static bool
check_ports (const Options *o, gint lo, gint hi, GError **err)
{
  const gint ports[] = { o->http_port, o->tftp_port, o->dhcp_port,
                         o->pxe_port };

  for (guint i = 0; i < G_N_ELEMENTS (ports); i++)
    if (ports[i] < lo || ports[i] > hi)
      {
        g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                     "port %d is outside 0-65535", ports[i]);
        return false;
      }
  return true;
}

static bool
check_options (const Options *o, GError **err)
{
  if (!o->address)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID, "--address (or "
                   "[bootstrapsvc] address in diskfarm.conf) is required");
      return false;
    }
  if (!check_ports (o, 0, 65535, err))
    return false;
  if (o->server_name
      && !df_validate_name ("--server-name", o->server_name, err))
    return false;
  if (o->health_interval < 100 || o->health_interval > 600000)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "--health-interval must be 100-600000 ms");
      return false;
    }
  return true;
}

/* Command line, then diskfarm.conf for what it left unset. */
static bool
parse_options (Options *o, int *argc, char ***argv, GError **err)
{
  o->http_port = o->tftp_port = o->dhcp_port = o->pxe_port = -1;
  o->health_interval = -1;
  const GOptionEntry entries[] = {
    { "config", 0, 0, G_OPTION_ARG_FILENAME, &o->config,
      "Configuration file (default $DISKFARM_CONFIG, else "
      DF_DEFAULT_CONFIG "); options given here win over it", "FILE" },
    { "farm", 0, 0, G_OPTION_ARG_FILENAME, &o->farm,
      "Farm directory (default: [farm] dir, else " DF_DEFAULT_FARM ")",
      "DIR" },
    { "db", 0, 0, G_OPTION_ARG_STRING, &o->db,
      "Farm DB: a PostgreSQL URI (postgresql://...) or conninfo (default: "
      "[farm] database, else the farm directory's farm.db)", "URI" },
    { "address", 0, 0, G_OPTION_ARG_STRING, &o->address,
      "This server's IPv4 address: next-server, HTTP and TFTP", "IP" },
    { "interface", 0, 0, G_OPTION_ARG_STRING, &o->interface,
      "Answer DHCP only on this interface", "IF" },
    { "http-port", 0, 0, G_OPTION_ARG_INT, &o->http_port,
      "HTTP port (default 80, 0: any)", "PORT" },
    { "tftp-port", 0, 0, G_OPTION_ARG_INT, &o->tftp_port,
      "TFTP port (default 69, 0: any)", "PORT" },
    { "dhcp-port", 0, 0, G_OPTION_ARG_INT, &o->dhcp_port,
      "ProxyDHCP port (default 67)", "PORT" },
    { "pxe-port", 0, 0, G_OPTION_ARG_INT, &o->pxe_port,
      "PXE boot server port (default 4011)", "PORT" },
    { "no-proxydhcp", 0, 0, G_OPTION_ARG_NONE, &o->no_proxydhcp,
      "Do not answer DHCP (the site DHCP sends options 66/67)", NULL },
    { "chain-ipxe", 0, 0, G_OPTION_ARG_NONE, &o->chain_ipxe,
      "Make iPXE ROMs chain-load our iPXE binary first", NULL },
    { "user", 0, 0, G_OPTION_ARG_STRING, &o->user,
      "User to run as after binding (default: diskfarm if it exists, "
      "else nobody)", "USER" },
    { "server-name", 0, 0, G_OPTION_ARG_STRING, &o->server_name,
      "Register and heartbeat in the farm's registry as NAME, kind "
      "bootstrapsvc (default: [bootstrapsvc] server-name; none: not "
      "registered)", "NAME" },
    { "health-interval", 0, 0, G_OPTION_ARG_INT, &o->health_interval,
      "Milliseconds between stream server health checks (default 2000)",
      "MS" },
    { "verbose", 'v', 0, G_OPTION_ARG_NONE, &o->verbose,
      "Also log every TFTP and HTTP file sent, and debug messages", NULL },
    { "version", 0, 0, G_OPTION_ARG_NONE, &o->version, "Print the version",
      NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) oc = g_option_context_new ("");
  g_option_context_set_summary (oc, "diskfarm bootstrap service: ProxyDHCP, "
                                "TFTP and HTTP iPXE boot scripts.");
  o->entries = df_options_keep (entries);
  g_option_context_add_main_entries (oc, entries, NULL);
  if (!g_option_context_parse (oc, argc, argv, err)
      || !df_options_check_values (entries, NULL, err))
    return false;
  if (!check_ports (o, -1, G_MAXINT, err)) /* -1: unset, from the file */
    return false;
  if (o->version)
    return true;
  return apply_config (o, err) && check_options (o, err);
}

/* ---- sockets ---------------------------------------------------------- */

static int
udp_socket (guint32 addr, guint16 port, const char *ifname, GError **err)
{
  int fd = socket (AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    {
      df_set_error_errno (err, errno, "socket");
      return -1;
    }
  int one = 1;
  setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (ifname && setsockopt (fd, SOL_SOCKET, SO_BINDTODEVICE, ifname,
                            strlen (ifname) + 1) < 0)
    {
      df_set_error_errno (err, errno, "bind to interface %s", ifname);
      close (fd);
      return -1;
    }
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons (port),
                            .sin_addr.s_addr = addr };
  if (bind (fd, (struct sockaddr *) &sa, sizeof sa) < 0)
    {
      df_set_error_errno (err, errno, "bind UDP %s:%u",
                          inet_ntoa (sa.sin_addr), port);
      close (fd);
      return -1;
    }
  return fd;
}

static guint16
bound_port (int fd)
{
  struct sockaddr_in sa;
  socklen_t l = sizeof sa;
  getsockname (fd, (struct sockaddr *) &sa, &l);
  return ntohs (sa.sin_port);
}

/* ---- privileges ------------------------------------------------------- */

/* What the service still needs after the drop: the boot directory is
 * searched (TFTP/HTTP open files below it by name, from an fd held
 * across the drop) and the farm's group grants that on a 0750 farm. */
static bool
drop_privileges (const char *user, int boot_fd, const char *boot_dir,
                 gid_t farm_gid, GError **err)
{
  const DfAccessNeed needs[] = {
    { boot_fd, ".", X_OK, boot_dir },
  };
  return df_drop_privileges (user, farm_gid, needs, G_N_ELEMENTS (needs),
                             err);
}

/* ---- the service ------------------------------------------------------ */

typedef struct {
  Options *o;
  guint32 addr;
  DfFarm *farm;
  DfBootTokens *tokens;     /* the farm's boot token key + used tokens */
  DfHealth *health;
  DfBootHttp *http;
  DfTftpServer *tftp;
  DfProxyDhcp *dhcp;
  DfHeartbeat *heartbeat;   /* registry, when a server name is set */
  DfFarmWatch *watch;       /* the local snapshot (PostgreSQL only) */
  guint16 tftp_port;        /* bound TFTP port */
  GMainLoop *loop;
} Service;

static bool
service_healthy (gpointer data)
{
  Service *s = data;
  return df_health_ok (s->health, NULL);
}

static bool
start_tftp (Service *s, const char *boot_dir, GError **err)
{
  int fd = udp_socket (s->addr, (guint16) s->o->tftp_port, NULL, err);
  if (fd < 0)
    return false;
  guint16 port = bound_port (fd);
  s->tftp_port = port;
  DfTftpConfig cfg = { .root = boot_dir };
  s->tftp = df_tftp_server_new (&cfg, fd, err);
  if (!s->tftp)
    return false;
  g_message ("tftp listening on %s:%u", s->o->address, port);
  return true;
}

static bool
start_dhcp (Service *s, guint16 http_port, GError **err)
{
  int fd67 = udp_socket (INADDR_ANY, (guint16) s->o->dhcp_port,
                         s->o->interface, err);
  if (fd67 < 0)
    return false;
  int fd4011 = udp_socket (INADDR_ANY, (guint16) s->o->pxe_port,
                           s->o->interface, err);
  if (fd4011 < 0)
    {
      close (fd67);
      return false;
    }
  guint16 p67 = bound_port (fd67), p4011 = bound_port (fd4011);
  g_autofree char *url = g_strdup_printf (
    "http://%s:%u/boot.ipxe?mac=${net0/mac}&uuid=${uuid}", s->o->address,
    http_port);
  g_autofree char *tftp_port = s->tftp_port == 69 ? g_strdup ("")
    : g_strdup_printf (":%u", s->tftp_port);
  g_autofree char *bios = g_strdup_printf ("tftp://%s%s/undionly.kpxe",
                                           s->o->address, tftp_port);
  g_autofree char *efi = g_strdup_printf ("tftp://%s%s/ipxe.efi",
                                          s->o->address, tftp_port);
  g_autofree char *http_boot = g_strdup_printf (
    "http://%s:%u/" DF_BOOT_FILE_EFI, s->o->address, http_port);
  DfProxyConfig cfg = {
    .address = s->addr, .script_url = url, .chain_ipxe = s->o->chain_ipxe,
    .chain_url_bios = bios, .chain_url_efi = efi,
    .http_boot_url = http_boot,
    .healthy = service_healthy, .healthy_data = s, .tokens = s->tokens,
  };
  s->dhcp = df_proxydhcp_new (&cfg, fd67, fd4011);
  g_message ("proxydhcp listening on ports %u and %u", p67, p4011);
  return true;
}

/* Drop privileges, checking the boot directory stays reachable. */
static bool
drop_for_service (Service *s, const char *boot_dir, GError **err)
{
  struct stat st;
  if (stat (s->o->farm, &st) < 0)
    {
      df_set_error_errno (err, errno, "farm directory %s", s->o->farm);
      return false;
    }
  int boot_fd = open (boot_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (boot_fd < 0)
    {
      df_set_error_errno (err, errno, "boot directory %s", boot_dir);
      return false;
    }
  bool ok = drop_privileges (s->o->user, boot_fd, boot_dir, st.st_gid, err);
  close (boot_fd);
  return ok;
}

/* Register as a bootstrapsvc: its admin port is its HTTP port (the boot
 * scripts); it is never listed as a stream target. */
static void
start_heartbeat (Service *s, guint16 http_port)
{
  if (!s->o->server_name)
    return;
  DfServer self = {
    .name = s->o->server_name, .address = s->o->address,
    .iscsi_port = DF_ISCSI_PORT, .nbd_port = DF_NBD_PORT,
    .admin_port = http_port, .power = 1,
    .kind = (char *) DF_SERVER_KIND_BOOTSTRAP,
    .timeout_ms = (gint64) DF_HEARTBEAT_INTERVAL_MS * DF_HEARTBEAT_MISSED,
    .software = (char *) DF_VERSION,
  };
  s->heartbeat = df_heartbeat_start (s->o->farm, s->o->db, &self,
                                     DF_HEARTBEAT_INTERVAL_MS, NULL, NULL);
}

static bool
service_start (Service *s, GError **err)
{
  struct in_addr ia;
  if (inet_pton (AF_INET, s->o->address, &ia) != 1)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "--address '%s' is not an IPv4 address", s->o->address);
      return false;
    }
  s->addr = ia.s_addr;
  s->farm = df_farm_open_db (s->o->farm, s->o->db, false, "bootstrapsvc",
                             err);
  if (!s->farm)
    return false;
  s->tokens = df_boot_tokens_from_farm (s->farm, err);
  if (!s->tokens)
    return false;
  g_autofree char *boot_dir = g_build_filename (s->o->farm, "boot", NULL);
  s->health = df_health_new (s->farm, (guint) s->o->health_interval);
  s->http = df_boot_http_new (s->farm, s->health, s->tokens, boot_dir,
                              s->o->address, err);
  guint16 http_port = 0;
  if (!s->http
      || !df_boot_http_listen (s->http, s->o->address,
                               (guint16) s->o->http_port, &http_port, err))
    return false;
  g_message ("http listening on http://%s:%u", s->o->address, http_port);
  if (!start_tftp (s, boot_dir, err))
    return false;
  if (!s->o->no_proxydhcp && !start_dhcp (s, http_port, err))
    return false;
  if (!drop_for_service (s, boot_dir, err))
    return false;
  start_heartbeat (s, http_port);
  /* offline mode: the local snapshot boot scripts fall back on */
  s->watch = df_farm_watch_start (s->o->farm, s->o->db, NULL, NULL);
  return true;
}

static void
service_stop (Service *s)
{
  if (s->tftp)
    {
      DfTftpStats st;
      df_tftp_server_stats (s->tftp, &st);
      g_message ("tftp: %" G_GUINT64_FORMAT " transfers done, %"
                 G_GUINT64_FORMAT " failed, %" G_GUINT64_FORMAT " refused, %"
                 G_GUINT64_FORMAT " retransmits; cache %" G_GUINT64_FORMAT
                 " hits, %" G_GUINT64_FORMAT " files read",
                 st.transfers_done, st.transfers_failed, st.requests_refused,
                 st.retransmits, st.cache_hits, st.cache_misses);
    }
  g_clear_pointer (&s->watch, df_farm_watch_stop);
  g_clear_pointer (&s->heartbeat, df_heartbeat_stop);
  g_clear_pointer (&s->dhcp, df_proxydhcp_free);
  g_clear_pointer (&s->tftp, df_tftp_server_free);
  g_clear_pointer (&s->http, df_boot_http_free);
  g_clear_pointer (&s->health, df_health_free);
  g_clear_pointer (&s->tokens, df_boot_tokens_free);
  g_clear_pointer (&s->farm, df_farm_close);
}

static gboolean
on_signal (gpointer data)
{
  g_main_loop_quit (data);
  return G_SOURCE_CONTINUE;
}

int
main (int argc, char **argv)
{
  setlocale (LC_ALL, "");
  umask (DF_UMASK);
  g_set_prgname ("bootstrapsvc");
  g_auto (Options) o = { 0 };
  g_autoptr (GError) err = NULL;
  if (!parse_options (&o, &argc, &argv, &err))
    {
      fprintf (stderr, "bootstrapsvc: %s\n", err->message);
      return 2;
    }
  if (o.version)
    {
      printf ("bootstrapsvc %s\n", DF_VERSION);
      return 0;
    }
  df_log_init ("bootstrapsvc", o.verbose);
  Service s = { .o = &o };
  s.loop = g_main_loop_new (NULL, FALSE);
  int rc = 0;
  if (!service_start (&s, &err))
    {
      df_log_fatal (err->message);
      rc = 1;
    }
  else
    {
      g_message ("ready");
      g_unix_signal_add (SIGTERM, on_signal, s.loop);
      g_unix_signal_add (SIGINT, on_signal, s.loop);
      g_main_loop_run (s.loop);
    }
  service_stop (&s);
  g_main_loop_unref (s.loop);
  return rc;
}
