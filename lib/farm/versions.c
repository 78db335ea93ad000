/* diskfarm: version lifecycle accessors (seal, schedules, delete, users)
 * and farm settings.
 *
 * Same rules as farm.c: arguments are checked before any DB access; each
 * mutator runs in one write scope (BEGIN IMMEDIATE, or a SAVEPOINT inside a
 * caller's df_farm_begin transaction) together with its audit row(s).
 *
 * Scheduled promotions: `version promote --at T` stores state 'pending'
 * with pending_state and pending_at (UTC, "YYYY-MM-DDTHH:MM:SSZ", so text
 * order is time order).  A pending version is booted by nobody.  Due
 * schedules are applied by df_farm_versions_apply_pending, which streamsvc
 * calls before it resolves a device's version and every `diskfarm version`
 * command calls first: the first of them to run after T applies it. */
#include "farm.h"
#include "farm-private.h"
#include "common.h"
#include "vdisk.h"

#include <string.h>

/* ---- scopes and statements ------------------------------------------- */

typedef struct {
  sqlite3 *db;
  bool outer;
} VScope;

static bool
vexec (sqlite3 *db, const char *sql, GError **err)
{
  int rc = sqlite3_exec (db, sql, NULL, NULL, NULL);
  if (rc == SQLITE_OK)
    return true;
  df_farm_set_sqlite_error (err, db, rc, "farm.db");
  return false;
}

static bool
vscope_begin (DfFarm *farm, VScope *s, GError **err)
{
  s->db = df_farm_sqlite (farm);
  s->outer = sqlite3_get_autocommit (s->db) != 0;
  return vexec (s->db, s->outer ? "BEGIN IMMEDIATE" : "SAVEPOINT df_ver", err);
}

static bool
vscope_end (VScope *s, bool ok, GError **err)
{
  if (ok && vexec (s->db, s->outer ? "COMMIT" : "RELEASE df_ver", err))
    return true;
  sqlite3_exec (s->db, s->outer ? "ROLLBACK"
                                : "ROLLBACK TO df_ver; RELEASE df_ver",
                NULL, NULL, NULL);
  return false;
}

/* "YYYY-MM-DDTHH:MM:SSZ" exactly. */
static bool
check_utc_time (const char *at, GError **err)
{
  static const char shape[] = "dddd-dd-ddTdd:dd:ddZ";
  bool ok = at && strlen (at) == sizeof shape - 1;
  for (gsize i = 0; ok && i < sizeof shape - 1; i++)
    ok = shape[i] == 'd' ? g_ascii_isdigit (at[i]) : at[i] == shape[i];
  if (!ok)
    g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                 "time '%s' is not UTC YYYY-MM-DDTHH:MM:SSZ", at ? at : "");
  return ok;
}

static char *
object_name (const char *vdisk, int number)
{
  return g_strdup_printf ("%s@%d", vdisk, number);
}

/* ---- seal -------------------------------------------------------------- */

static bool
seal_locked (DfFarm *farm, const char *vdisk, int number, const char *sha256,
             uint64_t file_size, GError **err)
{
  g_autoptr (DfVersion) v = df_farm_version_get (farm, vdisk, number, err);
  if (!v)
    return false;
  if (v->state != DF_VSTATE_MAINTENANCE)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "version %s@%d is %s, not maintenance: nothing to seal",
                   vdisk, number, df_version_state_name (v->state));
      return false;
    }
  g_autoptr (DfFarmStmt) st = df_farm_prepare (farm,
    "UPDATE versions SET sha256 = ?, file_size = ?, state = 'test' "
    "WHERE id = ? AND state = 'maintenance'", err);
  if (!st)
    return false;
  sqlite3_bind_text (st, 1, sha256, -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64 (st, 2, (gint64) file_size);
  sqlite3_bind_int64 (st, 3, v->id);
  if (df_farm_step (farm, st, err) != 0)
    return false;
  g_autofree char *detail = g_strdup_printf (
    "{\"sha256\":\"%s\",\"file_size\":%" G_GUINT64_FORMAT
    ",\"from\":\"maintenance\",\"to\":\"test\"}", sha256, file_size);
  g_autofree char *object = object_name (vdisk, number);
  return df_farm_audit (farm, "version.seal", object, detail, err);
}

