/* diskfarm console: `server add|list|show|set|remove|portal-config`: the
 * stream servers the bootstrap service lists in boot scripts, and the
 * keepalived.conf of their floating portals (lib/farm/portal.c).
 *
 * list and show ask each server's admin endpoint (GET /v1/health) live,
 * with a short timeout, so a dead server shows as such at once. */
#include "defaults.h"
#include "console.h"

#include "admin-client.h"

#include <stdio.h>

/* ---- health ----------------------------------------------------------- */

typedef struct {
  bool healthy;
  gint64 sessions;      /* -1 unknown */
  char *detail;         /* "ok" or why not */
} Health;

static void
health_clear (Health *h)
{
  g_free (h->detail);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (Health, health_clear)

/* Ask http://address:admin_port/v1/health (lib/admin, bounded timeout).
 * A server that answers for another farm (or does not say which) is not
 * healthy for this farm, and its session count is not shown. */
static void
health_check (DfFarm *farm, const DfServer *s, Health *h)
{
  h->healthy = false;
  h->sessions = -1;
  g_autoptr (GError) err = NULL;
  g_autoptr (DfAdminHealth) ah = df_admin_health (s->address, s->admin_port,
                                                  &err);
  if (ah == NULL)
    {
      h->detail = g_strdup (err->message);
      return;
    }
  if (g_strcmp0 (ah->farm, df_farm_uuid (farm)) != 0)
    {
      g_autofree char *other = ah->farm ? df_display_text (ah->farm, 64)
                                        : NULL;
      h->detail = other
        ? g_strdup_printf ("serves farm %s, not this farm (%s)", other,
                           df_farm_uuid (farm))
        : g_strdup ("does not say which farm it serves");
      return;
    }
  h->healthy = g_strcmp0 (ah->status, "ok") == 0;
  h->sessions = ah->sessions;
  g_autofree char *status = df_display_text (ah->status ? ah->status : "",
                                             32);
  h->detail = h->healthy ? g_strdup ("ok")
                         : g_strdup_printf ("status '%s'", status);
}

/* ---- records ---------------------------------------------------------- */

/* What the registry says (lib/farm decides the state from the server's
 * own timeout): state, load = sessions / power, heartbeat age. */
static void
registry_fields (DfRecord *r, const DfServer *s)
{
  gint64 now = df_farm_now_ms ();
  bool seen = s->heartbeat_ms > 0;
  g_autofree char *load = g_strdup_printf (
    "%.2f", (double) s->load.sessions / (double) MAX (s->power, 1));
  g_autofree char *age = seen
    ? g_strdup_printf ("%.1fs", (double) (now - s->heartbeat_ms) / 1000.0)
    : g_strdup ("-");
  df_record_str (r, "kind", NULL, s->kind);
  df_record_str (r, "state", "state",
                 df_server_state_name (df_server_state (s, now)));
  df_record_str (r, "load", "load", seen ? load : "-");
  df_record_str (r, "last_heartbeat", "heartbeat", age);
  df_record_opt_int (r, "heartbeat_age_ms", NULL, seen,
                     now - s->heartbeat_ms);
  df_record_int (r, "heartbeat_timeout_ms", NULL, s->timeout_ms);
  df_record_int (r, "registered_sessions", NULL, s->load.sessions);
  df_record_int (r, "bytes_per_s", NULL, s->load.bytes_per_s);
  df_record_int (r, "cpu_permille", NULL, s->load.cpu_permille);
  df_record_int (r, "free_bytes", NULL, s->load.free_bytes);
  df_record_int (r, "versions_held", NULL, s->load.versions_held);
  df_record_int (r, "versions_verified", NULL, s->load.versions_verified);
  df_record_str (r, "software", NULL, s->software);
}

static DfRecord *
server_record (const DfServer *s, const Health *h)
{
  DfRecord *r = df_record_new ();
  df_record_str (r, "name", "name", s->name);
  df_record_str (r, "address", "address", s->address);
  df_record_str (r, "portal", "portal", s->portal ? s->portal : "-");
  df_record_int (r, "iscsi_port", "iscsi", s->iscsi_port);
  df_record_int (r, "nbd_port", "nbd", s->nbd_port);
  df_record_int (r, "admin_port", "admin", s->admin_port);
  df_record_int (r, "power", "power", s->power);
  registry_fields (r, s);
  if (h)
    {
      df_record_str (r, "health", "health", h->healthy ? "healthy"
                                                       : "unhealthy");
      df_record_opt_int (r, "sessions", "sessions", h->sessions >= 0,
                         h->sessions);
      df_record_str (r, "health_detail", NULL, h->detail);
    }
  df_record_str (r, "created", NULL, s->created);
  return r;
}

/* ---- commands --------------------------------------------------------- */

static bool
check_port (const char *what, gint v, GError **err)
{
  if (v >= 1 && v <= 65535)
    return true;
  df_usage_error (err, "--%s must be 1-65535, not %d", what, v);
  return false;
}

#define PORTAL_HELP \
  "Floating iSCSI address boot scripts name instead of --address, held " \
  "by keepalived (see 'server portal-config')"

static bool
server_add (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "server add", "NAME", 1, 1,
    "Register a stream server (streamsvc) of the farm.  The bootstrap "
    "service lists the healthy ones, least loaded first, in every boot "
    "script; load is sessions / power.",
    "  diskfarm server add ss1 --address 10.0.0.11\n"
    "  diskfarm server add ss2 --address 10.0.0.12 --power 2\n"
    "  diskfarm server add ss3 --address 10.0.0.13 --portal 10.0.0.113\n",
  };
  g_autofree char *address = NULL, *portal = NULL;
  gint iscsi = DF_ISCSI_PORT, nbd = DF_NBD_PORT, admin = DF_ADMIN_PORT;
  gint power = 1;
  const GOptionEntry entries[] = {
    { "address", 'a', 0, G_OPTION_ARG_STRING, &address,
      "Address targets and bootstrap servers reach it at: an IPv4/IPv6 "
      "literal or an RFC 1123 host name", "IP" },
    { "portal", 0, 0, G_OPTION_ARG_STRING, &portal, PORTAL_HELP, "IP" },
    { "iscsi-port", 0, 0, G_OPTION_ARG_INT, &iscsi,
      "iSCSI port (default " G_STRINGIFY (DF_ISCSI_PORT) ")", "PORT" },
    { "nbd-port", 0, 0, G_OPTION_ARG_INT, &nbd, "NBD port (default " G_STRINGIFY (DF_NBD_PORT) ")",
      "PORT" },
    { "admin-port", 0, 0, G_OPTION_ARG_INT, &admin,
      "Admin HTTP port serving /v1/health (default "
      G_STRINGIFY (DF_ADMIN_PORT) ")", "PORT" },
    { "power", 0, 0, G_OPTION_ARG_INT, &power,
      "Relative capacity 1-1000 (default 1)", "N" },
    G_OPTION_ENTRY_NULL
  };
  if (!df_cmd_parse (ctx, &spec, entries, &argc, &argv, err))
    return false;
  if (!address)
    {
      df_usage_error (err, "server add: missing --address");
      return false;
    }
  if (!check_port ("iscsi-port", iscsi, err) || !check_port ("nbd-port", nbd, err)
      || !check_port ("admin-port", admin, err))
    return false;
  g_autoptr (DfFarm) farm = df_ctx_open_farm (ctx, false, err);
  if (!farm)
    return false;
  DfServer s = { .name = argv[1], .address = address,
                 .iscsi_port = (guint16) iscsi, .nbd_port = (guint16) nbd,
                 .admin_port = (guint16) admin, .power = power,
                 .portal = portal };
  if (!df_farm_server_add (farm, &s, err))
    return false;
  g_autoptr (DfServer) got = df_farm_server_get (farm, argv[1], err);
  if (!got)
    return false;
  g_autoptr (DfRecord) r = server_record (got, NULL);
  df_print_result (r, ctx->json, "server %s added (%s, iSCSI %u, admin %u)",
                   got->name, got->address, got->iscsi_port, got->admin_port);
  return true;
}

