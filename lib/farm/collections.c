/* diskfarm: collections (groups of devices with a default vdisk) in the
 * farm DB.  A rename or removal moves auto-add along.  Rules of every
 * mutator: farm.c. */
#include "farm.h"
#include "farm-private.h"
#include "common.h"

#include <string.h>

/* ---- lookups ------------------------------------------------------------ */

bool
df_farm_collection_id (DfFarm *farm, const char *name, gint64 *id,
                       GError **err)
{
  return df_farm_lookup_id (farm, "collection",
                    "SELECT id FROM collections WHERE name = ?", name, id,
                    err);
}

/* ---- collections ------------------------------------------------------ */

#define COLLECTION_COLUMNS \
  "SELECT c.id, c.name, c.description, v.name, c.created FROM collections c " \
  "LEFT JOIN vdisks v ON v.id = c.vdisk_id "

/* The fields of COLLECTION_COLUMNS, in its order. */
static const DfField collection_fields[] = {
  DF_FIELD (INT64, DfCollection, id),
  DF_FIELD (TEXT, DfCollection, name),
  DF_FIELD (TEXT, DfCollection, description),
  DF_FIELD (TEXT, DfCollection, vdisk),
  DF_FIELD (TEXT, DfCollection, created),
};

static const DfRowType collection_row =
  DF_ROW_TYPE (DfCollection, collection_fields, NULL, df_collection_free);

void
df_collection_free (DfCollection *c)
{
  df_farm_row_free (&collection_row, c);
}

static bool
collection_add_locked (DfFarm *farm, const char *name,
                       const char *description, const char *vdisk,
                       GError **err)
{
  gint64 cid, vid = 0;
  if (df_farm_collection_id (farm, name, &cid, NULL))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_EXISTS,
                   "collection '%s' already exists", name);
      return false;
    }
  if (vdisk && !df_farm_vdisk_id (farm, vdisk, &vid, err))
    return false;
  g_autofree char *now = df_farm_now ();
  const DfParam p[] = { DF_TEXT (name), DF_TEXT (description),
                        vdisk ? DF_INT (vid) : DF_NULL, DF_TEXT (now) };
  if (!df_farm_exec (farm,
    "INSERT INTO collections (name, description, vdisk_id, created) "
    "VALUES (?, ?, ?, ?)", p, G_N_ELEMENTS (p), err))
    return false;
  GString *gs = g_string_new ("{");
  df_farm_json_kv (gs, "description", description);
  df_farm_json_kv (gs, "vdisk", vdisk);
  g_autofree char *detail = df_farm_json_close (gs);
  return df_farm_audit_row (farm, "collection.add", name, detail, err);
}

bool
df_farm_collection_add (DfFarm *farm, const char *name,
                        const char *description, const char *vdisk,
                        GError **err)
{
  if (!df_validate_name ("collection", name, err)
      || (vdisk && !df_validate_name ("vdisk", vdisk, err)))
    return false;
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = collection_add_locked (farm, name, description, vdisk, err);
  return t.ok;
}

DfCollection *
df_farm_collection_get (DfFarm *farm, const char *name, GError **err)
{
  if (!df_validate_name ("collection", name, err))
    return NULL;
  return df_farm_row_named (farm, COLLECTION_COLUMNS "WHERE c.name = ?",
                            "collection", name, &collection_row, err);
}

GPtrArray *
df_farm_collection_list (DfFarm *farm, GError **err)
{
  return df_farm_select (farm, COLLECTION_COLUMNS "ORDER BY c.name", NULL, 0,
                         &collection_row, err);
}

/* Point auto-add at new_name when it names old_name (a rename). */
static bool
auto_add_follow_rename (DfFarm *farm, const char *old_name,
                        const char *new_name, GError **err)
{
  g_autoptr (DfAutoAdd) a = df_farm_auto_add_get (farm, err);
  if (!a)
    return false;
  if (g_strcmp0 (a->collection, old_name) != 0)
    return true;
  return df_farm_setting_set (farm, DF_SETTING_AUTO_COLLECTION, new_name,
                              err);
}