bool
df_farm_version_seal (DfFarm *farm, const char *vdisk, int number,
                      const char *sha256, uint64_t file_size, GError **err)
{
  gsize n = sha256 ? strlen (sha256) : 0;
  for (gsize i = 0; i < n; i++)
    if (!g_ascii_isxdigit (sha256[i]) || g_ascii_isupper (sha256[i]))
      n = 0;
  if (n != 64)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "sha256 must be 64 lower-case hexadecimal digits");
      return false;
    }
  if (!df_validate_name ("vdisk", vdisk, err))
    return false;
  VScope s;
  if (!vscope_begin (farm, &s, err))
    return false;
  return vscope_end (&s, seal_locked (farm, vdisk, number, sha256, file_size,
                                      err), err);
}

/* ---- schedules --------------------------------------------------------- */

static bool
schedule_locked (DfFarm *farm, const char *vdisk, int number,
                 DfVersionState target, const char *at, GError **err)
{
  g_autoptr (DfVersion) v = df_farm_version_get (farm, vdisk, number, err);
  if (!v)
    return false;
  if (!v->sha256)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "version %s@%d has no sha256 yet (seal it first)", vdisk,
                   number);
      return false;
    }
  g_autoptr (DfFarmStmt) st = df_farm_prepare (farm,
    "UPDATE versions SET state = 'pending', pending_state = ?, "
    "pending_at = ? WHERE id = ?", err);
  if (!st)
    return false;
  sqlite3_bind_text (st, 1, df_version_state_name (target), -1, SQLITE_STATIC);
  sqlite3_bind_text (st, 2, at, -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64 (st, 3, v->id);
  if (df_farm_step (farm, st, err) != 0)
    return false;
  g_autofree char *detail = g_strdup_printf (
    "{\"from\":\"%s\",\"to\":\"%s\",\"at\":\"%s\"}",
    df_version_state_name (v->state), df_version_state_name (target), at);
  g_autofree char *object = object_name (vdisk, number);
  return df_farm_audit (farm, "version.schedule", object, detail, err);
}

bool
df_farm_version_schedule (DfFarm *farm, const char *vdisk, int number,
                          DfVersionState target, const char *at, GError **err)
{
  if (!df_validate_name ("vdisk", vdisk, err) || !check_utc_time (at, err))
    return false;
  if (target != DF_VSTATE_TEST && target != DF_VSTATE_PRODUCTION)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "a promotion goes to test or production");
      return false;
    }
  VScope s;
  if (!vscope_begin (farm, &s, err))
    return false;
  return vscope_end (&s, schedule_locked (farm, vdisk, number, target, at,
                                          err), err);
}

typedef struct {
  gint64 id;
  char *object;
  char *to;
  char *at;
} DueRow;

static void
due_row_free (DueRow *r)
{
  g_free (r->object);
  g_free (r->to);
  g_free (r->at);
  g_free (r);
}

/* Rows whose schedule is due (new array of DueRow). */
static GPtrArray *
due_rows (DfFarm *farm, const char *vdisk, const char *now, GError **err)
{
  g_autoptr (DfFarmStmt) st = df_farm_prepare (farm,
    "SELECT r.id, v.name || '@' || r.number, r.pending_state, r.pending_at "
    "FROM versions r JOIN vdisks v ON v.id = r.vdisk_id "
    "WHERE r.state = 'pending' AND r.pending_at <= ?1 "
    "AND (?2 IS NULL OR v.name = ?2) ORDER BY r.number", err);
  if (!st)
    return NULL;
  sqlite3_bind_text (st, 1, now, -1, SQLITE_TRANSIENT);
  if (vdisk)
    sqlite3_bind_text (st, 2, vdisk, -1, SQLITE_TRANSIENT);
  g_autoptr (GPtrArray) rows
    = g_ptr_array_new_with_free_func ((GDestroyNotify) due_row_free);
  int r;
  while ((r = df_farm_step (farm, st, err)) == 1)
    {
      DueRow *d = g_new0 (DueRow, 1);
      d->id = sqlite3_column_int64 (st, 0);
      d->object = g_strdup ((const char *) sqlite3_column_text (st, 1));
      d->to = g_strdup ((const char *) sqlite3_column_text (st, 2));
      d->at = g_strdup ((const char *) sqlite3_column_text (st, 3));
      g_ptr_array_add (rows, d);
    }
  return r == 0 ? g_steal_pointer (&rows) : NULL;
}

