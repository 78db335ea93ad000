/* diskfarm console: global options, command dispatch, `init` and `audit`.
 *
 *   diskfarm [--farm DIR] [--config FILE] [--json] [--verbose] COMMAND
 *            [SUBCOMMAND] ...
 *
 * Each level has its own GOptionContext, so `--help` works at every level.
 * Errors end as one line "diskfarm: <message>" on stderr and exit 1. */
#include "console.h"
#include "config.h"

#include <glib/gstdio.h>
#include <locale.h>
#include <sys/stat.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

G_DEFINE_QUARK (diskfarm-usage-error-quark, df_usage_error)

void
df_usage_error (GError **err, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  g_autofree char *msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_set_error_literal (err, DF_USAGE_ERROR, 0, msg);
}

/* ---- farm ------------------------------------------------------------- */

/* A console setting: the option's value (opt, NULL when not given), then
 * $env when set and not empty, then diskfarm.conf [group] key (which holds
 * the built-in default, if any), or fallback before the file is loaded. */
static const char *
ctx_setting (const DfCtx *ctx, const char *opt, const char *env,
             const char *group, const char *key, const char *fallback)
{
  if (opt != NULL)
    return opt;
  const char *v = g_getenv (env);
  if (v != NULL && *v != '\0')
    return v;
  return ctx->conf != NULL ? df_conf_string (ctx->conf, group, key)
                           : fallback;
}

/* --farm, then $DISKFARM_FARM, then diskfarm.conf [farm] dir. */
const char *
df_ctx_farm_dir (const DfCtx *ctx)
{
  return ctx_setting (ctx, ctx->farm_opt, "DISKFARM_FARM", "farm", "dir",
                      DF_DEFAULT_FARM);
}

/* --db, then $DISKFARM_DB, then diskfarm.conf [farm] database; NULL: the
 * farm directory's farm.db.  May hold a password: never printed. */
static const char *
ctx_db (const DfCtx *ctx)
{
  if (ctx->db_opt != NULL && *ctx->db_opt != '\0')
    return ctx->db_opt;
  const char *env = g_getenv ("DISKFARM_DB");
  if (env != NULL && *env != '\0')
    return env;
  return ctx->conf != NULL ? df_conf_string (ctx->conf, "farm", "database")
                           : NULL;
}

/* Load diskfarm.conf once, when the leaf's options (--config) are
 * parsed: every command checks it before doing anything. */
static bool
ctx_load_conf (DfCtx *ctx, GError **err)
{
  if (ctx->conf == NULL)
    ctx->conf = df_conf_load (ctx->config_opt, err);
  return ctx->conf != NULL;
}

/* --admin, then $DISKFARM_ADMIN, then diskfarm.conf [console] admin;
 * NULL when none says: then the farm's admin socket is asked (live.h). */
const char *
df_ctx_admin (const DfCtx *ctx)
{
  return ctx_setting (ctx, ctx->admin_opt, "DISKFARM_ADMIN", "console",
                      "admin", NULL);
}

/* Logging starts here, once every option (--verbose) has been parsed:
 * each command opens the farm after parsing its options. */
DfFarm *
df_ctx_open_farm (const DfCtx *ctx, bool create, GError **err)
{
  static bool log_ready;
  if (!log_ready)
    {
      df_log_init ("diskfarm", ctx->verbose);
      log_ready = true;
    }
  g_autofree char *who = g_strdup_printf ("console:%s", g_get_user_name ());
  return df_farm_open_db (df_ctx_farm_dir (ctx), ctx_db (ctx), create, who,
                          err);
}

/* ---- option parsing --------------------------------------------------- */

/* Global options, accepted before the command and by every leaf.  The
 * arg_data pointers are filled in by global_entries_for. */
