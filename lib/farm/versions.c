/* diskfarm: versions of a vdisk in the farm DB: add, get, list, the version
 * a device type boots, state changes, and the lifecycle (seal, schedules,
 * delete, users).
 *
 * Rules of every mutator (farm.c): arguments are checked before any DB
 * access; each runs in one write scope (the transaction, or a savepoint
 * inside a caller's df_farm_begin transaction) with its audit row(s).
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

/* ---- checks ------------------------------------------------------------ */

/* A file name inside store/<vdisk>/: one path component. */
bool
df_farm_check_file_name (const char *file, GError **err)
{
  if (!file || !*file || strlen (file) > 255 || strchr (file, '/')
      || strcmp (file, ".") == 0 || strcmp (file, "..") == 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "version file name '%s' must be one path component",
                   file ? file : "");
      return false;
    }
  for (const char *p = file; *p; p++)
    if ((unsigned char) *p < 0x20)
      {
        g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                     "version file name contains a control character");
        return false;
      }
  return true;
}

/* sha256: NULL (allowed only when null_ok) or 64 hex digits; *out receives
 * the lower-case form (newly allocated) or NULL. */
bool
df_farm_check_sha256 (const char *s, bool null_ok, char **out, GError **err)
{
  *out = NULL;
  if (!s)
    {
      if (null_ok)
        return true;
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "a published version needs its sha256");
      return false;
    }
  size_t n = strlen (s);
  for (size_t i = 0; i < n; i++)
    if (!g_ascii_isxdigit (s[i]))
      n = 0;
  if (n != 64)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "sha256 '%s' is not 64 hexadecimal digits", s);
      return false;
    }
  *out = g_ascii_strdown (s, -1);
  return true;
}

/* ---- rows ------------------------------------------------------------- */

static const char *const vstate_names[] = {
  [DF_VSTATE_MAINTENANCE] = "maintenance",
  [DF_VSTATE_TEST] = "test",
  [DF_VSTATE_PRODUCTION] = "production",
  [DF_VSTATE_PENDING] = "pending",
};

const char *
df_version_state_name (DfVersionState s)
{
  g_return_val_if_fail ((guint) s < G_N_ELEMENTS (vstate_names), "unknown");
  return vstate_names[s];
}

bool
df_version_state_parse (const char *s, DfVersionState *out, GError **err)
{
  for (guint i = 0; i < G_N_ELEMENTS (vstate_names); i++)
    if (s && strcmp (s, vstate_names[i]) == 0)
      {
        *out = (DfVersionState) i;
        return true;
      }
  g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
               "version state '%s' is not maintenance, test, production or "
               "pending", s ? s : "");
  return false;
}

#define VERSION_COLUMNS \
  "SELECT r.id, v.name, r.number, r.parent, r.file, r.sha256, " \
  "r.virtual_size, r.file_size, r.state, r.pending_state, r.pending_at, " \
  "r.created FROM versions r JOIN vdisks v ON v.id = r.vdisk_id "

/* The fields of VERSION_COLUMNS, in its order; parent (NULL for a base)
 * and state (a name) are read by hand. */
static const DfField version_fields[] = {
  DF_FIELD (INT64, DfVersion, id),
  DF_FIELD (TEXT, DfVersion, vdisk),
  DF_FIELD (INT, DfVersion, number),
  DF_FIELD (SKIP, DfVersion, parent),
  DF_FIELD (TEXT, DfVersion, file),
  DF_FIELD (TEXT, DfVersion, sha256),
  DF_FIELD (INT64, DfVersion, virtual_size),
  DF_FIELD (INT64, DfVersion, file_size),
  DF_FIELD (SKIP, DfVersion, state),
  DF_FIELD (TEXT, DfVersion, pending_state),
  DF_FIELD (TEXT, DfVersion, pending_at),
  DF_FIELD (TEXT, DfVersion, created),
};

