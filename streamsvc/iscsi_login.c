/* streamsvc: iSCSI login phase (RFC 7143 6, 13), CHAP (RFC 1994,
 * RFC 7143 12.1.3), target names and SendTargets.
 *
 * Login is a state machine over (stage, auth state):
 *
 *   stage 0 (security)  AUTH_START --AuthMethod=None--> NONE_CHOSEN
 *                                  --AuthMethod=CHAP--> CHAP_A
 *                       CHAP_A --CHAP_A=5--> (send CHAP_I, CHAP_C) CHAP_R
 *                       CHAP_R --CHAP_N, CHAP_R ok--> DONE
 *                       transit out of stage 0 only from NONE_CHOSEN
 *                       (no CHAP required) or DONE
 *   stage 1 (operational) key negotiation
 *   T=1, NSG=3          full feature phase: session registered, export
 *                       opened (normal sessions)
 *
 * Any failure answers one Login Response with a status class 2/3 and
 * closes the connection.  Secrets are never logged; CHAP failures log the
 * user name and the reason only.
 */
#define G_LOG_DOMAIN "streamsvc-iscsi"

#include "iscsi_int.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <string.h>

#include "common.h"
#include "layer_account.h"

/* ---- CHAP primitives ------------------------------------------------------ */

void
iscsi_chap_response (uint8_t id, const uint8_t *secret, size_t slen,
                     const uint8_t *chal, size_t clen, uint8_t out[16])
{
  EVP_MD_CTX *md = EVP_MD_CTX_new ();
  unsigned int n = 16;

  g_assert (md != NULL);
  EVP_DigestInit_ex (md, EVP_md5 (), NULL);
  EVP_DigestUpdate (md, &id, 1);
  EVP_DigestUpdate (md, secret, slen);
  EVP_DigestUpdate (md, chal, clen);
  EVP_DigestFinal_ex (md, out, &n);
  EVP_MD_CTX_free (md);
}

/* Challenges handed out by the target (bounded history, in t): a repeat
 * is drawn again, so no challenge is ever reused, and a CHAP_C from an
 * initiator that matches one of ours is a reflection. */
#define CHAL_HISTORY 65536u

static void
chal_remember_locked (DfIscsiTarget *t, const uint8_t *c)
{
  GBytes *b = g_bytes_new (c, ISCSI_CHAP_CHALLENGE_LEN);

  g_hash_table_add (t->chal_seen, b);
  g_queue_push_tail (&t->chal_order, b);
  if (t->chal_order.length > CHAL_HISTORY)
    g_hash_table_remove (t->chal_seen, g_queue_pop_head (&t->chal_order));
}

void
iscsi_chap_new_challenge (DfIscsiTarget *t,
                          uint8_t out[ISCSI_CHAP_CHALLENGE_LEN])
{
  g_mutex_lock (&t->chal_lock);
  for (;;)
    {
      g_autoptr (GBytes) probe = NULL;

      if (RAND_bytes (out, ISCSI_CHAP_CHALLENGE_LEN) != 1)
        g_error ("RAND_bytes failed: no randomness for CHAP");
      probe = g_bytes_new_static (out, ISCSI_CHAP_CHALLENGE_LEN);
      if (!g_hash_table_contains (t->chal_seen, probe))
        break;
    }
  chal_remember_locked (t, out);
  g_mutex_unlock (&t->chal_lock);
}

bool
iscsi_chap_is_ours (DfIscsiTarget *t, const uint8_t *chal, size_t len)
{
  g_autoptr (GBytes) probe = g_bytes_new_static (chal, len);
  bool ours;

  g_mutex_lock (&t->chal_lock);
  ours = g_hash_table_contains (t->chal_seen, probe);
  g_mutex_unlock (&t->chal_lock);
  return ours;
}

/* ---- target names --------------------------------------------------------- */

char *
iscsi_target_to_export (const char *iqn, GError **err)
{
  const char *rest;
  char mac[18];

  if (iqn == NULL
      || g_ascii_strncasecmp (iqn, DF_IQN_PREFIX,
                              strlen (DF_IQN_PREFIX)) != 0)
    goto unknown;
  rest = iqn + strlen (DF_IQN_PREFIX);
  if (g_str_has_prefix (rest, "vdisk."))
    {
      if (!df_validate_name ("vdisk", rest + 6, NULL))
        goto unknown;
      return g_strdup_printf ("vdisk/%s", rest + 6);
    }
  /* iSCSI names are case-insensitive; MACs are canonicalised. */
  if (df_parse_mac (rest, mac, NULL))
    return g_strdup_printf ("device/%s", mac);
  if (df_validate_name ("device", rest, NULL))
    return g_strdup_printf ("device/%s", rest);
unknown:;
  g_autofree char *shown = df_display_text (iqn ? iqn : "(none)", 224);
  g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND, "unknown target '%s'",
               shown);
  return NULL;
}