#define N_GLOBAL 7
static void
global_entries_for (DfCtx *ctx, GOptionEntry out[N_GLOBAL])
{
  const GOptionEntry e[N_GLOBAL] = {
    { "farm", 0, 0, G_OPTION_ARG_FILENAME, &ctx->farm_opt,
      "Farm directory (default: $DISKFARM_FARM, else diskfarm.conf [farm] "
      "dir, else " DF_DEFAULT_FARM ")", "DIR" },
    { "db", 0, 0, G_OPTION_ARG_STRING, &ctx->db_opt,
      "Farm DB: a PostgreSQL URI (postgresql://...) or conninfo "
      "(\"host=... dbname=...\") (default: $DISKFARM_DB, else diskfarm.conf "
      "[farm] database, else the farm directory's farm.db)", "URI" },
    { "config", 0, 0, G_OPTION_ARG_FILENAME, &ctx->config_opt,
      "Configuration file (default: $DISKFARM_CONFIG, else "
      DF_DEFAULT_CONFIG ")", "FILE" },
    { "admin", 0, 0, G_OPTION_ARG_STRING, &ctx->admin_opt,
      "streamsvc admin API asked for live sessions besides the farm's "
      "servers (default: $DISKFARM_ADMIN, else diskfarm.conf [console] "
      "admin, else the farm's admin socket, " DF_RUNTIME_DIR "/"
      DF_ADMIN_SOCKET " or FARM/run/" DF_ADMIN_SOCKET ")",
      "HOST:PORT|unix:PATH" },
    { "json", 0, 0, G_OPTION_ARG_NONE, &ctx->json,
      "Print results as JSON (sizes in bytes)", NULL },
    { "verbose", 'v', 0, G_OPTION_ARG_NONE, &ctx->verbose,
      "Log debug messages", NULL },
    G_OPTION_ENTRY_NULL
  };
  memcpy (out, e, sizeof e);
}

/* GOption replaces a string option without freeing the old value: free a
 * --farm, --config or --admin given both before and after the command. */
static bool
parse_keeping_farm (DfCtx *ctx, GOptionContext *oc, int *argc, char ***argv,
                    GError **err)
{
  char *old_farm = ctx->farm_opt, *old_config = ctx->config_opt;
  char *old_admin = ctx->admin_opt, *old_db = ctx->db_opt;
  if (!g_option_context_parse (oc, argc, argv, err))
    return false;
  if (old_db != NULL && ctx->db_opt != old_db)
    g_free (old_db);
  if (old_farm != NULL && ctx->farm_opt != old_farm)
    g_free (old_farm);
  if (old_config != NULL && ctx->config_opt != old_config)
    g_free (old_config);
  if (old_admin != NULL && ctx->admin_opt != old_admin)
    g_free (old_admin);
  return true;
}

/* Options where '' means "none" (device set --collection '', free text). */
static const char *const empty_means_none[] = { "collection", "description",
                                               "efi-loader",
                                               NULL };

/* Refuse empty values of the options just parsed (entries may be NULL). */
static bool
check_values (const GOptionEntry *entries, const GOptionEntry *global,
              GError **err)
{
  return (entries == NULL
          || df_options_check_values (entries, empty_means_none, err))
         && df_options_check_values (global, NULL, err);
}

/* Turn any parse error into a usage error. */
static void
to_usage_error (GError **err)
{
  if (err != NULL && *err != NULL && (*err)->domain != DF_USAGE_ERROR)
    {
      (*err)->domain = DF_USAGE_ERROR;
      (*err)->code = 0;
    }
}

/* Name of the positional argument number i (0-based) from "NAME FILE". */
static char *
arg_name (const char *args, guint i)
{
  g_auto(GStrv) words = g_strsplit (args, " ", -1);
  if (i < g_strv_length (words))
    return g_strdup (words[i]);
  return g_strdup ("argument");
}

/* Word-wrap a paragraph at width columns for --help (new string). */
static char *
wrap_text (const char *text, gsize width)
{
  g_auto(GStrv) words = g_strsplit (text, " ", -1);
  GString *out = g_string_new (NULL);
  gsize col = 0;
  for (guint i = 0; words[i] != NULL; i++)
    {
      gsize len = strlen (words[i]);
      if (len == 0)
        continue;                     /* "  " between sentences */
      if (col > 0 && col + 1 + len > width)
        {
          g_string_append_c (out, '\n');
          col = 0;
        }
      else if (col > 0)
        {
          g_string_append_c (out, ' ');
          col++;
        }
      g_string_append (out, words[i]);
      col += len;
    }
  return g_string_free (out, FALSE);
}

