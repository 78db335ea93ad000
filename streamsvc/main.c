/* streamsvc: the stream service daemon (NBD front end + admin HTTP).
 *
 *   streamsvc [--farm DIR] [--config FILE] [--nbd-listen ADDR]...
 *             [--iscsi-listen HOST:PORT]...
 *             [--admin-listen ADDR|none] [--threads N] [--stdio]
 *             [--tcp-keepalive SECONDS] [--iscsi-nop-interval SECONDS]
 *             [--iscsi-nop-timeout SECONDS] [--handshake-timeout SECONDS]
 *             [--request-timeout SECONDS] [--max-connections-per-source N]
 *             [--tls=off|on|require] [--tls-certificates DIR]
 *             [--tls-psk FILE] [--tls-verify-peer]
 *             [--pidfile FILE] [--user USER] [--verbose] [--version]
 *             [--server-name NAME] [--server-address ADDR] [--power N]
 *             [--heartbeat-interval MS] [--heartbeat-timeout MS]
 *   streamsvc --relay [--upstream HOST:PORT]... [--relay-cache-size SIZE]
 *             [--relay-stall SECONDS] [--relay-timeout SECONDS]
 *             [--nbd-listen ADDR]... [--farm DIR] [--db URI] ...
 *
 * Binds every socket as root, then runs as the diskfarm user with no
 * capability (privilege.h).  Ready when every "streamsvc: ... listening
 * on ..." line is on stderr.
 */
#define G_LOG_DOMAIN "streamsvc"

#include <bsd/libutil.h>
#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>

#include "admin.h"
#include "common.h"
#include "defaults.h"
#include "conf.h"
#include "config.h"
#include "exports.h"
#include "farm.h"
#include "privilege.h"
#include "registry.h"
#include "relay.h"
#include "server.h"
#include "sessions.h"
#include "tls.h"

#define CONFIG_GROUP "streamsvc"
#define UNSET G_MININT /* integer option not given (negatives are errors) */

typedef struct {
  char *farm;
  char *db;             /* --db / [farm] database; NULL: <farm>/farm.db */
  char *config;
  char **nbd_listen;
  char **iscsi_listen;
  char *admin_listen;
  int threads;
  int tcp_keepalive;      /* UNSET: from diskfarm.conf */
  int nop_interval;
  int nop_timeout;
  int handshake_timeout;  /* UNSET: from diskfarm.conf */
  int request_timeout;
  int max_per_source;
  char *tls;              /* NULL: diskfarm.conf, else the farm's nbd-tls */
  char *tls_certificates;
  char *tls_psk;
  gboolean tls_verify_peer;
  DfTlsMode tls_mode;     /* resolved (resolve_tls) */
  const char *tls_from;   /* where tls_mode came from, for the log */
  gboolean stdio;
  char *pidfile;
  char *user;
  char *server_name;      /* registry name, or NULL: no registry */
  char *shared_cache_dir; /* tier-2 caches' home, or NULL */
  int lease_time;         /* ms */
  char *server_address;
  int power;
  int hb_interval;        /* ms */
  int hb_timeout;         /* ms, 0: DF_HEARTBEAT_MISSED intervals */
  gboolean relay;         /* --relay: relay.h instead of the farm's exports */
  char **upstream;        /* HOST:PORT, NULL: the farm's registry */
  char *relay_cache;      /* size, NULL: DF_RELAY_CACHE_DEFAULT */
  int relay_stall;        /* seconds */
  int relay_timeout;      /* seconds */
  gboolean verbose;
  gboolean version;
  GOptionEntry *entries;  /* parse_cli's table (df_options_keep), owned */
} Options;

static void
options_clear (Options *o)
{
  df_options_release (o->entries);
}