static void
version_finish (gpointer obj, DfDbStmt *st)
{
  DfVersion *v = obj;
  v->parent = df_db_col_is_null (st, 3) ? -1 : df_db_col_int (st, 3);
  const char *state = df_db_col_text (st, 8);
  if (!df_version_state_parse (state, &v->state, NULL))
    g_assert_not_reached ();   /* the CHECK constraint forbids it */
}

static const DfRowType version_row =
  DF_ROW_TYPE (DfVersion, version_fields, version_finish, df_version_free);

void
df_version_free (DfVersion *v)
{
  df_farm_row_free (&version_row, v);
}

/* The row (vdisk, number), or NULL with *err unset when absent. */
static DfVersion *
version_find (DfFarm *farm, gint64 vid, int number, GError **err)
{
  const DfParam p[] = { DF_INT (vid), DF_INT (number) };
  return df_farm_select_one (farm, VERSION_COLUMNS "WHERE r.vdisk_id = ? "
                             "AND r.number = ?", p, G_N_ELEMENTS (p),
                             &version_row, err);
}

/* Number of the maintenance version of vid, or -1. */
int
df_farm_maintenance_number (DfFarm *farm, gint64 vid, GError **err)
{
  g_autoptr (DfDbStmt) st = df_farm_stmt (farm,
    "SELECT number FROM versions WHERE vdisk_id = ? "
    "AND state = 'maintenance'", err);
  if (!st)
    return -2;
  df_db_bind_int64 (st, 1, vid);
  int r = df_db_step (st, err);
  return r == 1 ? df_db_col_int (st, 0) : r == 0 ? -1 : -2;
}

static bool
check_one_maintenance (DfFarm *farm, const char *vdisk, gint64 vid,
                       GError **err)
{
  int m = df_farm_maintenance_number (farm, vid, err);
  if (m == -2)
    return false;
  if (m >= 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                   "vdisk '%s' already has maintenance version %d", vdisk, m);
      return false;
    }
  return true;
}

typedef struct {
  const char *vdisk;
  int number, parent;
  const char *file;
  char *sha256;
  uint64_t virtual_size, file_size;
  DfVersionState state;
} VersionIn;

/* A new maintenance version: the vdisk's maintenance device(s) start a new
 * boot generation, so their next open binds to the new version's cache and
 * a session still bound to the old one is stale (streamsvc fences it).
 * One audit row "device.generation" per device, cause = "vdisk@N". */
static bool
maintenance_new_generation (DfFarm *farm, gint64 vid, const char *cause,
                            GError **err)
{
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GArray) gens = g_array_new (FALSE, FALSE, sizeof (gint64));
  {
    g_autoptr (DfDbStmt) st = df_farm_stmt (farm,
      "UPDATE devices SET generation = generation + 1 "
      "WHERE vdisk_id = ? AND type = 'maintenance' "
      "RETURNING name, generation", err);
    if (!st)
      return false;
    df_db_bind_int64 (st, 1, vid);
    int rc;
    while ((rc = df_db_step (st, err)) == 1)
      {
        gint64 gen = df_db_col_int64 (st, 1);
        g_ptr_array_add (names, df_db_col_dup (st, 0));
        g_array_append_val (gens, gen);
      }
    if (rc < 0)
      return false;
  }
  for (guint i = 0; i < names->len; i++)
    {
      GString *gs = g_string_new ("{");
      df_farm_json_kv_int (gs, "generation", g_array_index (gens, gint64, i));
      df_farm_json_kv (gs, "cause", cause);
      g_autofree char *detail = df_farm_json_close (gs);
      if (!df_farm_audit_row (farm, "device.generation", names->pdata[i],
                              detail, err))
        return false;
    }
  return true;
}

