/* diskfarm: per-device iSCSI CHAP credentials (migration 3 columns
 * devices.chap_user, chap_secret, mutual_secret).
 *
 * Secret rules (checked here, before the DB is touched): 12 to 255 bytes
 * (RFC 7143 12.1.3 asks for at least 96 bits of randomness; 255 is the
 * longest CHAP secret initiators accept; Windows wants 12-16), no NUL;
 * the mutual (target) secret must differ from the initiator secret
 * (RFC 7143 12.1.3: one secret must not serve both directions).  User
 * names: 1-255 printable ASCII bytes, unique across devices.
 * Secrets never appear in the audit log or any message. */
#include "farm.h"
#include "farm-private.h"
#include "common.h"

#include <string.h>

void
df_chap_free (DfChap *c)
{
  if (c == NULL)
    return;
  g_free (c->device);
  g_free (c->user);
  if (c->secret)
    memset (c->secret, 0, strlen (c->secret));
  if (c->mutual_secret)
    memset (c->mutual_secret, 0, strlen (c->mutual_secret));
  g_free (c->secret);
  g_free (c->mutual_secret);
  g_free (c);
}

bool
df_chap_validate_secret (const char *what, const char *secret, size_t len,
                         GError **err)
{
  if (len < DF_CHAP_SECRET_MIN || len > DF_CHAP_SECRET_MAX)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "%s: %zu bytes; CHAP secrets must be %u to %u bytes",
                   what, len, DF_CHAP_SECRET_MIN, DF_CHAP_SECRET_MAX);
      return false;
    }
  if (memchr (secret, '\0', len) != NULL)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "%s: contains a NUL byte", what);
      return false;
    }
  return true;
}

bool
df_chap_validate_user (const char *user, GError **err)
{
  size_t n = strlen (user);

  if (n == 0 || n > 255)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "CHAP user name: %zu bytes (1-255 allowed)", n);
      return false;
    }
  for (size_t i = 0; i < n; i++)
    if (!g_ascii_isgraph (user[i]))
      {
        g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                     "CHAP user name: byte 0x%02x at %zu is not printable",
                     (unsigned) (uint8_t) user[i], i);
        return false;
      }
  return true;
}

static bool
validate_chap (const char *user, const char *secret, const char *mutual,
               GError **err)
{
  if (user == NULL)
    return secret == NULL && mutual == NULL
           ? true
           : (g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                           "a CHAP secret needs a CHAP user"), false);
  if (!df_chap_validate_user (user, err))
    return false;
  if (secret == NULL)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "CHAP user without a secret");
      return false;
    }
  if (!df_chap_validate_secret ("CHAP secret", secret, strlen (secret), err))
    return false;
  if (mutual != NULL)
    {
      if (!df_chap_validate_secret ("mutual CHAP secret", mutual,
                                    strlen (mutual), err))
        return false;
      if (strcmp (mutual, secret) == 0)
        {
          g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                       "the mutual CHAP secret must differ from the "
                       "initiator's CHAP secret");
          return false;
        }
    }
  return true;
}

static bool
chap_update (DfFarm *farm, const char *device, const char *user,
             const char *secret, const char *mutual, GError **err)
{
  g_autoptr (DfFarmStmt) st = df_farm_prepare (farm,
    "UPDATE devices SET chap_user = ?, chap_secret = ?, mutual_secret = ? "
    "WHERE name = ? COLLATE NOCASE", err);
  int rc;

  if (st == NULL)
    return false;
  df_sql_bind_text (st, 1, user);
  df_sql_bind_text (st, 2, secret);
  df_sql_bind_text (st, 3, mutual);
  df_sql_bind_text (st, 4, device);
  rc = sqlite3_step (st);
  if (rc != SQLITE_DONE)
    {
      if ((rc & 0xff) == SQLITE_CONSTRAINT)
        g_set_error (err, DF_ERROR, DF_ERROR_EXISTS,
                     "CHAP user '%s' is already used by another device",
                     user);
      else
        df_farm_set_sqlite_error (err, df_farm_sqlite (farm), rc,
                                  "farm.db: set CHAP");
      return false;
    }
  if (sqlite3_changes (df_farm_sqlite (farm)) == 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND, "no device '%s'",
                   device);
      return false;
    }
  return true;
}