bool
df_cmd_parse (DfCtx *ctx, const DfCmdSpec *spec, const GOptionEntry *entries,
              int *argc, char ***argv, GError **err)
{
  g_autofree char *prgname = g_strdup_printf ("diskfarm %s", spec->path);
  g_set_prgname (prgname);
  g_autoptr(GOptionContext) oc = g_option_context_new (spec->args);
  g_autofree char *summary = wrap_text (spec->summary, 78);
  g_option_context_set_summary (oc, summary);
  g_autofree char *examples = g_strdup_printf ("Example:\n%s", spec->examples);
  g_option_context_set_description (oc, examples);
  if (entries != NULL)
    g_option_context_add_main_entries (oc, entries, NULL);
  GOptionEntry global[N_GLOBAL];
  global_entries_for (ctx, global);
  g_option_context_add_main_entries (oc, global, NULL);

  if (!parse_keeping_farm (ctx, oc, argc, argv, err)
      || !check_values (entries, global, err))
    {
      to_usage_error (err);
      return false;
    }
  guint n = (guint) *argc - 1;
  if (n < spec->min_args)
    {
      g_autofree char *what = arg_name (spec->args, n);
      df_usage_error (err, "%s: missing %s", spec->path, what);
      return false;
    }
  if (n > spec->max_args)
    {
      df_usage_error (err, "%s: unexpected argument '%s'", spec->path,
                      (*argv)[spec->max_args + 1]);
      return false;
    }
  return ctx_load_conf (ctx, err);
}

DfFarm *
df_cmd_open_farm (DfCtx *ctx, const DfCmdSpec *spec,
                  const GOptionEntry *entries, int *argc, char ***argv,
                  GError **err)
{
  if (!df_cmd_parse (ctx, spec, entries, argc, argv, err))
    return NULL;
  return df_ctx_open_farm (ctx, false, err);
}

bool
df_cmd_export_target (const char *file, GError **err)
{
  GStatBuf st;

  if (g_lstat (file, &st) != 0)
    return true;
  g_set_error (err, DF_ERROR, DF_ERROR_EXISTS,
               "'%s' already exists; not overwriting it", file);
  return false;
}

/* ---- init ------------------------------------------------------------- */

static bool
cmd_init (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "init", "", 0, 0,
    "Create the farm directory (farm.db, store/, cache/, boot/, run/) or "
    "upgrade the schema of an existing one.  Run as root, it also creates "
    "the diskfarm system user and group if missing and gives them the farm "
    "(setgid directories 2750, files 0640, nothing for others).  With "
    "--db (or [farm] database) naming a PostgreSQL database, which must "
    "exist, the schema is created there and the directory holds no "
    "farm.db.",
    "  diskfarm --farm /srv/farm init\n"
    "  diskfarm --farm /srv/farm --db postgresql://diskfarm@db/farm init\n",
  };
  if (!df_cmd_parse (ctx, &spec, NULL, &argc, &argv, err))
    return false;
  g_autoptr(DfFarm) farm = df_ctx_open_farm (ctx, true, err);
  if (farm == NULL || !df_farm_give_to_service_user (df_farm_dir (farm), err))
    return false;
  g_autoptr(DfRecord) r = df_record_new ();
  df_record_str (r, "farm", "farm", df_farm_dir (farm));
  df_record_str (r, "database", "database", df_farm_db_name (farm));
  df_record_int (r, "schema_version", "schema version",
                 df_farm_schema_version (farm));
  df_record_str (r, "uuid", "uuid", df_farm_uuid (farm));
  df_print_result (r, ctx->json, "farm ready at %s (schema version %d, "
                   "uuid %s)", df_farm_dir (farm),
                   df_farm_schema_version (farm), df_farm_uuid (farm));
  return true;
}

/* ---- times ------------------------------------------------------------ */