static bool
version_add_locked (DfFarm *farm, const VersionIn *in, GError **err)
{
  gint64 vid;
  if (!df_farm_vdisk_id (farm, in->vdisk, &vid, err))
    return false;
  g_autoptr (DfVersion) dup = version_find (farm, vid, in->number, NULL);
  if (dup)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_EXISTS,
                   "vdisk '%s' already has version %d", in->vdisk, in->number);
      return false;
    }
  g_autoptr (DfVersion) parent = in->parent >= 0
    ? version_find (farm, vid, in->parent, NULL) : NULL;
  if (in->parent >= 0 && !parent)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
                   "vdisk '%s' has no version %d (parent of %d)", in->vdisk,
                   in->parent, in->number);
      return false;
    }
  if (in->state == DF_VSTATE_MAINTENANCE
      && !check_one_maintenance (farm, in->vdisk, vid, err))
    return false;
  if (!df_farm_version_insert (farm, vid, in->number, in->parent, in->file,
                       in->sha256, in->virtual_size, in->file_size, in->state,
                       err))
    return false;
  GString *gs = g_string_new ("{");
  df_farm_json_kv_int (gs, "parent", in->parent);
  df_farm_json_kv (gs, "file", in->file);
  df_farm_json_kv (gs, "sha256", in->sha256);
  df_farm_json_kv (gs, "state", df_version_state_name (in->state));
  g_autofree char *detail = df_farm_json_close (gs);
  g_autofree char *object = g_strdup_printf ("%s@%d", in->vdisk, in->number);
  return df_farm_audit_row (farm, "version.add", object, detail, err)
         && (in->state != DF_VSTATE_MAINTENANCE
             || maintenance_new_generation (farm, vid, object, err));
}

static bool
check_version_numbers (int number, int parent, GError **err)
{
  if (number < 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "version number %d is negative", number);
      return false;
    }
  if (parent < -1 || parent >= number)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "parent %d of version %d must be an older version or -1",
                   parent, number);
      return false;
    }
  return true;
}

static bool
check_settable_state (DfVersionState state, GError **err)
{
  if ((guint) state >= G_N_ELEMENTS (vstate_names))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID, "unknown version state %d",
                   (int) state);
      return false;
    }
  if (state == DF_VSTATE_PENDING)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "a version becomes pending only through a schedule "
                   "(target state and time)");
      return false;
    }
  return true;
}

bool
df_farm_version_add (DfFarm *farm, const char *vdisk, int number, int parent,
                     const char *file, const char *sha256,
                     uint64_t virtual_size, uint64_t file_size,
                     DfVersionState state, GError **err)
{
  VersionIn in = { vdisk, number, parent, file, NULL, virtual_size,
                   file_size, state };
  g_autofree char *sha = NULL;
  if (!df_validate_name ("vdisk", vdisk, err)
      || !check_version_numbers (number, parent, err)
      || !df_farm_check_file_name (file, err)
      || !df_farm_check_size ("virtual size", virtual_size, false, err)
      || !df_farm_check_size ("file size", file_size, true, err)
      || !check_settable_state (state, err)
      || !df_farm_check_sha256 (sha256, state == DF_VSTATE_MAINTENANCE, &sha,
                                err))
    return false;
  in.sha256 = sha;
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = version_add_locked (farm, &in, err);
  return t.ok;
}

DfVersion *
df_farm_version_get (DfFarm *farm, const char *vdisk, int number,
                     GError **err)
{
  gint64 vid;
  if (!df_validate_name ("vdisk", vdisk, err))
    return NULL;
  if (number < 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "version number %d is negative", number);
      return NULL;
    }
  if (!df_farm_vdisk_id (farm, vdisk, &vid, err))
    return NULL;
  GError *local = NULL;
  DfVersion *v = version_find (farm, vid, number, &local);
  if (!v && !local)
    g_set_error (&local, DF_ERROR, DF_ERROR_NOT_FOUND,
                 "vdisk '%s' has no version %d", vdisk, number);
  if (local)
    g_propagate_error (err, local);
  return v;
}

GPtrArray *
df_farm_version_list (DfFarm *farm, const char *vdisk, GError **err)
{
  gint64 vid;
  if (!df_validate_name ("vdisk", vdisk, err)
      || !df_farm_vdisk_id (farm, vdisk, &vid, err))
    return NULL;
  const DfParam p[] = { DF_INT (vid) };
  return df_farm_select (farm, VERSION_COLUMNS "WHERE r.vdisk_id = ? "
                         "ORDER BY r.number", p, G_N_ELEMENTS (p),
                         &version_row, err);
}

