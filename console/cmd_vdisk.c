/* diskfarm console: `vdisk import|list|show|export|remove`. */
#include "console.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers ---------------------------------------------------------- */

/* Highest version number of a version list (DfVersion), -1 when empty. */
static int
newest_version (GPtrArray *versions)
{
  int n = -1;
  for (guint i = 0; i < versions->len; i++)
    n = MAX (n, ((DfVersion *) versions->pdata[i])->number);
  return n;
}

static bool
vdisk_import (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "vdisk import", "NAME FILE", 2, 2,
    "Import a disk image as the base version (0) of a new vDisk, stored as "
    "a sparse qcow2 file store/NAME/NAME.0.qcow2 (store/NAME~2/ when a "
    "renamed vDisk still holds store/NAME/).  raw and qcow2 (with its "
    "backing chain flattened) are read natively; vhdx, vmdk, vpc, vdi and "
    "other formats go through qemu-img convert.  On any failure nothing is "
    "left behind.",
    "  diskfarm vdisk import win10 win10.raw\n"
    "  diskfarm vdisk import win10 pvs-export.vhdx --format vhdx\n",
  };
  g_autofree char *format = NULL;
  g_autofree char *description = NULL;
  const GOptionEntry entries[] = {
    { "format", 'f', 0, G_OPTION_ARG_STRING, &format,
      "Image format: auto (default), raw, qcow2, vhdx, vmdk, vpc, vdi",
      "FMT" },
    { "description", 'd', 0, G_OPTION_ARG_STRING, &description,
      "Free text describing the vDisk (at most 1024 bytes)", "TEXT" },
    G_OPTION_ENTRY_NULL
  };
  if (!df_cmd_parse (ctx, &spec, entries, &argc, &argv, err))
    return false;
  const char *name = argv[1], *src = argv[2];
  if (description != NULL && strlen (description) > 1024)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "--description is longer than 1024 bytes");
      return false;
    }
  g_autoptr(DfFarm) farm = df_ctx_open_farm (ctx, false, err);
  DfProgress progress;
  DfLifecycleProgress lp = df_cli_progress (&progress);
  g_auto (DfImportResult) j = { 0 };
  if (farm == NULL
      || !df_lifecycle_import (farm, name, src, format, description, &lp, &j,
                               err))
    return false;
  g_autoptr(DfRecord) r = df_record_new ();
  df_record_str (r, "name", "name", name);
  df_record_int (r, "version", "version", 0);
  df_record_str (r, "file", "file", j.file);
  df_record_size (r, "virtual_size", "virtual size", j.virtual_size);
  df_record_size (r, "file_size", "file size", j.file_size);
  df_record_str (r, "sha256", "sha256", j.sha256);
  g_autofree char *vs = df_format_size (j.virtual_size);
  g_autofree char *fs = df_format_size (j.file_size);
  df_print_result (r, ctx->json,
                   "imported vdisk '%s': version 0, %s virtual, %s "
                   "stored, sha256 %s", name, vs, fs, j.sha256);
  return true;
}

/* ---- list ------------------------------------------------------------- */

static DfRecord *
vdisk_record (const DfVdisk *v, GPtrArray *versions)
{
  uint64_t stored = 0;
  for (guint i = 0; i < versions->len; i++)
    stored += ((DfVersion *) versions->pdata[i])->file_size;
  DfRecord *r = df_record_new ();
  df_record_str (r, "name", "name", v->name);
  df_record_int (r, "version_count", "versions", versions->len);
  df_record_opt_int (r, "latest_version", "latest", versions->len > 0,
                     newest_version (versions));
  df_record_size (r, "virtual_size", "virtual size", v->virtual_size);
  df_record_size (r, "stored_size", "stored", stored);
  df_record_str (r, "description", "description", v->description);
  df_record_str (r, "created", NULL, v->created);
  return r;
}