/* "device/x" -> "iqn...:x", "vdisk/x" -> "iqn...:vdisk.x" (new string). */
static char *
export_to_target (const char *export_name)
{
  if (g_str_has_prefix (export_name, "vdisk/"))
    return g_strdup_printf (DF_IQN_PREFIX "vdisk.%s", export_name + 6);
  return g_strdup_printf (DF_IQN_PREFIX "%s",
                          export_name + strlen ("device/"));
}

void
iscsi_send_targets (iscsi_conn *c, const char *what, GString *out)
{
  g_autoptr (GError) err = NULL;
  g_auto (GStrv) names = NULL;
  g_autofree char *addr = g_strdup_printf ("%s,1", c->local);

  if (!c->discovery)
    {
      /* Normal session: only its own target (RFC 7143 12.3). */
      if (g_strcmp0 (what, "All") == 0)
        return;
      if (what[0] == '\0' || g_ascii_strcasecmp (what, c->target) == 0)
        {
          iscsi_text_add (out, "TargetName", c->target);
          iscsi_text_add (out, "TargetAddress", addr);
        }
      return;
    }
  names = df_exports_iscsi_visible (c->ex, c->login.chap_user_ok, &err);
  if (names == NULL)
    {
      g_warning ("SendTargets: %s", err->message);
      return;
    }
  for (char **n = names; *n != NULL; n++)
    {
      g_autofree char *t = export_to_target (*n);
      if (g_strcmp0 (what, "All") != 0 && g_ascii_strcasecmp (what, t) != 0)
        continue;
      iscsi_text_add (out, "TargetName", t);
      iscsi_text_add (out, "TargetAddress", addr);
    }
}

/* ---- login responses ------------------------------------------------------- */

static void
login_respond (iscsi_conn *c, const uint8_t *req, bool transit, int nsg,
               uint16_t status, const GString *text)
{
  uint32_t dlen = text ? (uint32_t) text->len : 0;
  size_t off = iscsi_out_begin (c->out, dlen, false, false);
  uint8_t *bhs = c->out->data + off;

  bhs[0] = ISCSI_OP_LOGIN_RSP;
  bhs[1] = (uint8_t) ((transit ? 0x80 : 0) | (c->login.stage << 2)
                      | (transit ? nsg : 0));
  memcpy (bhs + 8, req + 8, 6);          /* ISID */
  df_put_be16 (bhs + 14, status == ISCSI_LOGIN_OK ? c->tsih : 0);
  df_put_be32 (bhs + 16, df_get_be32 (req + 16));
  df_put_be32 (bhs + 24, c->stat_sn++);
  df_put_be32 (bhs + 28, c->exp_cmd_sn);
  df_put_be32 (bhs + 32, iscsi_max_cmd_sn (c));
  bhs[36] = (uint8_t) (status >> 8);
  bhs[37] = (uint8_t) status;
  if (dlen)
    memcpy (iscsi_out_data (c->out, off, false), text->str, dlen);
  iscsi_out_end (c->out, off, dlen, false, false);
}

/* Refuse the login and close; logged unless quiet (a locked-out source,
 * logged once when its lockout started). */
static void
login_reject (iscsi_conn *c, const uint8_t *req, uint16_t status,
              const char *why, bool quiet)
{
  if (!quiet)
    g_message ("iSCSI login from %s (%s) refused (0x%04x): %s", c->client,
               c->initiator ? c->initiator : "?", status, why);
  login_respond (c, req, false, 0, status, NULL);
  iscsi_conn_close (c, "login failed");
}

static void
login_fail (iscsi_conn *c, const uint8_t *req, uint16_t status,
            const char *why)
{
  login_reject (c, req, status, why, false);
}

/* ---- key negotiation --------------------------------------------------------- */

typedef struct {
  iscsi_conn *c;
  const uint8_t *req;
  GString *out;        /* response text */
  uint16_t fail;       /* first failure status, 0 = none */
  const char *why;
  bool quiet;          /* the failure is not logged (lockout) */
  char *why_owned;     /* why, when built for this login (owned) */
  const char *chap_n, *chap_r, *chap_i, *chap_c;
} login_ctx;

static void
ctx_fail (login_ctx *x, uint16_t status, const char *why)
{
  if (x->fail == 0)
    {
      x->fail = status;
      x->why = why;
    }
}