static bool
apply_locked (DfFarm *farm, const char *vdisk, guint *applied, GError **err)
{
  g_autofree char *now = df_farm_now ();
  g_autoptr (GPtrArray) rows = due_rows (farm, vdisk, now, err);
  if (!rows)
    return false;
  for (guint i = 0; i < rows->len; i++)
    {
      const DueRow *d = rows->pdata[i];
      g_autoptr (DfFarmStmt) st = df_farm_prepare (farm,
        "UPDATE versions SET state = pending_state, pending_state = NULL, "
        "pending_at = NULL WHERE id = ? AND state = 'pending'", err);
      if (!st)
        return false;
      sqlite3_bind_int64 (st, 1, d->id);
      if (df_farm_step (farm, st, err) != 0)
        return false;
      g_autofree char *detail = g_strdup_printf (
        "{\"from\":\"pending\",\"to\":\"%s\",\"scheduled\":\"%s\"}", d->to,
        d->at);
      if (!df_farm_audit (farm, "version.promote", d->object, detail, err))
        return false;
    }
  *applied = rows->len;
  return true;
}

bool
df_farm_versions_apply_pending (DfFarm *farm, const char *vdisk,
                                guint *applied, GError **err)
{
  guint dummy = 0;
  if (!applied)
    applied = &dummy;
  *applied = 0;
  if (vdisk && !df_validate_name ("vdisk", vdisk, err))
    return false;
  /* Cheap read first: most calls find nothing due and take no lock. */
  g_autofree char *now = df_farm_now ();
  g_autoptr (GPtrArray) due = due_rows (farm, vdisk, now, err);
  if (!due)
    return false;
  if (due->len == 0)
    return true;
  VScope s;
  if (!vscope_begin (farm, &s, err))
    return false;
  return vscope_end (&s, apply_locked (farm, vdisk, applied, err), err);
}

/* ---- users of a version ------------------------------------------------ */

/* The pinned version if it is in vdisk (by number) and is the file the
 * pin names (by SHA-256 when the pin has one, else by the vdisk's name):
 * new version or NULL (not an error). */
static DfVersion *
pin_in (DfFarm *farm, const char *vdisk, const DfCachePin *pin, GError **err)
{
  GError *local = NULL;
  DfVersion *v = df_farm_version_get (farm, vdisk, pin->version, &local);

  if (v == NULL)
    {
      if (!g_error_matches (local, DF_ERROR, DF_ERROR_NOT_FOUND))
        g_propagate_error (err, local);
      else
        g_error_free (local);
      return NULL;
    }
  if (pin->sha256 != NULL && v->sha256 != NULL
        ? strcmp (pin->sha256, v->sha256) == 0
        : strcmp (pin->vdisk, vdisk) == 0)
    return v;
  df_version_free (v);
  return NULL;
}

bool
df_farm_device_pin (DfFarm *farm, const DfDevice *d, DfVersion **out,
                    bool *other_vdisk, GError **err)
{
  g_autofree char *dir = df_farm_cache_dir (farm, d->name);
  g_auto (DfCachePin) pin = { 0 };
  GError *local = NULL;

  *out = NULL;
  *other_vdisk = false;
  if (!df_cache_pin_read (dir, &pin, &local))
    {
      if (!g_error_matches (local, DF_ERROR, DF_ERROR_NOT_FOUND))
        {
          g_propagate_error (err, local);
          return false;
        }
      g_error_free (local);
      return true;
    }
  *out = pin_in (farm, d->vdisk, &pin, &local);
  if (*out == NULL && local == NULL && strcmp (pin.vdisk, d->vdisk) != 0)
    {
      *out = pin_in (farm, pin.vdisk, &pin, &local);
      *other_vdisk = *out != NULL;
    }
  if (local != NULL)
    {
      g_propagate_error (err, local);
      return false;
    }
  if (*out == NULL)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
                   "device %s: the version its private image is over (vdisk "
                   "%s v%d) is gone", d->name, pin.vdisk, pin.version);
      return false;
    }
  return true;
}

/* d serves the version its private image is over, not its type's. */
static bool
boots_pin (const DfDevice *d, bool other_vdisk)
{
  DfCacheMode m;

  return !other_vdisk && df_cache_mode_parse (d->cache_mode, &m, NULL)
         && df_cache_mode_desc (&m)->pins_base;
}