static bool
parse_cli (Options *o, int *argc, char ***argv, GError **err)
{
  const GOptionEntry entries[] = {
    { "farm", 0, 0, G_OPTION_ARG_FILENAME, &o->farm,
      "Farm directory (default: diskfarm.conf [farm] dir, else "
      DF_DEFAULT_FARM ")", "DIR" },
    { "db", 0, 0, G_OPTION_ARG_STRING, &o->db,
      "Farm DB: a PostgreSQL URI (postgresql://...) or conninfo (default: "
      "diskfarm.conf [farm] database, else the farm directory's farm.db)",
      "URI" },
    { "config", 0, 0, G_OPTION_ARG_FILENAME, &o->config,
      "Configuration file (default $DISKFARM_CONFIG, else "
      DF_DEFAULT_CONFIG "); options given here win over it", "FILE" },
    { "nbd-listen", 0, 0, G_OPTION_ARG_STRING_ARRAY, &o->nbd_listen,
      "NBD listen address HOST:PORT or unix:PATH (repeatable; default "
      DF_NBD_DEFAULT_LISTEN ")", "ADDR" },
    { "iscsi-listen", 0, 0, G_OPTION_ARG_STRING_ARRAY, &o->iscsi_listen,
      "iSCSI listen address HOST[:PORT] (repeatable; default port 3260; "
      "no iSCSI unless given)", "ADDR" },
    { "admin-listen", 0, 0, G_OPTION_ARG_STRING, &o->admin_listen,
      "Admin HTTP: HOST:PORT adds a TCP listener (bearer token needed but "
      "for /metrics and /v1/health), unix:PATH moves the UNIX socket "
      "(default " DF_RUNTIME_DIR "/" DF_ADMIN_SOCKET ", or the farm's "
      "run/" DF_ADMIN_SOCKET "), none disables", "ADDR" },
    { "threads", 0, 0, G_OPTION_ARG_INT, &o->threads,
      "Worker threads (default: number of CPUs)", "N" },
    { "tcp-keepalive", 0, 0, G_OPTION_ARG_INT, &o->tcp_keepalive,
      "Drop a TCP connection whose peer vanished within SECONDS (keepalive "
      "probes + TCP_USER_TIMEOUT; default "
      G_STRINGIFY (DF_TCP_KEEPALIVE_DEFAULT) "; 0 = off)", "SECONDS" },
    { "iscsi-nop-interval", 0, 0, G_OPTION_ARG_INT, &o->nop_interval,
      "Ping an idle iSCSI session with a NOP-In after SECONDS (default "
      G_STRINGIFY (DF_ISCSI_NOP_INTERVAL_DEFAULT) "; 0 = off)", "SECONDS" },
    { "iscsi-nop-timeout", 0, 0, G_OPTION_ARG_INT, &o->nop_timeout,
      "Drop an iSCSI connection silent for SECONDS after a NOP-In (default "
      G_STRINGIFY (DF_ISCSI_NOP_TIMEOUT_DEFAULT) ")", "SECONDS" },
    { "handshake-timeout", 0, 0, G_OPTION_ARG_INT, &o->handshake_timeout,
      "Close a connection that has no session SECONDS after it was "
      "accepted: NBD negotiation, iSCSI login, a whole discovery session "
      "(default " G_STRINGIFY (DF_HANDSHAKE_TIMEOUT_DEFAULT) "; 0 = no "
      "limit)", "SECONDS" },
    { "request-timeout", 0, 0, G_OPTION_ARG_INT, &o->request_timeout,
      "Close a session whose started request (NBD) or PDU (iSCSI) is not "
      "whole after SECONDS; an idle session is kept (default "
      G_STRINGIFY (DF_REQUEST_TIMEOUT_DEFAULT) "; 0 = no limit)",
      "SECONDS" },
    { "max-connections-per-source", 0, 0, G_OPTION_ARG_INT,
      &o->max_per_source,
      "Open TCP connections (NBD and iSCSI) allowed from one client "
      "address; more are closed at once (default "
      G_STRINGIFY (DF_MAX_CONN_PER_SOURCE_DEFAULT) "; 0 = no limit)", "N" },
    { "tls", 0, 0, G_OPTION_ARG_STRING, &o->tls,
      "NBD TLS: off, on (offered) or require (nothing but STARTTLS before "
      "it); default: diskfarm.conf, else the farm's nbd-tls setting, else "
      "off", DF_TLS_MODES },
    { "tls-certificates", 0, 0, G_OPTION_ARG_FILENAME, &o->tls_certificates,
      "x509: DIR holds ca-cert.pem, server-cert.pem, server-key.pem; a "
      "client certificate's CN is its device", "DIR" },
    { "tls-psk", 0, 0, G_OPTION_ARG_FILENAME, &o->tls_psk,
      "Pre-shared keys, identity:hexkey lines (identity = device name), "
      "besides the farm's device keys", "FILE" },
    { "tls-verify-peer", 0, 0, G_OPTION_ARG_NONE, &o->tls_verify_peer,
      "x509: refuse TLS clients without a certificate", NULL },
    { "stdio", 0, 0, G_OPTION_ARG_NONE, &o->stdio,
      "Serve one NBD connection on stdin/stdout and exit", NULL },
    { "pidfile", 0, 0, G_OPTION_ARG_FILENAME, &o->pidfile,
      "Write the process id to FILE (locked)", "FILE" },
    { "user", 0, 0, G_OPTION_ARG_STRING, &o->user,
      "User to run as after binding (default: " DF_SERVICE_USER " if it "
      "exists, else nobody; root keeps root)", "USER" },
    { "server-name", 0, 0, G_OPTION_ARG_STRING, &o->server_name,
      "Register and heartbeat in the farm's registry as NAME, verify the "
      "store at start (default: [streamsvc] server-name; none: no "
      "registry)", "NAME" },
    { "server-address", 0, 0, G_OPTION_ARG_STRING, &o->server_address,
      "Address registered for targets (default: the first listen host, "
      "else the host name)", "ADDR" },
    { "power", 0, 0, G_OPTION_ARG_INT, &o->power,
      "Relative capacity 1-1000 registered (default 1)", "N" },
    { "heartbeat-interval", 0, 0, G_OPTION_ARG_INT, &o->hb_interval,
      "Milliseconds between registry heartbeats (default "
      G_STRINGIFY (DF_HEARTBEAT_INTERVAL_MS) ")", "MS" },
    { "heartbeat-timeout", 0, 0, G_OPTION_ARG_INT, &o->hb_timeout,
      "Unhealthy after MS without a heartbeat (default "
      G_STRINGIFY (DF_HEARTBEAT_MISSED) " intervals)", "MS" },
    { "relay", 0, 0, G_OPTION_ARG_NONE, &o->relay,
      "Run as the hypervisor's relay: serve the farm's exports to this "
      "host's VMs (default listen " DF_RELAY_DEFAULT_LISTEN_UNIX " and "
      DF_RELAY_DEFAULT_LISTEN_TCP "), reading them from the farm's stream "
      "servers, failing over between them", NULL },
    { "upstream", 0, 0, G_OPTION_ARG_STRING_ARRAY, &o->upstream,
      "--relay: a stream server's NBD address HOST:PORT (repeatable; "
      "default: the healthy stream servers of the farm's registry)",
      "HOST:PORT" },
    { "relay-cache-size", 0, 0, G_OPTION_ARG_STRING, &o->relay_cache,
      "--relay: RAM for the shared read cache of sealed versions (default "
      DF_RELAY_CACHE_DEFAULT "; 0 = none)", "SIZE" },
    { "relay-stall", 0, 0, G_OPTION_ARG_INT, &o->relay_stall,
      "--relay: a request whose server died fails with EIO when no other "
      "server answered it within SECONDS (default "
      G_STRINGIFY (DF_RELAY_STALL_DEFAULT) ")", "SECONDS" },
    { "relay-timeout", 0, 0, G_OPTION_ARG_INT, &o->relay_timeout,
      "--relay: a server silent for SECONDS on a request is dead (default "
      G_STRINGIFY (DF_RELAY_TIMEOUT_DEFAULT) ")", "SECONDS" },
    { "shared-cache-dir", 0, 0, G_OPTION_ARG_FILENAME, &o->shared_cache_dir,
      "Keep server-persistent device caches in DIR (storage every server "
      "reaches) under cache leases, so they fail over (needs "
      "--server-name; default: [streamsvc] shared-cache-dir)", "DIR" },
    { "lease-time", 0, 0, G_OPTION_ARG_INT, &o->lease_time,
      "Milliseconds a cache lease lasts (default 9000)", "MS" },
    { "verbose", 'v', 0, G_OPTION_ARG_NONE, &o->verbose,
      "Debug logging", NULL },
    { "version", 0, 0, G_OPTION_ARG_NONE, &o->version,
      "Print the version and exit", NULL },
    { NULL },
  };
  g_autoptr (GOptionContext) ctx =
    g_option_context_new ("- diskfarm stream service (NBD, iSCSI)");

  o->threads = -1;
  o->tcp_keepalive = o->nop_interval = o->nop_timeout = UNSET;
  o->handshake_timeout = o->request_timeout = o->max_per_source = UNSET;
  o->power = o->hb_interval = o->hb_timeout = o->lease_time = UNSET;
  o->relay_stall = DF_RELAY_STALL_DEFAULT;
  o->relay_timeout = DF_RELAY_TIMEOUT_DEFAULT;
  o->entries = df_options_keep (entries);
  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, argc, argv, err)
      || !df_options_check_values (entries, NULL, err))
    return false;
  if (*argc > 1)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "unexpected argument '%s'", (*argv)[1]);
      return false;
    }
  return true;
}