static bool
value_in_list (const char *list, const char *value)
{
  g_auto (GStrv) v = g_strsplit (list, ",", -1);

  for (char **p = v; *p; p++)
    if (strcmp (*p, value) == 0)
      return true;
  return false;
}

static void
neg_digest (login_ctx *x, const char *key, const char *val, bool *out)
{
  g_auto (GStrv) v = g_strsplit (val, ",", -1);

  for (char **p = v; *p; p++)
    if (strcmp (*p, "None") == 0 || strcmp (*p, "CRC32C") == 0)
      {
        *out = strcmp (*p, "CRC32C") == 0;
        iscsi_text_add (x->out, key, *p);
        return;
      }
  iscsi_text_add (x->out, key, "Reject");
}

static bool
parse_u32 (const char *val, uint32_t lo, uint32_t hi, uint32_t *out)
{
  uint64_t v;

  if (!iscsi_decode_number (val, hi, &v, NULL) || v < lo)
    return false;
  *out = (uint32_t) v;
  return true;
}

static bool
parse_bool (const char *val, bool *out)
{
  if (strcmp (val, "Yes") == 0)
    *out = true;
  else if (strcmp (val, "No") == 0)
    *out = false;
  else
    return false;
  return true;
}

static void
add_number (GString *out, const char *key, uint32_t v)
{
  char buf[16];

  g_snprintf (buf, sizeof buf, "%u", v);
  iscsi_text_add (out, key, buf);
}

/* Numeric keys: result = min or max of ours and theirs. */
static void
neg_number (login_ctx *x, const char *key, const char *val, uint32_t lo,
            uint32_t hi, uint32_t ours, bool use_max, uint32_t *store)
{
  uint32_t v, res;

  if (!parse_u32 (val, lo, hi, &v))
    {
      iscsi_text_add (x->out, key, "Reject");
      return;
    }
  res = use_max ? MAX (v, ours) : MIN (v, ours);
  if (store)
    *store = res;
  add_number (x->out, key, res);
}

/* Boolean keys: and=true for AND (ImmediateData), false for OR. */
static void
neg_bool (login_ctx *x, const char *key, const char *val, bool ours, bool and,
          bool *store)
{
  bool v, res;

  if (!parse_bool (val, &v))
    {
      iscsi_text_add (x->out, key, "Reject");
      return;
    }
  res = and ? (v && ours) : (v || ours);
  if (store)
    *store = res;
  iscsi_text_add (x->out, key, res ? "Yes" : "No");
}

static bool
neg_operational (login_ctx *x, const char *k, const char *v)
{
  iscsi_params *p = &x->c->p;
  uint32_t u;

  if (strcmp (k, "HeaderDigest") == 0)
    neg_digest (x, k, v, &p->header_digest);
  else if (strcmp (k, "DataDigest") == 0)
    neg_digest (x, k, v, &p->data_digest);
  else if (strcmp (k, "MaxRecvDataSegmentLength") == 0)
    {
      /* Declarative: what we may send.  Ours is sent separately. */
      if (parse_u32 (v, 512, 16777215, &u))
        p->max_send_dsl = u;
      else
        iscsi_text_add (x->out, k, "Reject");
    }
  else if (strcmp (k, "MaxBurstLength") == 0)
    neg_number (x, k, v, 512, 16777215, ISCSI_MAX_BURST, false,
                &p->max_burst);
  else if (strcmp (k, "FirstBurstLength") == 0)
    neg_number (x, k, v, 512, 16777215, ISCSI_MAX_BURST, false,
                &p->first_burst);
  else if (strcmp (k, "ImmediateData") == 0)
    neg_bool (x, k, v, true, true, &p->immediate_data);
  else if (strcmp (k, "InitialR2T") == 0)
    neg_bool (x, k, v, true, false, &p->initial_r2t);
  else if (strcmp (k, "MaxOutstandingR2T") == 0)
    neg_number (x, k, v, 1, 65535, 1, false, NULL);
  else if (strcmp (k, "MaxConnections") == 0)
    neg_number (x, k, v, 1, 65535, 1, false, NULL);
  else if (strcmp (k, "DefaultTime2Wait") == 0)
    neg_number (x, k, v, 0, 3600, 2, true, NULL);
  else if (strcmp (k, "DefaultTime2Retain") == 0)
    neg_number (x, k, v, 0, 3600, 0, false, NULL);
  else if (strcmp (k, "ErrorRecoveryLevel") == 0)
    neg_number (x, k, v, 0, 2, 0, false, NULL);
  else if (strcmp (k, "DataPDUInOrder") == 0
           || strcmp (k, "DataSequenceInOrder") == 0)
    neg_bool (x, k, v, true, false, NULL);
  else if (strcmp (k, "IFMarker") == 0 || strcmp (k, "OFMarker") == 0)
    neg_bool (x, k, v, false, true, NULL);
  else
    return false;
  return true;
}

