/* diskfarm: NBD TLS in the farm: each device's pre-shared key (migration 6
 * column devices.nbd_psk) and the farm's TLS policy (setting nbd-tls).
 *
 * A key is DF_NBD_PSK_BYTES random bytes made here (never given by a
 * user), stored as lowercase hex: the very text of nbdkit's PSK file line
 * "<device>:<hex>", which is what the client needs.  Keys never appear in
 * the audit log or any message; every copy is wiped (df_secret_free). */
#include "farm.h"
#include "farm-private.h"
#include "common.h"

#include <openssl/rand.h>
#include <string.h>

void
df_nbd_identity_free (DfNbdIdentity *id)
{
  if (id == NULL)
    return;
  g_free (id->device);
  g_free (id->mac);
  df_secret_free (id->psk_hex);
  g_free (id);
}

/* A new random key as 2 * DF_NBD_PSK_BYTES hex digits (df_secret_free). */
static char *
psk_make (GError **err)
{
  uint8_t key[DF_NBD_PSK_BYTES];
  char *hex;

  if (RAND_bytes (key, sizeof key) != 1)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_IO,
                   "no random bytes for an NBD PSK");
      return NULL;
    }
  hex = g_malloc (2 * sizeof key + 1);
  for (size_t i = 0; i < sizeof key; i++)
    g_snprintf (hex + 2 * i, 3, "%02x", key[i]);
  df_secret_wipe (key, sizeof key);
  return hex;
}

static bool
psk_update (DfFarm *farm, const char *device, const char *hex, GError **err)
{
  const DfParam p[] = { DF_TEXT (hex), DF_TEXT (device) };

  if (!df_farm_exec (farm, "UPDATE devices SET nbd_psk = ? "
                     "WHERE name = ? COLLATE NOCASE", p, G_N_ELEMENTS (p),
                     err))
    {
      g_prefix_error (err, "set NBD PSK: ");
      return false;
    }
  return df_farm_changed_row (farm, err, "no device '%s'", device);
}

/* Store hex (NULL: none) for device, audited without the key. */
static bool
psk_store (DfFarm *farm, const char *device, const char *hex, GError **err)
{
  if (!df_validate_name ("device", device, err))
    return false;
  const char *detail = hex != NULL ? "{\"nbd_psk\":\"generated\"}"
                                   : "{\"nbd_psk\":\"none\"}";
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = psk_update (farm, device, hex, err)
           && df_farm_audit_row (farm, "device.nbd-psk", device, detail, err);
  return t.ok;
}

bool
df_farm_nbd_psk_generate (DfFarm *farm, const char *device, char **hex,
                          GError **err)
{
  g_autoptr (DfSecret) key = psk_make (err);

  *hex = NULL;
  if (key == NULL || !psk_store (farm, device, key, err))
    return false;
  *hex = g_steal_pointer (&key);
  return true;
}

bool
df_farm_nbd_psk_clear (DfFarm *farm, const char *device, GError **err)
{
  return psk_store (farm, device, NULL, err);
}

DfNbdIdentity *
df_farm_nbd_identity (DfFarm *farm, const char *identity, GError **err)
{
  g_autoptr (DfDbStmt) st = NULL;
  DfNbdIdentity *id;
  int rc;

  if (!df_validate_name ("device", identity, err))
    return NULL;
  st = df_farm_stmt (farm,
                     "SELECT name, mac, nbd_psk FROM devices "
                     "WHERE name = ? COLLATE NOCASE", err);
  if (st == NULL)
    return NULL;
  df_db_bind_text (st, 1, identity);
  rc = df_db_step (st, err);
  if (rc < 0)
    return NULL;
  if (rc == 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND, "no device '%s'",
                   identity);
      return NULL;
    }
  id = g_new0 (DfNbdIdentity, 1);
  id->device = df_db_col_dup (st, 0);
  id->mac = df_db_col_dup (st, 1);
  id->psk_hex = df_db_col_dup (st, 2);
  return id;
}

/* ---- the farm's policy ------------------------------------------------ */

bool
df_farm_nbd_tls_get (DfFarm *farm, DfTlsMode *mode, bool *set, GError **err)
{
  GError *local = NULL;
  g_autofree char *v = df_farm_setting_get (farm, DF_SETTING_NBD_TLS, &local);

  *mode = DF_TLS_OFF;
  *set = false;
  if (local != NULL)
    {
      g_propagate_error (err, local);
      return false;
    }
  if (v == NULL)
    return true;
  if (!df_tls_mode_parse (v, mode, err))
    {
      g_prefix_error (err, "farm setting " DF_SETTING_NBD_TLS ": ");
      return false;
    }
  *set = true;
  return true;
}

bool
df_farm_nbd_tls_set (DfFarm *farm, DfTlsMode mode, GError **err)
{
  return df_farm_setting_set (farm, DF_SETTING_NBD_TLS,
                              df_tls_mode_name (mode), err);
}
