/* diskfarm bootstrap: one-time boot tokens.  See boottoken.h. */
#include "boottoken.h"
#include "common.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <string.h>

#define HMAC_LEN 32
#define HMAC_B64_LEN 43               /* base64url of 32 bytes, unpadded */
#define TOKEN_MAX 64                  /* 20 + 1 + 8 + 1 + 43 fits */
#define PRUNE_EVERY 256               /* redeems between sweeps */

struct DfBootTokens {
  guint8 key[DF_BOOT_TOKEN_KEY_LEN];
  GHashTable *used;         /* token string (owned) -> expiry (gint64 *) */
  guint redeems;
};

DfBootTokens *
df_boot_tokens_new (const guint8 *key)
{
  DfBootTokens *t = g_new0 (DfBootTokens, 1);
  memcpy (t->key, key, sizeof t->key);
  t->used = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  return t;
}

void
df_boot_tokens_free (DfBootTokens *t)
{
  if (!t)
    return;
  OPENSSL_cleanse (t->key, sizeof t->key);
  g_hash_table_destroy (t->used);
  g_free (t);
}

/* ---- the farm's key --------------------------------------------------- */

static bool
key_from_hex (const char *hex, guint8 *key)
{
  if (strlen (hex) != 2 * DF_BOOT_TOKEN_KEY_LEN)
    return false;
  for (guint i = 0; i < DF_BOOT_TOKEN_KEY_LEN; i++)
    {
      int hi = g_ascii_xdigit_value (hex[2 * i]);
      int lo = g_ascii_xdigit_value (hex[2 * i + 1]);
      if (hi < 0 || lo < 0)
        return false;
      key[i] = (guint8) (hi << 4 | lo);
    }
  return true;
}

DfBootTokens *
df_boot_tokens_from_farm (DfFarm *farm, GError **err)
{
  guint8 fresh[DF_BOOT_TOKEN_KEY_LEN], key[DF_BOOT_TOKEN_KEY_LEN];
  char hex[2 * DF_BOOT_TOKEN_KEY_LEN + 1];
  if (RAND_bytes (fresh, sizeof fresh) != 1)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_IO,
                   "no random bytes for the boot token key");
      return NULL;
    }
  for (guint i = 0; i < sizeof fresh; i++)
    g_snprintf (hex + 2 * i, 3, "%02x", fresh[i]);
  char *stored = NULL;
  bool ok = df_farm_setting_init_secret (farm, DF_BOOT_TOKEN_SETTING, hex,
                                         &stored, err);
  OPENSSL_cleanse (fresh, sizeof fresh);
  OPENSSL_cleanse (hex, sizeof hex);
  if (!ok)
    return NULL;
  ok = key_from_hex (stored, key);
  OPENSSL_cleanse (stored, strlen (stored));
  g_free (stored);
  if (!ok)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID, "farm setting "
                   DF_BOOT_TOKEN_SETTING " is not %u hex digits",
                   2 * DF_BOOT_TOKEN_KEY_LEN);
      return NULL;
    }
  DfBootTokens *t = df_boot_tokens_new (key);
  OPENSSL_cleanse (key, sizeof key);
  return t;
}

/* ---- tokens ----------------------------------------------------------- */