/* ---- security keys ------------------------------------------------------------ */

static void
neg_auth_method (login_ctx *x, const char *v)
{
  iscsi_login *l = &x->c->login;
  g_auto (GStrv) offered = g_strsplit (v, ",", -1);

  if (l->auth != ISCSI_AUTH_START)
    return ctx_fail (x, ISCSI_LOGIN_INITIATOR_ERROR, "AuthMethod repeated");
  for (char **p = offered; *p; p++)
    {
      bool chap_ok = strcmp (*p, "CHAP") == 0
                     && (l->chap_required || x->c->discovery);
      bool none_ok = strcmp (*p, "None") == 0 && !l->chap_required;
      if (chap_ok || none_ok)
        {
          iscsi_text_add (x->out, "AuthMethod", *p);
          l->auth = chap_ok ? ISCSI_AUTH_CHAP_A : ISCSI_AUTH_NONE_CHOSEN;
          return;
        }
    }
  iscsi_text_add (x->out, "AuthMethod", "Reject");
  ctx_fail (x, ISCSI_LOGIN_AUTH_FAILED,
            l->chap_required ? "target requires CHAP"
                             : "no acceptable AuthMethod");
}

static void
neg_chap_a (login_ctx *x, const char *v)
{
  iscsi_login *l = &x->c->login;
  g_autofree char *chal = NULL;
  char id[8];

  if (l->auth != ISCSI_AUTH_CHAP_A)
    return ctx_fail (x, ISCSI_LOGIN_AUTH_FAILED, "CHAP_A out of sequence");
  if (!value_in_list (v, "5"))
    {
      iscsi_text_add (x->out, "CHAP_A", "Reject");
      return ctx_fail (x, ISCSI_LOGIN_AUTH_FAILED, "CHAP_A without MD5 (5)");
    }
  if (RAND_bytes (&l->chap_id, 1) != 1)
    g_error ("RAND_bytes failed");
  iscsi_chap_new_challenge (x->c->t, l->chap_c);
  chal = iscsi_encode_hex (l->chap_c, sizeof l->chap_c);
  g_snprintf (id, sizeof id, "%u", l->chap_id);
  iscsi_text_add (x->out, "CHAP_A", "5");
  iscsi_text_add (x->out, "CHAP_I", id);
  iscsi_text_add (x->out, "CHAP_C", chal);
  l->auth = ISCSI_AUTH_CHAP_R;
}

/* Take copies of c's credentials into l, wiping any held before. */
static void
login_chap_take (iscsi_login *l, const DfChap *c)
{
  g_free (l->chap.user);
  df_secret_free (l->chap.secret);
  df_secret_free (l->chap.mutual);
  l->chap.user = g_strdup (c->user);
  l->chap.secret = g_strdup (c->secret);
  l->chap.mutual = g_strdup (c->mutual_secret);
}

/* The credentials CHAP_N names: the target's device, or for discovery
 * the device owning that CHAP user.  false + failure when none. */
static bool
chap_credentials (login_ctx *x, const char *user)
{
  iscsi_login *l = &x->c->login;
  g_autoptr (DfChap) d = NULL;

  if (!x->c->discovery)
    return l->chap.user != NULL && strcmp (user, l->chap.user) == 0;
  d = df_exports_chap_by_user (x->c->ex, user, NULL);
  if (d == NULL || d->secret == NULL)
    return false;
  login_chap_take (l, d);
  return true;
}

static bool
chap_verify_response (login_ctx *x)
{
  iscsi_login *l = &x->c->login;
  g_autoptr (GBytes) r = NULL;
  uint8_t want[16];
  gsize rlen;
  const uint8_t *rp;

  /* Oversize CHAP_R (LIO CVE-2018-14633): bounded decode, exact size. */
  r = iscsi_decode_binary (x->chap_r, 16, NULL);
  if (r == NULL)
    return false;
  rp = g_bytes_get_data (r, &rlen);
  if (rlen != 16)
    return false;
  iscsi_chap_response (l->chap_id, (const uint8_t *) l->chap.secret,
                       strlen (l->chap.secret), l->chap_c, sizeof l->chap_c,
                       want);
  return CRYPTO_memcmp (want, rp, 16) == 0;
}