/* "-90m" -> seconds ago; false when s is not of that shape. */
static bool
parse_ago (const char *s, gint64 *secs)
{
  static const struct { char unit; gint64 secs; } units[] = {
    { 's', 1 }, { 'm', 60 }, { 'h', 3600 }, { 'd', 86400 },
  };
  gsize len = strlen (s);
  guint64 n;
  if (len < 3 || s[0] != '-')
    return false;
  g_autofree char *digits = g_strndup (s + 1, len - 2);
  if (!g_ascii_string_to_unsigned (digits, 10, 0, 100 * 365 * 86400ull, &n,
                                   NULL))
    return false;
  for (gsize i = 0; i < G_N_ELEMENTS (units); i++)
    if (s[len - 1] == units[i].unit
        && n * (guint64) units[i].secs <= 100 * 365 * 86400ull)
      {
        *secs = (gint64) n * units[i].secs;
        return true;
      }
  return false;
}

/* Local or zoned ISO 8601 (date alone, minutes or seconds). */
static GDateTime *
parse_iso (const char *s)
{
  g_autoptr (GTimeZone) local = g_time_zone_new_local ();
  g_autofree char *t = g_strdelimit (g_strdup (s), " ", 'T');
  g_autofree char *full = strlen (t) == 10 ? g_strconcat (t, "T00:00:00", NULL)
                          : strlen (t) == 16 ? g_strconcat (t, ":00", NULL)
                          : g_strdup (t);
  return g_date_time_new_from_iso8601 (full, local);
}

char *
df_parse_when (const char *opt, const char *s, GError **err)
{
  gint64 ago;
  g_autoptr (GDateTime) dt = NULL;
  if (parse_ago (s, &ago))
    {
      g_autoptr (GDateTime) now = g_date_time_new_now_utc ();
      dt = g_date_time_add_seconds (now, (gdouble) -ago);
    }
  else
    dt = parse_iso (s);
  if (!dt)
    {
      df_usage_error (err, "%s '%s' is not a time such as "
                      "2026-12-01T02:00:00Z, '2026-12-01 02:00', 2026-12-01 "
                      "or -1h (also -30s, -15m, -2d)", opt, s);
      return NULL;
    }
  g_autoptr (GDateTime) utc = g_date_time_to_utc (dt);
  return g_date_time_format (utc, "%Y-%m-%dT%H:%M:%SZ");
}

/* ---- audit ------------------------------------------------------------ */

static DfRecord *
audit_record (const DfAudit *a)
{
  DfRecord *r = df_record_new ();
  df_record_int (r, "id", "id", a->id);
  df_record_str (r, "at", "at", a->at);
  df_record_str (r, "who", "who", a->who);
  df_record_str (r, "action", "action", a->action);
  df_record_str (r, "object", "object", a->object);
  df_record_object (r, "detail", "detail", a->detail);
  return r;
}

static bool
cmd_audit (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "audit", "", 0, 0,
    "Show the audit log: every change made to the farm, who made it and "
    "when, newest first.  --object NAME keeps the entries about NAME (and "
    "about its versions NAME@N); --action A keeps action A, or the family "
    "A.* when A has no dot (device, vdisk, version...); --since TIME keeps "
    "entries from TIME on (2026-12-01T08:00:00Z, '2026-12-01 09:00' local, "
    "2026-12-01, or -1h, -30m, -2d).  Filters combine; --limit applies "
    "after them.",
    "  diskfarm audit --limit 20\n"
    "  diskfarm audit --object win10 --since -1d\n"
    "  diskfarm audit --action device --since 2026-12-01\n"
    "  diskfarm --json audit --limit 0\n",
  };
  gint limit = 50;
  g_autofree char *object = NULL, *action = NULL, *since_s = NULL;
  const GOptionEntry entries[] = {
    { "limit", 'n', 0, G_OPTION_ARG_INT, &limit,
      "Show at most N entries, 0 for all (default 50)", "N" },
    { "object", 'o', 0, G_OPTION_ARG_STRING, &object,
      "Only entries about NAME (and NAME@N)", "NAME" },
    { "action", 'a', 0, G_OPTION_ARG_STRING, &action,
      "Only action A (device.add), or family A (device)", "A" },
    { "since", 's', 0, G_OPTION_ARG_STRING, &since_s,
      "Only entries at or after TIME (ISO 8601, or -1h, -2d)", "TIME" },
    G_OPTION_ENTRY_NULL
  };
  if (!df_cmd_parse (ctx, &spec, entries, &argc, &argv, err))
    return false;
  if (limit < 0)
    {
      df_usage_error (err, "--limit must be 0 or more, not %d", limit);
      return false;
    }
  g_autofree char *since = since_s ? df_parse_when ("--since", since_s, err)
                                   : NULL;
  if (since_s && !since)
    return false;
  g_autoptr(DfFarm) farm = df_ctx_open_farm (ctx, false, err);
  if (farm == NULL)
    return false;
  DfAuditFilter f = { .limit = (guint) limit, .object = object,
                      .action = action, .since = since };
  g_autoptr(GPtrArray) rows = df_farm_audit_query (farm, &f, err);
  if (rows == NULL)
    return false;
  g_autoptr(GPtrArray) records = df_record_list_new ();
  for (guint i = 0; i < rows->len; i++)
    g_ptr_array_add (records, audit_record (rows->pdata[i]));
  df_print_list (records, ctx->json,
                 object || action || since ? "no audit entry matches"
                                           : "the audit log is empty");
  return true;
}