/* The TLS keys of [streamsvc].  tls stays NULL when neither the command
 * line nor the file set it: the farm's setting decides (resolve_tls). */
static bool
apply_config_tls (Options *o, const DfConf *c, GError **err)
{
  DfTlsMode mode;

  if (o->tls == NULL && df_conf_is_set (c, CONFIG_GROUP, "tls"))
    {
      o->tls = g_strdup (df_conf_string (c, CONFIG_GROUP, "tls"));
      if (!df_tls_mode_parse (o->tls, &mode, err))
        {
          df_conf_prefix_error (c, CONFIG_GROUP, "tls", err);
          return false;
        }
      o->tls_from = "diskfarm.conf";
    }
  if (o->tls_certificates == NULL)
    o->tls_certificates = g_strdup (df_conf_string (c, CONFIG_GROUP,
                                                    "tls-certificates"));
  if (o->tls_psk == NULL)
    o->tls_psk = g_strdup (df_conf_string (c, CONFIG_GROUP, "tls-psk"));
  if (!o->tls_verify_peer)
    o->tls_verify_peer = df_conf_bool (c, CONFIG_GROUP, "tls-verify-peer");
  return true;
}

/* The [streamsvc] keys that fill an option the command line left unset
 * (NULL / UNSET) as they are; the others need more (apply_config). */
static void
apply_config_plain (Options *o, const DfConf *c)
{
  const struct {
    const char *key;
    char **value;
  } strings[] = {
    { "admin-listen", &o->admin_listen },
    { "server-name", &o->server_name },
    { "server-address", &o->server_address },
    { "shared-cache-dir", &o->shared_cache_dir },
    { "user", &o->user },
  };
  const struct {
    const char *key;
    int *value;
  } ints[] = {
    { "iscsi-nop-interval", &o->nop_interval },
    { "iscsi-nop-timeout", &o->nop_timeout },
    { "handshake-timeout", &o->handshake_timeout },
    { "request-timeout", &o->request_timeout },
    { "max-connections-per-source", &o->max_per_source },
    { "power", &o->power },
    { "heartbeat-interval", &o->hb_interval },
    { "heartbeat-timeout", &o->hb_timeout },
    { "lease-time", &o->lease_time },
  };

  for (size_t i = 0; i < G_N_ELEMENTS (strings); i++)
    if (*strings[i].value == NULL)
      *strings[i].value = g_strdup (df_conf_string (c, CONFIG_GROUP,
                                                    strings[i].key));
  for (size_t i = 0; i < G_N_ELEMENTS (ints); i++)
    if (*ints[i].value == UNSET)
      *ints[i].value = (int) df_conf_int (c, CONFIG_GROUP, ints[i].key);
}