static bool
vdisk_list (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "vdisk list", "", 0, 0,
    "List the vDisks of the farm with their version count, sizes and "
    "description.",
    "  diskfarm vdisk list\n  diskfarm --json vdisk list\n",
  };
  g_autoptr (DfFarm) farm = df_cmd_open_farm (ctx, &spec, NULL, &argc,
                                              &argv, err);
  if (farm == NULL)
    return false;
  g_autoptr(GPtrArray) vdisks = df_farm_vdisk_list (farm, err);
  if (vdisks == NULL)
    return false;
  g_autoptr(GPtrArray) records = df_record_list_new ();
  for (guint i = 0; i < vdisks->len; i++)
    {
      DfVdisk *v = vdisks->pdata[i];
      g_autoptr(GPtrArray) versions = df_farm_version_list (farm, v->name,
                                                            err);
      if (versions == NULL)
        return false;
      g_ptr_array_add (records, vdisk_record (v, versions));
    }
  df_print_list (records, ctx->json, "no vdisks (add one with 'diskfarm "
                 "vdisk import NAME FILE')");
  return true;
}

/* ---- show ------------------------------------------------------------- */

static DfRecord *
version_record (const DfVersion *v)
{
  DfRecord *r = df_record_new ();
  df_record_int (r, "version", "version", v->number);
  df_record_opt_int (r, "parent", "parent", v->parent >= 0, v->parent);
  df_record_str (r, "state", "state", df_version_state_name (v->state));
  df_record_str (r, "file", "file", v->file);
  df_record_size (r, "file_size", "size", v->file_size);
  df_record_size (r, "virtual_size", "virtual size", v->virtual_size);
  df_record_str (r, "sha256", "sha256", v->sha256);
  df_record_str (r, "pending_state", NULL, v->pending_state);
  df_record_str (r, "pending_at", NULL, v->pending_at);
  df_record_str (r, "created", NULL, v->created);
  return r;
}

static DfRecord *
layer_record (const DfChainLayer *l, guint depth)
{
  g_autofree char *file = g_path_get_basename (l->path);
  DfRecord *r = df_record_new ();
  df_record_int (r, "depth", "depth", depth);
  df_record_str (r, "file", "file", file);
  df_record_str (r, "format", "format", df_image_format_name (l->format));
  df_record_str (r, "backing", "backing", l->backing);
  df_record_size (r, "file_size", "size", l->file_size);
  df_record_size (r, "virtual_size", "virtual size", l->virtual_size);
  df_record_int (r, "cluster_size", "cluster", l->cluster_size);
  df_record_int (r, "qcow2_version", NULL, l->qcow2_version);
  df_record_str (r, "path", NULL, l->path);
  return r;
}

/* The chain of the newest version as df_chain_open sees it.  A chain that
 * does not open is reported in *chain_error, not as a failure of show. */
static GPtrArray *
chain_records (DfFarm *farm, const char *name, int newest,
               gsize *extent_count, char **chain_error)
{
  GPtrArray *records = df_record_list_new ();
  *extent_count = 0;
  if (newest < 0)
    return records;
  g_autofree char *path = df_farm_version_path (farm, name, newest);
  g_autoptr(GError) err = NULL;
  g_autoptr(df_blk) chain = df_chain_open (path, DF_FMT_QCOW2, &err);
  if (chain == NULL)
    {
      *chain_error = g_strdup (err->message);
      return records;
    }
  guint n = 0;
  const DfChainLayer *layers = df_chain_layers (chain, &n);
  for (guint i = 0; i < n; i++)
    g_ptr_array_add (records, layer_record (&layers[i], i));
  *extent_count = df_chain_extent_count (chain);
  return records;
}