/* ---- dispatch --------------------------------------------------------- */

static const DfCmd top_cmds[] = {
  { "init", "create or upgrade a farm", cmd_init },
  { "audit", "show the audit log", cmd_audit },
  { NULL, NULL, NULL }
};

typedef struct {
  const char *name;
  const char *summary;
  const char *examples;
  const DfCmd *cmds;
} DfGroup;

/* `version ...` (cmd_version.c) */
extern const DfCmd df_version_cmds[];
/* `session ...` (cmd_session.c) */
extern const DfCmd df_session_cmds[];

/* `server ...` (cmd_server.c), `bootstrap ...` and `farm ...`
 * (cmd_bootstrap.c) */
extern const DfCmd df_server_cmds[];
/* `store ...` (cmd_store.c): store state and store sync */
extern const DfCmd df_store_cmds[];
extern const DfCmd df_bootstrap_cmds[];
extern const DfCmd df_farm_cmds[];
/* `vm ...` (cmd_vm.c): libvirt domains, boot media, provisioning */
extern const DfCmd df_vm_cmds[];
/* `config ...` (cmd_config.c): diskfarm.conf */
extern const DfCmd df_config_cmds[];

static const DfGroup groups[] = {
  { "vm", "Hypervisor domains through libvirt: attach boot media, "
    "provision devices from a template.",
    "  diskfarm vm attach-media tpl --iso /srv/bdm.iso\n"
    "  diskfarm vm provision --template tpl --count 3 --collection web "
    "--name-template 'web{02}'\n", df_vm_cmds },
  { "vdisk", "Manage vDisks: the golden images streamed to devices, and "
    "their versions.",
    "  diskfarm vdisk import win10 win10.vhdx --format vhdx\n"
    "  diskfarm vdisk show win10\n", df_vdisk_cmds },
  { "device", "Manage devices: the targets that boot from a vDisk, each "
    "with its own write cache.",
    "  diskfarm device add pc01 --mac 52:54:00:12:34:56 --vdisk win10\n"
    "  diskfarm device reset pc01\n", df_device_cmds },
  { "collection", "Manage collections: named groups of devices with a "
    "default vDisk.",
    "  diskfarm collection add lab --vdisk win10\n"
    "  diskfarm collection show lab\n"
    "  diskfarm collection set lab --name lab-2f\n", df_collection_cmds },
  { "version", "Manage the versions of a vDisk: maintenance -> test -> "
    "production, seal, merge, rollback.",
    "  diskfarm version new win10\n"
    "  diskfarm version seal win10\n"
    "  diskfarm version promote win10 1 --to production\n",
    df_version_cmds },
  { "session", "The live sessions of the farm's stream servers (only "
    "servers whose /v1/health names this farm count).",
    "  diskfarm session list\n"
    "  diskfarm --json session list --device pc01\n", df_session_cmds },
  { "server", "Manage the stream servers that boot scripts list, with "
    "their registry state and live health.",
    "  diskfarm server add ss1 --address 10.0.0.11\n"
    "  diskfarm server list\n"
    "  diskfarm server set ss1 --power 2\n", df_server_cmds },
  { "store", "The version files each stream server holds (store state), "
    "and fetching missing ones from a peer.",
    "  diskfarm store status\n"
    "  diskfarm store sync --from ss1 --bwlimit 50M\n", df_store_cmds },
  { "bootstrap", "Prepare network boot: iPXE binaries and site DHCP "
    "settings.",
    "  diskfarm bootstrap sync\n"
    "  diskfarm bootstrap dhcp-config --address 10.0.0.5\n",
    df_bootstrap_cmds },
  { "farm", "Farm-wide settings (auto-add of unknown devices, auto-merge "
    "depth, iSCSI CHAP policy) and the admin API's token.",
    "  diskfarm farm set auto-add on --collection lab\n"
    "  diskfarm farm set iscsi-chap required\n"
    "  diskfarm farm show\n", df_farm_cmds },
  { "config", "What diskfarm.conf says: one value, or every key with its "
    "source.",
    "  diskfarm config get farm.dir\n"
    "  diskfarm config show\n", df_config_cmds },
};