/* Fill what the command line left unset from diskfarm.conf ([farm] dir,
 * [streamsvc]), which holds the built-in defaults of what it does not
 * set.  Every value of the file was checked when it was loaded. */
static bool
apply_config (Options *o, GError **err)
{
  g_autoptr (DfConf) c = df_conf_load (o->config, err);
  if (c == NULL)
    return false;
  char *const *iscsi = df_conf_list (c, CONFIG_GROUP, "iscsi-listen");

  if (o->farm == NULL)
    o->farm = g_strdup (df_conf_string (c, "farm", "dir"));
  if (o->db == NULL)
    o->db = g_strdup (df_conf_string (c, "farm", "database"));
  if (o->nbd_listen == NULL && o->relay)
    o->nbd_listen = g_strsplit (DF_RELAY_DEFAULT_LISTEN_UNIX " "
                                DF_RELAY_DEFAULT_LISTEN_TCP, " ", -1);
  else if (o->nbd_listen == NULL)
    o->nbd_listen = g_strdupv ((char **) df_conf_list (c, CONFIG_GROUP,
                                                       "nbd-listen"));
  if (o->iscsi_listen == NULL && iscsi != NULL)
    o->iscsi_listen = g_strdupv ((char **) iscsi);
  if (o->threads < 0)
    o->threads = (int) df_conf_int (c, CONFIG_GROUP, "threads");
  if (o->tcp_keepalive == UNSET)
    {
      /* the schema has the range; the gap below the minimum is ours */
      o->tcp_keepalive = (int) df_conf_int (c, CONFIG_GROUP, "tcp-keepalive");
      if (!df_check_tcp_keepalive (o->tcp_keepalive, err))
        {
          df_conf_prefix_error (c, CONFIG_GROUP, "tcp-keepalive", err);
          return false;
        }
    }
  apply_config_plain (o, c);
  return apply_config_tls (o, c, err);
}

/* Dead-peer options given on the command line (the file's values were
 * checked when it was loaded). */
static bool
check_liveness (const Options *o, GError **err)
{
  if (!df_check_tcp_keepalive (o->tcp_keepalive, err))
    {
      g_prefix_error (err, "--tcp-keepalive: ");
      return false;
    }
  if (o->nop_interval < 0 || o->nop_interval > DF_ISCSI_NOP_MAX)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "--iscsi-nop-interval %d: 0 (off) to %d seconds",
                   o->nop_interval, DF_ISCSI_NOP_MAX);
      return false;
    }
  if (o->nop_timeout < 1 || o->nop_timeout > DF_ISCSI_NOP_MAX)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "--iscsi-nop-timeout %d: 1 to %d seconds", o->nop_timeout,
                   DF_ISCSI_NOP_MAX);
      return false;
    }
  return true;
}

/* Connection limits given on the command line. */
static bool
check_limits (const Options *o, GError **err)
{
  const struct {
    const char *name;
    int value, max;
  } lim[] = {
    { "--handshake-timeout", o->handshake_timeout, DF_TIMEOUT_MAX },
    { "--request-timeout", o->request_timeout, DF_TIMEOUT_MAX },
    { "--max-connections-per-source", o->max_per_source,
      DF_MAX_CONN_PER_SOURCE_MAX },
  };

  for (size_t i = 0; i < G_N_ELEMENTS (lim); i++)
    if (lim[i].value < 0 || lim[i].value > lim[i].max)
      {
        g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                     "%s %d: 0 (no limit) to %d", lim[i].name, lim[i].value,
                     lim[i].max);
        return false;
      }
  return true;
}

/* --tls given on the command line (the file's was checked at load). */
static bool
check_tls (Options *o, GError **err)
{
  if (o->tls != NULL && o->tls_from == NULL)
    {
      if (!df_tls_mode_parse (o->tls, &o->tls_mode, err))
        {
          g_prefix_error (err, "--tls: ");
          return false;
        }
      o->tls_from = "--tls";
    }
  else if (o->tls != NULL)
    df_tls_mode_parse (o->tls, &o->tls_mode, NULL);
  return true;
}

/* The registry options (the file's were checked when it was loaded). */
static bool
check_registry (const Options *o, GError **err)
{
  if (o->server_name != NULL
      && !df_validate_name ("--server-name", o->server_name, err))
    return false;
  if (o->server_address != NULL
      && !df_validate_host ("--server-address", o->server_address, err))
    return false;
  if (o->shared_cache_dir != NULL && o->server_name == NULL)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "--shared-cache-dir needs --server-name (a cache lease "
                   "names its holder)");
      return false;
    }
  if (o->lease_time < 1000 || o->lease_time > 600000)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "--lease-time %d: 1000 to 600000 ms", o->lease_time);
      return false;
    }
  if (o->power < 1 || o->power > 1000)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "--power %d: 1 to 1000", o->power);
      return false;
    }
  if (o->hb_interval < 100 || o->hb_interval > 600000)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "--heartbeat-interval %d: 100 to 600000 ms",
                   o->hb_interval);
      return false;
    }
  if (o->hb_timeout != 0 && (o->hb_timeout < o->hb_interval
                             || o->hb_timeout > 86400000))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "--heartbeat-timeout %d: 0 (3 intervals) or one "
                   "interval (%d) to 86400000 ms", o->hb_timeout,
                   o->hb_interval);
      return false;
    }
  return true;
}