static bool
vdisk_show (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "vdisk show", "NAME", 1, 1,
    "Show one vDisk: its versions (number, state, file, size, virtual size, "
    "sha256) and the backing chain of its newest version as the stream "
    "engine opens it, with the number of extents of its flattened map.",
    "  diskfarm vdisk show win10\n",
  };
  g_autoptr (DfFarm) farm = df_cmd_open_farm (ctx, &spec, NULL, &argc,
                                              &argv, err);
  if (farm == NULL)
    return false;
  g_autoptr(DfVdisk) v = df_farm_vdisk_get (farm, argv[1], err);
  if (v == NULL)
    return false;
  g_autoptr(GPtrArray) versions = df_farm_version_list (farm, v->name, err);
  if (versions == NULL)
    return false;
  int newest = newest_version (versions);
  gsize extents = 0;
  g_autofree char *chain_error = NULL;
  GPtrArray *chain = chain_records (farm, v->name, newest, &extents,
                                    &chain_error);
  g_autofree char *store = df_farm_store_dir (farm, v->name);

  DfRecord *r = df_record_new ();
  df_record_str (r, "name", "name", v->name);
  df_record_size (r, "virtual_size", "virtual size", v->virtual_size);
  df_record_str (r, "description", "description", v->description);
  df_record_str (r, "created", "created", v->created);
  df_record_str (r, "store", "store", store);
  df_record_str (r, "firmware", "boots under", df_firmware_name (v->firmware));
  df_record_str (r, "efi_loader", "efi loader", v->efi_loader);
  bool own_depth;
  df_record_int (r, "auto_merge_depth", "auto-merge depth",
                 df_farm_auto_merge_depth (farm, v->name, &own_depth));
  df_record_str (r, "auto_merge_depth_from", NULL,
                 own_depth ? "vdisk" : "farm");
  df_record_opt_int (r, "latest_version", "latest version", newest >= 0,
                     newest);
  df_record_int (r, "extent_count", "extents", (gint64) extents);
  df_record_str (r, "chain_error", "chain error", chain_error);
  g_autoptr(DfReport) rep = df_report_new (r);
  GPtrArray *vrecs = df_record_list_new ();
  for (guint i = 0; i < versions->len; i++)
    g_ptr_array_add (vrecs, version_record (versions->pdata[i]));
  df_report_add_list (rep, "versions", "Versions", vrecs);
  df_report_add_list (rep, "chain", "Backing chain of the latest version "
                      "(top first)", chain);
  df_report_print (rep, ctx->json);
  return true;
}

/* ---- export ----------------------------------------------------------- */

/* "NAME" or "NAME@N" -> name (new string) and *number (-1 when absent). */
static bool
parse_version_ref (const char *ref, char **name, int *number, GError **err)
{
  const char *at = strchr (ref, '@');
  if (at == NULL)
    {
      *name = g_strdup (ref);
      *number = -1;
      return true;
    }
  guint64 n = 0;
  g_autoptr(GError) num_err = NULL;
  if (!g_ascii_string_to_unsigned (at + 1, 10, 0, G_MAXINT, &n, &num_err))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "invalid version in '%s': %s", ref, num_err->message);
      return false;
    }
  *name = g_strndup (ref, (gsize) (at - ref));
  *number = (int) n;
  return true;
}

/* The version to export: NAME@N, or the one production devices boot. */
static DfVersion *
export_version (DfFarm *farm, const char *name, int number, GError **err)
{
  g_autoptr(DfVdisk) v = df_farm_vdisk_get (farm, name, err);
  if (v == NULL)
    return NULL;
  if (number >= 0)
    return df_farm_version_get (farm, name, number, err);
  return df_farm_version_for_type (farm, name, "production", err);
}

