/* diskfarm: vdisks (the disk images a device boots) in the farm DB: add
 * (with base version 0), get, list, describe, rename, remove; and the
 * store directory each keeps for life.  Rules of every mutator: farm.c. */
#include "farm.h"
#include "farm-private.h"
#include "common.h"

#include <string.h>

/* ---- lookups ------------------------------------------------------------ */

bool
df_farm_vdisk_id (DfFarm *farm, const char *name, gint64 *id, GError **err)
{
  return df_farm_lookup_id (farm, "vdisk",
                            "SELECT id FROM vdisks WHERE name = ?", name, id,
                            err);
}

/* The store directory name of vdisk: its row's, or for a vdisk not yet
 * added the one df_farm_vdisk_add will give it: the name itself unless a
 * renamed vdisk still holds that directory, then "<name>~2", "~3"... ('~'
 * is not allowed in names, so no later vdisk name can take it).  New
 * string; on a DB error the name itself (logged). */
char *
df_farm_store_of (DfFarm *farm, const char *vdisk)
{
  g_autoptr (GError) err = NULL;
  g_autoptr (DfDbStmt) st = df_farm_stmt (farm,
    "SELECT coalesce (store, name) FROM vdisks WHERE name = ?", &err);
  int r = -1;
  if (st)
    {
      df_db_bind_text (st, 1, vdisk);
      r = df_db_step (st, &err);
    }
  if (r == 1)
    return df_db_col_dup (st, 0);
  for (guint n = 1; r == 0 && n < 1000; n++)
    {
      g_autofree char *cand = n == 1 ? g_strdup (vdisk)
                                     : g_strdup_printf ("%s~%u", vdisk, n);
      g_autoptr (DfDbStmt) taken = df_farm_stmt (farm,
        "SELECT 1 FROM vdisks WHERE store = ?", &err);
      if (!taken)
        break;
      df_db_bind_text (taken, 1, cand);
      int t = df_db_step (taken, &err);
      if (t == 0)
        return g_steal_pointer (&cand);
      if (t < 0)
        break;
    }
  if (err)
    g_warning ("farm.db: store directory of vdisk %s: %s", vdisk,
               err->message);
  return g_strdup (vdisk);
}

/* ---- vdisks ----------------------------------------------------------- */

/* The fields of a vdisk SELECT (id, name, virtual_size, description,
 * created, firmware, efi_loader); firmware is read by vdisk_finish. */
static const DfField vdisk_fields[] = {
  DF_FIELD (INT64, DfVdisk, id),
  DF_FIELD (TEXT, DfVdisk, name),
  DF_FIELD (INT64, DfVdisk, virtual_size),
  DF_FIELD (TEXT, DfVdisk, description),
  DF_FIELD (TEXT, DfVdisk, created),
  { DF_FIELD_SKIP, 0 },
  DF_FIELD (TEXT, DfVdisk, efi_loader),
};

static void
vdisk_finish (gpointer obj, DfDbStmt *st)
{
  DfVdisk *v = obj;
  const char *fw = df_db_col_text (st, 5);
  v->firmware = DF_FIRMWARE_UNKNOWN;
  for (DfFirmware f = DF_FIRMWARE_NONE; fw && f <= DF_FIRMWARE_BOTH; f++)
    if (g_str_equal (fw, df_firmware_name (f)))
      v->firmware = f;
}

static const DfRowType vdisk_row =
  DF_ROW_TYPE (DfVdisk, vdisk_fields, vdisk_finish, df_vdisk_free);

void
df_vdisk_free (DfVdisk *v)
{
  df_farm_row_free (&vdisk_row, v);
}

static bool
vdisk_add_locked (DfFarm *farm, const char *name, uint64_t virtual_size,
                  const char *base_file, const char *sha256,
                  uint64_t file_size, GError **err)
{
  gint64 id;
  if (df_farm_vdisk_id (farm, name, &id, NULL))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_EXISTS, "vdisk '%s' already exists",
                   name);
      return false;
    }
  g_autofree char *store = df_farm_store_of (farm, name);
  g_autoptr (DfDbStmt) st = df_farm_stmt (farm,
    "INSERT INTO vdisks (name, virtual_size, created, store) "
    "VALUES (?, ?, ?, ?) RETURNING id", err);
  if (!st)
    return false;
  g_autofree char *now = df_farm_now ();
  df_db_bind_text (st, 1, name);
  df_db_bind_int64 (st, 2, (gint64) virtual_size);
  df_db_bind_text (st, 3, now);
  df_db_bind_text (st, 4, store);
  if (df_db_step (st, err) != 1)
    return false;
  gint64 vid = df_db_col_int64 (st, 0);
  if (!df_farm_version_insert (farm, vid, 0, -1, base_file, sha256,
                               virtual_size, file_size, DF_VSTATE_PRODUCTION,
                               err))
    return false;
  GString *gs = g_string_new ("{");
  df_farm_json_kv_int (gs, "virtual_size", (gint64) virtual_size);
  df_farm_json_kv (gs, "file", base_file);
  df_farm_json_kv (gs, "sha256", sha256);
  g_autofree char *detail = df_farm_json_close (gs);
  return df_farm_audit_row (farm, "vdisk.add", name, detail, err);
}