/* Newest version of vid in one of the states allowed by the mask
 * (bit per DfVersionState); NULL with *err unset when there is none. */
static DfVersion *
newest_in_states (DfFarm *farm, gint64 vid, guint mask, GError **err)
{
  G_STATIC_ASSERT (DF_VSTATE_MAINTENANCE == 0 && DF_VSTATE_TEST == 1
                   && DF_VSTATE_PRODUCTION == 2);
  const DfParam p[] = { DF_INT (vid), DF_INT (mask) };
  return df_farm_select_one (farm,
    VERSION_COLUMNS "WHERE r.vdisk_id = ? AND ("
    "(r.state = 'maintenance' AND (?2 & 1) <> 0) "
    "OR (r.state = 'test' AND (?2 & 2) <> 0) "
    "OR (r.state = 'production' AND (?2 & 4) <> 0)) "
    "ORDER BY r.number DESC LIMIT 1", p, G_N_ELEMENTS (p), &version_row, err);
}

#define VMASK(s) (1u << (s))

DfVersion *
df_farm_version_for_type (DfFarm *farm, const char *vdisk,
                          const char *device_type, GError **err)
{
  gint64 vid;
  if (!df_validate_name ("vdisk", vdisk, err)
      || !df_farm_check_device_type (device_type, err)
      || !df_farm_vdisk_id (farm, vdisk, &vid, err))
    return NULL;
  guint published = VMASK (DF_VSTATE_TEST) | VMASK (DF_VSTATE_PRODUCTION);
  guint mask = strcmp (device_type, "production") == 0
                 ? VMASK (DF_VSTATE_PRODUCTION) : published;
  GError *local = NULL;
  DfVersion *v = NULL;
  if (strcmp (device_type, "maintenance") == 0)
    v = newest_in_states (farm, vid, VMASK (DF_VSTATE_MAINTENANCE), &local);
  if (!v && !local)
    v = newest_in_states (farm, vid, mask, &local);
  if (!v && !local)
    g_set_error (&local, DF_ERROR, DF_ERROR_NOT_FOUND,
                 "vdisk '%s' has no version a %s device can boot (%s)",
                 vdisk, device_type,
                 mask == published ? "none in test or production"
                                   : "none in production");
  if (local)
    g_propagate_error (err, local);
  return v;
}

static bool
version_set_state_locked (DfFarm *farm, const char *vdisk, int number,
                          DfVersionState state, GError **err)
{
  gint64 vid;
  if (!df_farm_vdisk_id (farm, vdisk, &vid, err))
    return false;
  g_autoptr (DfVersion) v = version_find (farm, vid, number, err);
  if (!v)
    {
      if (err && !*err)
        g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
                     "vdisk '%s' has no version %d", vdisk, number);
      return false;
    }
  if (state == DF_VSTATE_MAINTENANCE && v->state != DF_VSTATE_MAINTENANCE)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "version %s@%d is published and cannot return to "
                   "maintenance", vdisk, number);
      return false;
    }
  if (state != DF_VSTATE_MAINTENANCE && !v->sha256)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "version %s@%d has no sha256 yet (seal it first)", vdisk,
                   number);
      return false;
    }
  const DfParam p[] = {
    DF_TEXT (df_version_state_name (state)), DF_INT (v->id)
  };
  if (!df_farm_exec (farm,
    "UPDATE versions SET state = ?, pending_state = NULL, pending_at = NULL "
    "WHERE id = ?", p, G_N_ELEMENTS (p), err))
    return false;
  GString *gs = g_string_new ("{");
  df_farm_json_kv (gs, "from", df_version_state_name (v->state));
  df_farm_json_kv (gs, "to", df_version_state_name (state));
  g_autofree char *detail = df_farm_json_close (gs);
  g_autofree char *object = g_strdup_printf ("%s@%d", vdisk, number);
  return df_farm_audit_row (farm, "version.state", object, detail, err);
}