/* Mutual CHAP: answer the initiator's CHAP_I/CHAP_C. */
static void
chap_mutual (login_ctx *x)
{
  iscsi_login *l = &x->c->login;
  g_autoptr (GBytes) c = NULL;
  g_autofree char *hex = NULL;
  uint64_t id;
  uint8_t resp[16];
  gsize clen;
  const uint8_t *cp;

  if (x->chap_i == NULL || x->chap_c == NULL)
    return ctx_fail (x, ISCSI_LOGIN_AUTH_FAILED,
                     "mutual CHAP needs both CHAP_I and CHAP_C");
  if (!iscsi_decode_number (x->chap_i, 255, &id, NULL))
    return ctx_fail (x, ISCSI_LOGIN_AUTH_FAILED, "CHAP_I not in 0-255");
  c = iscsi_decode_binary (x->chap_c, ISCSI_CHAP_MAX_CHALLENGE, NULL);
  if (c == NULL)
    return ctx_fail (x, ISCSI_LOGIN_AUTH_FAILED, "invalid CHAP_C");
  cp = g_bytes_get_data (c, &clen);
  if ((clen == sizeof l->chap_c && memcmp (cp, l->chap_c, clen) == 0)
      || iscsi_chap_is_ours (x->c->t, cp, clen))
    return ctx_fail (x, ISCSI_LOGIN_AUTH_FAILED,
                     "reflected CHAP challenge");
  if (l->chap.mutual == NULL)
    return ctx_fail (x, ISCSI_LOGIN_AUTH_FAILED,
                     "mutual CHAP asked but no target secret configured");
  iscsi_chap_response ((uint8_t) id, (const uint8_t *) l->chap.mutual,
                       strlen (l->chap.mutual), cp, clen, resp);
  hex = iscsi_encode_hex (resp, sizeof resp);
  g_debug ("CHAP: mutual response to %s", x->c->client);
  iscsi_text_add (x->out, "CHAP_N",
                  x->c->target ? x->c->target : l->chap.user);
  iscsi_text_add (x->out, "CHAP_R", hex);
}

/* A wrong CHAP answer: counted against the source address, which a
 * run of them locks out (iscsi_authlimit.c). */
static void
chap_wrong (login_ctx *x)
{
  g_autofree char *source = iscsi_source_address (x->c->client);
  guint lock_s = iscsi_authlimit_failed (x->c->t, source);

  if (lock_s == 0)
    return ctx_fail (x, ISCSI_LOGIN_AUTH_FAILED,
                     "CHAP user or response wrong");
  x->why_owned = g_strdup_printf (
      "CHAP user or response wrong; %u failures from %s: its logins are "
      "refused for %u s (rate limit; refusals until then not logged)",
      ISCSI_AUTH_MAX_FAILS, source, lock_s);
  ctx_fail (x, ISCSI_LOGIN_AUTH_FAILED, x->why_owned);
}

static void
chap_finish (login_ctx *x)
{
  iscsi_login *l = &x->c->login;

  if (l->auth != ISCSI_AUTH_CHAP_R)
    return ctx_fail (x, ISCSI_LOGIN_AUTH_FAILED, "CHAP_R out of sequence");
  if (x->chap_n == NULL)
    return ctx_fail (x, ISCSI_LOGIN_AUTH_FAILED, "CHAP_R without CHAP_N");
  if (!chap_credentials (x, x->chap_n) || !chap_verify_response (x))
    return chap_wrong (x);
  if (x->chap_i != NULL || x->chap_c != NULL)
    chap_mutual (x);
  if (x->fail)
    return;
  l->auth = ISCSI_AUTH_DONE;
  g_free (l->chap_user_ok);
  l->chap_user_ok = g_strdup (x->chap_n);
  {
    g_autofree char *source = iscsi_source_address (x->c->client);
    iscsi_authlimit_succeeded (x->c->t, source);
  }
  g_debug ("CHAP: %s authenticated as '%s'", x->c->client, x->chap_n);
}

/* ---- first PDU: who and what ---------------------------------------------------- */

static void
resolve_target (login_ctx *x)
{
  iscsi_conn *c = x->c;
  g_autoptr (GError) err = NULL;
  g_autofree char *export_name = NULL;
  g_autoptr (DfChap) chap = NULL;

  if (c->target == NULL)
    return ctx_fail (x, ISCSI_LOGIN_MISSING_PARAM, "TargetName missing");
  export_name = iscsi_target_to_export (c->target, &err);
  if (export_name != NULL)
    chap = df_exports_chap (c->ex, export_name, &err);
  if (chap == NULL)
    return ctx_fail (x, g_error_matches (err, DF_ERROR, DF_ERROR_NOT_FOUND)
                            ? ISCSI_LOGIN_NOT_FOUND
                            : ISCSI_LOGIN_UNAVAILABLE,
                     "target not found");
  if (chap->chap_required && chap->user == NULL)
    return ctx_fail (x, ISCSI_LOGIN_AUTH_FAILED,
                     "farm policy iscsi-chap is required and this device "
                     "has no CHAP credentials (diskfarm device set --chap)");
  if (chap->initiator != NULL
      && g_ascii_strcasecmp (c->initiator, chap->initiator) != 0)
    {
      g_autofree char *shown = df_display_text (c->initiator, 224);
      x->why_owned = g_strdup_printf (
          "InitiatorName %s is not the one this device's target accepts "
          "(%s; diskfarm device set --iscsi-initiator)", shown,
          chap->initiator);
      return ctx_fail (x, ISCSI_LOGIN_FORBIDDEN, x->why_owned);
    }
  c->login.chap_required = chap->chap_required;
  login_chap_take (&c->login, chap);
}