/* --relay and the options that go with it (and with it only). */
static bool
check_relay (const Options *o, GError **err)
{
  const char *alone = o->upstream ? "--upstream"
                      : o->relay_cache ? "--relay-cache-size" : NULL;
  uint64_t size;

  if (!o->relay)
    {
      if (alone == NULL)
        return true;
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID, "%s: only with --relay",
                   alone);
      return false;
    }
  if (o->stdio || o->iscsi_listen != NULL
      || (o->tls != NULL && g_strcmp0 (o->tls, "off") != 0))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "--relay serves plaintext NBD to this host's VMs: not "
                   "with %s", o->stdio ? "--stdio"
                   : o->iscsi_listen ? "--iscsi-listen" : "--tls");
      return false;
    }
  if (o->relay_cache != NULL && !df_parse_size (o->relay_cache, &size, err))
    {
      g_prefix_error (err, "--relay-cache-size: ");
      return false;
    }
  if (o->relay_stall < 1 || o->relay_stall > DF_RELAY_STALL_MAX
      || o->relay_timeout < 1 || o->relay_timeout > DF_RELAY_STALL_MAX)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "--relay-stall %d, --relay-timeout %d: 1 to %d seconds",
                   o->relay_stall, o->relay_timeout, DF_RELAY_STALL_MAX);
      return false;
    }
  return true;
}

static bool
check_options (Options *o, GError **err)
{
  if (o->threads > 256)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "--threads %d: at most 256", o->threads);
      return false;
    }
  if (!check_liveness (o, err) || !check_limits (o, err)
      || !check_tls (o, err) || !check_registry (o, err)
      || !check_relay (o, err))
    return false;
  if (o->relay && o->upstream != NULL)
    return true; /* no farm needed */
  if (!g_file_test (o->farm, G_FILE_TEST_IS_DIR))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
                   "farm directory %s does not exist (diskfarm --farm %s "
                   "init creates it)", o->farm, o->farm);
      return false;
    }
  return true;
}

/* ---- privileges ------------------------------------------------------- */

/* Run as the farm's user from here on: it must still write farm.db (when
 * the DB is SQLite's) and the caches and read the store, as the farm's
 * group member. */
static bool
drop_privileges (const Options *o, GError **err)
{
  g_autofree char *db = g_build_filename (o->farm, "farm.db", NULL);
  g_autofree char *cache = g_build_filename (o->farm, "cache", NULL);
  g_autofree char *store = g_build_filename (o->farm, "store", NULL);
  const DfAccessNeed needs[] = {
    { AT_FDCWD, cache, W_OK | X_OK, cache },
    { AT_FDCWD, store, R_OK | X_OK, store },
    { AT_FDCWD, db, R_OK | W_OK, db },
  };
  bool sqlite = o->db == NULL || !df_farm_db_is_remote (o->db);
  struct stat st;
  if (stat (o->farm, &st) < 0)
    {
      df_set_error_errno (err, errno, "farm directory %s", o->farm);
      return false;
    }
  return df_drop_privileges (o->user, st.st_gid, needs,
                             G_N_ELEMENTS (needs) - (sqlite ? 0 : 1), err);
}

/* ---- daemon ------------------------------------------------------------- */

typedef struct {
  GMainLoop *loop;
  int signum;
} SignalState;

static gboolean
on_signal (gpointer data)
{
  SignalState *st = data;

  g_main_loop_quit (st->loop);
  return G_SOURCE_CONTINUE;
}

/* What was bound, for the registration. */
typedef struct {
  char *host;          /* first TCP listen host, or NULL */
  guint16 nbd_port;    /* 0: none */
  guint16 iscsi_port;
} Bound;