GPtrArray *
df_farm_version_devices (DfFarm *farm, const char *vdisk, int number,
                         GError **err)
{
  static const char *const types[] = { "production", "test", "maintenance" };
  int selected[G_N_ELEMENTS (types)];
  for (guint t = 0; t < G_N_ELEMENTS (types); t++)
    {
      g_autoptr (GError) local = NULL;
      g_autoptr (DfVersion) v
        = df_farm_version_for_type (farm, vdisk, types[t], &local);
      if (!v && !g_error_matches (local, DF_ERROR, DF_ERROR_NOT_FOUND))
        {
          g_propagate_error (err, g_steal_pointer (&local));
          return NULL;
        }
      selected[t] = v ? v->number : -1;
    }
  g_autoptr (GPtrArray) devices = df_farm_device_list (farm, NULL, err);
  if (!devices)
    return NULL;
  GPtrArray *out = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; i < devices->len; i++)
    {
      const DfDevice *d = devices->pdata[i];
      g_autoptr (DfVersion) pv = NULL;
      bool other = false;
      /* A private image holds its version whatever d's mode is now. */
      if (df_farm_device_pin (farm, d, &pv, &other, NULL) && pv != NULL
          && strcmp (pv->vdisk, vdisk) == 0 && pv->number == number)
        {
          g_ptr_array_add (out, g_strdup (d->name));
          continue;
        }
      if (strcmp (d->vdisk, vdisk) != 0 || (pv != NULL && boots_pin (d, other)))
        continue;
      for (guint t = 0; t < G_N_ELEMENTS (types); t++)
        if (strcmp (d->type, types[t]) == 0 && selected[t] == number)
          g_ptr_array_add (out, g_strdup (d->name));
    }
  return out;
}

/* ---- delete ------------------------------------------------------------ */

static bool
check_no_children (DfFarm *farm, const DfVersion *v, GError **err)
{
  g_autoptr (DfFarmStmt) st = df_farm_prepare (farm,
    "SELECT group_concat (c.number, ', ') FROM versions c "
    "JOIN versions p ON p.vdisk_id = c.vdisk_id AND c.parent = p.number "
    "WHERE p.id = ?", err);
  if (!st)
    return false;
  sqlite3_bind_int64 (st, 1, v->id);
  if (df_farm_step (farm, st, err) != 1)
    return false;
  const char *kids = (const char *) sqlite3_column_text (st, 0);
  if (!kids)
    return true;
  g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
               "version %s@%d is the backing file of version(s) %s; delete "
               "or merge those first", v->vdisk, v->number, kids);
  return false;
}

static bool
check_no_devices (DfFarm *farm, const DfVersion *v, GError **err)
{
  g_autoptr (GPtrArray) devs
    = df_farm_version_devices (farm, v->vdisk, v->number, err);
  if (!devs)
    return false;
  if (devs->len == 0)
    return true;
  g_ptr_array_add (devs, NULL);
  g_autofree char *names = g_strjoinv (", ", (char **) devs->pdata);
  g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
               "version %s@%d is the version device(s) %s boot", v->vdisk,
               v->number, names);
  return false;
}

static bool
delete_locked (DfFarm *farm, const char *vdisk, int number, GError **err)
{
  g_autoptr (DfVersion) v = df_farm_version_get (farm, vdisk, number, err);
  if (!v)
    return false;
  if (v->state == DF_VSTATE_PENDING)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                   "version %s@%d has a pending promotion to %s at %s",
                   vdisk, number, v->pending_state, v->pending_at);
      return false;
    }
  if (!check_no_children (farm, v, err) || !check_no_devices (farm, v, err))
    return false;
  g_autoptr (DfFarmStmt) st = df_farm_prepare (farm, "DELETE FROM versions WHERE id = ?",
                                   err);
  if (!st)
    return false;
  sqlite3_bind_int64 (st, 1, v->id);
  if (df_farm_step (farm, st, err) != 0)
    return false;
  g_autofree char *detail = g_strdup_printf (
    "{\"file\":\"%s\",\"state\":\"%s\"}", v->file,
    df_version_state_name (v->state));
  g_autofree char *object = object_name (vdisk, number);
  return df_farm_audit (farm, "version.delete", object, detail, err);
}

bool
df_farm_version_delete (DfFarm *farm, const char *vdisk, int number,
                        GError **err)
{
  if (!df_validate_name ("vdisk", vdisk, err))
    return false;
  VScope s;
  if (!vscope_begin (farm, &s, err))
    return false;
  return vscope_end (&s, delete_locked (farm, vdisk, number, err), err);
}

/* ---- settings ---------------------------------------------------------- */

static bool
check_setting_key (const char *key, GError **err)
{
  bool ok = key && *key && strlen (key) <= 200;
  for (const char *p = key; ok && *p; p++)
    ok = g_ascii_isalnum (*p) || strchr ("._-", *p);
  if (!ok)
    g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                 "setting name '%s' must be 1-200 chars of [A-Za-z0-9._-]",
                 key ? key : "");
  return ok;
}

