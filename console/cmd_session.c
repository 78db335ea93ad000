/* diskfarm console: `session list`, and the live-session helpers other
 * commands use (device show, device set/remove/reset, version new/list/
 * delete).
 *
 * The sessions come from every server of the farm's server table and the
 * --admin address (lib/admin/live.h); a server whose /v1/health does not
 * name this farm is ignored with a warning, so one farm never counts
 * another's sessions.  Unreachable servers are warnings, not errors. */
#include "console.h"

/* ---- helpers ---------------------------------------------------------- */

static void
warn_skips (GPtrArray *skips, const char *fmt_named, const char *fmt_addr)
{
  for (guint i = 0; i < skips->len; i++)
    {
      const DfLiveSkip *k = skips->pdata[i];
      if (k->server)
        g_printerr (fmt_named, k->server, k->address, k->reason);
      else
        g_printerr (fmt_addr, k->address, k->reason);
    }
}

/* Whether the console asks the default admin address only because it was
 * told none (no --admin, $DISKFARM_ADMIN or [console] admin): then nothing
 * listening there is not worth a warning. */
static bool
admin_implicit (const DfCtx *ctx)
{
  const char *env = g_getenv ("DISKFARM_ADMIN");
  return ctx->admin_opt == NULL && (env == NULL || *env == '\0')
         && (ctx->conf == NULL
             || !df_conf_is_set (ctx->conf, "console", "admin"));
}

DfLive *
df_ctx_live_quiet (const DfCtx *ctx, DfFarm *farm, GError **err)
{
  DfLive *live = df_live_collect (farm, df_ctx_admin (ctx), err);
  if (live == NULL || !admin_implicit (ctx))
    return live;
  for (guint i = live->unreachable->len; i-- > 0;)
    if (((DfLiveSkip *) live->unreachable->pdata[i])->server == NULL)
      g_ptr_array_remove_index (live->unreachable, i);
  return live;
}

void
df_ctx_live_warn (const DfLive *live)
{
  warn_skips (live->foreign,
              "diskfarm: warning: ignoring server %s (%s): %s\n",
              "diskfarm: warning: ignoring the admin API at %s: %s\n");
  warn_skips (live->unreachable,
              "diskfarm: warning: server %s (%s) not reachable: %s\n",
              "diskfarm: warning: %s not reachable: %s\n");
}

DfLive *
df_ctx_live (const DfCtx *ctx, DfFarm *farm, GError **err)
{
  DfLive *live = df_ctx_live_quiet (ctx, farm, err);
  if (live != NULL)
    df_ctx_live_warn (live);
  return live;
}

bool
df_ctx_check_not_live (const DfLive *live, const DfDevice *d, bool force,
                       const char *what, GError **err)
{
  if (df_live_unknown (live))
    g_printerr ("diskfarm: warning: no stream server of this farm could be "
                "asked whether device %s is live; going ahead (a server "
                "fences a session this change leaves stale)\n", d->name);
  if (!df_live_refuse (live, d, force, what, err))
    return false;
  g_autoptr (GPtrArray) mine = df_live_device_sessions (live, d);
  for (guint i = 0; i < mine->len; i++)
    {
      g_autofree char *where = df_live_session_describe (mine->pdata[i]);
      g_printerr ("diskfarm: warning: --force: device %s is live on %s; "
                  "its server fences that session\n", d->name, where);
    }
  return true;
}

bool
df_ctx_change_unless_live (const DfCtx *ctx, DfFarm *farm, const DfDevice *d,
                           bool force, DfChangeFn change, gpointer data,
                           GError **err)
{
  g_autoptr (DfLive) live = df_ctx_live_quiet (ctx, farm, err);
  if (live == NULL || !df_farm_begin (farm, err))
    return false;
  if (!change (farm, data, err))
    {
      df_farm_rollback (farm);
      return false;
    }
  df_ctx_live_warn (live);
  if (!df_ctx_check_not_live (live, d, force, NULL, err))
    {
      df_farm_rollback (farm);
      return false;
    }
  return df_farm_commit (farm, err);
}