static bool
vdisk_export (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "vdisk export", "NAME[@N] FILE", 2, 2,
    "Write one version of a vDisk (default: the newest production version) "
    "with its whole backing chain flattened into a standalone raw or qcow2 "
    "file.  An existing FILE is never overwritten.",
    "  diskfarm vdisk export win10@3 win10-v3.qcow2 --format qcow2\n"
    "  diskfarm vdisk export win10 win10.raw --format raw\n",
  };
  g_autofree char *format = NULL;
  const GOptionEntry entries[] = {
    { "format", 'f', 0, G_OPTION_ARG_STRING, &format,
      "Output format: raw or qcow2 (required)", "FMT" },
    G_OPTION_ENTRY_NULL
  };
  if (!df_cmd_parse (ctx, &spec, entries, &argc, &argv, err))
    return false;
  DfImageFormat fmt = DF_FMT_UNKNOWN;
  if (format == NULL)
    {
      df_usage_error (err, "vdisk export: missing --format raw|qcow2");
      return false;
    }
  if (!df_image_format_parse (format, &fmt, err))
    return false;
  if (fmt == DF_FMT_UNKNOWN)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "export format must be raw or qcow2, not '%s'", format);
      return false;
    }
  const char *out = argv[2];
  if (!df_cmd_export_target (out, err))
    return false;
  g_autofree char *name = NULL;
  int number = -1;
  if (!parse_version_ref (argv[1], &name, &number, err))
    return false;
  g_autoptr(DfFarm) farm = df_ctx_open_farm (ctx, false, err);
  if (farm == NULL)
    return false;
  g_autoptr(DfVersion) ver = export_version (farm, name, number, err);
  if (ver == NULL)
    return false;
  g_autofree char *path = df_farm_version_path (farm, name, ver->number);
  g_autoptr(df_blk) chain = df_chain_open (path, DF_FMT_QCOW2, err);
  if (chain == NULL)
    return false;

  DfProgress progress;
  df_progress_init (&progress, "exporting");
  df_interrupt_begin ();   /* Ctrl-C: no temp file is left next to FILE */
  bool ok = fmt == DF_FMT_RAW
    ? df_raw_write_from_blk (chain, out, df_progress_update, &progress, err)
    : df_qcow2_write_from_blk (chain, out, df_progress_update, &progress, err);
  df_interrupt_end ();
  df_progress_end (&progress);
  if (!ok)
    return false;
  g_autoptr(DfRecord) r = df_record_new ();
  df_record_str (r, "name", "name", name);
  df_record_int (r, "version", "version", ver->number);
  df_record_export (r, out, fmt, chain->size);
  g_autofree char *vs = df_format_size (chain->size);
  df_print_result (r, ctx->json, "exported vdisk '%s' version %d to %s "
                   "(%s, %s)", name, ver->number, out,
                   df_image_format_name (fmt), vs);
  return true;
}

/* ---- remove ----------------------------------------------------------- */

static bool
vdisk_remove (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "vdisk remove", "NAME", 1, 1,
    "Remove a vDisk, all its versions and their store files.  Refused while "
    "a device is assigned to it.",
    "  diskfarm vdisk remove old-image\n",
  };
  g_autoptr (DfFarm) farm = df_cmd_open_farm (ctx, &spec, NULL, &argc,
                                              &argv, err);
  if (farm == NULL)
    return false;
  guint n = 0;
  if (!df_lifecycle_remove (farm, argv[1], &n, err))
    return false;
  g_autoptr(DfRecord) r = df_record_new ();
  df_record_str (r, "name", "name", argv[1]);
  df_record_int (r, "version_count", "versions removed", n);
  df_print_result (r, ctx->json, "removed vdisk '%s' (%u version%s)",
                   argv[1], n, n == 1 ? "" : "s");
  return true;
}

/* ---- rename ----------------------------------------------------------- */

static bool
vdisk_rename (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "vdisk rename", "NAME NEW", 2, 2,
    "Rename a vDisk.  Nothing moves on disk: its store directory and "
    "version files keep their names (published files are immutable and name "
    "their backing files), so the rename is one database transaction and "
    "sessions already open keep reading.  Devices and collections follow; "
    "exports and iSCSI targets take the new name (vdisk/NEW, "
    "...:vdisk.NEW) from the next connection.  Refused while it has a "
    "maintenance version.",
    "  diskfarm vdisk rename win10 win10-22h2\n",
  };
  g_autoptr (DfFarm) farm = df_cmd_open_farm (ctx, &spec, NULL, &argc,
                                              &argv, err);
  if (farm == NULL || !df_farm_vdisk_rename (farm, argv[1], argv[2], err))
    return false;
  g_autofree char *store = df_farm_store_dir (farm, argv[2]);
  g_autoptr (DfRecord) r = df_record_new ();
  df_record_str (r, "name", "name", argv[2]);
  df_record_str (r, "old_name", "old name", argv[1]);
  df_record_str (r, "store", "store", store);
  df_print_result (r, ctx->json, "vdisk '%s' renamed to '%s' (store %s "
                   "unchanged)", argv[1], argv[2], store);
  return true;
}

