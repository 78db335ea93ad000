/* diskfarm: devices (the machines that boot a vdisk) in the farm DB: add,
 * get by name or MAC, list, update, remove, new boot generation.  Rules of
 * every mutator: farm.c. */
#include "farm.h"
#include "farm-private.h"
#include "common.h"
#include "vdisk.h"

#include <string.h>

/* ---- checks ------------------------------------------------------------ */

static const char *const device_types[] = { "production", "test",
                                            "maintenance" };

bool
df_farm_check_device_type (const char *type, GError **err)
{
  for (gsize i = 0; i < G_N_ELEMENTS (device_types); i++)
    if (type && strcmp (type, device_types[i]) == 0)
      return true;
  g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
               "device type '%s' is not production, test or maintenance",
               type ? type : "");
  return false;
}

/* The vdisk engine's own grammar (df_cache_mode_parse), so the DB never
 * holds a mode streamsvc would refuse at open.  *out: canonical form (new
 * string). */
static bool
check_cache_mode (const char *mode, char **out, GError **err)
{
  DfCacheMode m;
  if (!df_cache_mode_parse (mode, &m, err))
    return false;
  *out = df_cache_mode_to_string (&m);
  return true;
}

/* 0 (no quota) or at least one cache block: a smaller quota could hold no
 * block at all. */
static bool
check_quota (uint64_t quota, GError **err)
{
  if (!df_farm_check_size ("quota", quota, true, err))
    return false;
  if (quota != 0 && quota < DF_CACHE_BLOCK_SIZE)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "quota %" G_GUINT64_FORMAT " bytes is below one cache "
                   "block (%u bytes); use at least 4K, or none", quota,
                   DF_CACHE_BLOCK_SIZE);
      return false;
    }
  return true;
}

/* ---- devices ---------------------------------------------------------- */

#define DEVICE_COLUMNS \
  "SELECT d.id, d.name, d.mac, c.name, d.type, v.name, d.cache_mode, " \
  "d.quota, d.generation, d.created, d.nbd_psk IS NOT NULL " \
  "FROM devices d " \
  "JOIN vdisks v ON v.id = d.vdisk_id " \
  "LEFT JOIN collections c ON c.id = d.collection_id "

/* The fields of DEVICE_COLUMNS, in its order. */
static const DfField device_fields[] = {
  DF_FIELD (INT64, DfDevice, id),
  DF_FIELD (TEXT, DfDevice, name),
  DF_FIELD (TEXT, DfDevice, mac),
  DF_FIELD (TEXT, DfDevice, collection),
  DF_FIELD (TEXT, DfDevice, type),
  DF_FIELD (TEXT, DfDevice, vdisk),
  DF_FIELD (TEXT, DfDevice, cache_mode),
  DF_FIELD (INT64, DfDevice, quota),
  DF_FIELD (INT64, DfDevice, generation),
  DF_FIELD (TEXT, DfDevice, created),
  DF_FIELD (BOOL, DfDevice, has_nbd_psk),
};

static const DfRowType device_row =
  DF_ROW_TYPE (DfDevice, device_fields, NULL, df_device_free);

void
df_device_free (DfDevice *d)
{
  df_farm_row_free (&device_row, d);
}

/* A device as checked at the edge, before any DB access. */
typedef struct {
  const char *name;
  char mac[18];
  const char *collection;   /* or NULL */
  const char *type;
  const char *vdisk;        /* NULL: the collection's default */
  char *vdisk_default;      /* owned copy of that default, or NULL */
  char *cache_mode;         /* canonical, owned */
  uint64_t quota;
} DeviceIn;

static void
device_in_clear (DeviceIn *in)
{
  g_free (in->cache_mode);
  g_free (in->vdisk_default);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (DeviceIn, device_in_clear)

static bool
check_device_name (const char *name, GError **err)
{
  char mac[18];
  if (!df_validate_name ("device", name, err))
    return false;
  if (df_parse_mac (name, mac, NULL))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "device name '%s' reads as a MAC address; choose another",
                   name);
      return false;
    }
  return true;
}

static bool
device_check (const DfDevice *d, DeviceIn *in, GError **err)
{
  in->name = d->name;
  in->collection = d->collection;
  in->type = d->type ? d->type : "production";
  in->vdisk = d->vdisk;
  in->quota = d->quota;
  if (!check_device_name (d->name, err))
    return false;
  if (!d->mac)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "device '%s' needs a MAC address", d->name);
      return false;
    }
  return df_parse_device_mac (d->mac, in->mac, err)
         && (!d->collection
             || df_validate_name ("collection", d->collection, err))
         && (!d->vdisk || df_validate_name ("vdisk", d->vdisk, err))
         && df_farm_check_device_type (in->type, err)
         && check_cache_mode (d->cache_mode ? d->cache_mode
                                           : df_cache_mode_default (),
                              &in->cache_mode, err)
         && check_quota (d->quota, err);
}

