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
#include "defaults.h"

#include <string.h>

void
df_chap_free (DfChap *c)
{
  if (c == NULL)
    return;
  g_free (c->device);
  g_free (c->user);
  df_secret_free (c->secret);
  df_secret_free (c->mutual_secret);
  g_free (c->initiator);
  g_free (c->initiator_setting);
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
  g_autoptr (DfDbStmt) st = df_farm_stmt (farm,
    "UPDATE devices SET chap_user = ?, chap_secret = ?, mutual_secret = ? "
    "WHERE name = ? COLLATE NOCASE", err);
  GError *local = NULL;

  if (st == NULL)
    return false;
  df_db_bind_text (st, 1, user);
  df_db_bind_text (st, 2, secret);
  df_db_bind_text (st, 3, mutual);
  df_db_bind_text (st, 4, device);
  if (!df_db_run (st, &local))
    {
      /* A constraint (the unique index on chap_user) is the one way a
       * valid update fails short of an I/O or lock error. */
      if (g_error_matches (local, DF_ERROR, DF_ERROR_EXISTS)
          || g_error_matches (local, DF_ERROR, DF_ERROR_INVALID))
        {
          g_clear_error (&local);
          g_set_error (&local, DF_ERROR, DF_ERROR_EXISTS,
                       "CHAP user '%s' is already used by another device",
                       user);
        }
      else
        g_prefix_error (&local, "set CHAP: ");
      g_propagate_error (err, local);
      return false;
    }
  return df_farm_changed_row (farm, err, "no device '%s'", device);
}

bool
df_farm_chap_set (DfFarm *farm, const char *device, const char *user,
                  const char *secret, const char *mutual, GError **err)
{
  g_autofree char *detail = NULL;

  if (!df_validate_name ("device", device, err)
      || !validate_chap (user, secret, mutual, err))
    return false;
  /* The audit row names the user and the mode, never a secret. */
  detail = user == NULL
               ? g_strdup ("{\"chap\":\"none\"}")
               : g_strdup_printf ("{\"chap\":\"%s\",\"user_len\":%zu}",
                                  mutual ? "mutual" : "one-way",
                                  strlen (user));
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = chap_update (farm, device, user, secret, mutual, err)
           && df_farm_audit_row (farm, "device.chap", device, detail, err);
  return t.ok;
}

/* The one reader of CHAP credentials: the device sql selects for key
 * (bound at 1).  A device without a user (or secret) has none at all. */
#define CHAP_COLUMNS \
  "SELECT name, chap_user, chap_secret, mutual_secret, generation, " \
  "iscsi_initiator FROM devices "

static DfChap *
chap_query (DfFarm *farm, const char *sql, const char *key, GError **err)
{
  g_autoptr (DfDbStmt) st = df_farm_stmt (farm, sql, err);
  DfChap *c;
  int rc;

  if (st == NULL)
    return NULL;
  df_db_bind_text (st, 1, key);
  rc = df_db_step (st, err);
  if (rc < 0)
    {
      g_prefix_error (err, "get CHAP: ");
      return NULL;
    }
  if (rc == 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND, "no device '%s'", key);
      return NULL;
    }
  c = g_new0 (DfChap, 1);
  c->device = df_db_col_dup (st, 0);
  c->generation = df_db_col_int64 (st, 4);
  if (!df_db_col_is_null (st, 5))
    c->initiator_setting = df_db_col_dup (st, 5);
  if (df_db_col_is_null (st, 1) || df_db_col_is_null (st, 2))
    return c;
  c->user = df_db_col_dup (st, 1);
  c->secret = df_db_col_dup (st, 2);
  c->mutual_secret = df_db_col_dup (st, 3);
  return c;
}

/* The access rule of c's target under the farm's policy. */
static DfChap *
chap_apply_policy (DfFarm *farm, DfChap *c)
{
  bool required = df_farm_iscsi_chap_policy (farm) == DF_ISCSI_CHAP_REQUIRED;

  if (c == NULL)
    return NULL;
  c->chap_required = required || c->user != NULL;
  if (c->initiator_setting == NULL)
    c->initiator = required ? df_device_initiator_iqn (c->device) : NULL;
  else if (strcmp (c->initiator_setting, DF_INITIATOR_ANY) != 0)
    c->initiator = g_ascii_strdown (c->initiator_setting, -1);
  return c;
}

DfChap *
df_farm_chap_get (DfFarm *farm, const char *key, GError **err)
{
  char mac[18];

  if (df_parse_mac (key, mac, NULL))
    return chap_apply_policy (
        farm, chap_query (farm, CHAP_COLUMNS "WHERE mac = ?", mac, err));
  return chap_apply_policy (
      farm, chap_query (farm, CHAP_COLUMNS "WHERE name = ? COLLATE NOCASE",
                        key, err));
}

DfChap *
df_farm_chap_find_user (DfFarm *farm, const char *user, GError **err)
{
  return chap_apply_policy (
      farm, chap_query (farm, CHAP_COLUMNS "WHERE chap_user = ?", user, err));
}

