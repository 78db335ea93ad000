/* diskfarm console: `store status|sync`: which server holds which version
 * file (the store state of the farm DB), and fetching the missing ones
 * into this farm directory's store from a peer (lib/admin store-sync.h).
 *
 * "This server" is --server, else diskfarm.conf [streamsvc] server-name:
 * the registry name the local streamsvc runs under. */
#include "console.h"

#include "store-sync.h"

#include <unistd.h>

/* ---- status ------------------------------------------------------------- */

/* The record of server for vdisk@number in recs (borrowed), or NULL. */
static const DfStoreRecord *
record_of (GPtrArray *recs, const char *server, const char *vdisk,
           int number)
{
  for (guint i = 0; i < recs->len; i++)
    {
      const DfStoreRecord *r = recs->pdata[i];
      if (r->number == number && g_str_equal (r->server, server)
          && g_str_equal (r->vdisk, vdisk))
        return r;
    }
  return NULL;
}

/* {"ss1": {"state": ..., "sha256": ..., "checked_ms": ...}, ...} */
static char *
servers_json (GPtrArray *servers, GPtrArray *recs, const DfVersion *v)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  for (guint i = 0; i < servers->len; i++)
    {
      const DfServer *s = servers->pdata[i];
      const DfStoreRecord *r = record_of (recs, s->name, v->vdisk, v->number);
      json_builder_set_member_name (b, s->name);
      json_builder_begin_object (b);
      json_builder_set_member_name (b, "state");
      json_builder_add_string_value (b, r ? df_store_state_name (r->state)
                                          : "unknown");
      json_builder_set_member_name (b, "sha256");
      if (r && r->sha256)
        json_builder_add_string_value (b, r->sha256);
      else
        json_builder_add_null_value (b);
      json_builder_set_member_name (b, "checked_ms");
      if (r)
        json_builder_add_int_value (b, r->checked_ms);
      else
        json_builder_add_null_value (b);
      json_builder_set_member_name (b, "detail");
      if (r && r->detail)
        json_builder_add_string_value (b, r->detail);
      else
        json_builder_add_null_value (b);
      json_builder_end_object (b);
    }
  json_builder_end_object (b);
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  return json_to_string (root, FALSE);
}

/* One row of the matrix: vdisk, version, then one column per server
 * (keys and labels borrow the server names: servers outlives the row). */
static DfRecord *
status_row (GPtrArray *servers, GPtrArray *recs, const DfVersion *v,
            bool json)
{
  DfRecord *row = df_record_new ();
  df_record_str (row, "vdisk", "vdisk", v->vdisk);
  df_record_int (row, "version", "version", v->number);
  df_record_str (row, "sha256", NULL, v->sha256);
  if (json)
    {
      g_autofree char *text = servers_json (servers, recs, v);
      df_record_object (row, "servers", NULL, text);
      return row;
    }
  for (guint i = 0; i < servers->len; i++)
    {
      const DfServer *s = servers->pdata[i];
      const DfStoreRecord *r = record_of (recs, s->name, v->vdisk, v->number);
      df_record_str (row, s->name, s->name,
                     r ? df_store_state_name (r->state) : "-");
    }
  return row;
}

/* The farm's stream servers (new array). */
static GPtrArray *
stream_servers (DfFarm *farm, GError **err)
{
  g_autoptr (GPtrArray) all = df_farm_server_list (farm, err);
  if (!all)
    return NULL;
  GPtrArray *out =
    g_ptr_array_new_with_free_func ((GDestroyNotify) df_server_free);
  for (guint i = 0; i < all->len; i++)
    if (g_strcmp0 (((DfServer *) all->pdata[i])->kind,
                   DF_SERVER_KIND_STREAM) == 0)
      g_ptr_array_add (out, g_steal_pointer (&all->pdata[i]));
  return out;
}

static bool
add_vdisk_rows (DfFarm *farm, const char *vdisk, GPtrArray *servers,
                GPtrArray *recs, bool json, GPtrArray *rows, GError **err)
{
  g_autoptr (GPtrArray) vs = df_farm_version_list (farm, vdisk, err);
  if (!vs)
    return false;
  for (guint i = 0; i < vs->len; i++)
    if (((DfVersion *) vs->pdata[i])->sha256)
      g_ptr_array_add (rows, status_row (servers, recs, vs->pdata[i], json));
  return true;
}

static bool
store_status (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "store status", "", 0, 0,
    "The server x version matrix of the store state: for each sealed "
    "version, what each stream server recorded of its copy (verified, "
    "present, missing, corrupt; - when it recorded nothing).  Servers "
    "record it when they verify their store at start, after a store sync "
    "and on 'vdisk verify'.",
    "  diskfarm store status\n  diskfarm --json store status --vdisk win10\n",
  };
  g_autofree char *vdisk = NULL;
  const GOptionEntry entries[] = {
    { "vdisk", 0, 0, G_OPTION_ARG_STRING, &vdisk, "Only this vDisk", "V" },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (DfFarm) farm = df_cmd_open_farm (ctx, &spec, entries, &argc,
                                              &argv, err);
  if (!farm)
    return false;
  g_autoptr (DfVdisk) one = vdisk ? df_farm_vdisk_get (farm, vdisk, err)
                                  : NULL;
  if (vdisk && !one)
    return false;
  g_autoptr (GPtrArray) servers = stream_servers (farm, err);
  g_autoptr (GPtrArray) recs = servers
    ? df_farm_store_state_list (farm, vdisk, err) : NULL;
  g_autoptr (GPtrArray) vdisks = recs ? df_farm_vdisk_list (farm, err)
                                      : NULL;
  if (!vdisks)
    return false;
  g_autoptr (GPtrArray) rows = df_record_list_new ();
  for (guint i = 0; i < vdisks->len; i++)
    {
      const char *name = ((DfVdisk *) vdisks->pdata[i])->name;
      if ((!vdisk || g_str_equal (name, vdisk))
          && !add_vdisk_rows (farm, name, servers, recs, ctx->json, rows,
                              err))
        return false;
    }
  df_print_list (rows, ctx->json, "no sealed version");
  return true;
}