/* Offline, a device's generation is the larger of the snapshot's and
 * the local journal's (offline.c).  Returns d. */
static DfDevice *
device_offline_view (DfFarm *farm, DfDevice *d)
{
  GHashTable *journal = df_farm_offline_gens (farm);
  if (d != NULL && journal != NULL)
    d->generation = df_farm_offline_generation (journal, d->name,
                                                d->generation);
  return d;
}

/* Device row found by one column; NULL with *err unset when absent.
 * Device names are iSCSI target names, which are case-insensitive: a name
 * matches whatever its case (ASCII, as names are), so "PC01" finds pc01. */
static DfDevice *
device_find_by_name (DfFarm *farm, const char *name, GError **err)
{
  return device_offline_view (farm, df_farm_row_find (farm,
                           DEVICE_COLUMNS "WHERE d.name = ? COLLATE NOCASE",
                           name, &device_row, err));
}

static DfDevice *
device_find_by_mac (DfFarm *farm, const char *mac, GError **err)
{
  return device_offline_view (farm, df_farm_row_find (farm,
                           DEVICE_COLUMNS "WHERE d.mac = ?", mac,
                           &device_row, err));
}

/* PVS's rule: a vdisk has at most one maintenance device, the one that
 * boots its maintenance version read-write.  in (of type maintenance) may
 * be it when no device other than self_id (0: a new device) is.  Checked
 * when a device becomes one or moves to another vdisk (so a farm that had
 * two before the rule still edits them otherwise). */
static bool
check_maintenance_device (DfFarm *farm, const DeviceIn *in, gint64 self_id,
                          gint64 vid, GError **err)
{
  if (strcmp (in->type, "maintenance") != 0)
    return true;
  g_autoptr (DfDbStmt) st = df_farm_stmt (farm,
    "SELECT name FROM devices WHERE vdisk_id = ? AND type = 'maintenance' "
    "AND id <> ? ORDER BY name LIMIT 1", err);
  if (!st)
    return false;
  df_db_bind_int64 (st, 1, vid);
  df_db_bind_int64 (st, 2, self_id);
  int rc = df_db_step (st, err);
  if (rc < 0)
    return false;
  if (rc == 0)
    return true;
  g_set_error (err, DF_ERROR, DF_ERROR_EXISTS,
               "vdisk '%s' already has maintenance device '%s' (one "
               "maintenance device per vdisk): change its type first",
               in->vdisk, df_db_col_text (st, 0));
  return false;
}

/* Resolve names to ids and check uniqueness of the MAC against every device
 * other than self_id (0 for a new device). */
static bool
device_resolve (DfFarm *farm, DeviceIn *in, gint64 self_id, gint64 *vid,
                gint64 *cid, GError **err)
{
  g_autoptr (DfDevice) other = device_find_by_mac (farm, in->mac, NULL);
  if (other && other->id != self_id)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_EXISTS,
                   "MAC %s is already used by device '%s'", in->mac,
                   other->name);
      return false;
    }
  *cid = 0;
  g_autoptr (DfCollection) coll = NULL;
  if (in->collection)
    {
      if (!(coll = df_farm_collection_get (farm, in->collection, err)))
        return false;
      *cid = coll->id;
    }
  if (!in->vdisk && coll && coll->vdisk)
    in->vdisk = in->vdisk_default = g_strdup (coll->vdisk);
  if (!in->vdisk)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "device '%s' needs a vdisk (none given and no collection "
                   "default)", in->name);
      return false;
    }
  return df_farm_vdisk_id (farm, in->vdisk, vid, err);
}

static char *
device_detail (const DeviceIn *in)
{
  GString *gs = g_string_new ("{");
  df_farm_json_kv (gs, "mac", in->mac);
  df_farm_json_kv (gs, "vdisk", in->vdisk);
  df_farm_json_kv (gs, "type", in->type);
  df_farm_json_kv (gs, "cache_mode", in->cache_mode);
  df_farm_json_kv (gs, "collection", in->collection);
  df_farm_json_kv_int (gs, "quota", (gint64) in->quota);
  return df_farm_json_close (gs);
}