/* ---- verify ------------------------------------------------------------ */

/* Whose store state vdisk verify records (*self borrowed, NULL: none):
 * --server (which must exist), else the configured name when the
 * registry has it. */
static bool
verify_recorder (DfCtx *ctx, DfFarm *farm, const char *opt,
                 const char **self, GError **err)
{
  const char *name = df_ctx_server_name (ctx, opt);
  GError *e = NULL;
  g_autoptr (DfServer) s = name ? df_farm_server_get (farm, name, &e) : NULL;
  if (!s && e && (opt || !g_error_matches (e, DF_ERROR, DF_ERROR_NOT_FOUND)))
    {
      g_propagate_error (err, e);
      return false;
    }
  g_clear_error (&e);
  *self = s ? name : NULL;
  return true;
}

/* "ok", "unreadable" or "mismatch" for v's file; sha receives its hash
 * when it could be read, *e why not. */
static const char *
verify_file (DfFarm *farm, const DfVersion *v, char sha[65], GError **e)
{
  g_autofree char *path = df_farm_version_path (farm, v->vdisk, v->number);
  if (!df_file_sha256 (path, sha, e))
    return "unreadable";
  return strcmp (sha, v->sha256) == 0 ? "ok" : "mismatch";
}

/* The same through lib/farm, which records the result as self's store
 * state (one hash of the file); NULL + *e on a DB error. */
static const char *
verify_recorded (DfFarm *farm, const char *self, const DfVersion *v,
                 char sha[65], GError **e)
{
  DfStoreState st;
  g_autofree char *why = NULL;
  if (!df_farm_store_verify (farm, self, v, &st, &why, e))
    return NULL;
  g_autoptr (DfStoreRecord) r = df_farm_store_state_get (farm, self,
                                                         v->vdisk, v->number,
                                                         e);
  if (e && *e)
    return NULL;
  if (r && r->sha256)
    g_strlcpy (sha, r->sha256, 65);
  if (st == DF_STORE_VERIFIED)
    return "ok";
  if (st == DF_STORE_CORRUPT && r && r->sha256)
    return "mismatch"; /* read, another hash: as verify_file says it */
  g_set_error_literal (e, DF_ERROR, DF_ERROR_IO, why ? why : "unreadable");
  return "unreadable";
}