static bool
server_list (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "server list", "", 0, 0,
    "List the stream servers: their registry state (healthy while they "
    "heartbeat within their timeout, unhealthy after, never-seen for a "
    "row no server registered under), load (sessions / power) and last "
    "heartbeat age, then their live health (GET /v1/health, 3 s timeout "
    "each) and session counts.  A server that answers for another farm is "
    "unhealthy here (\"serves farm ..., not this farm\").",
    "  diskfarm server list\n  diskfarm --json server list --no-health\n",
  };
  gboolean no_health = FALSE;
  const GOptionEntry entries[] = {
    { "no-health", 0, 0, G_OPTION_ARG_NONE, &no_health,
      "Do not ask the servers for their health", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (DfFarm) farm = df_cmd_open_farm (ctx, &spec, entries, &argc, &argv,
                                              err);
  if (!farm)
    return false;
  g_autoptr (GPtrArray) rows = df_farm_server_list (farm, err);
  if (!rows)
    return false;
  g_autoptr (GPtrArray) records = df_record_list_new ();
  for (guint i = 0; i < rows->len; i++)
    {
      g_auto (Health) h = { 0 };
      if (!no_health)
        health_check (farm, rows->pdata[i], &h);
      g_ptr_array_add (records, server_record (rows->pdata[i],
                                               no_health ? NULL : &h));
    }
  df_print_list (records, ctx->json,
                 "no stream server (add one with 'diskfarm server add')");
  return true;
}

static bool
server_show (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "server show", "NAME", 1, 1,
    "Show one stream server and its live health.",
    "  diskfarm server show ss1\n",
  };
  g_autoptr (DfFarm) farm = df_cmd_open_farm (ctx, &spec, NULL, &argc,
                                              &argv, err);
  if (!farm)
    return false;
  g_autoptr (DfServer) s = df_farm_server_get (farm, argv[1], err);
  if (!s)
    return false;
  g_auto (Health) h = { 0 };
  health_check (farm, s, &h);
  g_autoptr (DfReport) rep = df_report_new (server_record (s, &h));
  df_report_print (rep, ctx->json);
  return true;
}

