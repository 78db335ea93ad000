/* diskfarm: farm settings (key/value, audited) and the auto-merge depth
 * kept in them.  Rules of every mutator: farm.c. */
#include "farm.h"
#include "farm-private.h"
#include "common.h"

#include <string.h>

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
  g_autoptr (DfDbStmt) st = df_farm_stmt (farm,
    "SELECT value FROM settings WHERE key = ?", err);
  if (!st)
    return NULL;
  df_db_bind_text (st, 1, key);
  return df_db_step (st, err) == 1
           ? g_strdup (df_db_col_text (st, 0)) : NULL;
}

static bool
setting_set_locked (DfFarm *farm, const char *key, const char *value,
                    GError **err)
{
  const DfParam p[] = { DF_TEXT (key), DF_TEXT (value) };
  if (!df_farm_exec (farm, value
    ? "INSERT INTO settings (key, value) VALUES (?1, ?2) "
      "ON CONFLICT (key) DO UPDATE SET value = ?2"
    : "DELETE FROM settings WHERE key = ?1", p, value ? 2 : 1, err))
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
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = setting_set_locked (farm, key, value, err);
  return t.ok;
}

/* ---- secret settings -------------------------------------------------- */

static bool
setting_init_secret_locked (DfFarm *farm, const char *key, const char *value,
                            GError **err)
{
  const DfParam p[] = { DF_TEXT (key), DF_TEXT (value) };
  if (!df_farm_exec (farm,
    "INSERT INTO settings (key, value) VALUES (?1, ?2) "
    "ON CONFLICT (key) DO NOTHING", p, G_N_ELEMENTS (p), err))
    return false;
  if (df_db_changes (df_farm_db (farm)) == 0)
    return true;                      /* another server created it first */
  return df_farm_audit (farm, "setting.create-secret", key, "{}", err);
}

bool
df_farm_setting_init_secret (DfFarm *farm, const char *key,
                             const char *value, char **stored, GError **err)
{
  *stored = NULL;
  if (!check_setting_key (key, err))
    return false;
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = setting_init_secret_locked (farm, key, value, err);
  if (!t.ok)
    return false;
  *stored = df_farm_setting_get (farm, key, err);
  if (!*stored && err && !*err)
    g_set_error (err, DF_ERROR, DF_ERROR_IO, "setting %s vanished", key);
  return *stored != NULL;
}

/* ---- admin token ------------------------------------------------------ */

char *
df_farm_admin_token (DfFarm *farm, bool create, GError **err)
{
  if (!create)
    return df_farm_setting_get (farm, DF_ADMIN_TOKEN_SETTING, err);
  g_autoptr (DfSecret) fresh = df_random_hex (DF_ADMIN_TOKEN_BYTES, err);
  char *stored = NULL;
  if (fresh == NULL
      || !df_farm_setting_init_secret (farm, DF_ADMIN_TOKEN_SETTING, fresh,
                                       &stored, err))
    return NULL;
  return stored;
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