/* base64url(HMAC(key, "diskfarm-boot-v1|mac|xid|time")) into out. */
static void
token_mac (const DfBootTokens *t, const char *mac, const char *xid_hex,
           gint64 at_s, char out[HMAC_B64_LEN + 1])
{
  g_autofree char *msg = g_strdup_printf ("diskfarm-boot-v1|%s|%s|%"
                                          G_GINT64_FORMAT, mac, xid_hex,
                                          at_s);
  guint8 md[HMAC_LEN];
  unsigned int md_len = 0;
  HMAC (EVP_sha256 (), t->key, sizeof t->key, (const guint8 *) msg,
        strlen (msg), md, &md_len);
  g_assert (md_len == HMAC_LEN);
  g_autofree char *b64 = g_base64_encode (md, sizeof md);
  g_assert (strlen (b64) == HMAC_B64_LEN + 1);      /* one '=' of padding */
  for (guint i = 0; i < HMAC_B64_LEN; i++)
    out[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : b64[i];
  out[HMAC_B64_LEN] = '\0';
}

char *
df_boot_token_issue (const DfBootTokens *t, const char *mac, guint32 xid,
                     gint64 now_s)
{
  char xid_hex[9], h[HMAC_B64_LEN + 1];
  g_snprintf (xid_hex, sizeof xid_hex, "%08x", xid);
  token_mac (t, mac, xid_hex, now_s, h);
  return g_strdup_printf ("%" G_GINT64_FORMAT ".%s.%s", now_s, xid_hex, h);
}

/* Split T.XXXXXXXX.H: *at_s, xid_hex (8 lower-case hex + NUL), *h. */
static bool
token_split (const char *token, gint64 *at_s, char xid_hex[9],
             const char **h)
{
  if (!token || strlen (token) > TOKEN_MAX)
    return false;
  const char *dot1 = strchr (token, '.');
  if (!dot1 || dot1 == token || dot1 - token > 12
      || (token[0] == '0' && dot1 - token > 1))
    return false;                     /* one spelling per time: no 0123 */
  gint64 v = 0;
  for (const char *c = token; c < dot1; c++)
    {
      if (!g_ascii_isdigit (*c))
        return false;
      v = v * 10 + (*c - '0');
    }
  const char *x = dot1 + 1;
  for (guint i = 0; i < 8; i++)
    if (!g_ascii_isxdigit (x[i]) || g_ascii_isupper (x[i]))
      return false;
  if (x[8] != '.' || strlen (x + 9) != HMAC_B64_LEN)
    return false;
  memcpy (xid_hex, x, 8);
  xid_hex[8] = '\0';
  *at_s = v;
  *h = x + 9;
  return true;
}

/* Forget the used tokens that expired (every PRUNE_EVERY redeems). */
static void
prune_used (DfBootTokens *t, gint64 now_s)
{
  if (++t->redeems % PRUNE_EVERY)
    return;
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init (&it, t->used);
  while (g_hash_table_iter_next (&it, &k, &v))
    if (*(gint64 *) v < now_s)
      g_hash_table_iter_remove (&it);
}

DfBootTokenCheck
df_boot_token_redeem (DfBootTokens *t, const char *token, const char *mac,
                      gint64 now_s)
{
  gint64 at_s;
  char xid_hex[9], want[HMAC_B64_LEN + 1];
  const char *h;
  prune_used (t, now_s);
  if (!token_split (token, &at_s, xid_hex, &h))
    return DF_BOOT_TOKEN_MALFORMED;
  token_mac (t, mac, xid_hex, at_s, want);
  if (CRYPTO_memcmp (want, h, HMAC_B64_LEN) != 0)
    return DF_BOOT_TOKEN_FORGED;
  if (now_s - at_s > DF_BOOT_TOKEN_TTL_S || at_s - now_s > DF_BOOT_TOKEN_SKEW_S)
    return DF_BOOT_TOKEN_EXPIRED;
  if (g_hash_table_contains (t->used, token))
    return DF_BOOT_TOKEN_REUSED;
  gint64 *expiry = g_new (gint64, 1);
  *expiry = at_s + DF_BOOT_TOKEN_TTL_S;
  g_hash_table_insert (t->used, g_strdup (token), expiry);
  return DF_BOOT_TOKEN_OK;
}

const char *
df_boot_token_check_str (DfBootTokenCheck c)
{
  switch (c)
    {
    case DF_BOOT_TOKEN_OK:
      return "valid";
    case DF_BOOT_TOKEN_MALFORMED:
      return "malformed";
    case DF_BOOT_TOKEN_EXPIRED:
      return "expired";
    case DF_BOOT_TOKEN_FORGED:
      return "does not match this MAC or farm";
    case DF_BOOT_TOKEN_REUSED:
      return "already used";
    }
  return "?";
}