static bool
is_session_key (const char *k)
{
  return strcmp (k, "InitiatorName") == 0 || strcmp (k, "TargetName") == 0
         || strcmp (k, "SessionType") == 0;
}

static bool
session_key_unchanged (const iscsi_conn *c, const char *k, const char *v)
{
  if (strcmp (k, "InitiatorName") == 0)
    return g_strcmp0 (c->initiator, v) == 0;
  if (strcmp (k, "TargetName") == 0)
    return c->target != NULL && g_ascii_strcasecmp (c->target, v) == 0;
  return strcmp (v, c->discovery ? "Discovery" : "Normal") == 0;
}

/* Session keys of the first request (called before the other keys). */
static void
neg_session_key (login_ctx *x, const char *k, const char *v)
{
  iscsi_conn *c = x->c;

  if (strcmp (k, "InitiatorName") == 0)
    c->initiator = g_strdup (v);
  else if (strcmp (k, "TargetName") == 0)
    c->target = g_strdup (v);
  else if (strcmp (k, "SessionType") == 0 && strcmp (v, "Discovery") == 0)
    c->discovery = true;
  else if (strcmp (k, "SessionType") == 0 && strcmp (v, "Normal") != 0)
    ctx_fail (x, ISCSI_LOGIN_UNSUPPORTED_TYPE, "unknown SessionType");
}

static void
collect_key (login_ctx *x, const iscsi_kv *kv, bool first)
{
  const char *k = kv->key, *v = kv->value;

  if (is_session_key (k))
    {
      /* Repeated later (libiscsi does): harmless when unchanged. */
      if (!first && !session_key_unchanged (x->c, k, v))
        ctx_fail (x, ISCSI_LOGIN_INITIATOR_ERROR,
                  "session key changed during login");
      return;
    }
  if (strcmp (k, "InitiatorAlias") == 0)
    return;
  if (strcmp (k, "AuthMethod") == 0)
    {
      if (x->c->login.stage != 0)
        iscsi_text_add (x->out, k, "Irrelevant");
      else
        neg_auth_method (x, v);
    }
  else if (strcmp (k, "CHAP_A") == 0)
    neg_chap_a (x, v);
  else if (strcmp (k, "CHAP_N") == 0)
    x->chap_n = v;
  else if (strcmp (k, "CHAP_R") == 0)
    x->chap_r = v;
  else if (strcmp (k, "CHAP_I") == 0)
    x->chap_i = v;
  else if (strcmp (k, "CHAP_C") == 0)
    x->chap_c = v;
  else if (!neg_operational (x, k, v))
    iscsi_text_add (x->out, k, "NotUnderstood");
}

/* ---- stage transitions ---------------------------------------------------------- */

static bool
auth_complete (const iscsi_login *l)
{
  if (l->chap_required)
    return l->auth == ISCSI_AUTH_DONE;
  return l->auth != ISCSI_AUTH_CHAP_A && l->auth != ISCSI_AUTH_CHAP_R;
}

/* The LU's identity for state shared across its sessions: the device
 * whichever spelling (name, MAC) reached it, else the vdisk export. */
static char *
lu_name (DfExport *e)
{
  return df_export_device (e) ? g_strconcat ("device/", df_export_device (e),
                                             NULL)
                              : g_strdup (df_export_name (e));
}

