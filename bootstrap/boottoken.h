/* diskfarm bootstrap: one-time boot tokens binding the boot script to the
 * ProxyDHCP exchange.
 *
 * The ProxyDHCP answer to an iPXE client carries a script URL with
 * &token=T.XXXXXXXX.H where T is the issue time (Unix seconds), XXXXXXXX
 * the DHCP transaction id (hex) and H = base64url(HMAC-SHA256(key,
 * "diskfarm-boot-v1|" MAC "|" XXXXXXXX "|" T)).  Only a token that checks
 * against the MAC of the request, is at most DF_BOOT_TOKEN_TTL_S old and
 * was never redeemed on this server gets the secret-bearing script and a
 * new boot generation (http.c).
 *
 * The key is one per farm (DF_BOOT_TOKEN_SETTING in the farm DB, created
 * by the first bootstrapsvc that starts), so any bootstrap server redeems
 * a token another one issued.  Used tokens are remembered in memory, per
 * server, until they expire: a token could be redeemed once on each other
 * bootstrap server of the farm within its lifetime.
 *
 * Not thread-safe: issued and redeemed on the main loop (ProxyDHCP and
 * HTTP both run there). */
#pragma once

#include "farm.h"

#include <glib.h>
#include <stdbool.h>

#define DF_BOOT_TOKEN_TTL_S 60        /* lifetime after issue */
#define DF_BOOT_TOKEN_SKEW_S 5        /* clocks of two servers may differ */
#define DF_BOOT_TOKEN_KEY_LEN 32
#define DF_BOOT_TOKEN_SETTING "bootstrap.token-key"   /* 64 hex digits */

typedef struct DfBootTokens DfBootTokens;

typedef enum {
  DF_BOOT_TOKEN_OK,
  DF_BOOT_TOKEN_MALFORMED,    /* not T.XXXXXXXX.H */
  DF_BOOT_TOKEN_EXPIRED,      /* older than the TTL, or from the future */
  DF_BOOT_TOKEN_FORGED,       /* HMAC mismatch: other MAC, tampered, other farm */
  DF_BOOT_TOKEN_REUSED,       /* redeemed before on this server */
} DfBootTokenCheck;

/* key: DF_BOOT_TOKEN_KEY_LEN bytes, copied (and wiped on free). */
DfBootTokens *df_boot_tokens_new (const guint8 *key);
void df_boot_tokens_free (DfBootTokens *t);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfBootTokens, df_boot_tokens_free)

/* The farm's key, created in the farm DB when absent (random, OpenSSL);
 * NULL + err on a DB error or a malformed stored key. */
DfBootTokens *df_boot_tokens_from_farm (DfFarm *farm, GError **err);

/* A token for mac (canonical) in DHCP transaction xid at now_s (new
 * string of [0-9A-Za-z._-] only: safe in a URL and an iPXE file name). */
char *df_boot_token_issue (const DfBootTokens *t, const char *mac,
                           guint32 xid, gint64 now_s);

/* Check token for mac at now_s; on DF_BOOT_TOKEN_OK it is marked used. */
DfBootTokenCheck df_boot_token_redeem (DfBootTokens *t, const char *token,
                                       const char *mac, gint64 now_s);

/* A short English description of a check result ("expired", ...). */
const char *df_boot_token_check_str (DfBootTokenCheck c);