DfRecord *
df_live_session_record (const DfLiveSession *s)
{
  DfRecord *r = df_record_new ();
  df_record_str (r, "server", "server", s->server ? s->server : s->address);
  df_record_str (r, "address", NULL, s->address);
  df_record_int (r, "session", "session", s->id);
  df_record_str (r, "proto", "proto", s->proto);
  df_record_str (r, "client", "client", s->client);
  df_record_str (r, "export", "export", s->export);
  df_record_str (r, "device", "device", s->device);
  df_record_opt_int (r, "generation", "gen", s->generation >= 0,
                     s->generation);
  df_record_str (r, "vdisk", NULL, s->vdisk);
  df_record_opt_int (r, "version", "version", s->version >= 0, s->version);
  df_record_str (r, "cache", "cache", s->cache);
  df_record_bool (r, "maintenance", NULL, s->maintenance);
  df_record_str (r, "started", "started", s->started);
  df_record_size (r, "bytes_read", "read", (uint64_t) MAX (s->bytes_read, 0));
  df_record_size (r, "bytes_written", "written",
                  (uint64_t) MAX (s->bytes_written, 0));
  return r;
}

static GPtrArray *
skip_records (GPtrArray *skips, const char *why_key)
{
  GPtrArray *records = df_record_list_new ();
  for (guint i = 0; i < skips->len; i++)
    {
      const DfLiveSkip *k = skips->pdata[i];
      DfRecord *r = df_record_new ();
      df_record_str (r, "server", "server", k->server);
      df_record_str (r, "address", "address", k->address);
      df_record_str (r, why_key, why_key, k->reason);
      g_ptr_array_add (records, r);
    }
  return records;
}

/* ---- list ------------------------------------------------------------- */

static bool
session_list (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "session list", "", 0, 0,
    "List the live sessions of every stream server of the farm (its server "
    "table, plus --admin), one row per session: the server, protocol, "
    "client, export, device, the boot generation, version and cache the "
    "session is bound to, when it started and the bytes it moved.  A server "
    "whose /v1/health does not name this farm is ignored with a warning; "
    "servers that cannot be reached are reported on stderr (and under "
    "\"unreachable\" in JSON), not fatal.  Fields an older streamsvc does "
    "not report show as '-' / null.",
    "  diskfarm session list\n"
    "  diskfarm --json session list --device pc01\n",
  };
  g_autofree char *device = NULL;
  const GOptionEntry entries[] = {
    { "device", 0, 0, G_OPTION_ARG_STRING, &device,
      "Only the sessions of this device (name or MAC)", "NAME" },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (DfFarm) farm = df_cmd_open_farm (ctx, &spec, entries, &argc,
                                              &argv, err);
  if (farm == NULL)
    return false;
  g_autoptr (DfDevice) d = device ? df_farm_device_get (farm, device, err)
                                  : NULL;
  if (device && d == NULL)
    return false;
  g_autoptr (DfLive) live = df_ctx_live (ctx, farm, err);
  if (live == NULL)
    return false;
  g_autoptr (GPtrArray) shown = d ? df_live_device_sessions (live, d)
                                  : g_ptr_array_ref (live->sessions);
  GPtrArray *records = df_record_list_new ();
  for (guint i = 0; i < shown->len; i++)
    g_ptr_array_add (records, df_live_session_record (shown->pdata[i]));
  if (!ctx->json)
    {
      df_print_list (records, false, d ? "no live session of this device"
                                       : "no live session");
      return true;
    }
  DfRecord *main = df_record_new ();
  df_record_int (main, "answered_server_count", "servers answered",
                 live->answered);
  g_autoptr (DfReport) rep = df_report_new (main);
  df_report_add_list (rep, "sessions", "sessions", records);
  df_report_add_list (rep, "unreachable", "unreachable",
                      skip_records (live->unreachable, "error"));
  df_report_add_list (rep, "ignored", "ignored",
                      skip_records (live->foreign, "reason"));
  df_report_print (rep, true);
  return true;
}

const DfCmd df_session_cmds[] = {
  { "list", "live sessions of the farm's stream servers", session_list },
  { NULL, NULL, NULL }
};