static bool
enter_full_feature (iscsi_conn *c, GError **err)
{
  g_autofree char *export_name = NULL;
  DfExportBinding binding;
  g_autofree char *lu = NULL;

  if (c->discovery)
    return true;
  export_name = iscsi_target_to_export (c->target, err);
  if (export_name == NULL)
    return false;
  /* one maintenance writer: the same machine's new login wins */
  c->export = iscsi_session_has_predecessor (c)
                  ? df_exports_open_replacing (c->ex, export_name, err)
                  : df_exports_open (c->ex, export_name, err);
  if (c->export == NULL)
    return false;
  df_session_set_export (c->sess, df_export_name (c->export),
                         df_export_device (c->export));
  df_export_binding (c->export, &binding);
  df_session_set_binding (c->sess, &binding);
  if (c->fd >= 0)
    df_export_shutdown_when_fenced (c->export, c->fd);
  c->blk = df_account_blk_new (df_export_blk (c->export), c->sess);
  c->lu.blk = c->blk;
  c->lu.readonly = c->blk->readonly;
  c->lu.serial = df_export_device (c->export)
                     ? df_export_device (c->export)
                     : df_export_name (c->export) + strlen ("vdisk/");
  c->lu.target = c->target;
  lu = lu_name (c->export);
  iscsi_lu_attach (&c->lu, c->t, lu, c->initiator, c->isid);
  return true;
}

/* Our declarations, once, in the operational stage response. */
static void
add_declarations (iscsi_conn *c, GString *out)
{
  add_number (out, "MaxRecvDataSegmentLength", ISCSI_OUR_MRDSL);
  if (!c->discovery && !c->login.tpgt_sent)
    {
      iscsi_text_add (out, "TargetPortalGroupTag", "1");
      c->login.tpgt_sent = true;
    }
}

static void
login_transit (login_ctx *x, int nsg)
{
  iscsi_conn *c = x->c;
  g_autoptr (GError) err = NULL;

  if (nsg == 3)
    {
      if (c->p.first_burst > c->p.max_burst)
        c->p.first_burst = c->p.max_burst;
      if (!enter_full_feature (c, &err))
        {
          login_fail (c, x->req,
                      g_error_matches (err, DF_ERROR, DF_ERROR_NOT_FOUND)
                          ? ISCSI_LOGIN_NOT_FOUND
                          : ISCSI_LOGIN_UNAVAILABLE,
                      err->message);
          return;
        }
      iscsi_session_register (c);
    }
  login_respond (c, x->req, true, nsg, ISCSI_LOGIN_OK, x->out);
  if (nsg == 3)
    {
      c->state = ISCSI_CONN_FULL;
      g_message ("iSCSI login: %s (%s) -> %s", c->client, c->initiator,
                 c->discovery ? "discovery" : c->target);
    }
  else
    c->login.stage = nsg;
}

/* ---- one Login Request -------------------------------------------------------- */

/* Checks of the BHS against the login so far.  0 = fine. */
static uint16_t
check_request (iscsi_conn *c, const uint8_t *bhs, const char **why)
{
  int csg = (bhs[1] >> 2) & 3, nsg = bhs[1] & 3;
  bool transit = bhs[1] & 0x80, cont = bhs[1] & 0x40;

  if (bhs[3] > 0 || bhs[2] < bhs[3])
    return *why = "unsupported iSCSI version", ISCSI_LOGIN_BAD_VERSION;
  if (transit && cont)
    return *why = "T and C both set", ISCSI_LOGIN_INITIATOR_ERROR;
  if (csg == 2 || csg == 3 || (transit && (nsg == 2 || nsg <= csg)))
    return *why = "invalid stage", ISCSI_LOGIN_INITIATOR_ERROR;
  if (!c->login.started)
    return 0;
  if (memcmp (bhs + 8, c->isid, 6) != 0 || df_get_be32 (bhs + 16)
                                               != c->login.itt)
    return *why = "ISID or ITT changed during login",
           ISCSI_LOGIN_INITIATOR_ERROR;
  if (csg != c->login.stage)
    return *why = "stage out of sequence", ISCSI_LOGIN_INITIATOR_ERROR;
  return 0;
}

static void
login_start (iscsi_conn *c, const uint8_t *bhs)
{
  c->login.started = true;
  memcpy (c->isid, bhs + 8, 6);
  c->tsih = df_get_be16 (bhs + 14);
  c->login.itt = df_get_be32 (bhs + 16);
  c->exp_cmd_sn = df_get_be32 (bhs + 24);
  c->login.stage = (bhs[1] >> 2) & 3;
}

/* Continued text (C bit) is gathered; returns false when over the cap. */
static bool
gather_text (iscsi_conn *c, const iscsi_pdu *pdu)
{
  if (c->login.pending == NULL)
    c->login.pending = g_byte_array_new ();
  if (c->login.pending->len + pdu->data_len > ISCSI_TEXT_MAX_TOTAL)
    return false;
  g_byte_array_append (c->login.pending, pdu->data, pdu->data_len);
  return true;
}