static bool
vdisk_verify (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "vdisk verify", "NAME", 1, 1,
    "Check every version file of a vDisk against the SHA-256 recorded when "
    "it was published.  Fails when a file is missing or differs.  With a "
    "server name (--server, or [streamsvc] server-name naming a server of "
    "the registry) each result is recorded as that server's store state, "
    "so a copy found corrupt is refused by its streamsvc from the next "
    "open on.",
    "  diskfarm vdisk verify win10\n",
  };
  g_autofree char *server = NULL;
  const GOptionEntry entries[] = {
    { "server", 0, 0, G_OPTION_ARG_STRING, &server,
      "Record the results as this server's store state", "NAME" },
    G_OPTION_ENTRY_NULL
  };
  if (!df_cmd_parse (ctx, &spec, entries, &argc, &argv, err))
    return false;
  g_autoptr (DfFarm) farm = df_ctx_open_farm (ctx, false, err);
  g_autoptr (DfVersions) vs = farm ? df_versions_open (farm, argv[1], false,
                                                       err) : NULL;
  if (!vs)
    return false;
  GPtrArray *rows = df_versions_rows (vs);
  const char *self = NULL;
  if (!verify_recorder (ctx, farm, server, &self, err))
    return false;
  g_autoptr (GPtrArray) records = df_record_list_new ();
  guint bad = 0, checked = 0;
  for (guint i = 0; i < rows->len; i++)
    {
      DfVersion *v = rows->pdata[i];
      if (!v->sha256)
        continue;
      char sha[65] = "";
      g_autoptr (GError) e = NULL;
      const char *result = self ? verify_recorded (farm, self, v, sha, &e)
                                : verify_file (farm, v, sha, &e);
      if (!result)
        {
          g_propagate_error (err, g_steal_pointer (&e));
          return false;
        }
      bad += strcmp (result, "ok") != 0;
      checked++;
      DfRecord *r = df_record_new ();
      df_record_int (r, "version", "version", v->number);
      df_record_str (r, "file", "file", v->file);
      df_record_str (r, "result", "result", result);
      df_record_str (r, "expected", NULL, v->sha256);
      df_record_str (r, "actual", NULL, *sha ? sha : NULL);
      df_record_str (r, "error", NULL, e ? e->message : NULL);
      g_ptr_array_add (records, r);
    }
  df_print_list (records, ctx->json, "no sealed versions");
  if (bad)
    g_set_error (err, DF_ERROR, DF_ERROR_CORRUPT,
                 "vdisk '%s': %u of %u version files failed verification",
                 df_versions_vdisk (vs), bad, checked);
  return bad == 0;
}

/* ---- set --------------------------------------------------------------- */

/* "--auto-merge-depth N|farm": the depth, or -1 for the farm's. */
static bool
parse_depth_arg (const char *s, int *out, GError **err)
{
  guint64 n;
  if (g_str_equal (s, "farm"))
    {
      *out = -1;
      return true;
    }
  if (!g_ascii_string_to_unsigned (s, 10, 0, DF_AUTO_MERGE_DEPTH_MAX, &n,
                                   NULL) || n == 1)
    {
      df_usage_error (err, "--auto-merge-depth must be 0 (off), 2-%d or "
                      "'farm' (use the farm's), not '%s'",
                      DF_AUTO_MERGE_DEPTH_MAX, s);
      return false;
    }
  *out = (int) n;
  return true;
}