static bool
collection_set_locked (DfFarm *farm, const char *name, const char *new_name,
                       const char *description, const char *vdisk,
                       GError **err)
{
  gint64 cid, vid = 0, other;
  if (!df_farm_collection_id (farm, name, &cid, err)
      || (vdisk && *vdisk && !df_farm_vdisk_id (farm, vdisk, &vid, err)))
    return false;
  if (new_name && !g_str_equal (new_name, name)
      && df_farm_collection_id (farm, new_name, &other, NULL))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_EXISTS,
                   "collection '%s' already exists", new_name);
      return false;
    }
  /* Each ?N IS NULL keeps the column; '' for text clears it. */
  const DfParam p[] = { DF_TEXT (new_name), DF_TEXT (description),
                        vdisk ? DF_INT (vid) : DF_NULL, DF_INT (cid) };
  GString *gs = g_string_new ("{");
  df_farm_json_kv (gs, "name", new_name);
  df_farm_json_kv (gs, "description", description);
  df_farm_json_kv (gs, "vdisk", vdisk);
  g_autofree char *detail = df_farm_json_close (gs);
  return df_farm_exec (farm,
    "UPDATE collections SET "
    "name = coalesce (?1, name), "
    "description = CASE WHEN CAST (?2 AS TEXT) IS NULL THEN description "
    "  ELSE nullif (?2, '') END, "
    "vdisk_id = CASE WHEN CAST (?3 AS INTEGER) IS NULL THEN vdisk_id "
    "  WHEN ?3 = 0 THEN NULL ELSE ?3 END "
    "WHERE id = ?4", p, G_N_ELEMENTS (p), err)
         && (!new_name || auto_add_follow_rename (farm, name, new_name, err))
         && df_farm_audit_row (farm, "collection.set", name, detail, err);
}

bool
df_farm_collection_set (DfFarm *farm, const char *name, const char *new_name,
                        const char *description, const char *vdisk,
                        GError **err)
{
  if (!df_validate_name ("collection", name, err)
      || (new_name && !df_validate_name ("collection", new_name, err))
      || (vdisk && *vdisk && !df_validate_name ("vdisk", vdisk, err)))
    return false;
  if (description && strlen (description) > 1024)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "description of collection '%s' is longer than 1024 "
                   "bytes", name);
      return false;
    }
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = collection_set_locked (farm, name, new_name, description, vdisk,
                                  err);
  return t.ok;
}

static bool
collection_remove_locked (DfFarm *farm, const char *name, bool force,
                          GError **err)
{
  gint64 cid;
  g_autofree char *devices = NULL;
  g_autoptr (DfAutoAdd) a = NULL;
  if (!df_farm_collection_id (farm, name, &cid, err)
      || !df_farm_names_using (farm,
                               "SELECT name FROM devices "
                               "WHERE collection_id = ? ORDER BY name", cid,
                               &devices, err)
      || !(a = df_farm_auto_add_get (farm, err)))
    return false;
  if (a->enabled && g_strcmp0 (a->collection, name) == 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                   "collection '%s' receives auto-added devices: turn "
                   "auto-add off or point it at another collection first",
                   name);
      return false;
    }
  if (devices && !force)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                   "collection '%s' still has devices (%s): move or remove "
                   "them first, or --force to keep them without a "
                   "collection", name, devices);
      return false;
    }
  const DfParam p[] = { DF_INT (cid) };  /* both statements below */
  if (!df_farm_exec (farm, "UPDATE devices SET collection_id = NULL "
                     "WHERE collection_id = ?", p, G_N_ELEMENTS (p), err)
      || (a->collection && g_str_equal (a->collection, name)
          && !df_farm_setting_set (farm, DF_SETTING_AUTO_COLLECTION, NULL,
                                   err)))
    return false;
  /* {"devices": [...]}: those left in no collection */
  GString *gs = g_string_new ("{");
  df_farm_json_str (gs, "devices");
  g_string_append (gs, ":[");
  g_auto (GStrv) names = g_strsplit (devices ? devices : "", ", ", -1);
  for (char **n = names; devices && *n; n++)
    {
      if (n != names)
        g_string_append_c (gs, ',');
      df_farm_json_str (gs, *n);
    }
  g_string_append_c (gs, ']');
  g_autofree char *detail = df_farm_json_close (gs);
  return df_farm_exec (farm, "DELETE FROM collections WHERE id = ?", p,
                       G_N_ELEMENTS (p), err)
         && df_farm_audit_row (farm, "collection.remove", name, detail, err);
}

bool
df_farm_collection_remove (DfFarm *farm, const char *name, bool force,
                           GError **err)
{
  if (!df_validate_name ("collection", name, err))
    return false;
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = collection_remove_locked (farm, name, force, err);
  return t.ok;
}

