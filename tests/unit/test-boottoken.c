/* Unit tests: one-time boot tokens (bootstrap/boottoken.c), the script
 * URL ProxyDHCP hands out with one (proxydhcp.c), the auto-add rate limit
 * (ratelimit.c) and the tokenless script (script.c). */
#include "test-db.h"
#include "boottoken.h"
#include "common.h"
#include "proxydhcp.h"
#include "ratelimit.h"
#include "script.h"
#include "test-util.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

static const guint8 key1[DF_BOOT_TOKEN_KEY_LEN] = { 1, 2, 3, 4, 5, 6, 7, 8 };
static const guint8 key2[DF_BOOT_TOKEN_KEY_LEN] = { 9, 9, 9 };
#define MAC "52:54:00:12:34:56"
#define NOW 1800000000

static void
test_token_shape (void)
{
  g_autoptr (DfBootTokens) t = df_boot_tokens_new (key1);
  g_autofree char *tok = df_boot_token_issue (t, MAC, 0x12345678, NOW);
  g_assert_true (g_str_has_prefix (tok, "1800000000.12345678."));
  g_assert_cmpuint (strlen (tok), ==, 10 + 1 + 8 + 1 + 43);
  for (const char *c = tok; *c; c++)
    g_assert_true (g_ascii_isalnum (*c) || strchr ("._-", *c));
  /* Deterministic for one key and input; another xid, MAC or key differs. */
  g_autofree char *same = df_boot_token_issue (t, MAC, 0x12345678, NOW);
  g_autofree char *xid2 = df_boot_token_issue (t, MAC, 0x12345679, NOW);
  g_autoptr (DfBootTokens) t2 = df_boot_tokens_new (key2);
  g_autofree char *other = df_boot_token_issue (t2, MAC, 0x12345678, NOW);
  g_assert_cmpstr (tok, ==, same);
  g_assert_cmpstr (tok, !=, xid2);
  g_assert_cmpstr (tok, !=, other);
}

typedef struct {
  const char *name;
  gint64 redeem_at;          /* seconds after issue */
  const char *mac;           /* NULL: MAC */
  const char *token;         /* NULL: the issued token */
  DfBootTokenCheck want;
} RedeemCase;

static void
test_token_redeem (void)
{
  g_autoptr (DfBootTokens) t = df_boot_tokens_new (key1);
  g_autoptr (DfBootTokens) t2 = df_boot_tokens_new (key2);
  g_autofree char *tok = df_boot_token_issue (t, MAC, 0xabcdef01, NOW);
  g_autofree char *foreign = df_boot_token_issue (t2, MAC, 0xabcdef01, NOW);
  /* Tampered: one character of the HMAC, the time, the xid. */
  g_autofree char *bad_h = g_strdup (tok);
  bad_h[strlen (bad_h) - 1] = bad_h[strlen (bad_h) - 1] == 'A' ? 'B' : 'A';
  g_autofree char *bad_t = g_strdup (tok);
  bad_t[9] = bad_t[9] == '1' ? '2' : '1';
  g_autofree char *bad_x = g_strdup (tok);
  bad_x[11] = bad_x[11] == 'a' ? 'b' : 'a';
  g_autofree char *lead0 = g_strconcat ("0", tok, NULL);
  g_autofree char *upper = g_ascii_strup (tok, -1);
  const RedeemCase cases[] = {
    { "wrong MAC", 1, "52:54:00:12:34:57", NULL, DF_BOOT_TOKEN_FORGED },
    { "another farm's key", 1, NULL, foreign, DF_BOOT_TOKEN_FORGED },
    { "tampered HMAC", 1, NULL, bad_h, DF_BOOT_TOKEN_FORGED },
    { "tampered time", 1, NULL, bad_t, DF_BOOT_TOKEN_FORGED },
    { "tampered xid", 1, NULL, bad_x, DF_BOOT_TOKEN_FORGED },
    { "time with a leading zero", 1, NULL, lead0, DF_BOOT_TOKEN_MALFORMED },
    { "upper-cased", 1, NULL, upper, DF_BOOT_TOKEN_MALFORMED },
    { "empty", 1, NULL, "", DF_BOOT_TOKEN_MALFORMED },
    { "garbage", 1, NULL, "hello", DF_BOOT_TOKEN_MALFORMED },
    { "no HMAC", 1, NULL, "1800000000.abcdef01.", DF_BOOT_TOKEN_MALFORMED },
    { "expired", DF_BOOT_TOKEN_TTL_S + 1, NULL, NULL, DF_BOOT_TOKEN_EXPIRED },
    { "from the future", -DF_BOOT_TOKEN_SKEW_S - 1, NULL, NULL,
      DF_BOOT_TOKEN_EXPIRED },
    { "valid", DF_BOOT_TOKEN_TTL_S, NULL, NULL, DF_BOOT_TOKEN_OK },
    { "reused", 2, NULL, NULL, DF_BOOT_TOKEN_REUSED },
  };
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      const RedeemCase *c = &cases[i];
      g_test_message ("case: %s", c->name);
      DfBootTokenCheck got = df_boot_token_redeem (
        t, c->token ? c->token : tok, c->mac ? c->mac : MAC,
        NOW + c->redeem_at);
      g_assert_cmpstr (df_boot_token_check_str (got), ==,
                       df_boot_token_check_str (c->want));
    }
  g_assert_cmpint (df_boot_token_redeem (t, NULL, MAC, NOW), ==,
                   DF_BOOT_TOKEN_MALFORMED);
  /* Another server of the farm (same key, its own memory) takes it once. */
  g_autoptr (DfBootTokens) peer = df_boot_tokens_new (key1);
  g_assert_cmpint (df_boot_token_redeem (peer, tok, MAC, NOW + 3), ==,
                   DF_BOOT_TOKEN_OK);
  g_assert_cmpint (df_boot_token_redeem (peer, tok, MAC, NOW + 4), ==,
                   DF_BOOT_TOKEN_REUSED);
}