bool
df_farm_version_set_state (DfFarm *farm, const char *vdisk, int number,
                           DfVersionState state, GError **err)
{
  if (!df_validate_name ("vdisk", vdisk, err)
      || !check_version_numbers (number, -1, err)
      || !check_settable_state (state, err))
    return false;
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = version_set_state_locked (farm, vdisk, number, state, err);
  return t.ok;
}

bool
df_farm_version_insert (DfFarm *farm, gint64 vid, int number, int parent,
                const char *file, const char *sha256, uint64_t virtual_size,
                uint64_t file_size, DfVersionState state, GError **err)
{
  g_autofree char *now = df_farm_now ();
  const DfParam p[] = {
    DF_INT (vid), DF_INT (number), parent >= 0 ? DF_INT (parent) : DF_NULL,
    DF_TEXT (file), DF_TEXT (sha256), DF_INT (virtual_size),
    DF_INT (file_size), DF_TEXT (df_version_state_name (state)),
    DF_TEXT (now)
  };
  return df_farm_exec (farm,
    "INSERT INTO versions (vdisk_id, number, parent, file, sha256, "
    "virtual_size, file_size, state, created) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", p, G_N_ELEMENTS (p), err);
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
  const DfParam p[] = {
    DF_TEXT (sha256), DF_INT (file_size), DF_INT (v->id)
  };
  if (!df_farm_exec (farm,
    "UPDATE versions SET sha256 = ?, file_size = ?, state = 'test' "
    "WHERE id = ? AND state = 'maintenance'", p, G_N_ELEMENTS (p), err))
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
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = seal_locked (farm, vdisk, number, sha256, file_size, err);
  return t.ok;
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
  const DfParam p[] = {
    DF_TEXT (df_version_state_name (target)), DF_TEXT (at), DF_INT (v->id)
  };
  if (!df_farm_exec (farm,
    "UPDATE versions SET state = 'pending', pending_state = ?, "
    "pending_at = ? WHERE id = ?", p, G_N_ELEMENTS (p), err))
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
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = schedule_locked (farm, vdisk, number, target, at, err);
  return t.ok;
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
  g_autoptr (DfDbStmt) st = df_farm_stmt (farm,
    "SELECT r.id, v.name || '@' || r.number, r.pending_state, r.pending_at "
    "FROM versions r JOIN vdisks v ON v.id = r.vdisk_id "
    "WHERE r.state = 'pending' AND r.pending_at <= ?1 "
    "AND (CAST (?2 AS TEXT) IS NULL OR v.name = ?2) ORDER BY r.number", err);
  if (!st)
    return NULL;
  df_db_bind_text (st, 1, now);
  if (vdisk)
    df_db_bind_text (st, 2, vdisk);
  g_autoptr (GPtrArray) rows
    = g_ptr_array_new_with_free_func ((GDestroyNotify) due_row_free);
  int r;
  while ((r = df_db_step (st, err)) == 1)
    {
      DueRow *d = g_new0 (DueRow, 1);
      d->id = df_db_col_int64 (st, 0);
      d->object = g_strdup (df_db_col_text (st, 1));
      d->to = g_strdup (df_db_col_text (st, 2));
      d->at = g_strdup (df_db_col_text (st, 3));
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
      const DfParam p[] = { DF_INT (d->id) };
      if (!df_farm_exec (farm,
        "UPDATE versions SET state = pending_state, pending_state = NULL, "
        "pending_at = NULL WHERE id = ? AND state = 'pending'",
        p, G_N_ELEMENTS (p), err))
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
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = apply_locked (farm, vdisk, applied, err);
  return t.ok;
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
  g_autofree char *kids = NULL;
  if (!df_farm_names_using (farm,
        "SELECT c.number FROM versions c "
        "JOIN versions p ON p.vdisk_id = c.vdisk_id AND c.parent = p.number "
        "WHERE p.id = ? ORDER BY c.number", v->id, &kids, err))
    return false;
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
  const DfParam p[] = { DF_INT (v->id) };
  if (!df_farm_exec (farm,
    "DELETE FROM versions WHERE id = ?", p, G_N_ELEMENTS (p), err))
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
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = delete_locked (farm, vdisk, number, err);
  return t.ok;
}