static const DfCmd *
find_cmd (const DfCmd *cmds, const char *name)
{
  for (const DfCmd *c = cmds; c->name != NULL; c++)
    if (g_str_equal (c->name, name))
      return c;
  return NULL;
}

/* Run one group ("vdisk ...").  argv[0] is the group name.  *path receives
 * the command path for the usage hint. */
static bool
run_group (DfCtx *ctx, const DfGroup *g, int argc, char **argv, char **path,
           GError **err)
{
  g_autofree char *prgname = g_strdup_printf ("diskfarm %s", g->name);
  g_set_prgname (prgname);
  g_autoptr(GOptionContext) oc = g_option_context_new ("COMMAND ...");
  g_option_context_set_strict_posix (oc, TRUE);
  g_option_context_set_summary (oc, g->summary);
  g_autoptr(GString) desc = g_string_new ("Commands:\n");
  for (const DfCmd *c = g->cmds; c->name != NULL; c++)
    g_string_append_printf (desc, "  %-10s %s\n", c->name, c->summary);
  g_string_append_printf (desc, "\nRun 'diskfarm %s COMMAND --help' for the "
                          "options of one command.\n\nExample:\n%s",
                          g->name, g->examples);
  g_option_context_set_description (oc, desc->str);
  GOptionEntry global[N_GLOBAL];
  global_entries_for (ctx, global);
  g_option_context_add_main_entries (oc, global, NULL);
  *path = g_strdup (g->name);
  if (!parse_keeping_farm (ctx, oc, &argc, &argv, err)
      || !check_values (NULL, global, err))
    {
      to_usage_error (err);
      return false;
    }
  if (argc < 2)
    {
      df_usage_error (err, "%s: missing command", g->name);
      return false;
    }
  const DfCmd *c = find_cmd (g->cmds, argv[1]);
  if (c == NULL)
    {
      df_usage_error (err, "%s: unknown command '%s'", g->name, argv[1]);
      return false;
    }
  g_free (*path);
  *path = g_strdup_printf ("%s %s", g->name, c->name);
  return c->func (ctx, argc - 1, argv + 1, err);
}