GPtrArray *
df_farm_chap_open_devices (DfFarm *farm, GError **err)
{
  g_autoptr (DfDbStmt) st = df_farm_stmt (farm,
    "SELECT name FROM devices WHERE chap_user IS NULL ORDER BY name", err);

  if (st == NULL)
    return NULL;
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  int r;
  while ((r = df_db_step (st, err)) == 1)
    g_ptr_array_add (names, df_db_col_dup (st, 0));
  return r == 0 ? g_steal_pointer (&names) : NULL;
}

/* Kept for callers of the older API: the same reader, as two strings
 * (the caller frees *secret with df_secret_free).  An unknown device has
 * no credentials, as before. */
bool
df_farm_device_chap (DfFarm *farm, const char *device, char **user,
                     char **secret, GError **err)
{
  GError *local = NULL;
  g_autoptr (DfChap) c = df_farm_chap_get (farm, device, &local);

  *user = *secret = NULL;
  if (g_error_matches (local, DF_ERROR, DF_ERROR_NOT_FOUND))
    {
      g_error_free (local);
      return true;
    }
  if (c == NULL)
    {
      g_propagate_error (err, local);
      return false;
    }
  *user = g_steal_pointer (&c->user);
  *secret = g_steal_pointer (&c->secret);
  return true;
}

/* ---- the farm's iSCSI policy and initiator bindings ------------------- */

static const char *const policy_names[] = {
  [DF_ISCSI_CHAP_OPTIONAL] = "optional",
  [DF_ISCSI_CHAP_REQUIRED] = "required",
};

const char *
df_iscsi_chap_policy_name (DfIscsiChapPolicy p)
{
  return policy_names[p];
}

bool
df_iscsi_chap_policy_parse (const char *s, DfIscsiChapPolicy *out,
                            GError **err)
{
  for (guint i = 0; i < G_N_ELEMENTS (policy_names); i++)
    if (g_strcmp0 (s, policy_names[i]) == 0)
      {
        *out = (DfIscsiChapPolicy) i;
        return true;
      }
  g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
               "iscsi-chap must be required or optional, not '%s'",
               s ? s : "");
  return false;
}

DfIscsiChapPolicy
df_farm_iscsi_chap_policy (DfFarm *farm)
{
  g_autofree char *v = df_farm_setting_get (farm, DF_ISCSI_CHAP_SETTING,
                                            NULL);
  DfIscsiChapPolicy p = DF_ISCSI_CHAP_OPTIONAL;

  if (v != NULL && !df_iscsi_chap_policy_parse (v, &p, NULL))
    p = DF_ISCSI_CHAP_REQUIRED; /* a value we do not know: the safe side */
  return p;
}

bool
df_farm_iscsi_chap_policy_set (DfFarm *farm, DfIscsiChapPolicy p,
                               GError **err)
{
  return df_farm_setting_set (farm, DF_ISCSI_CHAP_SETTING,
                              p == DF_ISCSI_CHAP_OPTIONAL
                                  ? NULL
                                  : df_iscsi_chap_policy_name (p),
                              err);
}

bool
df_validate_iscsi_name (const char *what, const char *name, GError **err)
{
  size_t n = name ? strlen (name) : 0;

  if (n < 5 || n > 223
      || !(g_ascii_strncasecmp (name, "iqn.", 4) == 0
           || g_ascii_strncasecmp (name, "eui.", 4) == 0
           || g_ascii_strncasecmp (name, "naa.", 4) == 0))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "%s '%s': an iSCSI name starts with iqn., eui. or naa. "
                   "and has at most 223 bytes", what, name ? name : "");
      return false;
    }
  for (size_t i = 0; i < n; i++)
    if (!g_ascii_isalnum (name[i]) && !strchr (".:-", name[i]))
      {
        g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                     "%s: byte 0x%02x at %zu is not one of [a-z0-9.:-]",
                     what, (unsigned) (uint8_t) name[i], i);
        return false;
      }
  return true;
}

static bool
initiator_update (DfFarm *farm, const char *device, const char *initiator,
                  GError **err)
{
  const DfParam p[] = { DF_TEXT (initiator), DF_TEXT (device) };

  if (!df_farm_exec (farm, "UPDATE devices SET iscsi_initiator = ? "
                     "WHERE name = ? COLLATE NOCASE", p, G_N_ELEMENTS (p),
                     err))
    return false;
  return df_farm_changed_row (farm, err, "no device '%s'", device);
}

bool
df_farm_device_initiator_set (DfFarm *farm, const char *device,
                              const char *initiator, GError **err)
{
  g_autoptr (GString) detail = g_string_new ("{\"iscsi_initiator\":");

  if (!df_validate_name ("device", device, err)
      || (initiator && strcmp (initiator, DF_INITIATOR_ANY) != 0
          && !df_validate_iscsi_name ("iSCSI initiator", initiator, err)))
    return false;
  df_farm_json_str (detail, initiator);
  g_string_append_c (detail, '}');
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = initiator_update (farm, device, initiator, err)
           && df_farm_audit_row (farm, "device.iscsi-initiator", device,
                                 detail->str, err);
  return t.ok;
}