char *
df_farm_setting_get (DfFarm *farm, const char *key, GError **err)
{
  if (!check_setting_key (key, err))
    return NULL;
  g_autoptr (DfFarmStmt) st = df_farm_prepare (farm,
    "SELECT value FROM settings WHERE key = ?", err);
  if (!st)
    return NULL;
  sqlite3_bind_text (st, 1, key, -1, SQLITE_TRANSIENT);
  return df_farm_step (farm, st, err) == 1
           ? g_strdup ((const char *) sqlite3_column_text (st, 0)) : NULL;
}

static bool
setting_set_locked (DfFarm *farm, const char *key, const char *value,
                    GError **err)
{
  g_autoptr (DfFarmStmt) st = df_farm_prepare (farm, value
    ? "INSERT INTO settings (key, value) VALUES (?1, ?2) "
      "ON CONFLICT (key) DO UPDATE SET value = ?2"
    : "DELETE FROM settings WHERE key = ?1", err);
  if (!st)
    return false;
  sqlite3_bind_text (st, 1, key, -1, SQLITE_TRANSIENT);
  if (value)
    sqlite3_bind_text (st, 2, value, -1, SQLITE_TRANSIENT);
  if (df_farm_step (farm, st, err) != 0)
    return false;
  g_autoptr (GString) detail = g_string_new ("{\"value\":");
  df_farm_json_str (detail, value);
  g_string_append_c (detail, '}');
  return df_farm_audit (farm, value ? "setting.set" : "setting.unset", key,
                        detail->str, err);
}

bool
df_farm_setting_set (DfFarm *farm, const char *key, const char *value,
                     GError **err)
{
  if (!check_setting_key (key, err))
    return false;
  VScope s;
  if (!vscope_begin (farm, &s, err))
    return false;
  return vscope_end (&s, setting_set_locked (farm, key, value, err), err);
}

/* ---- auto-merge depth ------------------------------------------------- */

#define SETTING_MERGE_DEPTH "auto_merge_depth"

bool
df_auto_merge_depth_check (gint64 depth, GError **err)
{
  if (depth == 0 || (depth >= 2 && depth <= DF_AUTO_MERGE_DEPTH_MAX))
    return true;
  g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
               "auto-merge depth must be 0 (off) or 2-%d, not %" G_GINT64_FORMAT,
               DF_AUTO_MERGE_DEPTH_MAX, depth);
  return false;
}

char *
df_farm_merge_depth_key (const char *vdisk)
{
  return vdisk ? g_strdup_printf ("vdisk.%s." SETTING_MERGE_DEPTH, vdisk)
               : g_strdup (SETTING_MERGE_DEPTH);
}

/* The stored depth under key: true and *out when present and valid. */
static bool
merge_depth_read (DfFarm *farm, const char *key, int *out)
{
  g_autofree char *v = df_farm_setting_get (farm, key, NULL);
  guint64 n;
  if (!v || !g_ascii_string_to_unsigned (v, 10, 0, DF_AUTO_MERGE_DEPTH_MAX,
                                          &n, NULL)
      || !df_auto_merge_depth_check ((gint64) n, NULL))
    return false;
  *out = (int) n;
  return true;
}

int
df_farm_auto_merge_depth (DfFarm *farm, const char *vdisk, bool *own)
{
  int depth = 0;
  g_autofree char *key = df_farm_merge_depth_key (vdisk);
  bool mine = vdisk && merge_depth_read (farm, key, &depth);
  if (own)
    *own = mine;
  if (!mine && !merge_depth_read (farm, SETTING_MERGE_DEPTH, &depth))
    depth = 0;
  return depth;
}

bool
df_farm_auto_merge_depth_set (DfFarm *farm, const char *vdisk, int depth,
                              GError **err)
{
  if ((vdisk && !df_validate_name ("vdisk", vdisk, err))
      || (depth != -1 && !df_auto_merge_depth_check (depth, err)))
    return false;
  if (vdisk)
    {
      g_autoptr (DfVdisk) v = df_farm_vdisk_get (farm, vdisk, err);
      if (!v)
        return false;
    }
  g_autofree char *key = df_farm_merge_depth_key (vdisk);
  g_autofree char *val = g_strdup_printf ("%d", depth);
  /* The farm's 0 is the absence of the setting; a vdisk's 0 is stored:
   * it turns auto-merge off for that vdisk whatever the farm says. */
  bool drop = depth == -1 || (vdisk == NULL && depth == 0);
  return df_farm_setting_set (farm, key, drop ? NULL : val, err);
}