static bool
vdisk_set (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "vdisk set", "NAME", 1, 1,
    "Change vDisk settings.  --auto-merge-depth N: after a seal that makes "
    "the chain deeper than N files, merge the updates into one layer "
    "(PVS suggests 5; 0 turns it off for this vDisk; 'farm' follows the "
    "farm-wide default, 'diskfarm farm set auto-merge-depth N').  "
    "--description TEXT replaces the description ('' clears it).  "
    "--efi-loader PATH: the EFI loader a UEFI sanboot of this vDisk starts "
    "(iPXE sanboot --filename) instead of \\EFI\\BOOT\\BOOTX64.EFI; the "
    "vDisk then boots under UEFI whatever `vdisk inspect` found ('' "
    "clears it).",
    "  diskfarm vdisk set win10 --auto-merge-depth 5\n"
    "  diskfarm vdisk set gold --efi-loader '\\EFI\\debian\\grubx64.efi'\n"
    "  diskfarm vdisk set win10 --description 'Windows 10 22H2, Office'\n",
  };
  g_autofree char *depth_s = NULL, *description = NULL, *loader = NULL;
  const GOptionEntry entries[] = {
    { "efi-loader", 0, 0, G_OPTION_ARG_STRING, &loader,
      "EFI loader a UEFI sanboot starts ('' clears it)", "PATH" },
    { "auto-merge-depth", 0, 0, G_OPTION_ARG_STRING, &depth_s,
      "Merge automatically past N chain files (0: off; farm: the farm's)",
      "N" },
    { "description", 'd', 0, G_OPTION_ARG_STRING, &description,
      "Free text describing the vDisk ('' clears it)", "TEXT" },
    G_OPTION_ENTRY_NULL
  };
  int depth = -2;
  if (!df_cmd_parse (ctx, &spec, entries, &argc, &argv, err)
      || (depth_s && !parse_depth_arg (depth_s, &depth, err)))
    return false;
  if (!depth_s && !description && !loader)
    {
      df_usage_error (err, "vdisk set: nothing to change (give "
                      "--auto-merge-depth, --description or --efi-loader)");
      return false;
    }
  g_autoptr (DfFarm) farm = df_ctx_open_farm (ctx, false, err);
  g_autoptr (DfVdisk) v = farm ? df_farm_vdisk_get (farm, argv[1], err)
                               : NULL;
  if (!v || !df_farm_begin (farm, err))
    return false;
  bool ok = (!depth_s
             || df_farm_auto_merge_depth_set (farm, v->name, depth, err))
            && (!description
                || df_farm_vdisk_set_description (
                  farm, v->name, *description ? description : NULL, err))
            && (!loader
                || df_farm_vdisk_set_efi_loader (
                  farm, v->name, *loader ? loader : NULL, err));
  if (!ok)
    df_farm_rollback (farm);
  if (!ok || !df_farm_commit (farm, err))
    return false;
  bool own;
  int now = df_farm_auto_merge_depth (farm, v->name, &own);
  g_autoptr (DfVdisk) after = df_farm_vdisk_get (farm, v->name, err);
  if (!after)
    return false;
  g_autoptr (DfRecord) r = df_record_new ();
  df_record_str (r, "name", "name", v->name);
  df_record_int (r, "auto_merge_depth", "auto-merge depth", now);
  df_record_str (r, "auto_merge_depth_from", NULL, own ? "vdisk" : "farm");
  df_record_str (r, "description", "description", after->description);
  df_record_str (r, "efi_loader", "efi loader", after->efi_loader);
  df_record_str (r, "firmware", "boots under",
                 df_firmware_name (after->firmware));
  df_print_result (r, ctx->json, "vdisk %s: auto-merge depth %d%s%s%s%s%s%s",
                   v->name, now, now ? "" : " (off)",
                   own ? "" : " (farm default)",
                   description ? ", description " : "",
                   description ? (*description ? "set" : "cleared") : "",
                   loader ? ", EFI loader " : "",
                   loader ? (*loader ? loader : "cleared") : "");
  return true;
}

/* ---- inspect ------------------------------------------------------------ */

static bool
vdisk_inspect (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "vdisk inspect", "NAME[@N]", 1, 1,
    "Inspect a version read-only through libguestfs (newest production "
    "when no @N): operating system, distribution, product name, hostname "
    "and filesystems, and for each initramfs (in / or /boot of a "
    "filesystem) whether it can take over a root on iSCSI from the iBFT "
    "(open-iscsi's hook with ISCSI_AUTO=true, or iscsistart) or on NBD "
    "(nbd-client); a warning on stderr says what is missing.  Starts the "
    "libguestfs appliance (about 16 s under TCG).",
    "  diskfarm vdisk inspect win10@3\n",
  };
  g_autoptr (DfFarm) farm = df_cmd_open_farm (ctx, &spec, NULL, &argc,
                                              &argv, err);
  g_autoptr (DfVersion) v = farm ? df_inspect_resolve_ref (farm, argv[1], err) : NULL;
  return v && df_inspect_run (ctx, farm, v, err);
}

const DfCmd df_vdisk_cmds[] = {
  { "import", "import a disk image as a new vDisk", vdisk_import },
  { "list", "list the vDisks", vdisk_list },
  { "show", "show versions, backing chain and sizes", vdisk_show },
  { "export", "write a version out as raw or qcow2", vdisk_export },
  { "remove", "remove a vDisk no device uses", vdisk_remove },
  { "rename", "rename a vDisk (nothing moves on disk)", vdisk_rename },
  { "verify", "check every version file against its SHA-256",
    vdisk_verify },
  { "inspect", "OS, hostname, filesystems of a version (libguestfs)",
    vdisk_inspect },
  { "set", "change settings (--auto-merge-depth, --description)",
    vdisk_set },
  { NULL, NULL, NULL }
};
