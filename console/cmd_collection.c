/* diskfarm console: `collection add|list|show|set|remove`. */
#include "console.h"

static DfRecord *
collection_record (const DfCollection *c, guint n_devices)
{
  DfRecord *r = df_record_new ();
  df_record_str (r, "name", "name", c->name);
  df_record_str (r, "vdisk", "vdisk", c->vdisk);
  df_record_int (r, "device_count", "devices", n_devices);
  df_record_str (r, "description", "description", c->description);
  df_record_str (r, "created", NULL, c->created);
  return r;
}

static bool
collection_add (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "collection add", "NAME", 1, 1,
    "Create a collection: a named group of devices, with an optional "
    "default vDisk for the devices added to it.",
    "  diskfarm collection add lab --description 'Lab PCs' --vdisk win10\n",
  };
  g_autofree char *description = NULL;
  g_autofree char *vdisk = NULL;
  const GOptionEntry entries[] = {
    { "description", 'd', 0, G_OPTION_ARG_STRING, &description,
      "Free text describing the collection", "TEXT" },
    { "vdisk", 0, 0, G_OPTION_ARG_STRING, &vdisk,
      "Default vDisk of devices added to the collection", "VDISK" },
    G_OPTION_ENTRY_NULL
  };
  if (!df_cmd_parse (ctx, &spec, entries, &argc, &argv, err)
      || !df_validate_name ("collection", argv[1], err))
    return false;
  g_autoptr(DfFarm) farm = df_ctx_open_farm (ctx, false, err);
  if (farm == NULL
      || !df_farm_collection_add (farm, argv[1], description, vdisk, err))
    return false;
  g_autoptr(DfCollection) c = df_farm_collection_get (farm, argv[1], err);
  if (c == NULL)
    return false;
  g_autoptr(DfRecord) r = collection_record (c, 0);
  df_print_result (r, ctx->json, "added collection '%s'", c->name);
  return true;
}

static bool
collection_list (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "collection list", "", 0, 0,
    "List the collections with their default vDisk and device count.",
    "  diskfarm collection list\n",
  };
  g_autoptr (DfFarm) farm = df_cmd_open_farm (ctx, &spec, NULL, &argc,
                                              &argv, err);
  if (farm == NULL)
    return false;
  g_autoptr(GPtrArray) cols = df_farm_collection_list (farm, err);
  if (cols == NULL)
    return false;
  g_autoptr(GPtrArray) records = df_record_list_new ();
  for (guint i = 0; i < cols->len; i++)
    {
      DfCollection *c = cols->pdata[i];
      g_autoptr(GPtrArray) devs = df_farm_device_list (farm, c->name, err);
      if (devs == NULL)
        return false;
      g_ptr_array_add (records, collection_record (c, devs->len));
    }
  df_print_list (records, ctx->json, "no collections");
  return true;
}

static bool
collection_show (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "collection show", "NAME", 1, 1,
    "Show one collection and its devices.",
    "  diskfarm collection show lab\n",
  };
  g_autoptr (DfFarm) farm = df_cmd_open_farm (ctx, &spec, NULL, &argc,
                                              &argv, err);
  if (farm == NULL)
    return false;
  g_autoptr(DfCollection) c = df_farm_collection_get (farm, argv[1], err);
  if (c == NULL)
    return false;
  g_autoptr(GPtrArray) devs = df_farm_device_list (farm, c->name, err);
  if (devs == NULL)
    return false;
  g_autoptr(DfReport) rep = df_report_new (collection_record (c, devs->len));
  GPtrArray *records = df_record_list_new ();
  for (guint i = 0; i < devs->len; i++)
    g_ptr_array_add (records, df_device_record (devs->pdata[i]));
  df_report_add_list (rep, "devices", "Devices", records);
  df_report_print (rep, ctx->json);
  return true;
}