static bool
device_add_locked (DfFarm *farm, DeviceIn *in, GError **err)
{
  gint64 vid, cid;
  g_autoptr (DfDevice) dup = device_find_by_name (farm, in->name, NULL);
  if (dup && strcmp (dup->name, in->name) != 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_EXISTS,
                   "device '%s' already exists as '%s' (MAC %s; device names "
                   "are case-insensitive)", in->name, dup->name, dup->mac);
      return false;
    }
  if (dup)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_EXISTS,
                   "device '%s' already exists (MAC %s)", in->name, dup->mac);
      return false;
    }
  if (!device_resolve (farm, in, 0, &vid, &cid, err)
      || !check_maintenance_device (farm, in, 0, vid, err))
    return false;
  g_autofree char *now = df_farm_now ();
  const DfParam p[] = {
    DF_TEXT (in->name), DF_TEXT (in->mac), cid ? DF_INT (cid) : DF_NULL,
    DF_TEXT (in->type), DF_INT (vid), DF_TEXT (in->cache_mode),
    DF_INT (in->quota), DF_TEXT (now)
  };
  if (!df_farm_exec (farm,
    "INSERT INTO devices (name, mac, collection_id, type, vdisk_id, "
    "cache_mode, quota, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", p,
    G_N_ELEMENTS (p), err))
    return false;
  g_autofree char *detail = device_detail (in);
  return df_farm_audit_row (farm, "device.add", in->name, detail, err);
}

/* The body of device add or update (inside the write scope). */
typedef bool (*DeviceFn) (DfFarm *farm, DeviceIn *in, GError **err);

/* Add or update: d checked at the edge, then fn in a write scope. */
static bool
device_write (DfFarm *farm, const DfDevice *d, DeviceFn fn, GError **err)
{
  g_auto (DeviceIn) in = { 0 };
  if (!device_check (d, &in, err))
    return false;
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = fn (farm, &in, err);
  return t.ok;
}

bool
df_farm_device_add (DfFarm *farm, const DfDevice *d, GError **err)
{
  return device_write (farm, d, device_add_locked, err);
}

DfDevice *
df_farm_device_get (DfFarm *farm, const char *key, GError **err)
{
  char mac[18];
  GError *local = NULL;
  DfDevice *d = NULL;
  if (key && df_parse_mac (key, mac, NULL))
    d = device_find_by_mac (farm, mac, &local);
  else if (!df_validate_name ("device", key, err))
    return NULL;
  else
    d = device_find_by_name (farm, key, &local);
  if (!d && !local)
    g_set_error (&local, DF_ERROR, DF_ERROR_NOT_FOUND,
                 "no device with %s '%s'",
                 df_parse_mac (key, mac, NULL) ? "MAC" : "name", key);
  if (local)
    g_propagate_error (err, local);
  return d;
}

GPtrArray *
df_farm_device_list (DfFarm *farm, const char *collection, GError **err)
{
  gint64 cid = 0;
  if (collection && (!df_validate_name ("collection", collection, err)
                     || !df_farm_collection_id (farm, collection, &cid, err)))
    return NULL;
  const DfParam p[] = { collection ? DF_INT (cid) : DF_NULL };
  GPtrArray *all = df_farm_select (farm,
                                   DEVICE_COLUMNS "WHERE CAST (?1 AS INTEGER) "
                                   "IS NULL OR d.collection_id = ?1 "
                                   "ORDER BY d.name", p, G_N_ELEMENTS (p),
                                   &device_row, err);
  for (guint i = 0; all != NULL && i < all->len; i++)
    device_offline_view (farm, all->pdata[i]);
  return all;
}

/* Append {"field":{"from":a,"to":b}} members for fields that changed. */
static void
json_change (GString *gs, const char *key, const char *from, const char *to)
{
  if (g_strcmp0 (from, to) == 0)
    return;
  if (gs->len > 1)
    g_string_append_c (gs, ',');
  df_farm_json_str (gs, key);
  g_string_append (gs, ":{\"from\":");
  df_farm_json_str (gs, from);
  g_string_append (gs, ",\"to\":");
  df_farm_json_str (gs, to);
  g_string_append_c (gs, '}');
}

static char *
device_change_detail (const DfDevice *old, const DeviceIn *in)
{
  GString *gs = g_string_new ("{");
  json_change (gs, "mac", old->mac, in->mac);
  json_change (gs, "collection", old->collection, in->collection);
  json_change (gs, "type", old->type, in->type);
  json_change (gs, "vdisk", old->vdisk, in->vdisk);
  json_change (gs, "cache_mode", old->cache_mode, in->cache_mode);
  if (old->quota != in->quota)
    {
      if (gs->len > 1)
        g_string_append_c (gs, ',');
      g_string_append_printf (gs, "\"quota\":{\"from\":%" G_GUINT64_FORMAT
                              ",\"to\":%" G_GUINT64_FORMAT "}",
                              old->quota, in->quota);
    }
  return df_farm_json_close (gs);
}

