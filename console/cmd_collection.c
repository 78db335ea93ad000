/* diskfarm console: `collection add|list|show`. */
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

const DfCmd df_collection_cmds[] = {
  { "add", "create a collection", collection_add },
  { "list", "list collections", collection_list },
  { "show", "show a collection and its devices", collection_show },
  { NULL, NULL, NULL }
};