static bool
collection_set (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "collection set", "NAME", 1, 1,
    "Change a collection: rename it (its devices stay in it, auto-add "
    "follows), replace its description ('' clears it) or its default vDisk "
    "(--no-vdisk clears it).  The default vDisk only applies to devices "
    "added later.",
    "  diskfarm collection set lab --name lab-2f --description 'Lab, 2nd "
    "floor'\n"
    "  diskfarm collection set lab --vdisk win11\n",
  };
  g_autofree char *new_name = NULL, *description = NULL, *vdisk = NULL;
  gboolean no_vdisk = FALSE;
  const GOptionEntry entries[] = {
    { "name", 0, 0, G_OPTION_ARG_STRING, &new_name, "New name", "NEW" },
    { "description", 'd', 0, G_OPTION_ARG_STRING, &description,
      "Free text describing the collection ('' clears it)", "TEXT" },
    { "vdisk", 0, 0, G_OPTION_ARG_STRING, &vdisk,
      "Default vDisk of devices added to it", "VDISK" },
    { "no-vdisk", 0, 0, G_OPTION_ARG_NONE, &no_vdisk,
      "No default vDisk any more", NULL },
    G_OPTION_ENTRY_NULL
  };
  if (!df_cmd_parse (ctx, &spec, entries, &argc, &argv, err))
    return false;
  if (vdisk && no_vdisk)
    {
      df_usage_error (err, "collection set: --vdisk and --no-vdisk exclude "
                      "each other");
      return false;
    }
  if (no_vdisk)
    vdisk = g_strdup ("");
  if (!new_name && !description && !vdisk)
    {
      df_usage_error (err, "collection set: nothing to change (give --name, "
                      "--description, --vdisk or --no-vdisk)");
      return false;
    }
  g_autoptr (DfFarm) farm = df_ctx_open_farm (ctx, false, err);
  if (!farm || !df_farm_collection_set (farm, argv[1], new_name, description,
                                        vdisk, err))
    return false;
  const char *now_name = new_name ? new_name : argv[1];
  g_autoptr (DfCollection) c = df_farm_collection_get (farm, now_name, err);
  g_autoptr (GPtrArray) devs = c ? df_farm_device_list (farm, c->name, err)
                                 : NULL;
  if (!devs)
    return false;
  g_autoptr (DfRecord) r = collection_record (c, devs->len);
  if (new_name && !g_str_equal (new_name, argv[1]))
    df_print_result (r, ctx->json, "collection '%s' renamed to '%s'",
                     argv[1], c->name);
  else
    df_print_result (r, ctx->json, "collection '%s' changed", c->name);
  return true;
}

static bool
collection_remove (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "collection remove", "NAME", 1, 1,
    "Remove a collection.  Refused while devices are in it (move them with "
    "'device set --collection' or remove them), unless --force: they then "
    "stay, in no collection, and keep booting as before.  Always refused "
    "while auto-add adds devices to it.",
    "  diskfarm collection remove old-lab\n"
    "  diskfarm collection remove old-lab --force\n",
  };
  gboolean force = FALSE;
  const GOptionEntry entries[] = {
    { "force", 'f', 0, G_OPTION_ARG_NONE, &force,
      "Remove it even with devices in it (they keep no collection)", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (DfFarm) farm = df_cmd_open_farm (ctx, &spec, entries, &argc,
                                              &argv, err);
  if (!farm)
    return false;
  g_autoptr (GPtrArray) devs = df_farm_device_list (farm, argv[1], err);
  if (!devs || !df_farm_collection_remove (farm, argv[1], force, err))
    return false;
  g_autoptr (DfRecord) r = df_record_new ();
  df_record_str (r, "name", "name", argv[1]);
  df_record_int (r, "device_count", "devices left", devs->len);
  if (devs->len)
    df_print_result (r, ctx->json, "collection '%s' removed (%u device%s "
                     "now in no collection)", argv[1], devs->len,
                     devs->len == 1 ? "" : "s");
  else
    df_print_result (r, ctx->json, "collection '%s' removed", argv[1]);
  return true;
}

const DfCmd df_collection_cmds[] = {
  { "add", "create a collection", collection_add },
  { "list", "list collections", collection_list },
  { "show", "show a collection and its devices", collection_show },
  { "set", "rename a collection, change its description or vDisk",
    collection_set },
  { "remove", "remove a collection (refused while devices are in it)",
    collection_remove },
  { NULL, NULL, NULL }
};