/* Used tokens are forgotten once expired, so memory stays bounded; a
 * forgotten token is still refused (expired). */
static void
test_token_prune (void)
{
  g_autoptr (DfBootTokens) t = df_boot_tokens_new (key1);
  g_autofree char *first = df_boot_token_issue (t, MAC, 1, NOW);
  g_assert_cmpint (df_boot_token_redeem (t, first, MAC, NOW), ==,
                   DF_BOOT_TOKEN_OK);
  for (guint i = 0; i < 600; i++)
    {
      g_autofree char *tok = df_boot_token_issue (t, MAC, 100 + i, NOW + 120);
      g_assert_cmpint (df_boot_token_redeem (t, tok, MAC, NOW + 120), ==,
                       DF_BOOT_TOKEN_OK);
    }
  g_assert_cmpint (df_boot_token_redeem (t, first, MAC, NOW + 120), ==,
                   DF_BOOT_TOKEN_EXPIRED);
}

#define URL "http://10.0.0.5:80/boot.ipxe?mac=${net0/mac}&uuid=${uuid}"

static void
test_proxydhcp_url (void)
{
  g_autoptr (DfBootTokens) t = df_boot_tokens_new (key1);
  DfProxyConfig cfg = { .address = inet_addr ("10.0.0.5"), .script_url = URL,
                        .tokens = t };
  DfDhcpRequest req = { .xid = htonl (0x01020304) };
  g_strlcpy (req.mac, MAC, sizeof req.mac);
  g_autofree char *u = df_proxydhcp_boot_file (&cfg, &req, cfg.script_url,
                                               NOW);
  g_autofree char *tok = df_boot_token_issue (t, MAC, 0x01020304, NOW);
  g_autofree char *want = g_strconcat (URL, "&token=", tok, NULL);
  g_assert_cmpstr (u, ==, want);
  g_assert_cmpuint (strlen (u), <=, 255);        /* fits option 67 */
  /* Boot files (TFTP names) carry no token; no tokens: the plain URL. */
  g_autofree char *f = df_proxydhcp_boot_file (&cfg, &req, "undionly.kpxe",
                                               NOW);
  g_assert_cmpstr (f, ==, "undionly.kpxe");
  cfg.tokens = NULL;
  g_autofree char *plain = df_proxydhcp_boot_file (&cfg, &req, cfg.script_url,
                                                   NOW);
  g_assert_cmpstr (plain, ==, URL);
}

static void
test_rate_limit (void)
{
  g_autoptr (DfRateLimit) r = df_rate_limit_new (3, 5, 60);
  gint64 t0 = 1000 * G_USEC_PER_SEC;
  for (guint i = 0; i < 3; i++)
    g_assert_cmpint (df_rate_limit_take (r, "10.0.0.1", t0), ==, DF_RATE_OK);
  g_assert_cmpint (df_rate_limit_take (r, "10.0.0.1", t0), ==,
                   DF_RATE_SOURCE);
  /* Another source is still served, until the total is used. */
  g_assert_cmpint (df_rate_limit_take (r, "10.0.0.2", t0), ==, DF_RATE_OK);
  g_assert_cmpint (df_rate_limit_take (r, "10.0.0.3", t0), ==, DF_RATE_OK);
  g_assert_cmpint (df_rate_limit_take (r, "10.0.0.4", t0), ==,
                   DF_RATE_TOTAL);
  /* A new window serves everyone again. */
  gint64 t1 = t0 + 60 * G_USEC_PER_SEC;
  g_assert_cmpint (df_rate_limit_take (r, "10.0.0.1", t1), ==, DF_RATE_OK);
  g_assert_cmpint (df_rate_limit_take (r, "10.0.0.4", t1), ==, DF_RATE_OK);
}