static const char main_description[] =
  "Commands:\n"
  "  init                   create or upgrade the farm\n"
  "  vdisk import|list|show|export|remove|verify|inspect|set\n"
  "                         vDisks (golden images)\n"
  "  device add|list|show|set|remove|reset\n"
  "                         devices, their vDisk and write cache\n"
  "  collection add|list|show\n"
  "                         groups of devices\n"
  "  version new|seal|promote|revert|delete|list|merge|diff\n"
  "                         versions: maintenance -> test -> production\n"
  "  session list           live sessions on the farm's stream servers\n"
  "  server add|list|show|set|remove|portal-config\n"
  "                         stream servers: registry state, load, health,\n"
  "                         floating portals (keepalived.conf)\n"
  "  store status|sync      which server holds which version; fetch the\n"
  "                         missing ones from a peer\n"
  "  bootstrap sync|dhcp-config\n"
  "                         iPXE binaries, site DHCP settings\n"
  "  farm set|show|admin-token\n"
  "                         farm settings (auto-add, auto-merge-depth,\n"
  "                         iscsi-chap), the admin API's token\n"
  "  vm attach-media|provision|list\n"
  "                         libvirt domains: boot media, provisioning\n"
  "  audit                  the log of every change\n"
  "  config get|show        what diskfarm.conf says\n"
  "\n"
  "Run 'diskfarm COMMAND --help' for the commands of a group and their "
  "options.\n"
  "Exit status: 0 on success, 1 on any error (one line on stderr), 128 +\n"
  "the signal (130 for Ctrl-C) when import, export, seal or merge was\n"
  "interrupted (its partial file removed).\n"
  "\n"
  "Example:\n"
  "  diskfarm --farm /srv/farm init\n"
  "  diskfarm vdisk import base disk.raw\n"
  "  diskfarm device add pc01 --mac 52:54:00:12:34:56 --vdisk base\n"
  "  diskfarm --json device list\n";

/* Parse the global options and run the command.  *path receives the
 * command path for the usage hint ("" for the top level). */
static bool
run (DfCtx *ctx, int argc, char **argv, char **path, GError **err)
{
  g_autoptr(GOptionContext) oc = g_option_context_new ("COMMAND ...");
  g_option_context_set_strict_posix (oc, TRUE);
  g_option_context_set_summary (oc, "Manage a diskfarm: vDisks streamed "
                                "over NBD and iSCSI to devices, each with its own "
                                "write cache.");
  g_option_context_set_description (oc, main_description);
  gboolean version = FALSE;
  const GOptionEntry entries[] = {
    { "version", 0, 0, G_OPTION_ARG_NONE, &version, "Print the version",
      NULL },
    G_OPTION_ENTRY_NULL
  };
  GOptionEntry global[N_GLOBAL];
  global_entries_for (ctx, global);
  g_option_context_add_main_entries (oc, global, NULL);
  g_option_context_add_main_entries (oc, entries, NULL);
  *path = g_strdup ("");
  if (!g_option_context_parse (oc, &argc, &argv, err)
      || !check_values (entries, global, err))
    {
      to_usage_error (err);
      return false;
    }
  if (version)
    {
      printf ("diskfarm %s\n", DF_VERSION);
      return true;
    }
  if (argc < 2)
    {
      df_usage_error (err, "missing command");
      return false;
    }
  const DfCmd *c = find_cmd (top_cmds, argv[1]);
  if (c != NULL)
    {
      g_free (*path);
      *path = g_strdup (c->name);
      return c->func (ctx, argc - 1, argv + 1, err);
    }
  for (gsize i = 0; i < G_N_ELEMENTS (groups); i++)
    if (g_str_equal (groups[i].name, argv[1]))
      {
        g_free (*path);
        return run_group (ctx, &groups[i], argc - 1, argv + 1, path, err);
      }
  df_usage_error (err, "unknown command '%s'", argv[1]);
  return false;
}

int
main (int argc, char **argv)
{
  setlocale (LC_ALL, "");
  setlocale (LC_NUMERIC, "C");
  umask (DF_UMASK);
  g_set_prgname ("diskfarm");

  DfCtx ctx = { 0 };
  g_autoptr(GError) err = NULL;
  g_autofree char *path = NULL;
  bool ok = run (&ctx, argc, argv, &path, &err);
  g_free (ctx.farm_opt);
  g_free (ctx.config_opt);
  g_free (ctx.db_opt);
  g_clear_pointer (&ctx.conf, df_conf_free);
  g_free (ctx.admin_opt);
  if (ok)
    return 0;
  if (g_error_matches (err, DF_ERROR, DF_ERROR_INTERRUPTED))
    {
      fprintf (stderr, "diskfarm: %s\n", err->message);
      return 128 + df_interrupt_signal ();   /* 130 for SIGINT */
    }
  if (err->domain == DF_USAGE_ERROR)
    fprintf (stderr, "diskfarm: %s; see 'diskfarm%s%s --help'\n",
             err->message, *path ? " " : "", path);
  else
    fprintf (stderr, "diskfarm: %s\n", err->message);
  return 1;
}