bool
df_farm_vdisk_add (DfFarm *farm, const char *name, uint64_t virtual_size,
                   const char *base_file, const char *sha256,
                   uint64_t file_size, GError **err)
{
  g_autofree char *sha = NULL;
  if (!df_validate_name ("vdisk", name, err)
      || !df_farm_check_size ("virtual size", virtual_size, false, err)
      || !df_farm_check_size ("file size", file_size, true, err)
      || !df_farm_check_file_name (base_file, err)
      || !df_farm_check_sha256 (sha256, false, &sha, err))
    return false;
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = vdisk_add_locked (farm, name, virtual_size, base_file, sha,
                             file_size, err);
  return t.ok;
}

DfVdisk *
df_farm_vdisk_get (DfFarm *farm, const char *name, GError **err)
{
  if (!df_validate_name ("vdisk", name, err))
    return NULL;
  return df_farm_row_named (farm,
                    "SELECT id, name, virtual_size, description, created, "
                    "firmware, efi_loader FROM vdisks WHERE name = ?", "vdisk", name,
                    &vdisk_row, err);
}

GPtrArray *
df_farm_vdisk_list (DfFarm *farm, GError **err)
{
  return df_farm_select (farm,
                         "SELECT id, name, virtual_size, description, "
                         "created, firmware, efi_loader FROM vdisks "
                         "ORDER BY name", NULL, 0, &vdisk_row, err);
}

static bool
vdisk_remove_locked (DfFarm *farm, const char *name, GError **err)
{
  gint64 id;
  g_autofree char *devices = NULL, *collections = NULL;
  if (!df_farm_vdisk_id (farm, name, &id, err)
      || !df_farm_names_using (farm,
                               "SELECT name FROM devices WHERE vdisk_id = ? "
                       "ORDER BY name", id, &devices, err)
      || !df_farm_names_using (farm,
                       "SELECT name FROM collections WHERE vdisk_id = ? "
                       "ORDER BY name", id, &collections, err))
    return false;
  if (devices || collections)
    {
      g_autoptr (GString) users = g_string_new (NULL);
      if (devices)
        g_string_append_printf (users, "devices %s", devices);
      if (collections)
        g_string_append_printf (users, "%scollections %s (default vdisk)",
                                users->len ? "; " : "", collections);
      g_set_error (err, DF_ERROR, DF_ERROR_BUSY, "vdisk '%s' is in use by %s",
                   name, users->str);
      return false;
    }
  return df_farm_delete_audited (farm, "DELETE FROM vdisks WHERE id = ?", id,
                                 "vdisk.remove", name, err);
}

bool
df_farm_vdisk_remove (DfFarm *farm, const char *name, GError **err)
{
  return df_farm_mutate_named (farm, "vdisk", name, vdisk_remove_locked,
                               err);
}

/* UPDATE vdisks SET <column> = value, with its audit row. */
static bool
vdisk_set_column_locked (DfFarm *farm, const char *name, const char *sql,
                         const char *action, const char *key,
                         const char *value, GError **err)
{
  gint64 id;
  if (!df_farm_vdisk_id (farm, name, &id, err))
    return false;
  const DfParam p[] = { DF_TEXT (value), DF_INT (id) };
  GString *gs = g_string_new ("{");
  df_farm_json_kv (gs, key, value);
  g_autofree char *detail = df_farm_json_close (gs);
  return df_farm_exec (farm, sql, p, G_N_ELEMENTS (p), err)
         && df_farm_audit_row (farm, action, name, detail, err);
}

bool
df_farm_vdisk_set_description (DfFarm *farm, const char *name,
                               const char *text, GError **err)
{
  if (!df_validate_name ("vdisk", name, err))
    return false;
  if (text != NULL && strlen (text) > 1024)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "description of vdisk '%s' is longer than 1024 bytes",
                   name);
      return false;
    }
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = vdisk_set_column_locked (farm, name,
                                    "UPDATE vdisks SET description = ? "
                                    "WHERE id = ?", "vdisk.set",
                                    "description", text, err);
  return t.ok;
}

/* ---- firmware ---------------------------------------------------------- */

DfFirmware
df_firmware_from_facts (const DfBootFacts *f)
{
  bool bios = f->gpt ? f->bios_boot_partition : f->mbr_boot_code;
  bool uefi = f->esp_loader;
  return bios && uefi ? DF_FIRMWARE_BOTH
         : bios ? DF_FIRMWARE_BIOS
         : uefi ? DF_FIRMWARE_UEFI : DF_FIRMWARE_NONE;
}