/* ---- sync --------------------------------------------------------------- */

static DfRecord *
sync_record (const DfSyncItem *it)
{
  DfRecord *r = df_record_new ();
  double mib_s = it->seconds > 0 ? (double) it->bytes / 1048576.0 / it->seconds
                                 : 0;
  g_autofree char *rate = g_strdup_printf ("%.1f", mib_s);
  df_record_str (r, "vdisk", "vdisk", it->vdisk);
  df_record_int (r, "version", "version", it->number);
  df_record_str (r, "outcome", "outcome", df_sync_outcome_name (it->outcome));
  df_record_str (r, "from", "from", it->from);
  df_record_int (r, "bytes", "bytes", it->bytes);
  df_record_int (r, "resumed_at", "resumed at", it->resumed_at);
  df_record_str (r, "mib_per_s", "MiB/s", rate);
  df_record_int (r, "size", NULL, it->size);
  df_record_int (r, "ms", NULL, (gint64) (it->seconds * 1000));
  df_record_str (r, "error", "error", it->error);
  return r;
}

static void
progress_cb (gint64 done, gint64 total, gpointer data)
{
  df_progress_update (data, (uint64_t) MAX (done, 0),
                      (uint64_t) MAX (total, done));
}

const char *
df_ctx_server_name (const DfCtx *ctx, const char *opt)
{
  return opt ? opt : ctx->conf
    ? df_conf_string (ctx->conf, "streamsvc", "server-name") : NULL;
}

/* df_ctx_server_name, else a usage error. */
static const char *
local_server (const DfCtx *ctx, const char *opt, GError **err)
{
  const char *name = df_ctx_server_name (ctx, opt);
  if (!name)
    df_usage_error (err, "which server is this? give --server NAME or set "
                    "[streamsvc] server-name in diskfarm.conf");
  return name;
}

static bool
store_sync (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "store sync", "", 0, 0,
    "Fetch the version files this server's store lacks (missing, or "
    "recorded corrupt) from a peer stream server's admin API (GET "
    "/v1/store/VDISK/N), into this farm directory's store.  A partial "
    "copy from an interrupted run is resumed (HTTP Range); each copy's "
    "SHA-256 is checked against the version's before it is published and "
    "recorded verified.  The source is --from, else the healthy stream "
    "server holding the version verified with the least load.  Exits 1 "
    "when a version could not be copied.",
    "  diskfarm store sync\n"
    "  diskfarm store sync --from ss1 --vdisk win10 --bwlimit 50M\n",
  };
  g_autofree char *from = NULL, *vdisk = NULL, *bw = NULL, *server = NULL;
  const GOptionEntry entries[] = {
    { "from", 0, 0, G_OPTION_ARG_STRING, &from,
      "Copy from this server only", "SERVER" },
    { "vdisk", 0, 0, G_OPTION_ARG_STRING, &vdisk, "Only this vDisk", "V" },
    { "bwlimit", 0, 0, G_OPTION_ARG_STRING, &bw,
      "At most RATE bytes per second (K, M, G suffixes)", "RATE" },
    { "server", 0, 0, G_OPTION_ARG_STRING, &server,
      "This server's registry name (default [streamsvc] server-name)",
      "NAME" },
    G_OPTION_ENTRY_NULL
  };
  uint64_t bwlimit = 0;
  if (!df_cmd_parse (ctx, &spec, entries, &argc, &argv, err))
    return false;
  if (bw && (!df_parse_size (bw, &bwlimit, err) || bwlimit == 0))
    {
      g_clear_error (err);
      df_usage_error (err, "--bwlimit '%s': a rate in bytes/s (K, M, G "
                      "suffixes), not 0", bw);
      return false;
    }
  const char *self = local_server (ctx, server, err);
  g_autoptr (DfFarm) farm = self ? df_ctx_open_farm (ctx, false, err) : NULL;
  if (!farm)
    return false;
  DfProgress prog;
  df_progress_init (&prog, "syncing");
  DfSyncOptions o = { .server = self, .from = from, .vdisk = vdisk,
                      .bwlimit = bwlimit, .progress = progress_cb,
                      .progress_data = &prog };
  g_autoptr (GPtrArray) items = df_store_sync (farm, &o, err);
  df_progress_end (&prog);
  if (!items)
    return false;
  g_autoptr (GPtrArray) rows = df_record_list_new ();
  guint failed = 0;
  for (guint i = 0; i < items->len; i++)
    {
      const DfSyncItem *it = items->pdata[i];
      failed += it->outcome == DF_SYNC_FAILED
                || it->outcome == DF_SYNC_NO_SOURCE;
      g_ptr_array_add (rows, sync_record (it));
    }
  df_print_list (rows, ctx->json, "no sealed version");
  if (failed)
    g_set_error (err, DF_ERROR, DF_ERROR_IO, "%u version%s not copied",
                 failed, failed == 1 ? "" : "s");
  return failed == 0;
}

const DfCmd df_store_cmds[] = {
  { "status", "which server holds which version (server x version)",
    store_status },
  { "sync", "fetch missing version files from a peer", store_sync },
  { NULL, NULL, NULL }
};