static void
bound_clear (Bound *b)
{
  g_free (b->host);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (Bound, bound_clear)

/* Note a "HOST:PORT" ("[V6]:PORT") bound line; unix: lines are skipped. */
static void
bound_note (Bound *b, const char *line, guint16 *port)
{
  const char *colon = strrchr (line, ':');
  if (g_str_has_prefix (line, "unix:") || colon == NULL || *port != 0)
    return;
  *port = (guint16) g_ascii_strtoull (colon + 1, NULL, 10);
  if (b->host == NULL)
    {
      const char *h = line[0] == '[' ? line + 1 : line;
      const char *e = line[0] == '[' ? strchr (line, ']') : colon;
      b->host = g_strndup (h, (gsize) ((e ? e : colon) - h));
    }
}

/* How one front end binds one listen address (server.h). */
typedef bool (*ListenFn) (DfStreamServer *s, const DfListenAddr *addr,
                          char **bound, GError **err);

/* Bind every address of addrs (NULL: none) for front end proto, whose
 * port is default_port where an address has none, log the ready line
 * "<proto> listening on <address>" of each socket and note the first TCP
 * one in bd (its port in *port, a member of bd). */
static bool
listen_all (DfStreamServer *srv, char **addrs, const char *proto,
            guint16 default_port, ListenFn listen, Bound *bd, guint16 *port,
            GError **err)
{
  for (char **a = addrs; a != NULL && *a != NULL; a++)
    {
      DfListenAddr la = { 0 };
      g_autofree char *bound = NULL;
      g_auto (GStrv) lines = NULL;
      bool ok = df_parse_listen (*a, default_port, &la, err)
                && listen (srv, &la, &bound, err);

      df_listen_addr_clear (&la);
      if (!ok)
        return false;
      lines = g_strsplit (bound, "\n", -1);
      for (char **l = lines; *l != NULL; l++)
        {
          g_message ("%s listening on %s", proto, *l);
          bound_note (bd, *l, port);
        }
    }
  return true;
}

/* Where the admin API listens: the farm's UNIX socket
 * (df_admin_socket_path) unless --admin-listen names another one; a TCP
 * --admin-listen comes on top of it (the console on this host keeps the
 * socket; the TCP clients need the token).  Fills addrs[0..], returns
 * how many, or -1 + err. */
static int
admin_addrs (const Options *o, DfListenAddr addrs[2], GError **err)
{
  int n = 0;

  if (o->admin_listen != NULL
      && !df_parse_listen (o->admin_listen, DF_ADMIN_PORT, &addrs[n++], err))
    return -1;
  if (n == 0 || addrs[0].unix_path == NULL)
    {
      g_autofree char *path = df_admin_socket_path (o->farm);

      /* a second streamsvc of the farm on this host (tests run several)
       * with a TCP listener leaves the socket to the first */
      if (n == 1 && df_admin_socket_in_use (path))
        g_message ("admin: unix:%s is another streamsvc's; TCP only", path);
      else
        addrs[n++] = (DfListenAddr){ .unix_path = g_steal_pointer (&path) };
    }
  return n;
}

static void
log_admin (DfAdmin *a, const DfListenAddr *addrs, int n)
{
  for (int i = 0; i < n; i++) /* TCP first: tests wait for the last line */
    if (addrs[i].unix_path == NULL)
      g_message ("admin listening on http://%s:%u (bearer token needed "
                 "but for /metrics, /v1/health)",
                 addrs[i].host ? addrs[i].host : "0.0.0.0",
                 df_admin_port (a));
  for (int i = 0; i < n; i++)
    if (addrs[i].unix_path != NULL)
      g_message ("admin listening on unix:%s", addrs[i].unix_path);
}

/* The farm's admin token, made on first need (an older farm has none;
 * offline, the snapshot's). */
static char *
admin_token (const Options *o, GError **err)
{
  g_autoptr (DfFarm) farm = df_farm_open_or_snapshot (o->farm, o->db,
                                                      "streamsvc", err);
  char *token = NULL;

  if (farm != NULL)
    token = df_farm_admin_token (farm, !df_farm_offline (farm), err);
  if (farm != NULL && token == NULL && err != NULL && *err == NULL)
    g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND, "the local snapshot "
                 "has no admin token (the farm DB is unreachable)");
  return token;
}

static DfAdmin *
start_admin (const Options *o, DfSessions *ss, DfExports *ex, GError **err)
{
  DfListenAddr addrs[2] = { { 0 } };
  g_autoptr (DfSecret) token = NULL;
  struct stat st;
  DfAdmin *a = NULL;
  int n = admin_addrs (o, addrs, err);

  if (n > 0 && (token = admin_token (o, err)) != NULL)
    {
      DfAdminAccess access = { token, (uid_t)-1, (gid_t)-1 };

      if (stat (o->farm, &st) == 0 && geteuid () == 0)
        access.socket_owner = st.st_uid; /* the farm's owner, */
      if (stat (o->farm, &st) == 0)
        access.socket_group = st.st_gid; /* and group */
      a = df_admin_start (addrs, (gsize)n, &access, ss, ex, NULL, err);
    }
  if (a != NULL)
    log_admin (a, addrs, n);
  for (int i = 0; i < n; i++)
    df_listen_addr_clear (&addrs[i]);
  return a;
}

/* The address registered: --server-address, else the first concrete
 * listen host, else the host name (new string). */
static char *
registered_address (const Options *o, const Bound *bd)
{
  if (o->server_address != NULL)
    return g_strdup (o->server_address);
  if (bd->host != NULL && strcmp (bd->host, "0.0.0.0") != 0
      && strcmp (bd->host, "::") != 0)
    return g_strdup (bd->host);
  return g_strdup (g_get_host_name ());
}

static DfRegistry *
start_registry (const Options *o, const Bound *bd, DfAdmin *admin,
                DfSessions *ss)
{
  if (o->server_name == NULL)
    return NULL;
  g_autofree char *address = registered_address (o, bd);
  guint16 admin_port = admin != NULL ? df_admin_port (admin) : 0;
  DfServer self = {
    .name = o->server_name, .address = address,
    .iscsi_port = bd->iscsi_port ? bd->iscsi_port : DF_ISCSI_PORT,
    .nbd_port = bd->nbd_port ? bd->nbd_port : DF_NBD_PORT,
    .admin_port = admin_port ? admin_port : DF_ADMIN_PORT,
    .power = o->power, .kind = (char *) DF_SERVER_KIND_STREAM,
    .timeout_ms = o->hb_timeout ? o->hb_timeout
                                : (gint64) o->hb_interval * DF_HEARTBEAT_MISSED,
    .software = (char *) DF_VERSION,
  };
  DfRegistryConf c = { .farm_dir = o->farm, .db = o->db, .self = &self,
                       .interval_ms = (guint) o->hb_interval,
                       .verify = true };
  return df_registry_start (&c, ss);
}