/* Refusal log lines: 20 a second, counted from the first of a second. */
static void
test_log_burst (void)
{
  DfLogBurst l = { 0 };
  gint64 t0 = 1000 * G_USEC_PER_SEC;

  for (guint i = 0; i < DF_LOG_BURST_PER_S; i++)
    g_assert_true (df_log_burst_allow (&l, t0 + i));
  g_assert_false (df_log_burst_allow (&l, t0 + G_USEC_PER_SEC));
  /* past the second: a new one, with its own 20 */
  gint64 t1 = t0 + G_USEC_PER_SEC + 1;
  for (guint i = 0; i < DF_LOG_BURST_PER_S; i++)
    g_assert_true (df_log_burst_allow (&l, t1 + i));
  g_assert_false (df_log_burst_allow (&l, t1 + G_USEC_PER_SEC));
}

static void
test_script_note (void)
{
  DfScriptTarget t[1] = { { "10.0.0.11", 3260 } };
  DfScriptParams p = { .device = "pc01", .vdisk = "win10", .generation = 7,
                       .targets = t, .n_targets = 1,
                       .rendered_by = "10.0.0.5",
                       .note = "no token ${x}, CHAP left out" };
  gboolean dropped;
  char *s = df_script_render (&p, &dropped);
  g_assert_nonnull (strstr (s, "\necho diskfarm: no token __x_, CHAP left "
                               "out\n"));
  g_assert_null (strstr (s, "password"));
  df_script_free (s);
  df_script_free (NULL);
}

/* Two servers of one farm (two handles on one farm DB): the first creates
 * the key, the second reads the same one, so a token issued by one is
 * redeemed by the other; the audit row never shows the key. */
static void
test_farm_key (void)
{
  g_autofree char *dir = g_dir_make_tmp ("df-boottoken-XXXXXX", NULL);
  g_autoptr (GError) err = NULL;
  g_autoptr (DfFarm) f1 = test_farm_open (dir, true, "bs1", &err);
  g_assert_no_error (err);
  g_autoptr (DfFarm) f2 = test_farm_open (dir, false, "bs2", &err);
  g_assert_no_error (err);
  g_autoptr (DfBootTokens) t1 = df_boot_tokens_from_farm (f1, &err);
  g_assert_no_error (err);
  g_autoptr (DfBootTokens) t2 = df_boot_tokens_from_farm (f2, &err);
  g_assert_no_error (err);
  g_autofree char *tok = df_boot_token_issue (t1, MAC, 7, NOW);
  g_assert_cmpint (df_boot_token_redeem (t2, tok, MAC, NOW + 1), ==,
                   DF_BOOT_TOKEN_OK);
  g_autofree char *key = df_farm_setting_get (f1, DF_BOOT_TOKEN_SETTING,
                                              &err);
  g_assert_cmpuint (strlen (key), ==, 64);
  g_autoptr (GPtrArray) audit = df_farm_audit_list (f1, 0, &err);
  guint created = 0;
  for (guint i = 0; i < audit->len; i++)
    {
      const DfAudit *a = audit->pdata[i];
      g_assert_null (strstr (a->detail ? a->detail : "", key));
      created += g_str_equal (a->action, "setting.create-secret")
                 && g_str_equal (a->object, DF_BOOT_TOKEN_SETTING);
    }
  g_assert_cmpuint (created, ==, 1);
  /* A malformed stored key is refused, not used. */
  g_assert_true (df_farm_setting_set (f1, DF_BOOT_TOKEN_SETTING, "xyz",
                                      &err));
  g_autoptr (DfBootTokens) t3 = df_boot_tokens_from_farm (f1, &err);
  g_assert_null (t3);
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_autofree char *cmd = g_strdup_printf ("rm -rf '%s'", dir);
  g_assert_cmpint (system (cmd), ==, 0);
}

static const TuTest tests[] = {
  { "/boottoken/shape", test_token_shape },
  { "/boottoken/redeem", test_token_redeem },
  { "/boottoken/prune", test_token_prune },
  { "/boottoken/proxydhcp-url", test_proxydhcp_url },
  { "/boottoken/rate-limit", test_rate_limit },
  { "/boottoken/log-burst", test_log_burst },
  { "/boottoken/script-note", test_script_note },
  { "/boottoken/farm-key", test_farm_key },
};

TU_MAIN_SETUP (test_db_init, tests)