bool
df_farm_chap_set (DfFarm *farm, const char *device, const char *user,
                  const char *secret, const char *mutual, GError **err)
{
  g_autofree char *detail = NULL;

  if (!df_validate_name ("device", device, err)
      || !validate_chap (user, secret, mutual, err))
    return false;
  if (!df_farm_begin (farm, err))
    return false;
  /* The audit row names the user and the mode, never a secret. */
  detail = user == NULL
               ? g_strdup ("{\"chap\":\"none\"}")
               : g_strdup_printf ("{\"chap\":\"%s\",\"user_len\":%zu}",
                                  mutual ? "mutual" : "one-way",
                                  strlen (user));
  if (!chap_update (farm, device, user, secret, mutual, err)
      || !df_farm_audit (farm, "device.chap", device, detail, err))
    {
      df_farm_rollback (farm);
      return false;
    }
  return df_farm_commit (farm, err);
}

static DfChap *
chap_query (DfFarm *farm, const char *sql, const char *key, GError **err)
{
  g_autoptr (DfFarmStmt) st = df_farm_prepare (farm, sql, err);
  DfChap *c;
  int rc;

  if (st == NULL)
    return NULL;
  df_sql_bind_text (st, 1, key);
  rc = sqlite3_step (st);
  if (rc == SQLITE_DONE)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND, "no device '%s'", key);
      return NULL;
    }
  if (rc != SQLITE_ROW)
    {
      df_farm_set_sqlite_error (err, df_farm_sqlite (farm), rc,
                                "farm.db: get CHAP");
      return NULL;
    }
  c = g_new0 (DfChap, 1);
  c->device = df_sql_col_dup (st, 0);
  c->user = df_sql_col_dup (st, 1);
  c->secret = df_sql_col_dup (st, 2);
  c->mutual_secret = df_sql_col_dup (st, 3);
  c->generation = sqlite3_column_int64 (st, 4);
  if (c->user == NULL || c->secret == NULL)
    {
      g_clear_pointer (&c->user, g_free);
      g_clear_pointer (&c->secret, g_free);
      g_clear_pointer (&c->mutual_secret, g_free);
    }
  return c;
}

DfChap *
df_farm_chap_get (DfFarm *farm, const char *key, GError **err)
{
  char mac[18];

  if (df_parse_mac (key, mac, NULL))
    return chap_query (farm,
                       "SELECT name, chap_user, chap_secret, mutual_secret, "
                       "generation FROM devices WHERE mac = ?", mac, err);
  return chap_query (farm,
                     "SELECT name, chap_user, chap_secret, mutual_secret, "
                     "generation FROM devices WHERE name = ? COLLATE NOCASE",
                     key, err);
}

DfChap *
df_farm_chap_find_user (DfFarm *farm, const char *user, GError **err)
{
  return chap_query (farm,
                     "SELECT name, chap_user, chap_secret, mutual_secret, "
                     "generation FROM devices WHERE chap_user = ?", user,
                     err);
}

GPtrArray *
df_farm_chap_open_devices (DfFarm *farm, GError **err)
{
  g_autoptr (DfFarmStmt) st = df_farm_prepare (farm,
    "SELECT name FROM devices WHERE chap_user IS NULL ORDER BY name", err);
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  int rc;

  if (st == NULL)
    return NULL;
  while ((rc = sqlite3_step (st)) == SQLITE_ROW)
    g_ptr_array_add (names, df_sql_col_dup (st, 0));
  if (rc != SQLITE_DONE)
    {
      df_farm_set_sqlite_error (err, df_farm_sqlite (farm), rc,
                                "farm.db: list devices");
      return NULL;
    }
  return g_steal_pointer (&names);
}