static bool
device_update_locked (DfFarm *farm, DeviceIn *in, GError **err)
{
  gint64 vid, cid;
  g_autoptr (DfDevice) old = device_find_by_name (farm, in->name, err);
  if (!old)
    {
      if (err && !*err)
        g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
                     "no device with name '%s'", in->name);
      return false;
    }
  if (!device_resolve (farm, in, old->id, &vid, &cid, err))
    return false;
  bool becomes = strcmp (old->type, "maintenance") != 0
                 || strcmp (old->vdisk, in->vdisk) != 0;
  if (becomes && !check_maintenance_device (farm, in, old->id, vid, err))
    return false;
  const DfParam p[] = {
    DF_TEXT (in->mac), cid ? DF_INT (cid) : DF_NULL, DF_TEXT (in->type),
    DF_INT (vid), DF_TEXT (in->cache_mode), DF_INT (in->quota),
    DF_INT (old->id)
  };
  if (!df_farm_exec (farm,
    "UPDATE devices SET mac = ?, collection_id = ?, type = ?, vdisk_id = ?, "
    "cache_mode = ?, quota = ? WHERE id = ?", p, G_N_ELEMENTS (p), err))
    return false;
  g_autofree char *detail = device_change_detail (old, in);
  return df_farm_audit_row (farm, "device.set", in->name, detail, err);
}

bool
df_farm_device_update (DfFarm *farm, const DfDevice *d, GError **err)
{
  return device_write (farm, d, device_update_locked, err);
}

static bool
device_id (DfFarm *farm, const char *name, gint64 *id, GError **err)
{
  return df_farm_lookup_id (farm, "device",
                    "SELECT id FROM devices WHERE name = ? COLLATE NOCASE",
                    name, id, err);
}

/* A removed device's local cache claims go with it (a device added later
 * under the name starts anew); shared leases stay, as their epochs must
 * only grow (leases.c). */
static bool
device_remove_locked (DfFarm *farm, const char *name, GError **err)
{
  gint64 id;
  if (!device_id (farm, name, &id, err))
    return false;
  const DfParam p[] = { DF_INT (id) };
  return df_farm_exec (farm, "DELETE FROM cache_leases WHERE kind = 'local' "
                       "AND device = (SELECT name FROM devices WHERE id = ?)",
                       p, G_N_ELEMENTS (p), err)
         && df_farm_delete_audited (farm, "DELETE FROM devices WHERE id = ?",
                                    id, "device.remove", name, err);
}

bool
df_farm_device_remove (DfFarm *farm, const char *name, GError **err)
{
  return df_farm_mutate_named (farm, "device", name, device_remove_locked,
                               err);
}

static bool
device_generation_locked (DfFarm *farm, const char *name, gint64 *generation,
                          GError **err)
{
  gint64 id;
  if (!device_id (farm, name, &id, err))
    return false;
  /* Above any generation this host gave while the DB was unreachable
   * and has not recorded yet (offline.c). */
  gint64 floor = df_farm_offline_generation_floor (farm, name);
  const DfParam p[] = { DF_INT (floor), DF_INT (floor), DF_INT (id) };
  g_autoptr (DfDbStmt) st = df_farm_query (farm,
    "UPDATE devices SET generation = CASE WHEN generation < ? THEN ? "
    "ELSE generation END + 1 WHERE id = ? RETURNING generation",
    p, G_N_ELEMENTS (p), err);
  if (!st || df_db_step (st, err) != 1)
    return false;
  gint64 gen = df_db_col_int64 (st, 0);
  if (df_db_step (st, err) != 0)
    return false;
  g_autofree char *detail = g_strdup_printf ("{\"generation\":%"
                                             G_GINT64_FORMAT "}", gen);
  if (!df_farm_audit_row (farm, "device.reset", name, detail, err))
    return false;
  if (generation)
    *generation = gen;
  return true;
}

bool
df_farm_device_new_generation (DfFarm *farm, const char *name,
                               gint64 *generation, GError **err)
{
  if (!df_validate_name ("device", name, err))
    return false;
  if (df_farm_offline (farm))
    {
      g_autoptr (DfDevice) d = device_find_by_name (farm, name, err);
      if (d == NULL && err != NULL && *err == NULL)
        g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
                     "no device with name '%s'", name);
      return d != NULL
             && df_farm_offline_generation_next (farm, d, generation, err);
    }
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = device_generation_locked (farm, name, generation, err);
  return t.ok;
}