const char *
df_firmware_name (DfFirmware fw)
{
  switch (fw)
    {
    case DF_FIRMWARE_NONE: return "none";
    case DF_FIRMWARE_BIOS: return "bios";
    case DF_FIRMWARE_UEFI: return "uefi";
    case DF_FIRMWARE_BOTH: return "bios+uefi";
    case DF_FIRMWARE_UNKNOWN: break;
    }
  return NULL;
}

bool
df_firmware_boots_bios (DfFirmware fw)
{
  return fw == DF_FIRMWARE_UNKNOWN || fw == DF_FIRMWARE_BIOS
         || fw == DF_FIRMWARE_BOTH;
}

bool
df_firmware_boots_uefi (DfFirmware fw)
{
  return fw == DF_FIRMWARE_UNKNOWN || fw == DF_FIRMWARE_UEFI
         || fw == DF_FIRMWARE_BOTH;
}

bool
df_efi_loader_path_ok (const char *path, GError **err)
{
  const char *why = NULL;
  size_t n = path ? strlen (path) : 0;
  if (n == 0 || path[0] != '\\')
    why = "does not start with '\\'";
  else if (n > 255)
    why = "is longer than 255 bytes";
  else if (n < 5 || g_ascii_strcasecmp (path + n - 4, ".efi") != 0)
    why = "does not end in .efi";
  else if (strstr (path, "\\\\"))
    why = "has an empty component";
  for (const char *c = path; !why && *c; c++)
    if (!g_ascii_isalnum (*c) && !strchr ("._-\\", *c))
      why = "has a character outside [A-Za-z0-9._-] and '\\'";
  if (why)
    g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                 "EFI loader path '%s' %s (like " DF_DEFAULT_EFI_LOADER ")",
                 path ? path : "", why);
  return why == NULL;
}

bool
df_farm_vdisk_set_firmware (DfFarm *farm, const char *name, DfFirmware fw,
                            GError **err)
{
  if (!df_validate_name ("vdisk", name, err))
    return false;
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = vdisk_set_column_locked (
        farm, name, "UPDATE vdisks SET firmware = ? WHERE id = ?",
        "vdisk.firmware", "firmware", df_firmware_name (fw), err);
  return t.ok;
}

bool
df_farm_vdisk_set_efi_loader (DfFarm *farm, const char *name,
                              const char *path, GError **err)
{
  if (!df_validate_name ("vdisk", name, err)
      || (path && !df_efi_loader_path_ok (path, err)))
    return false;
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = vdisk_set_column_locked (
        farm, name, "UPDATE vdisks SET efi_loader = ? WHERE id = ?",
        "vdisk.set", "efi_loader", path, err);
  return t.ok;
}

static bool
vdisk_rename_locked (DfFarm *farm, const char *name, const char *new_name,
                     GError **err)
{
  gint64 id, other;
  if (!df_farm_vdisk_id (farm, name, &id, err))
    return false;
  if (df_farm_vdisk_id (farm, new_name, &other, NULL))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_EXISTS,
                   "vdisk '%s' already exists", new_name);
      return false;
    }
  GError *e = NULL;
  int maint = df_farm_maintenance_number (farm, id, err);
  if (maint == -2)
    return false;
  if (maint >= 0)
    {
      /* Its writes live in <store>/<name>.<N>.maint/, named by the vdisk. */
      g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                   "vdisk '%s' has maintenance version %d: seal or delete it "
                   "before renaming", name, maint);
      return false;
    }
  const DfParam p[] = { DF_TEXT (new_name), DF_INT (id) };
  g_autofree char *old_key = df_farm_merge_depth_key (name);
  g_autofree char *new_key = df_farm_merge_depth_key (new_name);
  g_autofree char *depth = NULL;
  if (!df_farm_exec (farm, "UPDATE vdisks SET name = ?, "
                     "store = coalesce (store, name) WHERE id = ?", p,
                     G_N_ELEMENTS (p), err))
    return false;
  depth = df_farm_setting_get (farm, old_key, &e);
  if (e)
    {
      g_propagate_error (err, e);
      return false;
    }
  GString *gs = g_string_new ("{");
  df_farm_json_kv (gs, "name", new_name);
  g_autofree char *detail = df_farm_json_close (gs);
  return (!depth || (df_farm_setting_set (farm, old_key, NULL, err)
                     && df_farm_setting_set (farm, new_key, depth, err)))
         && df_farm_audit_row (farm, "vdisk.rename", name, detail, err);
}

bool
df_farm_vdisk_rename (DfFarm *farm, const char *name, const char *new_name,
                      GError **err)
{
  if (!df_validate_name ("vdisk", name, err)
      || !df_validate_name ("vdisk", new_name, err))
    return false;
  if (g_str_equal (name, new_name))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "vdisk '%s' already has that name", name);
      return false;
    }
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = vdisk_rename_locked (farm, name, new_name, err);
  return t.ok;
}