static struct pidfh *
open_pidfile (const char *path, GError **err)
{
  pid_t other = 0;
  struct pidfh *pfh = pidfile_open (path, 0644, &other);

  if (pfh == NULL)
    {
      if (errno == EEXIST)
        g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                     "streamsvc already running with pid %ld (%s)",
                     (long) other, path);
      else
        df_set_error_errno (err, errno, "pidfile %s", path);
      return NULL;
    }
  pidfile_write (pfh);
  return pfh;
}

/* The mode in force: --tls, else diskfarm.conf, else the farm's nbd-tls
 * setting, else off. */
static bool
resolve_tls (Options *o, DfExports *ex, GError **err)
{
  bool set = false;

  if (o->tls_from != NULL)
    return true;
  if (!df_exports_nbd_tls (ex, &o->tls_mode, &set, err))
    return false;
  o->tls_from = set ? "farm setting nbd-tls" : "default";
  return true;
}

/* NBD TLS as the options say: *out NULL when off.  Keys and certificates
 * are read here, before the privilege drop. */
static bool
make_tls (const Options *o, DfExports *ex, DfTls **out, GError **err)
{
  DfTlsConfig cfg = { o->tls_mode, o->tls_certificates, o->tls_psk,
                      o->tls_verify_peer, df_exports_nbd_psk, ex };

  *out = NULL;
  if (o->tls_mode == DF_TLS_OFF)
    {
      if (o->tls_certificates != NULL || o->tls_psk != NULL)
        g_message ("nbd TLS is off (%s): --tls-certificates and --tls-psk "
                   "unused", o->tls_from);
      return true;
    }
  *out = df_tls_new (&cfg, err);
  if (*out == NULL)
    return false;
  g_message ("nbd TLS %s (%s): %s%s", df_tls_mode_name (o->tls_mode),
             o->tls_from, df_tls_kinds (*out),
             o->tls_verify_peer ? ", client certificates required" : "");
  return true;
}

static int
run_daemon (Options *o, DfExports *ex, DfSessions *ss, GError **err)
{
  g_autoptr (GMainLoop) loop = g_main_loop_new (NULL, FALSE);
  SignalState st = { loop, 0 };
  DfStreamServer *srv = df_stream_server_new (ex, ss, (guint) o->threads);
  DfStreamLiveness live = { (guint) o->tcp_keepalive,
                            (guint) o->nop_interval, (guint) o->nop_timeout };
  DfStreamLimits limits = { (guint) o->handshake_timeout,
                            (guint) o->request_timeout,
                            (guint) o->max_per_source };
  DfAdmin *admin = NULL;
  DfRegistry *reg = NULL;
  struct pidfh *pfh = NULL;
  g_autoptr (DfTls) tls = NULL;
  g_auto (Bound) bd = { 0 };
  int rc = 1;

  df_stream_server_set_liveness (srv, &live);
  df_stream_server_set_limits (srv, &limits);
  if (!resolve_tls (o, ex, err) || !make_tls (o, ex, &tls, err))
    goto out;
  df_stream_server_set_tls (srv, tls);
  if (!listen_all (srv, o->nbd_listen, "nbd", DF_NBD_PORT,
                   df_stream_server_listen_nbd, &bd, &bd.nbd_port, err)
      || !listen_all (srv, o->iscsi_listen, "iscsi", DF_ISCSI_PORT,
                      df_stream_server_listen_iscsi, &bd, &bd.iscsi_port, err))
    goto out;
  if (g_strcmp0 (o->admin_listen, "none") != 0
      && (admin = start_admin (o, ss, ex, err)) == NULL)
    goto out;
  if (o->pidfile != NULL && (pfh = open_pidfile (o->pidfile, err)) == NULL)
    goto out;
  if (!drop_privileges (o, err) || !df_stream_server_start (srv, err))
    goto out;
  reg = start_registry (o, &bd, admin, ss);
  df_exports_watch (ex);
  g_unix_signal_add (SIGTERM, on_signal, &st);
  g_unix_signal_add (SIGINT, on_signal, &st);
  g_main_loop_run (loop);
  g_message ("stopping: finishing in-flight requests");
  rc = 0;
out:
  df_registry_stop (reg); /* its row goes unhealthy by timeout */
  df_exports_stopping (ex);
  df_stream_server_free (srv); /* stops accepting, drains, closes sessions */
  if (admin != NULL)
    df_admin_stop (admin);
  if (pfh != NULL)
    pidfile_remove (pfh);
  return rc;
}

/* ---- relay ------------------------------------------------------------------ */

/* The relay's privileges: no farm file but farm.db (when it reads the
 * registry from SQLite). */
static bool
drop_relay_privileges (const Options *o, GError **err)
{
  g_autofree char *db = g_build_filename (o->farm, "farm.db", NULL);
  const DfAccessNeed needs[] = { { AT_FDCWD, db, R_OK | W_OK, db } };
  bool sqlite = o->upstream == NULL
                && (o->db == NULL || !df_farm_db_is_remote (o->db));
  struct stat st;
  gid_t gid = o->upstream == NULL && stat (o->farm, &st) == 0 ? st.st_gid
                                                              : 0; /* none */

  return df_drop_privileges (o->user, gid, needs, sqlite ? 1 : 0, err);
}