/* Keys that only make sense once the first request named the target. */
static void
first_request_checks (login_ctx *x)
{
  iscsi_conn *c = x->c;

  g_autofree char *source = iscsi_source_address (c->client);
  guint locked = iscsi_authlimit_locked (c->t, source);

  if (locked > 0)
    {
      x->quiet = true;
      return ctx_fail (x, ISCSI_LOGIN_AUTH_FAILED,
                       "locked out after failed CHAP logins");
    }
  if (c->initiator == NULL)
    return ctx_fail (x, ISCSI_LOGIN_MISSING_PARAM, "InitiatorName missing");
  if (c->tsih != 0)
    return ctx_fail (x, ISCSI_LOGIN_NO_SESSION,
                     "adding connections to a session is not supported");
  if (!c->discovery)
    resolve_target (x);
  if (!x->fail && c->login.stage == 1 && c->login.chap_required)
    ctx_fail (x, ISCSI_LOGIN_AUTH_FAILED,
              "security stage skipped but CHAP required");
}

static void
login_negotiate (iscsi_conn *c, const iscsi_pdu *pdu, GPtrArray *kvs,
                 bool first)
{
  const uint8_t *bhs = pdu->bhs;
  bool transit = bhs[1] & 0x80;
  int nsg = bhs[1] & 3;
  g_autoptr (GString) out = g_string_new (NULL);
  login_ctx x = { .c = c, .req = bhs, .out = out };

  /* Session keys first: CHAP and AuthMethod depend on the target. */
  for (guint i = 0; first && i < kvs->len; i++)
    neg_session_key (&x, ((iscsi_kv *) kvs->pdata[i])->key,
                     ((iscsi_kv *) kvs->pdata[i])->value);
  if (first && !x.fail)
    first_request_checks (&x);
  c->login.keys_seen_target = true;
  for (guint i = 0; i < kvs->len && !x.fail; i++)
    collect_key (&x, kvs->pdata[i], first);
  if (!x.fail && x.chap_r != NULL)
    chap_finish (&x);
  else if (!x.fail && (x.chap_n || x.chap_i || x.chap_c))
    ctx_fail (&x, ISCSI_LOGIN_AUTH_FAILED, "CHAP keys without CHAP_R");
  if (x.fail)
    {
      login_reject (c, bhs, x.fail, x.why, x.quiet);
      g_free (x.why_owned);
      return;
    }
  if (c->login.stage == 1 || (transit && nsg >= 1))
    add_declarations (c, out);
  if (transit && c->login.stage == 0 && !auth_complete (&c->login))
    {
      if ((c->login.auth == ISCSI_AUTH_CHAP_A
           || c->login.auth == ISCSI_AUTH_CHAP_R) && x.chap_r == NULL)
        transit = false; /* CHAP under way: stay in the security stage */
      else
        return login_fail (c, bhs, ISCSI_LOGIN_AUTH_FAILED,
                           "authentication not completed");
    }
  if (transit)
    login_transit (&x, nsg);
  else
    login_respond (c, bhs, false, 0, ISCSI_LOGIN_OK, out);
}

void
iscsi_login_rx (iscsi_conn *c, const iscsi_pdu *pdu)
{
  const uint8_t *bhs = pdu->bhs;
  const char *why = NULL;
  uint16_t st = check_request (c, bhs, &why);
  g_autoptr (GError) err = NULL;
  g_autoptr (GPtrArray) kvs = NULL;
  g_autoptr (GByteArray) text = NULL;

  if (st != 0)
    return login_fail (c, bhs, st, why);
  if (!c->login.started)
    login_start (c, bhs);
  if (!gather_text (c, pdu))
    return login_fail (c, bhs, ISCSI_LOGIN_OUT_OF_RESOURCES,
                       "login text too long");
  if (bhs[1] & 0x40) /* C: more text follows; acknowledge with no keys */
    return login_respond (c, bhs, false, 0, ISCSI_LOGIN_OK, NULL);
  text = g_steal_pointer (&c->login.pending);
  kvs = iscsi_text_parse (text->data, text->len, &err);
  if (kvs == NULL)
    return login_fail (c, bhs, ISCSI_LOGIN_INITIATOR_ERROR, err->message);
  if (iscsi_text_has_duplicates (kvs))
    return login_fail (c, bhs, ISCSI_LOGIN_INITIATOR_ERROR,
                       "key sent twice");
  login_negotiate (c, pdu, kvs, !c->login.keys_seen_target);
}

void
iscsi_login_clear (iscsi_login *l)
{
  if (l->pending)
    g_byte_array_unref (l->pending);
  g_free (l->chap.user);
  df_secret_free (l->chap.secret);
  df_secret_free (l->chap.mutual);
  g_free (l->chap_user_ok);
  memset (l, 0, sizeof *l);
}