/* --PORT given (not -1): check it and store it in *port. */
static bool
take_port (const char *what, gint v, guint16 *port, GError **err)
{
  if (v == -1)
    return true;
  if (!check_port (what, v, err))
    return false;
  *port = (guint16) v;
  return true;
}

static bool
server_set (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "server set", "NAME", 1, 1,
    "Change a stream server's address, portal, ports or power.  Options "
    "not given "
    "keep their value; boot scripts use the new values from their next "
    "fetch.",
    "  diskfarm server set ss1 --address 10.0.0.21\n"
    "  diskfarm server set ss2 --power 4 --iscsi-port 3261\n",
  };
  g_autofree char *address = NULL, *portal = NULL;
  gint iscsi = -1, nbd = -1, admin = -1, power = -1;
  gboolean no_portal = FALSE;
  const GOptionEntry entries[] = {
    { "address", 'a', 0, G_OPTION_ARG_STRING, &address,
      "Address targets and bootstrap servers reach it at", "IP" },
    { "portal", 0, 0, G_OPTION_ARG_STRING, &portal, PORTAL_HELP, "IP" },
    { "no-portal", 0, 0, G_OPTION_ARG_NONE, &no_portal,
      "Drop the floating portal: boot scripts name --address again", NULL },
    { "iscsi-port", 0, 0, G_OPTION_ARG_INT, &iscsi, "iSCSI port", "PORT" },
    { "nbd-port", 0, 0, G_OPTION_ARG_INT, &nbd, "NBD port", "PORT" },
    { "admin-port", 0, 0, G_OPTION_ARG_INT, &admin,
      "Admin HTTP port serving /v1/health", "PORT" },
    { "power", 0, 0, G_OPTION_ARG_INT, &power, "Relative capacity 1-1000",
      "N" },
    G_OPTION_ENTRY_NULL
  };
  if (!df_cmd_parse (ctx, &spec, entries, &argc, &argv, err))
    return false;
  if (!address && !portal && !no_portal && iscsi == -1 && nbd == -1
      && admin == -1 && power == -1)
    {
      df_usage_error (err, "server set: nothing to change (give --address, "
                      "--portal, --no-portal, --iscsi-port, --nbd-port, "
                      "--admin-port or --power)");
      return false;
    }
  if (portal && no_portal)
    {
      df_usage_error (err, "server set: --portal and --no-portal exclude "
                      "each other");
      return false;
    }
  g_autoptr (DfFarm) farm = df_ctx_open_farm (ctx, false, err);
  g_autoptr (DfServer) s = farm ? df_farm_server_get (farm, argv[1], err)
                                : NULL;
  if (!s || !take_port ("iscsi-port", iscsi, &s->iscsi_port, err)
      || !take_port ("nbd-port", nbd, &s->nbd_port, err)
      || !take_port ("admin-port", admin, &s->admin_port, err))
    return false;
  if (address)
    g_free (s->address), s->address = g_strdup (address);
  if (power != -1)
    s->power = power;
  if (portal || no_portal)
    g_free (s->portal), s->portal = g_strdup (portal);
  if (!df_farm_server_update (farm, s, err))
    return false;
  g_autoptr (DfRecord) r = server_record (s, NULL);
  df_print_result (r, ctx->json, "server %s: %s, iSCSI %u, NBD %u, admin %u, "
                   "power %d", s->name, s->address, s->iscsi_port,
                   s->nbd_port, s->admin_port, s->power);
  return true;
}