static DfRelay *
make_relay (const Options *o, GError **err)
{
  uint64_t cache = 0;
  DfRelayConf c = { .stall_s = (guint) o->relay_stall,
                    .timeout_s = (guint) o->relay_timeout };

  df_parse_size (o->relay_cache ? o->relay_cache : DF_RELAY_CACHE_DEFAULT,
                 &cache, NULL);
  c.cache_bytes = cache;
  c.upstreams = o->upstream != NULL
                    ? df_relay_upstreams_new_fixed (o->upstream, err)
                    : df_relay_upstreams_new_registry (o->farm, o->db, err);
  if (c.upstreams == NULL)
    return NULL;
  g_message ("relay: upstream %s, read cache %" G_GUINT64_FORMAT " bytes, "
             "stall bound %d s", o->upstream ? "--upstream" : "the registry",
             cache, o->relay_stall);
  return df_relay_new (&c);
}

/* The relay's NBD service: the same transport and engine, over exports
 * the relay opens upstream.  Exits on SIGTERM/SIGINT. */
static int
run_relay (Options *o, GError **err)
{
  g_autoptr (GMainLoop) loop = g_main_loop_new (NULL, FALSE);
  SignalState st = { loop, 0 };
  DfRelay *relay = make_relay (o, err);
  DfExportSource src = { df_relay_open, relay };
  DfExports *ex = NULL;
  DfSessions *ss = NULL;
  DfStreamServer *srv = NULL;
  struct pidfh *pfh = NULL;
  g_auto (Bound) bd = { 0 };
  int rc = 1;

  if (relay == NULL)
    return 1;
  ex = df_exports_new_source (&src);
  ss = df_sessions_new ();
  srv = df_stream_server_new (ex, ss, (guint) o->threads);
  DfStreamLiveness live = { (guint) o->tcp_keepalive,
                            (guint) o->nop_interval, (guint) o->nop_timeout };
  DfStreamLimits limits = { (guint) o->handshake_timeout,
                            (guint) o->request_timeout,
                            (guint) o->max_per_source };
  df_stream_server_set_liveness (srv, &live);
  df_stream_server_set_limits (srv, &limits);
  if (!listen_all (srv, o->nbd_listen, "relay nbd", DF_RELAY_PORT,
                   df_stream_server_listen_nbd, &bd, &bd.nbd_port, err))
    goto out;
  if (o->pidfile != NULL && (pfh = open_pidfile (o->pidfile, err)) == NULL)
    goto out;
  if (!drop_relay_privileges (o, err) || !df_stream_server_start (srv, err))
    goto out;
  g_unix_signal_add (SIGTERM, on_signal, &st);
  g_unix_signal_add (SIGINT, on_signal, &st);
  g_main_loop_run (loop);
  g_message ("stopping: finishing in-flight requests");
  rc = 0;
out:
  df_stream_server_free (srv);
  df_relay_log_stats (relay);
  df_sessions_free (ss);
  df_exports_free (ex);
  df_relay_free (relay);
  if (pfh != NULL)
    pidfile_remove (pfh);
  return rc;
}

int
main (int argc, char **argv)
{
  Options o = { 0 };
  g_autoptr (GError) err = NULL;
  DfExports *ex = NULL;
  DfSessions *ss = NULL;
  int rc = 1;
  bool logging = false;

  signal (SIGPIPE, SIG_IGN);
  umask (DF_UMASK);
  if (!parse_cli (&o, &argc, &argv, &err))
    goto out;
  if (o.version)
    {
      printf ("streamsvc %s\n", DF_VERSION);
      rc = 0;
      goto out;
    }
  if (!apply_config (&o, &err))
    goto out;
  df_log_init ("streamsvc", o.verbose);
  if (!check_options (&o, &err))
    goto out; /* a bad option: "streamsvc: ..." like any command line */
  logging = true; /* from here a fatal error is a log line */
  if (o.relay)
    {
      rc = run_relay (&o, &err);
      goto out;
    }
  if ((ex = df_exports_new (o.farm, o.db, &err)) == NULL)
    goto out;
  if (o.server_name != NULL)
    df_exports_set_server (ex, o.server_name);
  if (o.shared_cache_dir != NULL)
    df_exports_set_shared_caches (ex, o.shared_cache_dir, o.lease_time);
  ss = df_sessions_new ();
  if (o.stdio && o.tls_mode != DF_TLS_OFF)
    g_set_error (&err, DF_ERROR, DF_ERROR_UNSUPPORTED,
                 "--stdio serves plaintext only (--tls %s from %s)",
                 df_tls_mode_name (o.tls_mode), o.tls_from);
  else if (o.stdio && drop_privileges (&o, &err))
    rc = df_nbd_serve_stdio (ex, ss, STDIN_FILENO, STDOUT_FILENO);
  else if (!o.stdio)
    rc = run_daemon (&o, ex, ss, &err);
  df_exports_flush_all (ex);
out:
  if (err != NULL && logging)
    df_log_fatal (err->message);
  else if (err != NULL)
    fprintf (stderr, "streamsvc: %s\n", err->message);
  if (ss != NULL)
    df_sessions_free (ss);
  if (ex != NULL)
    df_exports_free (ex);
  options_clear (&o);
  return rc;
}