static bool
server_remove (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "server remove", "NAME", 1, 1,
    "Forget a stream server: boot scripts stop listing it at once.",
    "  diskfarm server remove ss2\n",
  };
  g_autoptr (DfFarm) farm = df_cmd_open_farm (ctx, &spec, NULL, &argc,
                                              &argv, err);
  if (!farm || !df_farm_server_remove (farm, argv[1], err))
    return false;
  g_autoptr (DfRecord) r = df_record_new ();
  df_record_str (r, "name", "name", argv[1]);
  df_print_result (r, ctx->json, "server %s removed", argv[1]);
  return true;
}

static bool
server_portal_config (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "server portal-config", "NAME", 1, 1,
    "Print the keepalived.conf of stream server NAME (run it on that "
    "server's host): one VRRP instance per server with a portal, MASTER of "
    "its own portal (priority 200), BACKUP of the others' (priority 150 "
    "for the most powerful other server, one less per rank), every "
    "instance tracking the local streamsvc's /v1/health (curl, each "
    "second; two failures give the portals up).  streamsvc must accept "
    "iSCSI on an address it does not hold yet: --iscsi-listen 0.0.0.0:3260 "
    "(or [::]:3260).  Write the file again on every server when a server "
    "or a portal changes.",
    "  diskfarm server portal-config ss1 --interface eth0 "
    ">/etc/keepalived/keepalived.conf\n",
  };
  g_autofree char *ifname = NULL, *url = NULL;
  gint vrid = DF_PORTAL_VRID_BASE;
  const GOptionEntry entries[] = {
    { "interface", 'i', 0, G_OPTION_ARG_STRING, &ifname,
      "This host's network interface on the stream LAN (required)", "IF" },
    { "vrid-base", 0, 0, G_OPTION_ARG_INT, &vrid,
      "First VRRP virtual_router_id; one per portal, in server name order "
      "(default " G_STRINGIFY (DF_PORTAL_VRID_BASE) ")", "N" },
    { "health-url", 0, 0, G_OPTION_ARG_STRING, &url,
      "What the track script asks (default "
      "http://ADDRESS:ADMIN-PORT/v1/health of the server)", "URL" },
    G_OPTION_ENTRY_NULL
  };
  if (!df_cmd_parse (ctx, &spec, entries, &argc, &argv, err))
    return false;
  if (!ifname)
    {
      df_usage_error (err, "server portal-config: missing --interface");
      return false;
    }
  if (vrid < 1 || vrid > 255)
    {
      df_usage_error (err, "--vrid-base must be 1-255, not %d", vrid);
      return false;
    }
  g_autoptr (DfFarm) farm = df_ctx_open_farm (ctx, false, err);
  if (!farm)
    return false;
  DfPortalConfOpts o = { .interface = ifname, .vrid_base = (guint) vrid,
                         .health_url = url };
  g_autofree char *conf = df_farm_portal_keepalived_conf (farm, argv[1], &o,
                                                          err);
  if (!conf)
    return false;
  fputs (conf, stdout);
  return true;
}

const DfCmd df_server_cmds[] = {
  { "add", "register a stream server", server_add },
  { "list", "list stream servers and their health", server_list },
  { "show", "show one stream server", server_show },
  { "set", "change a stream server's address, portal, ports or power",
    server_set },
  { "portal-config", "write keepalived.conf for a server's floating portal",
    server_portal_config },
  { "remove", "forget a stream server", server_remove },
  { NULL, NULL, NULL }
};
