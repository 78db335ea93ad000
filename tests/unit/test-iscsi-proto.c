/* Unit tests: iSCSI PDU framing, text keys, binary values, CHAP, target
 * names (tables with malformed input), and the engine driven by hand-made
 * PDUs over a real farm for every iSCSI case of BAD-INPUTS.md:
 * oversize data segments, oversize CHAP_R, CHAP_I above 255, reflected
 * CHAP_C, bad hex/base64, CmdSN too high/low, DataSN out of order, task
 * management during I/O, commands to another LUN and unknown opcodes. */
#include "test-db.h"
#include <glib/gstdio.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"
#include "exports.h"
#include "farm.h"
#include "iscsi_int.h"
#include "qcow2.h"
#include "sessions.h"

#define IQN DF_IQN_PREFIX
#define DISK_SIZE (1024u * 1024)

/* ---- framing ---------------------------------------------------------------- */

static void
test_crc32c (void)
{
  /* RFC 3720 B.4 vectors: 32 zero bytes, 32 0xff bytes. */
  uint8_t z[32] = { 0 }, f[32];

  memset (f, 0xff, sizeof f);
  g_assert_cmphex (iscsi_crc32c (0, z, sizeof z), ==, 0x8a9136aa);
  g_assert_cmphex (iscsi_crc32c (0, f, sizeof f), ==, 0x62a8ab43);
  g_assert_cmphex (iscsi_crc32c (0, "123456789", 9), ==, 0xe3069283);
}

static void
test_pdu_parse (void)
{
  uint8_t buf[48 + 8 + 4] = { 0x01 };
  iscsi_pdu pdu;
  size_t used;

  g_assert_cmpint (iscsi_pdu_parse (buf, 47, 8192, false, false, &pdu, &used),
                   ==, ISCSI_PARSE_NEED_MORE);
  df_put_be24 (buf + 5, 5);
  g_assert_cmpint (iscsi_pdu_parse (buf, 50, 8192, false, false, &pdu, &used),
                   ==, ISCSI_PARSE_NEED_MORE);
  g_assert_cmpuint (used, ==, 56); /* padded to 8 */
  g_assert_cmpint (iscsi_pdu_parse (buf, 56, 8192, false, false, &pdu, &used),
                   ==, ISCSI_PARSE_OK);
  g_assert_cmpuint (pdu.data_len, ==, 5);
  /* longer than the negotiated size: refused before waiting (tgt 093d2bf) */
  df_put_be24 (buf + 5, 8193);
  g_assert_cmpint (iscsi_pdu_parse (buf, 48, 8192, false, false, &pdu, &used),
                   ==, ISCSI_PARSE_DATA_TOO_LONG);
  df_put_be24 (buf + 5, 0xffffff);
  g_assert_cmpint (iscsi_pdu_parse (buf, 48, 8192, false, false, &pdu, &used),
                   ==, ISCSI_PARSE_DATA_TOO_LONG);
  /* header digest mismatch */
  df_put_be24 (buf + 5, 0);
  memset (buf + 48, 0, 4);
  g_assert_cmpint (iscsi_pdu_parse (buf, 52, 8192, true, false, &pdu, &used),
                   ==, ISCSI_PARSE_HEADER_DIGEST);
}

static void
test_out_roundtrip (void)
{
  g_autoptr (GByteArray) out = g_byte_array_new ();
  size_t off = iscsi_out_begin (out, 3, true, true);
  iscsi_pdu pdu;
  size_t used;

  out->data[off] = ISCSI_OP_NOP_IN;
  memcpy (iscsi_out_data (out, off, true), "abc", 3);
  iscsi_out_end (out, off, 3, true, true);
  g_assert_cmpuint (out->len, ==, 48 + 4 + 4 + 4);
  g_assert_cmpint (iscsi_pdu_parse (out->data, out->len, 8192, true, true,
                                    &pdu, &used), ==, ISCSI_PARSE_OK);
  g_assert_cmpmem (pdu.data, 3, "abc", 3);
  out->data[48 + 4] ^= 1;
  g_assert_cmpint (iscsi_pdu_parse (out->data, out->len, 8192, true, true,
                                    &pdu, &used), ==, ISCSI_PARSE_DATA_DIGEST);
}

/* ---- text keys ----------------------------------------------------------------- */

static const struct {
  const char *text;
  size_t len;
  int pairs; /* -1: refused */
} text_cases[] = {
  { "A=1\0B=2\0", 8, 2 },
  { "A=1\0B=2", 7, 2 },              /* last NUL missing: tolerated */
  { "A=1\0\0\0\0", 7, 1 },           /* NUL padding */
  { "A=\0", 3, 1 },                  /* empty value */
  { "", 0, 0 },
  { "=1\0", 3, -1 },                 /* empty key */
  { "A1\0", 3, -1 },                 /* no '=' */
  { "A=1\0\0B=2\0", 9, -1 },         /* empty pair in the middle */
  { "A b=1\0", 6, -1 },              /* space in key */
  { "A\x01=1\0", 5, -1 },            /* control byte in key */
  { "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=1\0",
    67, -1 },                        /* 64-byte key */
};

static void
test_text_parse (void)
{
  for (guint i = 0; i < G_N_ELEMENTS (text_cases); i++)
    {
      g_autoptr (GError) err = NULL;
      g_autoptr (GPtrArray) kv = iscsi_text_parse (
          (const uint8_t *) text_cases[i].text, text_cases[i].len, &err);

      g_test_message ("case %u", i);
      if (text_cases[i].pairs < 0)
        {
          g_assert_null (kv);
          g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
        }
      else
        {
          g_assert_no_error (err);
          g_assert_cmpint ((int) kv->len, ==, text_cases[i].pairs);
        }
    }
}

static void
test_long_value (void)
{
  g_autoptr (GString) s = g_string_new ("K=");
  g_autoptr (GError) err = NULL;
  g_autoptr (GPtrArray) kv = NULL;

  for (int i = 0; i < 8193; i++)
    g_string_append_c (s, 'x');
  kv = iscsi_text_parse ((const uint8_t *) s->str, s->len, &err);
  g_assert_null (kv);
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
}

static const struct {
  const char *in;
  size_t max;
  int len; /* -1: refused */
} bin_cases[] = {
  { "0x00ff", 16, 2 },
  { "0XABcd", 16, 2 },
  { "0bAAE=", 16, 2 },
  { "0bAAEC", 16, 3 },
  { "0x", 16, -1 },          /* empty (edk2 BZ 3356) */
  { "0b", 16, -1 },
  { "0xabc", 16, -1 },       /* odd length */
  { "0xzz", 16, -1 },
  { "0bAA=E", 16, -1 },      /* padding in the middle */
  { "0bAAE", 16, -1 },       /* not a multiple of 4 */
  { "0b====", 16, -1 },
  { "0b*AAA", 16, -1 },
  { "00ff", 16, -1 },        /* no prefix */
  { "0x0011223344556677889900112233445566", 16, -1 }, /* > max */
};

static void
test_binary (void)
{
  for (guint i = 0; i < G_N_ELEMENTS (bin_cases); i++)
    {
      g_autoptr (GError) err = NULL;
      g_autoptr (GBytes) b = iscsi_decode_binary (bin_cases[i].in,
                                                  bin_cases[i].max, &err);
      g_test_message ("case %s", bin_cases[i].in);
      if (bin_cases[i].len < 0)
        g_assert_null (b);
      else
        {
          g_assert_no_error (err);
          g_assert_cmpuint (g_bytes_get_size (b), ==, bin_cases[i].len);
        }
    }
}

static void
test_number (void)
{
  uint64_t v;

  g_assert_true (iscsi_decode_number ("255", 255, &v, NULL));
  g_assert_cmpuint (v, ==, 255);
  g_assert_true (iscsi_decode_number ("0x10", 255, &v, NULL));
  g_assert_cmpuint (v, ==, 16);
  g_assert_false (iscsi_decode_number ("256", 255, &v, NULL)); /* CHAP_I */
  g_assert_false (iscsi_decode_number ("", 255, &v, NULL));
  g_assert_false (iscsi_decode_number ("-1", 255, &v, NULL));
  g_assert_false (iscsi_decode_number ("1a", 255, &v, NULL));
  g_assert_false (iscsi_decode_number ("99999999999999999999999", UINT64_MAX,
                                       &v, NULL));
}

/* ---- CHAP ------------------------------------------------------------------------ */

static void
test_chap_md5 (void)
{
  /* MD5(id || secret || challenge) cross-checked with GLib's MD5. */
  const uint8_t chal[4] = { 1, 2, 3, 4 };
  uint8_t out[16], want[16], msg[1 + 16 + 4];
  gsize n = 16;
  g_autoptr (GChecksum) ck = g_checksum_new (G_CHECKSUM_MD5);

  msg[0] = 7;
  memcpy (msg + 1, "secretsecret1234", 16);
  memcpy (msg + 17, chal, 4);
  g_checksum_update (ck, msg, sizeof msg);
  g_checksum_get_digest (ck, want, &n);
  iscsi_chap_response (7, (const uint8_t *) "secretsecret1234", 16, chal, 4,
                       out);
  g_assert_cmpmem (out, 16, want, 16);
}

static void
test_chap_challenges (void)
{
  g_autoptr (GHashTable) seen = g_hash_table_new_full (
      g_bytes_hash, g_bytes_equal, (GDestroyNotify) g_bytes_unref, NULL);

  g_autoptr (DfIscsiTarget) t = df_iscsi_target_new (NULL, NULL);

  for (int i = 0; i < 2000; i++)
    {
      uint8_t c[ISCSI_CHAP_CHALLENGE_LEN];
      iscsi_chap_new_challenge (t, c);
      g_assert_true (iscsi_chap_is_ours (t, c, sizeof c));
      g_assert_true (g_hash_table_add (seen, g_bytes_new (c, sizeof c)));
    }
}

static void
test_target_names (void)
{
  static const struct { const char *iqn, *export_name; } cases[] = {
    { IQN "pc01", "device/pc01" },
    { IQN "52-54-00-12-34-56", "device/52:54:00:12:34:56" },
    { IQN "52:54:00:12:34:56", "device/52:54:00:12:34:56" },
    { "IQN.2026-11.ORG.DISKFARM:pc01", "device/pc01" },
    { IQN "vdisk.web", "vdisk/web" },
    { IQN "vdisk.", NULL },
    { IQN "vdisk.../x", NULL },
    { IQN "", NULL },
    { IQN "../etc", NULL },
    { "iqn.2026-11.org.other:pc01", NULL },
    { "pc01", NULL },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GError) err = NULL;
      g_autofree char *e = iscsi_target_to_export (cases[i].iqn, &err);
      g_assert_cmpstr (e, ==, cases[i].export_name);
      if (e == NULL)
        g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
    }
}

/* Messages quoting a long name never cut a UTF-8 character in half. */
static void
test_messages_utf8 (void)
{
  GString *iqn = g_string_new (IQN);
  GString *num = g_string_new ("1");
  for (int i = 0; i < 400; i++)
    g_string_append (iqn, "\xc3\xa9");
  for (int i = 0; i < 40; i++)
    g_string_append (num, "\xc3\xa9");
  g_autoptr (GError) err = NULL;
  g_assert_null (iscsi_target_to_export (iqn->str, &err));
  g_assert_true (g_utf8_validate (err->message, -1, NULL));
  g_assert_nonnull (strstr (err->message, "..."));
  g_clear_error (&err);
  uint64_t v;
  g_assert_false (iscsi_decode_number (num->str, 255, &v, &err));
  g_assert_true (g_utf8_validate (err->message, -1, NULL));
  g_string_free (iqn, TRUE);
  g_string_free (num, TRUE);
}

/* ---- engine over a farm ------------------------------------------------------------ */

typedef struct {
  char *dir;
  DfExports *ex;
  DfSessions *ss;
  DfIscsiTarget *t;
  iscsi_conn *c;
  uint32_t cmd_sn;
  GByteArray *got;  /* output collected */
} Fx;

static void
make_farm (Fx *f)
{
  g_autoptr (GError) err = NULL;
  g_autoptr (DfFarm) farm = test_farm_open (f->dir, true, "test", &err);
  g_autofree char *path = NULL, *store = NULL, *base = NULL;
  g_autofree uint8_t *data = g_malloc0 (65536);
  df_qcow2_writer *w;
  char sha[65];
  GStatBuf st;
  DfDevice d = { .name = (char *) "pc01", .mac = (char *) "52:54:00:00:00:01",
                 .type = (char *) "production", .vdisk = (char *) "web",
                 .cache_mode = (char *) "server" };
  DfDevice d2 = { .name = (char *) "pc02",
                  .mac = (char *) "52:54:00:00:00:02",
                  .type = (char *) "production", .vdisk = (char *) "web",
                  .cache_mode = (char *) "server" };

  g_assert_no_error (err);
  store = df_farm_store_dir (farm, "web");
  g_assert_cmpint (g_mkdir_with_parents (store, 0755), ==, 0);
  path = df_farm_version_path (farm, "web", 0);
  base = g_path_get_basename (path);
  memset (data, 'A', 65536);
  w = df_qcow2_writer_new (path, DISK_SIZE, 16, NULL, &err);
  g_assert_no_error (err);
  g_assert_true (df_qcow2_writer_put (w, 0, data, &err));
  g_assert_true (df_qcow2_writer_finish (w, &err));
  g_assert_true (df_file_sha256 (path, sha, &err));
  g_assert_cmpint (g_stat (path, &st), ==, 0);
  g_assert_true (df_farm_vdisk_add (farm, "web", DISK_SIZE, base, sha,
                                    st.st_size, &err));
  g_assert_true (df_farm_device_add (farm, &d, &err));
  g_assert_true (df_farm_device_add (farm, &d2, &err));
  g_assert_true (df_farm_chap_set (farm, "pc02", "user2", "secret-pc02-xx",
                                   "mutual-pc02-yy", &err));
  g_assert_no_error (err);
}

static void
fx_setup (Fx *f, gconstpointer data)
{
  g_autoptr (GError) err = NULL;

  (void) data;
  f->dir = g_dir_make_tmp ("df-iscsi-XXXXXX", &err);
  g_assert_no_error (err);
  make_farm (f);
  f->ex = df_exports_new (f->dir, test_db_for (f->dir), &err);
  g_assert_no_error (err);
  f->ss = df_sessions_new ();
  f->t = df_iscsi_target_new (f->ex, f->ss);
  f->c = iscsi_conn_new (f->t, "test", "127.0.0.1:3260");
  f->got = g_byte_array_new ();
}

static void
fx_teardown (Fx *f, gconstpointer data)
{
  g_autofree char *cmd = g_strdup_printf ("rm -rf '%s'", f->dir);

  (void) data;
  iscsi_conn_free (f->c);
  df_iscsi_target_free (f->t);
  df_sessions_free (f->ss);
  df_exports_free (f->ex);
  g_assert_cmpint (system (cmd), ==, 0);
  g_free (f->dir);
  g_byte_array_unref (f->got);
}

/* Feed one PDU; move the output into f->got. */
static void
send_pdu (Fx *f, const uint8_t *bhs, const void *data, uint32_t dlen)
{
  g_autoptr (GByteArray) b = g_byte_array_new ();
  size_t off = iscsi_out_begin (b, dlen, false, false);

  memcpy (b->data + off, bhs, 48);
  if (dlen)
    memcpy (iscsi_out_data (b, off, false), data, dlen);
  iscsi_out_end (b, off, dlen, false, false);
  df_engine_feed (iscsi_conn_engine (f->c), b->data, b->len,
                  df_engine_sink_bytes, f->got);
}

/* Pop the next response PDU from f->got into bhs (+ text into *text). */
static bool
next_pdu (Fx *f, uint8_t bhs[48], GString *text)
{
  iscsi_pdu pdu;
  size_t used;

  if (iscsi_pdu_parse (f->got->data, f->got->len, 1u << 24, false, false,
                       &pdu, &used) != ISCSI_PARSE_OK)
    return false;
  memcpy (bhs, pdu.bhs, 48);
  if (text)
    {
      g_string_truncate (text, 0);
      g_string_append_len (text, (const char *) pdu.data, pdu.data_len);
    }
  g_byte_array_remove_range (f->got, 0, (guint) used);
  return true;
}

static uint16_t
login (Fx *f, const char *keys, size_t klen, int csg, int nsg, bool transit,
       GString *text)
{
  uint8_t bhs[48] = { ISCSI_OP_LOGIN_REQ | 0x40 };

  bhs[1] = (uint8_t) ((transit ? 0x80 : 0) | csg << 2 | (transit ? nsg : 0));
  bhs[8] = 0x80; /* ISID */
  bhs[13] = 1;
  df_put_be32 (bhs + 16, 0x1234);
  df_put_be32 (bhs + 24, f->cmd_sn);
  send_pdu (f, bhs, keys, (uint32_t) klen);
  if (!next_pdu (f, bhs, text))
    return 0xffff;
  g_assert_cmpuint (bhs[0], ==, ISCSI_OP_LOGIN_RSP);
  return (uint16_t) (bhs[36] << 8 | bhs[37]);
}

#define KEYS(s) s, sizeof s - 1

static void
login_full (Fx *f, const char *target)
{
  g_autoptr (GString) k = g_string_new (NULL);
  g_autoptr (GString) text = g_string_new (NULL);

  iscsi_text_add (k, "InitiatorName", "iqn.2000-01.test:init");
  iscsi_text_add (k, "TargetName", target);
  iscsi_text_add (k, "AuthMethod", "None");
  g_assert_cmphex (login (f, k->str, k->len, 0, 1, true, text), ==, 0);
  g_string_truncate (k, 0);
  iscsi_text_add (k, "ImmediateData", "No");
  iscsi_text_add (k, "MaxRecvDataSegmentLength", "65536");
  g_assert_cmphex (login (f, k->str, k->len, 1, 3, true, text), ==, 0);
  g_assert_true (iscsi_conn_should_close (f->c) == false);
}

/* A discovery session, logged in straight to full feature phase. */
static void
login_discovery (Fx *f)
{
  g_assert_cmphex (login (f, KEYS ("InitiatorName=iqn.x\0SessionType="
                                   "Discovery\0AuthMethod=None\0"),
                          0, 3, true, NULL), ==, 0);
}

/* diskfarm device reset pc01: a new boot generation in the farm. */
static void
reset_pc01 (Fx *f)
{
  g_autoptr (GError) err = NULL;
  g_autoptr (DfFarm) farm = test_farm_open (f->dir, false, "test", &err);
  gint64 gen;

  g_assert_true (df_farm_device_new_generation (farm, "pc01", &gen, &err));
}

static void
scsi_cmd (Fx *f, const uint8_t cdb[16], uint32_t edtl, bool read,
          bool write, bool immediate_sn_skip, const uint8_t *lun)
{
  uint8_t bhs[48] = { ISCSI_OP_SCSI_CMD, 0x80 };

  bhs[1] |= (read ? 0x40 : 0) | (write ? 0x20 : 0);
  if (lun)
    memcpy (bhs + 8, lun, 8);
  else
    bhs[9] = 1;
  df_put_be32 (bhs + 16, 0x100 + f->cmd_sn);
  df_put_be32 (bhs + 20, edtl);
  df_put_be32 (bhs + 24, f->cmd_sn);
  if (!immediate_sn_skip)
    f->cmd_sn++;
  memcpy (bhs + 32, cdb, 16);
  send_pdu (f, bhs, NULL, 0);
}

static void
test_login_oversize (Fx *f, gconstpointer data)
{
  g_autofree uint8_t *big = g_malloc0 (9000);

  (void) data;
  memcpy (big, "InitiatorName=x", 15);
  login (f, (const char *) big, 9000, 0, 1, true, NULL);
  g_assert_true (iscsi_conn_should_close (f->c));
}

static void
test_login_missing_target (Fx *f, gconstpointer data)
{
  (void) data;
  g_assert_cmphex (login (f, KEYS ("InitiatorName=iqn.x\0AuthMethod=None\0"),
                          0, 1, true, NULL), ==, ISCSI_LOGIN_MISSING_PARAM);
  g_assert_true (iscsi_conn_should_close (f->c));
}

static void
test_login_unknown_target (Fx *f, gconstpointer data)
{
  (void) data;
  g_assert_cmphex (login (f, KEYS ("InitiatorName=iqn.x\0TargetName="
                                   IQN "nope\0"), 0, 1, true, NULL),
                   ==, ISCSI_LOGIN_NOT_FOUND);
}

/* Start CHAP on pc02; returns the challenge id and fills chal. */
static void
chap_start (Fx *f, uint8_t *id, GBytes **chal)
{
  g_autoptr (GString) text = g_string_new (NULL);
  g_autoptr (GPtrArray) kv = NULL;

  g_assert_cmphex (login (f, KEYS ("InitiatorName=iqn.x\0TargetName=" IQN
                                   "pc02\0AuthMethod=CHAP,None\0"),
                          0, 1, false, text), ==, 0);
  g_assert_nonnull (strstr (text->str, "AuthMethod=CHAP"));
  g_assert_cmphex (login (f, KEYS ("CHAP_A=7,5\0"), 0, 1, false, text), ==, 0);
  kv = iscsi_text_parse ((const uint8_t *) text->str, text->len, NULL);
  g_assert_nonnull (kv);
  for (guint i = 0; i < kv->len; i++)
    {
      iscsi_kv *p = kv->pdata[i];
      uint64_t v;
      if (strcmp (p->key, "CHAP_I") == 0)
        {
          g_assert_true (iscsi_decode_number (p->value, 255, &v, NULL));
          *id = (uint8_t) v;
        }
      if (strcmp (p->key, "CHAP_C") == 0)
        *chal = iscsi_decode_binary (p->value, 1024, NULL);
    }
  g_assert_nonnull (*chal);
}

static char *
chap_answer (uint8_t id, GBytes *chal, const char *secret)
{
  uint8_t r[16];
  gsize n;
  const uint8_t *c = g_bytes_get_data (chal, &n);

  iscsi_chap_response (id, (const uint8_t *) secret, strlen (secret), c, n, r);
  return iscsi_encode_hex (r, 16);
}

static void
test_chap_ok (Fx *f, gconstpointer data)
{
  g_autoptr (GBytes) chal = NULL;
  g_autoptr (GString) k = g_string_new (NULL);
  g_autofree char *r = NULL;
  uint8_t id = 0;

  (void) data;
  chap_start (f, &id, &chal);
  r = chap_answer (id, chal, "secret-pc02-xx");
  iscsi_text_add (k, "CHAP_N", "user2");
  iscsi_text_add (k, "CHAP_R", r);
  g_assert_cmphex (login (f, k->str, k->len, 0, 3, true, NULL), ==, 0);
  g_assert_false (iscsi_conn_should_close (f->c));
}

/* One refused CHAP_R/CHAP_I/CHAP_C value per case. */
static const struct {
  const char *why;
  const char *r;     /* NULL: the right answer */
  const char *i, *c; /* mutual part */
} chap_bad[] = {
  { "wrong response", "0x00112233445566778899aabbccddeeff", NULL, NULL },
  { "oversize CHAP_R", "0x0011223344556677889900112233445566778899", NULL,
    NULL },
  { "empty CHAP_R", "0x", NULL, NULL },
  { "odd CHAP_R", "0x001", NULL, NULL },
  { "bad base64 CHAP_R", "0b!!!!", NULL, NULL },
  { "CHAP_I above 255", NULL, "256", "0x0102030405060708" },
  { "empty CHAP_C", NULL, "1", "0x" },
  { "reflected CHAP_C", NULL, "1", "REFLECT" },
};

static void
test_chap_bad (Fx *f, gconstpointer data)
{
  for (guint i = 0; i < G_N_ELEMENTS (chap_bad); i++)
    {
      g_autoptr (GBytes) chal = NULL;
      g_autoptr (GString) k = g_string_new (NULL);
      g_autofree char *good = NULL, *ours = NULL;
      uint8_t id = 0;

      /* one source address per case: the rate limit is tested below */
      g_autofree char *client = g_strdup_printf ("192.0.2.%u:1000", i + 1);

      g_test_message ("%s", chap_bad[i].why);
      iscsi_conn_free (f->c);
      f->c = iscsi_conn_new (f->t, client, "127.0.0.1:3260");
      g_byte_array_set_size (f->got, 0);
      chap_start (f, &id, &chal);
      good = chap_answer (id, chal, "secret-pc02-xx");
      ours = iscsi_encode_hex (g_bytes_get_data (chal, NULL),
                               g_bytes_get_size (chal));
      iscsi_text_add (k, "CHAP_N", "user2");
      iscsi_text_add (k, "CHAP_R", chap_bad[i].r ? chap_bad[i].r : good);
      if (chap_bad[i].i)
        {
          iscsi_text_add (k, "CHAP_I", chap_bad[i].i);
          iscsi_text_add (k, "CHAP_C", strcmp (chap_bad[i].c, "REFLECT") == 0
                                           ? ours : chap_bad[i].c);
        }
      g_assert_cmphex (login (f, k->str, k->len, 0, 3, true, NULL), ==,
                       ISCSI_LOGIN_AUTH_FAILED);
      g_assert_true (iscsi_conn_should_close (f->c));
    }
  (void) data;
}

/* Wrong CHAP answers from one address lock it out after
 * ISCSI_AUTH_MAX_FAILS; another address and a later port of the same
 * address are told apart by address only. */
static void
test_chap_rate_limit (Fx *f, gconstpointer data)
{
  for (guint i = 0; i < ISCSI_AUTH_MAX_FAILS; i++)
    {
      g_autoptr (GBytes) chal = NULL;
      g_autoptr (GString) k = g_string_new (NULL);
      g_autofree char *client = g_strdup_printf ("198.51.100.7:%u", 2000 + i);
      uint8_t id = 0;

      iscsi_conn_free (f->c);
      f->c = iscsi_conn_new (f->t, client, "127.0.0.1:3260");
      g_byte_array_set_size (f->got, 0);
      g_assert_cmpuint (iscsi_authlimit_locked (f->t, "198.51.100.7"), ==, 0);
      chap_start (f, &id, &chal);
      iscsi_text_add (k, "CHAP_N", "user2");
      iscsi_text_add (k, "CHAP_R", "0x00112233445566778899aabbccddeeff");
      g_assert_cmphex (login (f, k->str, k->len, 0, 3, true, NULL), ==,
                       ISCSI_LOGIN_AUTH_FAILED);
    }
  g_assert_cmpuint (iscsi_authlimit_locked (f->t, "198.51.100.7"), ==,
                    ISCSI_AUTH_LOCK_S);
  /* locked: refused at the first PDU, before any challenge */
  iscsi_conn_free (f->c);
  f->c = iscsi_conn_new (f->t, "198.51.100.7:3000", "127.0.0.1:3260");
  g_byte_array_set_size (f->got, 0);
  g_assert_cmphex (login (f, KEYS ("InitiatorName=iqn.x\0TargetName=" IQN
                                   "pc02\0AuthMethod=CHAP,None\0"),
                          0, 1, false, NULL), ==, ISCSI_LOGIN_AUTH_FAILED);
  /* another address: CHAP with the right secret */
  iscsi_conn_free (f->c);
  f->c = iscsi_conn_new (f->t, "[2001:db8::1]:4000", "127.0.0.1:3260");
  g_byte_array_set_size (f->got, 0);
  {
    g_autoptr (GBytes) chal = NULL;
    g_autoptr (GString) k = g_string_new (NULL);
    g_autofree char *good = NULL;
    uint8_t id = 0;

    chap_start (f, &id, &chal);
    good = chap_answer (id, chal, "secret-pc02-xx");
    iscsi_text_add (k, "CHAP_N", "user2");
    iscsi_text_add (k, "CHAP_R", good);
    g_assert_cmphex (login (f, k->str, k->len, 0, 3, true, NULL), ==, 0);
  }
  (void) data;
}

static void
test_source_address (void)
{
  static const char *const cases[][2] = {
    { "127.0.0.1:3260", "127.0.0.1" },
    { "[::1]:3260", "::1" },
    { "[fe80::1%eth0]:1", "fe80::1%eth0" },
    { "unix", "unix" },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *a = iscsi_source_address (cases[i][0]);
      g_assert_cmpstr (a, ==, cases[i][1]);
    }
}

static void
test_cmdsn_window (Fx *f, gconstpointer data)
{
  const uint8_t tur[16] = { 0x00 };
  uint8_t bhs[48];

  (void) data;
  login_full (f, IQN "pc01");
  f->cmd_sn += 1000; /* too high */
  scsi_cmd (f, tur, 0, false, false, true, NULL);
  g_assert_false (next_pdu (f, bhs, NULL));
  f->cmd_sn -= 1001; /* too low */
  scsi_cmd (f, tur, 0, false, false, true, NULL);
  g_assert_false (next_pdu (f, bhs, NULL));
  f->cmd_sn += 1; /* right */
  scsi_cmd (f, tur, 0, false, false, false, NULL);
  g_assert_true (next_pdu (f, bhs, NULL));
  g_assert_cmphex (bhs[0], ==, ISCSI_OP_SCSI_RSP);
  g_assert_cmphex (bhs[3], ==, SCSI_GOOD);
}

static void
test_other_lun_and_opcode (Fx *f, gconstpointer data)
{
  const uint8_t tur[16] = { 0x00 };
  const uint8_t xcopy[16] = { 0x83 };
  const uint8_t lun0[8] = { 0 };
  uint8_t bhs[48];
  g_autoptr (GString) d = g_string_new (NULL);

  (void) data;
  login_full (f, IQN "pc01");
  scsi_cmd (f, tur, 0, false, false, false, lun0);
  g_assert_true (next_pdu (f, bhs, d));
  g_assert_cmphex (bhs[3], ==, SCSI_CHECK_CONDITION);
  g_assert_cmphex (d->str[2 + 2], ==, 0x05);
  g_assert_cmphex ((uint8_t) d->str[2 + 12], ==, 0x25);
  scsi_cmd (f, xcopy, 0, false, true, false, NULL); /* EXTENDED COPY */
  g_assert_true (next_pdu (f, bhs, d));
  g_assert_cmphex (bhs[3], ==, SCSI_CHECK_CONDITION);
  g_assert_cmphex ((uint8_t) d->str[2 + 12], ==, 0x20);
}

/* WRITE(10) of 2 blocks without immediate data: R2T, then Data-Out. */
static uint32_t
start_write (Fx *f, uint32_t *ttt)
{
  uint8_t cdb[16] = { 0x2a, 0, 0, 0, 0, 8, 0, 0, 2 };
  uint8_t bhs[48];
  uint32_t itt = 0x100 + f->cmd_sn;

  scsi_cmd (f, cdb, 1024, false, true, false, NULL);
  g_assert_true (next_pdu (f, bhs, NULL));
  g_assert_cmphex (bhs[0], ==, ISCSI_OP_R2T);
  g_assert_cmpuint (df_get_be32 (bhs + 44), ==, 1024);
  *ttt = df_get_be32 (bhs + 20);
  return itt;
}

static void
data_out (Fx *f, uint32_t itt, uint32_t ttt, uint32_t sn, uint32_t off,
          bool final)
{
  uint8_t bhs[48] = { ISCSI_OP_DATA_OUT, final ? 0x80 : 0 };
  uint8_t buf[512];

  memset (buf, 'Z', sizeof buf);
  bhs[9] = 1;
  df_put_be32 (bhs + 16, itt);
  df_put_be32 (bhs + 20, ttt);
  df_put_be32 (bhs + 36, sn);
  df_put_be32 (bhs + 40, off);
  send_pdu (f, bhs, buf, sizeof buf);
}

static void
test_datasn (Fx *f, gconstpointer data)
{
  uint8_t bhs[48];
  g_autoptr (GString) d = g_string_new (NULL);
  uint32_t ttt, itt;

  (void) data;
  login_full (f, IQN "pc01");
  itt = start_write (f, &ttt);
  data_out (f, itt, ttt, 0, 0, false);
  data_out (f, itt, ttt, 0, 512, true); /* DataSN repeated */
  g_assert_true (next_pdu (f, bhs, d));
  g_assert_cmphex (bhs[0], ==, ISCSI_OP_SCSI_RSP);
  g_assert_cmphex (bhs[3], ==, SCSI_CHECK_CONDITION);
  g_assert_cmphex (d->str[2 + 2], ==, 0x0b);
  g_assert_false (iscsi_conn_should_close (f->c));
  /* and in order it works */
  itt = start_write (f, &ttt);
  data_out (f, itt, ttt, 0, 0, false);
  data_out (f, itt, ttt, 1, 512, true);
  g_assert_true (next_pdu (f, bhs, NULL));
  g_assert_cmphex (bhs[3], ==, SCSI_GOOD);
}

static void
test_tmf_during_io (Fx *f, gconstpointer data)
{
  uint8_t bhs[48], tmf[48] = { ISCSI_OP_TMF_REQ | 0x40, 0x80 | 1 };
  uint32_t ttt, itt;

  (void) data;
  login_full (f, IQN "pc01");
  itt = start_write (f, &ttt);
  tmf[9] = 1;
  df_put_be32 (tmf + 16, 0x9999);
  df_put_be32 (tmf + 20, itt);
  df_put_be32 (tmf + 24, f->cmd_sn);
  send_pdu (f, tmf, NULL, 0);
  g_assert_true (next_pdu (f, bhs, NULL));
  g_assert_cmphex (bhs[0], ==, ISCSI_OP_TMF_RSP);
  g_assert_cmphex (bhs[2], ==, 0); /* function complete */
  data_out (f, itt, ttt, 0, 0, true); /* late data: discarded */
  g_assert_false (next_pdu (f, bhs, NULL));
  send_pdu (f, tmf, NULL, 0); /* task gone now */
  g_assert_true (next_pdu (f, bhs, NULL));
  g_assert_cmphex (bhs[2], ==, 1);
  tmf[1] = 0x80 | 5; /* LUN RESET */
  send_pdu (f, tmf, NULL, 0);
  g_assert_true (next_pdu (f, bhs, NULL));
  g_assert_cmphex (bhs[2], ==, 0);
  tmf[1] = 0x80 | 7; /* TARGET COLD RESET: refused */
  send_pdu (f, tmf, NULL, 0);
  g_assert_true (next_pdu (f, bhs, NULL));
  g_assert_cmphex (bhs[2], ==, 6);
}

/* Text segments hold NULs: search the whole buffer. */
static bool
text_has (const GString *t, const char *what)
{
  size_t n = strlen (what);

  for (size_t i = 0; i + n <= t->len; i++)
    if (memcmp (t->str + i, what, n) == 0)
      return true;
  return false;
}

static void
test_discovery_filter (Fx *f, gconstpointer data)
{
  uint8_t bhs[48] = { ISCSI_OP_TEXT_REQ | 0x40, 0x80 };
  g_autoptr (GString) text = g_string_new (NULL);

  (void) data;
  login_discovery (f);
  df_put_be32 (bhs + 16, 7);
  df_put_be32 (bhs + 20, 0xffffffff);
  send_pdu (f, bhs, KEYS ("SendTargets=All\0"));
  g_assert_true (next_pdu (f, bhs, text));
  g_assert_cmphex (bhs[0], ==, ISCSI_OP_TEXT_RSP);
  g_assert_true (text_has (text, "TargetName=" IQN "pc01"));
  g_assert_true (text_has (text, "TargetName=" IQN "vdisk.web"));
  g_assert_true (text_has (text, "TargetAddress=127.0.0.1:3260,1"));
  g_assert_false (text_has (text, IQN "pc02"));
}

static void
test_nop_logout (Fx *f, gconstpointer data)
{
  uint8_t nop[48] = { ISCSI_OP_NOP_OUT | 0x40, 0x80 };
  uint8_t lo[48] = { ISCSI_OP_LOGOUT_REQ | 0x40, 0x80 };
  uint8_t bhs[48];
  g_autoptr (GString) d = g_string_new (NULL);

  (void) data;
  login_full (f, IQN "pc01");
  df_put_be32 (nop + 16, 42);
  df_put_be32 (nop + 20, 0xffffffff);
  df_put_be32 (nop + 24, f->cmd_sn);
  send_pdu (f, nop, "ping-data", 9);
  g_assert_true (next_pdu (f, bhs, d));
  g_assert_cmphex (bhs[0], ==, ISCSI_OP_NOP_IN);
  g_assert_cmpuint (df_get_be32 (bhs + 16), ==, 42);
  g_assert_cmpuint (df_get_be32 (bhs + 20), ==, 0xffffffff);
  g_assert_cmpstr (d->str, ==, "ping-data");
  df_put_be32 (lo + 16, 43);
  df_put_be32 (lo + 24, f->cmd_sn);
  send_pdu (f, lo, NULL, 0);
  g_assert_true (next_pdu (f, bhs, NULL));
  g_assert_cmphex (bhs[0], ==, ISCSI_OP_LOGOUT_RSP);
  g_assert_cmphex (bhs[2], ==, 0);
  g_assert_true (iscsi_conn_should_close (f->c));
}

/* Same initiator, ISID and target again: the old connection's socket is
 * shut down (session reinstatement); the device cache is the same. */
static void
test_reinstatement (Fx *f, gconstpointer data)
{
  int sv[2];
  char b;
  iscsi_conn *old;

  (void) data;
  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
  iscsi_conn_set_fd (f->c, sv[0]);
  login_full (f, IQN "pc01");
  old = f->c;
  f->c = iscsi_conn_new (f->t, "test2", "127.0.0.1:3260");
  f->cmd_sn = 0;
  login_full (f, IQN "pc01");
  g_assert_cmpint (read (sv[1], &b, 1), ==, 0); /* peer sees EOF */
  iscsi_conn_free (old);
  close (sv[0]);
  close (sv[1]);
}

/* Two targets in one process share no session registry: the same
 * initiator, ISID and target name logged in through another target does
 * not reinstate (shut down) the first session; through the same target it
 * does. */
static void
test_targets_registry (Fx *f, gconstpointer data)
{
  g_autoptr (DfIscsiTarget) other = df_iscsi_target_new (f->ex, f->ss);
  struct pollfd pfd;
  int sv[2];
  char b;
  iscsi_conn *first, *elsewhere;

  (void) data;
  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
  iscsi_conn_set_fd (f->c, sv[0]);
  login_full (f, IQN "pc01");
  first = f->c;
  f->c = elsewhere = iscsi_conn_new (other, "test2", "127.0.0.1:3261");
  f->cmd_sn = 0;
  login_full (f, IQN "pc01");
  pfd = (struct pollfd) { .fd = sv[1], .events = POLLIN };
  g_assert_cmpint (poll (&pfd, 1, 0), ==, 0); /* first still up */
  f->c = iscsi_conn_new (f->t, "test3", "127.0.0.1:3260");
  f->cmd_sn = 0;
  login_full (f, IQN "pc01");
  g_assert_cmpint (read (sv[1], &b, 1), ==, 0); /* reinstated: EOF */
  iscsi_conn_free (first);
  iscsi_conn_free (elsewhere);
  close (sv[0]);
  close (sv[1]);
}

/* Nor a CHAP challenge history: a challenge one target issued is not
 * "ours" to another (reflection check), and each target's LU state
 * (reservations) is its own. */
static void
test_targets_history (void)
{
  g_autoptr (DfIscsiTarget) a = df_iscsi_target_new (NULL, NULL);
  g_autoptr (DfIscsiTarget) b = df_iscsi_target_new (NULL, NULL);
  static const uint8_t isid[6] = { 0x80, 0, 0, 0, 0, 9 };
  uint8_t c[ISCSI_CHAP_CHALLENGE_LEN];
  iscsi_lu la = { 0 }, la2 = { 0 }, lb = { 0 };

  iscsi_chap_new_challenge (a, c);
  g_assert_true (iscsi_chap_is_ours (a, c, sizeof c));
  g_assert_false (iscsi_chap_is_ours (b, c, sizeof c));
  iscsi_lu_attach (&la, a, "device/pc01", "iqn.2000-01.test:x", isid);
  iscsi_lu_attach (&la2, a, "device/pc01", "iqn.2000-01.test:y", isid);
  iscsi_lu_attach (&lb, b, "device/pc01", "iqn.2000-01.test:x", isid);
  g_assert_true (la.shared == la2.shared);
  g_assert_true (la.shared != lb.shared);
  iscsi_lu_detach (&la);
  iscsi_lu_detach (&la2);
  iscsi_lu_detach (&lb);
}

/* diskfarm device reset while a session lives: its I/O is refused. */
static void
test_reset_refuses_io (Fx *f, gconstpointer data)
{
  const uint8_t read10[16] = { 0x28, 0, 0, 0, 0, 0, 0, 0, 1 };
  uint8_t bhs[48];
  g_autoptr (GString) d = g_string_new (NULL);

  (void) data;
  login_full (f, IQN "pc01");
  scsi_cmd (f, read10, 512, true, false, false, NULL);
  g_assert_true (next_pdu (f, bhs, d));
  g_assert_cmphex (bhs[0], ==, ISCSI_OP_DATA_IN);
  reset_pc01 (f);
  g_usleep (1100 * 1000); /* the session checks at most once a second */
  scsi_cmd (f, read10, 512, true, false, false, NULL);
  g_assert_true (next_pdu (f, bhs, d));
  g_assert_cmphex (bhs[0], ==, ISCSI_OP_SCSI_RSP);
  g_assert_cmphex (bhs[3], ==, SCSI_CHECK_CONDITION);
  g_assert_cmphex (d->str[2 + 2], ==, 0x02); /* NOT READY */
  g_assert_true (iscsi_conn_should_close (f->c)); /* then the conn closes */
}

/* A SYNCHRONIZE CACHE right after a reset (before any periodic check) is
 * refused, never acknowledged into the cache the device left; the
 * connection closes. */
static void
test_reset_refuses_flush (Fx *f, gconstpointer data)
{
  const uint8_t sync10[16] = { 0x35 };
  uint8_t bhs[48];
  g_autoptr (GString) d = g_string_new (NULL);

  (void) data;
  login_full (f, IQN "pc01");
  scsi_cmd (f, sync10, 0, false, false, false, NULL);
  g_assert_true (next_pdu (f, bhs, d));
  g_assert_cmphex (bhs[0], ==, ISCSI_OP_SCSI_RSP);
  g_assert_cmphex (bhs[3], ==, SCSI_GOOD);
  reset_pc01 (f);
  scsi_cmd (f, sync10, 0, false, false, false, NULL);
  g_assert_true (next_pdu (f, bhs, d));
  g_assert_cmphex (bhs[0], ==, ISCSI_OP_SCSI_RSP);
  g_assert_cmphex (bhs[3], ==, SCSI_CHECK_CONDITION);
  g_assert_cmphex (d->str[2 + 2], ==, 0x02); /* NOT READY */
  g_assert_cmphex (d->str[2 + 12], ==, 0x04);
  g_assert_cmphex (d->str[2 + 13], ==, 0x03);
  g_assert_true (iscsi_conn_should_close (f->c));
}


/* Normal-session login with MaxRecvDataSegmentLength=512 (small Text
 * Response PDUs, so that a response needs continuation). */
static void
login_small (Fx *f, const char *target)
{
  g_autoptr (GString) k = g_string_new (NULL);

  iscsi_text_add (k, "InitiatorName", "iqn.2000-01.test:init");
  iscsi_text_add (k, "TargetName", target);
  iscsi_text_add (k, "AuthMethod", "None");
  iscsi_text_add (k, "ImmediateData", "No");
  iscsi_text_add (k, "MaxRecvDataSegmentLength", "512");
  g_assert_cmphex (login (f, k->str, k->len, 0, 3, true, NULL), ==, 0);
}

/* Target Transfer Tags are never the reserved 0xffffffff, also when the
 * counter wraps in a Text Response continuation (RFC 7143 11.8.1). */
static void
test_ttt_wrap (Fx *f, gconstpointer data)
{
  uint8_t bhs[48] = { ISCSI_OP_TEXT_REQ | 0x40, 0x80 };
  const uint8_t cdb[16] = { 0x2a, 0, 0, 0, 0, 8, 0, 0, 1 };
  g_autoptr (GString) k = g_string_new (NULL);
  uint32_t ttt;

  (void) data;
  login_small (f, IQN "pc01");
  /* 16 answers of ~34 bytes plus our target: over 512, so continued. */
  f->c->next_ttt = 0xfffffffeu;
  iscsi_text_add (k, "SendTargets", IQN "pc01");
  for (int i = 0; i < 16; i++)
    {
      g_autofree char *key = g_strdup_printf ("X-org.test.filler%02d", i);
      iscsi_text_add (k, key, "v");
    }
  df_put_be32 (bhs + 16, 7);
  df_put_be32 (bhs + 20, 0xffffffff);
  df_put_be32 (bhs + 24, f->cmd_sn);
  send_pdu (f, bhs, k->str, (uint32_t) k->len);
  g_assert_true (next_pdu (f, bhs, NULL));
  g_assert_cmphex (bhs[0], ==, ISCSI_OP_TEXT_RSP);
  g_assert_cmphex (bhs[1] & 0x40, ==, 0x40); /* continued */
  g_assert_cmphex (df_get_be32 (bhs + 20), !=, 0xffffffff);
  /* The next tag handed out (an R2T's) skips the reserved value too. */
  scsi_cmd (f, cdb, 512, false, true, false, NULL);
  g_assert_true (next_pdu (f, bhs, NULL));
  g_assert_cmphex (bhs[0], ==, ISCSI_OP_R2T);
  ttt = df_get_be32 (bhs + 20);
  g_assert_cmphex (ttt, !=, 0xffffffff);
}

/* A key sent twice in one Text Request is a protocol error (RFC 7143
 * 6.2): repeated SendTargets=All would multiply one PDU of request into
 * hundreds of target lists held in memory at once. */
static void
test_text_duplicate_key (Fx *f, gconstpointer data)
{
  uint8_t bhs[48] = { ISCSI_OP_TEXT_REQ | 0x40, 0x80 };
  g_autoptr (GString) k = g_string_new (NULL);

  (void) data;
  login_discovery (f);
  for (int i = 0; i < 400; i++)
    iscsi_text_add (k, "SendTargets", "All");
  df_put_be32 (bhs + 16, 7);
  df_put_be32 (bhs + 20, 0xffffffff);
  send_pdu (f, bhs, k->str, (uint32_t) k->len);
  g_assert_true (next_pdu (f, bhs, NULL));
  g_assert_cmphex (bhs[0], ==, ISCSI_OP_REJECT);
  g_assert_false (iscsi_conn_should_close (f->c));
}

/* ---- SCSI command set over an in-memory block device ----------------------- */

/* A df_blk in memory that knows which 4 KiB chunks are allocated, so that
 * GET LBA STATUS has something to report. */
#define MEM_BLOCKS 2048u
#define MEM_CHUNK 4096u

typedef struct {
  df_blk blk;
  uint8_t *data;
  bool alloc[MEM_BLOCKS * ISCSI_BLOCK / MEM_CHUNK];
} MemBlk;

static int
mem_pread (df_blk *b, void *buf, uint32_t n, uint64_t off, int *err)
{
  (void) err;
  memcpy (buf, ((MemBlk *) b)->data + off, n);
  return 0;
}

static void
mem_mark (MemBlk *m, uint64_t off, uint32_t n, bool alloc)
{
  for (uint64_t c = off / MEM_CHUNK; c * MEM_CHUNK < off + n; c++)
    if (alloc || (c * MEM_CHUNK >= off && (c + 1) * MEM_CHUNK <= off + n))
      m->alloc[c] = alloc;
}

static int
mem_pwrite (df_blk *b, const void *buf, uint32_t n, uint64_t off,
            uint32_t flags, int *err)
{
  (void) flags;
  (void) err;
  memcpy (((MemBlk *) b)->data + off, buf, n);
  mem_mark ((MemBlk *) b, off, n, true);
  return 0;
}

static int
mem_trim (df_blk *b, uint32_t n, uint64_t off, uint32_t flags, int *err)
{
  (void) flags;
  (void) err;
  memset (((MemBlk *) b)->data + off, 0, n);
  mem_mark ((MemBlk *) b, off, n, false);
  return 0;
}

static int
mem_extents (df_blk *b, uint32_t n, uint64_t off, df_extent_cb cb,
             void *opaque, int *err)
{
  MemBlk *m = (MemBlk *) b;

  (void) err;
  for (uint64_t o = off; o < off + n;)
    {
      uint64_t end = MIN ((o / MEM_CHUNK + 1) * MEM_CHUNK, off + n);
      bool a = m->alloc[o / MEM_CHUNK];
      if (cb (opaque, o, end - o, a ? 0 : DF_EXTENT_HOLE | DF_EXTENT_ZERO) < 0)
        break;
      o = end;
    }
  return 0;
}

static void
mem_destroy (df_blk *b)
{
  g_free (((MemBlk *) b)->data);
  g_free (b);
}

static const df_blk_ops mem_ops = {
  .name = "test-mem", .pread = mem_pread, .pwrite = mem_pwrite,
  .trim = mem_trim, .extents = mem_extents, .destroy = mem_destroy,
};

typedef struct {
  df_blk *blk;
  DfSessions *ss;
  DfSession *sess;
  DfIscsiTarget *t;
  iscsi_lu lu, lu2;       /* two I_T nexuses on the same LU */
  uint8_t *din;
  iscsi_scsi_result r;
} LuFx;

static void
lu_setup (LuFx *f, gconstpointer data)
{
  static int seq;
  g_autofree char *name = g_strdup_printf ("test/lu%d", ++seq);
  static const uint8_t isid1[6] = { 0x80, 0, 0, 0, 0, 1 };
  static const uint8_t isid2[6] = { 0x80, 0, 0, 0, 0, 2 };
  MemBlk *m = g_new0 (MemBlk, 1);

  (void) data;
  m->data = g_malloc0 (MEM_BLOCKS * ISCSI_BLOCK);
  df_blk_init (&m->blk, &mem_ops, MEM_BLOCKS * ISCSI_BLOCK, false);
  m->blk.can_trim = true;
  f->blk = &m->blk;
  f->ss = df_sessions_new ();
  f->sess = df_session_start (f->ss, "iscsi", "test");
  f->t = df_iscsi_target_new (NULL, f->ss);
  for (int i = 0; i < 2; i++)
    {
      iscsi_lu *lu = i ? &f->lu2 : &f->lu;
      lu->blk = f->blk;
      lu->serial = "pc01";
      lu->target = IQN "pc01";
      iscsi_lu_attach (lu, f->t, name, i ? "iqn.2000-01.test:two"
                                   : "iqn.2000-01.test:one",
                       i ? isid2 : isid1);
    }
  f->din = g_malloc0 (ISCSI_MAX_XFER);
}

static void
lu_teardown (LuFx *f, gconstpointer data)
{
  (void) data;
  iscsi_lu_detach (&f->lu);
  iscsi_lu_detach (&f->lu2);
  df_iscsi_target_free (f->t);
  df_session_end (f->sess);
  df_sessions_free (f->ss);
  df_blk_unref (f->blk);
  g_free (f->din);
}

/* CDB builder: op, with the LBA and the length where a CDB of size 10,
 * 12 or 16 has them (the 10-byte one has a 32-bit LBA and a 16-bit
 * length, the 12-byte one a 32-bit LBA and length). */
static void
cdb_lba (uint8_t *c, int size, uint8_t op, uint64_t lba, uint32_t n)
{
  memset (c, 0, 16);
  c[0] = op;
  if (size == 16)
    {
      df_put_be64 (c + 2, lba);
      df_put_be32 (c + 10, n);
      return;
    }
  df_put_be32 (c + 2, (uint32_t) lba);
  if (size == 10)
    df_put_be16 (c + 7, (uint16_t) n);
  else
    df_put_be32 (c + 6, n);
}

static iscsi_scsi_result *
run_on (LuFx *f, iscsi_lu *lu, const uint8_t *cdb, const void *dout,
        uint32_t dout_len)
{
  scsi_dir dir;
  uint32_t len;

  iscsi_scsi_plan (lu, cdb, &dir, &len);
  iscsi_scsi_exec (lu, cdb, dout, dout_len, f->din,
                   dir == SCSI_DIR_READ ? MIN (len, ISCSI_MAX_XFER) : 0,
                   &f->r);
  return &f->r;
}

static iscsi_scsi_result *
run (LuFx *f, const uint8_t *cdb, const void *dout, uint32_t dout_len)
{
  return run_on (f, &f->lu, cdb, dout, dout_len);
}

static void
expect_good (const iscsi_scsi_result *r)
{
  if (r->status != SCSI_GOOD)
    g_error ("status 0x%02x sense %x/%02x/%02x", r->status, r->sense[2],
             r->sense[12], r->sense[13]);
}

static void
expect_sense (const iscsi_scsi_result *r, uint8_t key, uint8_t asc,
              uint8_t ascq)
{
  g_assert_cmphex (r->status, ==, SCSI_CHECK_CONDITION);
  g_assert_cmphex (r->sense[2] & 0x0f, ==, key);
  g_assert_cmphex (r->sense[12], ==, asc);
  g_assert_cmphex (r->sense[13], ==, ascq);
}

static void
expect_plan (const uint8_t *cdb, scsi_dir want_dir, uint32_t want_len)
{
  scsi_dir dir;
  uint32_t len;

  iscsi_scsi_plan (NULL, cdb, &dir, &len);
  g_assert_cmpint (dir, ==, want_dir);
  g_assert_cmpuint (len, ==, want_len);
}

static void
test_scsi_rw12 (LuFx *f, gconstpointer data)
{
  uint8_t cdb[16], buf[2 * ISCSI_BLOCK];

  (void) data;
  memset (buf, 0x5a, sizeof buf);
  cdb_lba (cdb, 12, 0xaa, 10, 2);
  expect_plan (cdb, SCSI_DIR_WRITE, 2 * ISCSI_BLOCK);
  expect_good (run (f, cdb, buf, sizeof buf));
  cdb_lba (cdb, 12, 0xa8, 10, 2);
  expect_plan (cdb, SCSI_DIR_READ, 2 * ISCSI_BLOCK);
  expect_good (run (f, cdb, NULL, 0));
  g_assert_cmpuint (f->r.data_len, ==, sizeof buf);
  g_assert_cmpmem (f->din, sizeof buf, buf, sizeof buf);
  /* VERIFY(12), BYTCHK=1: equal, then one byte off in the second block */
  cdb_lba (cdb, 12, 0xaf, 10, 2);
  cdb[1] = 0x02;
  expect_plan (cdb, SCSI_DIR_WRITE, 2 * ISCSI_BLOCK);
  expect_good (run (f, cdb, buf, sizeof buf));
  buf[ISCSI_BLOCK + 7] ^= 1;
  expect_sense (run (f, cdb, buf, sizeof buf), 0x0e, 0x1d, 0x00);
  g_assert_cmphex (f->r.sense[0] & 0x80, ==, 0x80); /* VALID */
  g_assert_cmpuint (df_get_be32 (f->r.sense + 3), ==, ISCSI_BLOCK + 7);
  /* malformed: past the end, protection bits, BYTCHK 10b, read-only */
  cdb_lba (cdb, 12, 0xa8, MEM_BLOCKS - 1, 2);
  expect_sense (run (f, cdb, NULL, 0), 0x05, 0x21, 0x00);
  cdb_lba (cdb, 12, 0xa8, 0xffffffffu, 1);
  expect_sense (run (f, cdb, NULL, 0), 0x05, 0x21, 0x00);
  cdb_lba (cdb, 12, 0xaa, 0, 1);
  cdb[1] = 0x20; /* WRPROTECT */
  expect_sense (run (f, cdb, buf, ISCSI_BLOCK), 0x05, 0x24, 0x00);
  cdb_lba (cdb, 12, 0xaf, 0, 1);
  cdb[1] = 0x04; /* BYTCHK 10b */
  expect_sense (run (f, cdb, buf, ISCSI_BLOCK), 0x05, 0x24, 0x00);
  f->lu.readonly = true;
  cdb_lba (cdb, 12, 0xaa, 0, 1);
  expect_sense (run (f, cdb, buf, ISCSI_BLOCK), 0x07, 0x27, 0x00);
  cdb_lba (cdb, 12, 0xa8, 10, 1);
  expect_good (run (f, cdb, NULL, 0)); /* reads still work */
}

static void
test_scsi_write_verify (LuFx *f, gconstpointer data)
{
  uint8_t cdb[16], buf[3 * ISCSI_BLOCK], got[3 * ISCSI_BLOCK];
  static const uint8_t ops[] = { 0x2e, 0xae, 0x8e };

  (void) data;
  for (guint i = 0; i < G_N_ELEMENTS (ops); i++)
    {
      memset (buf, 'a' + (int) i, sizeof buf);
      if (ops[i] == 0x2e)
        cdb_lba (cdb, 10, ops[i], 100, 3);
      else if (ops[i] == 0xae)
        cdb_lba (cdb, 12, ops[i], 100, 3);
      else
        cdb_lba (cdb, 16, ops[i], 100, 3);
      cdb[1] = 0x02; /* BYTCHK: data-out is still the blocks to write */
      expect_plan (cdb, SCSI_DIR_WRITE, sizeof buf);
      expect_good (run (f, cdb, buf, sizeof buf));
      g_assert_cmpint (df_blk_pread (f->blk, got, sizeof got,
                                     100 * ISCSI_BLOCK, NULL), ==, 0);
      g_assert_cmpmem (got, sizeof got, buf, sizeof buf);
      cdb[1] = 0x22; /* WRPROTECT */
      expect_sense (run (f, cdb, buf, sizeof buf), 0x05, 0x24, 0x00);
    }
  cdb_lba (cdb, 16, 0x8e, MEM_BLOCKS - 2, 3);
  expect_sense (run (f, cdb, buf, sizeof buf), 0x05, 0x21, 0x00);
  cdb_lba (cdb, 10, 0x2e, MEM_BLOCKS, 0); /* 0 blocks at the end: nothing */
  expect_good (run (f, cdb, NULL, 0));
}

static void
test_scsi_prefetch (LuFx *f, gconstpointer data)
{
  uint8_t cdb[16];

  (void) data;
  cdb_lba (cdb, 10, 0x34, 0, 16);
  cdb[1] = 0x02; /* IMMED */
  expect_plan (cdb, SCSI_DIR_NONE, 0);
  expect_good (run (f, cdb, NULL, 0));
  cdb_lba (cdb, 16, 0x90, MEM_BLOCKS - 16, 16);
  expect_good (run (f, cdb, NULL, 0));
  cdb_lba (cdb, 16, 0x90, MEM_BLOCKS, 0);
  expect_good (run (f, cdb, NULL, 0));
  cdb_lba (cdb, 16, 0x90, MEM_BLOCKS - 15, 16);
  expect_sense (run (f, cdb, NULL, 0), 0x05, 0x21, 0x00);
  cdb_lba (cdb, 10, 0x34, MEM_BLOCKS + 1, 0);
  expect_sense (run (f, cdb, NULL, 0), 0x05, 0x21, 0x00);
  cdb_lba (cdb, 16, 0x90, UINT64_MAX, 1);
  expect_sense (run (f, cdb, NULL, 0), 0x05, 0x21, 0x00);
}

static void
test_scsi_orwrite (LuFx *f, gconstpointer data)
{
  uint8_t cdb[16], a[2 * ISCSI_BLOCK], b[2 * ISCSI_BLOCK], got[sizeof a];

  (void) data;
  memset (a, 0x0f, sizeof a);
  memset (b, 0x30, sizeof b);
  g_assert_cmpint (df_blk_pwrite (f->blk, a, sizeof a, 40 * ISCSI_BLOCK, 0,
                                  NULL), ==, 0);
  cdb_lba (cdb, 16, 0x8b, 40, 2);
  expect_plan (cdb, SCSI_DIR_WRITE, sizeof b);
  expect_good (run (f, cdb, b, sizeof b));
  g_assert_cmpint (df_blk_pread (f->blk, got, sizeof got, 40 * ISCSI_BLOCK,
                                 NULL), ==, 0);
  for (guint i = 0; i < sizeof got; i++)
    g_assert_cmphex (got[i], ==, 0x3f);
  cdb_lba (cdb, 16, 0x8b, MEM_BLOCKS - 1, 2);
  expect_sense (run (f, cdb, b, sizeof b), 0x05, 0x21, 0x00);
  cdb_lba (cdb, 16, 0x8b, 40, 2);
  cdb[1] = 0x40; /* ORPROTECT */
  expect_sense (run (f, cdb, b, sizeof b), 0x05, 0x24, 0x00);
  f->lu.readonly = true;
  cdb[1] = 0;
  expect_sense (run (f, cdb, b, sizeof b), 0x07, 0x27, 0x00);
}

static void
caw_cdb (uint8_t *cdb, uint64_t lba, uint8_t n)
{
  cdb_lba (cdb, 16, 0x89, lba, 0);
  cdb[13] = n;
}

static void
test_scsi_compare_and_write (LuFx *f, gconstpointer data)
{
  g_autofree uint8_t *buf = g_malloc (2 * 129 * ISCSI_BLOCK);
  uint8_t cdb[16], got[2 * ISCSI_BLOCK];

  (void) data;
  memset (buf, 'A', 2 * ISCSI_BLOCK);
  g_assert_cmpint (df_blk_pwrite (f->blk, buf, 2 * ISCSI_BLOCK,
                                  5 * ISCSI_BLOCK, 0, NULL), ==, 0);
  memset (buf + 2 * ISCSI_BLOCK, 'B', 2 * ISCSI_BLOCK);
  caw_cdb (cdb, 5, 2);
  expect_plan (cdb, SCSI_DIR_WRITE, 4 * ISCSI_BLOCK);
  expect_good (run (f, cdb, buf, 4 * ISCSI_BLOCK));
  g_assert_cmpint (df_blk_pread (f->blk, got, sizeof got, 5 * ISCSI_BLOCK,
                                 NULL), ==, 0);
  g_assert_cmpmem (got, sizeof got, buf + 2 * ISCSI_BLOCK, sizeof got);
  /* the medium holds B now: comparing with A fails at byte 0, and the
   * write half is not applied */
  memset (buf + 2 * ISCSI_BLOCK, 'C', 2 * ISCSI_BLOCK);
  expect_sense (run (f, cdb, buf, 4 * ISCSI_BLOCK), 0x0e, 0x1d, 0x00);
  g_assert_cmpuint (df_get_be32 (f->r.sense + 3), ==, 0);
  g_assert_cmpint (df_blk_pread (f->blk, got, sizeof got, 5 * ISCSI_BLOCK,
                                 NULL), ==, 0);
  g_assert_cmphex (got[0], ==, 'B');
  /* malformed: data-out not 2 x NLB, NLB over the VPD limit, past the
   * end, WRPROTECT, read-only; NLB 0 is a no-op */
  caw_cdb (cdb, 5, 1);
  expect_sense (run (f, cdb, buf, 4 * ISCSI_BLOCK), 0x05, 0x24, 0x00);
  caw_cdb (cdb, 5, 3);
  expect_sense (run (f, cdb, buf, 4 * ISCSI_BLOCK), 0x05, 0x24, 0x00);
  caw_cdb (cdb, 0, 129);
  memset (buf, 0, 2 * 129 * ISCSI_BLOCK);
  expect_sense (run (f, cdb, buf, 2 * 129 * ISCSI_BLOCK), 0x05, 0x24, 0x00);
  caw_cdb (cdb, MEM_BLOCKS - 1, 2);
  expect_sense (run (f, cdb, buf, 4 * ISCSI_BLOCK), 0x05, 0x21, 0x00);
  caw_cdb (cdb, 5, 2);
  cdb[1] = 0x20;
  expect_sense (run (f, cdb, buf, 4 * ISCSI_BLOCK), 0x05, 0x24, 0x00);
  caw_cdb (cdb, 5, 0);
  expect_good (run (f, cdb, NULL, 0));
  f->lu.readonly = true;
  caw_cdb (cdb, 5, 2);
  expect_sense (run (f, cdb, buf, 4 * ISCSI_BLOCK), 0x07, 0x27, 0x00);
}

static void
gls_cdb (uint8_t *cdb, uint64_t lba, uint32_t alloc)
{
  cdb_lba (cdb, 16, 0x9e, lba, alloc);
  cdb[1] = 0x12;
}

static void
test_scsi_get_lba_status (LuFx *f, gconstpointer data)
{
  uint8_t cdb[16], buf[16 * ISCSI_BLOCK], unmap[24] = { 0, 22, 0, 16 };
  const uint8_t *d = NULL;

  (void) data;
  memset (buf, 1, sizeof buf);
  cdb_lba (cdb, 10, 0x2a, 0, 16);
  expect_good (run (f, cdb, buf, sizeof buf));
  df_put_be64 (unmap + 8, 8);
  df_put_be32 (unmap + 16, 8);
  cdb_lba (cdb, 10, 0x42, 0, sizeof unmap);
  expect_good (run (f, cdb, unmap, sizeof unmap));
  gls_cdb (cdb, 0, 4096);
  expect_plan (cdb, SCSI_DIR_READ, 4096);
  expect_good (run (f, cdb, NULL, 0));
  d = f->din + 8;
  g_assert_cmpuint (df_get_be32 (f->din), ==, f->r.data_len - 4);
  g_assert_cmpuint (df_get_be64 (d), ==, 0);      /* mapped 0..7 */
  g_assert_cmpuint (df_get_be32 (d + 8), ==, 8);
  g_assert_cmpuint (d[12], ==, 0);
  g_assert_cmpuint (df_get_be64 (d + 16), ==, 8); /* deallocated from 8 */
  g_assert_cmpuint (df_get_be32 (d + 24), ==, MEM_BLOCKS - 8);
  g_assert_cmpuint (d[28], ==, 1);
  g_assert_cmpuint (f->r.data_len, ==, 8 + 32);
  /* the first descriptor starts at the requested LBA (SBC-4 5.7.2.3) */
  gls_cdb (cdb, 3, 24);
  expect_good (run (f, cdb, NULL, 0));
  g_assert_cmpuint (df_get_be64 (d), ==, 3);
  g_assert_cmpuint (df_get_be32 (d + 8), ==, 5);
  g_assert_cmpuint (f->r.data_len, ==, 24);
  gls_cdb (cdb, MEM_BLOCKS - 1, 24);
  expect_good (run (f, cdb, NULL, 0));
  g_assert_cmpuint (df_get_be32 (d + 8), ==, 1);
  gls_cdb (cdb, MEM_BLOCKS, 24);
  expect_sense (run (f, cdb, NULL, 0), 0x05, 0x21, 0x00);
  gls_cdb (cdb, UINT64_MAX, 24);
  expect_sense (run (f, cdb, NULL, 0), 0x05, 0x21, 0x00);
}

/* Every row of the table answers the one-command forms, consistently
 * with the all-commands list. */
static void
test_scsi_report_opcodes (LuFx *f, gconstpointer data)
{
  uint8_t cdb[16] = { 0xa3, 0x0c }, all[4096];
  uint32_t n;
  bool saw_caw = false, saw_full_status = false;

  (void) data;
  df_put_be32 (cdb + 6, sizeof all);
  expect_plan (cdb, SCSI_DIR_READ, sizeof all);
  expect_good (run (f, cdb, NULL, 0));
  n = f->r.data_len;
  g_assert_cmpuint (df_get_be32 (f->din), ==, n - 4);
  g_assert_cmpuint ((n - 4) % 8, ==, 0);
  memcpy (all, f->din, n);
  for (uint32_t o = 4; o < n; o += 8)
    {
      uint8_t op = all[o], servactv = all[o + 5] & 1;
      uint16_t sa = df_get_be16 (all + o + 2);
      uint8_t one[16] = { 0xa3, 0x0c, servactv ? 2 : 1, op };

      saw_caw |= op == 0x89;
      saw_full_status |= op == 0x5e && sa == 3;
      g_assert_true (servactv || sa == 0);
      df_put_be16 (one + 4, sa);
      df_put_be32 (one + 6, 64);
      expect_good (run (f, one, NULL, 0));
      g_assert_cmphex (f->din[1] & 7, ==, 3); /* supported */
      g_assert_cmpuint (df_get_be16 (f->din + 2), ==, df_get_be16 (all + o + 6));
      g_assert_cmphex (f->din[4], ==, op);
      if (servactv)
        g_assert_cmphex (f->din[5], ==, sa); /* usage: the SA itself */
      one[2] = servactv ? 1 : 2; /* the other form is a bad field */
      expect_sense (run (f, one, NULL, 0), 0x05, 0x24, 0x00);
      g_assert_cmphex (f->r.sense[15], ==, 0x80 | 0x40 | 0x08 | 2);
      g_assert_cmpuint (df_get_be16 (f->r.sense + 16), ==, 2);
    }
  g_assert_true (saw_caw && saw_full_status);
  /* RCTD: 20-byte descriptors with CTDP and a timeouts descriptor */
  cdb[2] = 0x80;
  expect_good (run (f, cdb, NULL, 0));
  g_assert_cmpuint (df_get_be32 (f->din) % 20, ==, 0);
  g_assert_cmphex (f->din[4 + 5] & 0x02, ==, 0x02);
  g_assert_cmpuint (df_get_be16 (f->din + 4 + 8), ==, 0x0a);
  /* an opcode we do not have: SUPPORT 001b, GOOD */
  memset (cdb, 0, sizeof cdb);
  cdb[0] = 0xa3; cdb[1] = 0x0c; cdb[2] = 1; cdb[3] = 0x04;
  df_put_be32 (cdb + 6, 64);
  expect_good (run (f, cdb, NULL, 0));
  g_assert_cmphex (f->din[1] & 7, ==, 1);
  /* malformed: reporting options 4, a service action over 5 bits */
  cdb[2] = 4;
  expect_sense (run (f, cdb, NULL, 0), 0x05, 0x24, 0x00);
  cdb[2] = 2; cdb[3] = 0x9e; cdb[5] = 0x20;
  expect_sense (run (f, cdb, NULL, 0), 0x05, 0x24, 0x00);
  /* truncated to the allocation length, the header still says it all */
  memset (cdb, 0, sizeof cdb);
  cdb[0] = 0xa3; cdb[1] = 0x0c;
  df_put_be32 (cdb + 6, 6);
  expect_good (run (f, cdb, NULL, 0));
  g_assert_cmpuint (f->r.data_len, ==, 6);
  g_assert_cmpuint (df_get_be32 (f->din), ==, n - 4);
}

/* PERSISTENT RESERVE OUT with the 24-byte parameter list. */
static iscsi_scsi_result *
prout (LuFx *f, iscsi_lu *lu, uint8_t sa, uint8_t type, uint64_t key,
       uint64_t sa_key, uint8_t flags)
{
  uint8_t cdb[16] = { 0x5f, sa, type }, p[24] = { 0 };

  df_put_be32 (cdb + 5, sizeof p);
  df_put_be64 (p, key);
  df_put_be64 (p + 8, sa_key);
  p[20] = flags;
  return run_on (f, lu, cdb, p, sizeof p);
}

static iscsi_scsi_result *
prin (LuFx *f, iscsi_lu *lu, uint8_t sa)
{
  uint8_t cdb[16] = { 0x5e, sa };

  df_put_be16 (cdb + 7, 1024);
  return run_on (f, lu, cdb, NULL, 0);
}

static void
expect_conflict (const iscsi_scsi_result *r)
{
  g_assert_cmphex (r->status, ==, SCSI_RESERVATION_CONFLICT);
  g_assert_cmpuint (r->sense_len, ==, 0);
}

static void
test_scsi_persistent_reserve (LuFx *f, gconstpointer data)
{
  uint8_t rd[16], wr[16], blk[ISCSI_BLOCK] = { 0 }, cdb[16];

  (void) data;
  cdb_lba (rd, 10, 0x28, 0, 1);
  cdb_lba (wr, 10, 0x2a, 0, 1);
  expect_good (prin (f, &f->lu, 2)); /* REPORT CAPABILITIES */
  g_assert_cmpuint (df_get_be16 (f->din), ==, 8);
  g_assert_cmphex (f->din[2] & 0x01, ==, 0); /* PTPL_C: not persisted */
  g_assert_cmphex (f->din[4], ==, 0xea);
  g_assert_cmphex (f->din[5], ==, 0x01);
  /* registration: key 0 is a no-op; a key for an unregistered nexus must
   * come with reservation key 0 */
  expect_good (prout (f, &f->lu, 0, 0, 0, 0, 0));
  expect_good (prout (f, &f->lu, 0, 0, 0, 0x1111, 0));
  expect_conflict (prout (f, &f->lu2, 0, 0, 0x5, 0x2222, 0));
  expect_good (prout (f, &f->lu2, 6, 0, 0x5, 0x2222, 0)); /* IGNORE */
  expect_good (prin (f, &f->lu, 0));
  g_assert_cmpuint (df_get_be32 (f->din), ==, 2); /* PRgeneration */
  g_assert_cmpuint (df_get_be32 (f->din + 4), ==, 16);
  /* READ FULL STATUS lists the registrations sorted by nexus name */
  expect_good (prin (f, &f->lu, 3));
  {
    guint len1 = df_get_be32 (f->din + 8 + 20);
    const char *first = (const char *) f->din + 8 + 28;
    const char *second = (const char *) f->din + 8 + 24 + len1 + 28;
    g_assert_cmpuint (df_get_be32 (f->din + 4), ==, 24 + len1 + 24
                      + df_get_be32 (f->din + 8 + 24 + len1 + 20));
    g_assert_cmpint (strcmp (first, second), <, 0);
  }
  /* WRITE EXCLUSIVE by one: the other reads but does not write */
  expect_conflict (prout (f, &f->lu, 1, 1, 0x9999, 0, 0));
  expect_good (prout (f, &f->lu, 1, 1, 0x1111, 0, 0));
  expect_good (prin (f, &f->lu2, 1));
  g_assert_cmpuint (df_get_be32 (f->din + 4), ==, 16);
  g_assert_cmpuint (df_get_be64 (f->din + 8), ==, 0x1111);
  g_assert_cmphex (f->din[8 + 13], ==, 1);
  expect_good (run_on (f, &f->lu2, rd, NULL, 0));
  expect_conflict (run_on (f, &f->lu2, wr, blk, sizeof blk));
  expect_good (run_on (f, &f->lu, wr, blk, sizeof blk));
  expect_conflict (prout (f, &f->lu2, 1, 1, 0x2222, 0, 0));
  /* release with the wrong type; then right */
  expect_sense (prout (f, &f->lu, 2, 3, 0x1111, 0, 0), 0x05, 0x26, 0x04);
  expect_good (prout (f, &f->lu, 2, 1, 0x1111, 0, 0));
  expect_good (run_on (f, &f->lu2, wr, blk, sizeof blk));
  /* EXCLUSIVE ACCESS - REGISTRANTS ONLY: registrants read and write */
  expect_good (prout (f, &f->lu, 1, 6, 0x1111, 0, 0));
  expect_good (run_on (f, &f->lu2, wr, blk, sizeof blk));
  /* PREEMPT the holder's key: its registration and reservation go */
  expect_good (prout (f, &f->lu2, 4, 3, 0x2222, 0x1111, 0));
  expect_good (prin (f, &f->lu, 0));
  g_assert_cmpuint (df_get_be32 (f->din + 4), ==, 8);
  g_assert_cmpuint (df_get_be64 (f->din + 8), ==, 0x2222);
  expect_conflict (run_on (f, &f->lu, rd, NULL, 0));
  /* READ FULL STATUS: one holder, its iSCSI TransportID */
  expect_good (prin (f, &f->lu, 3));
  g_assert_cmphex (f->din[8 + 12], ==, 0x01);
  g_assert_cmphex (f->din[8 + 13], ==, 3);
  g_assert_cmphex (f->din[8 + 24], ==, 0x45);
  g_assert_cmpstr ((const char *) f->din + 8 + 28, ==,
                   "iqn.2000-01.test:two,i,0x800000000002");
  /* CLEAR needs a registered key; it drops everything */
  expect_conflict (prout (f, &f->lu, 3, 0, 0x1111, 0, 0));
  expect_good (prout (f, &f->lu2, 3, 0, 0x2222, 0, 0));
  expect_good (run_on (f, &f->lu, wr, blk, sizeof blk));
  expect_good (prin (f, &f->lu, 0));
  g_assert_cmpuint (df_get_be32 (f->din + 4), ==, 0);
  /* malformed */
  memset (cdb, 0, sizeof cdb);
  cdb[0] = 0x5f;
  df_put_be32 (cdb + 5, 23);
  expect_sense (run (f, cdb, blk, 24), 0x05, 0x1a, 0x00);
  expect_sense (prout (f, &f->lu, 0, 0, 0, 1, 0x01), 0x05, 0x26, 0x00);
  expect_sense (prout (f, &f->lu, 0, 0, 0, 1, 0x04), 0x05, 0x26, 0x00);
  expect_good (prout (f, &f->lu, 0, 0, 0, 0x1111, 0));
  expect_sense (prout (f, &f->lu, 1, 0x11, 0x1111, 0, 0), 0x05, 0x24, 0x00);
  expect_sense (prout (f, &f->lu, 1, 2, 0x1111, 0, 0), 0x05, 0x24, 0x00);
  expect_sense (prout (f, &f->lu, 7, 1, 0x1111, 0, 0), 0x05, 0x24, 0x00);
  expect_sense (prin (f, &f->lu, 4), 0x05, 0x24, 0x00);
  /* unregistering the holder of a WE reservation releases it */
  expect_good (prout (f, &f->lu, 1, 1, 0x1111, 0, 0));
  expect_good (prout (f, &f->lu, 0, 0, 0x1111, 0, 0));
  expect_good (prin (f, &f->lu2, 1));
  g_assert_cmpuint (df_get_be32 (f->din + 4), ==, 0);
}

/* READ FULL STATUS carries each nexus's name whole, however long the
 * InitiatorName the login accepted (text values go to 8192 bytes). */
static void
test_scsi_pr_long_name (LuFx *f, gconstpointer data)
{
  g_autofree char *name = g_strnfill (4000, 'n');
  static const uint8_t isid[6] = { 0x80, 0, 0, 0, 0, 3 };
  uint8_t cdb[16] = { 0x5e, 3 };
  iscsi_lu lu = f->lu;

  (void) data;
  lu.shared = NULL;
  lu.nexus = NULL;
  iscsi_lu_attach (&lu, f->t, "test/long-name", name, isid);
  expect_good (prout (f, &lu, 0, 0, 0, 0x42, 0));
  df_put_be16 (cdb + 7, 0xffff);
  expect_good (run_on (f, &lu, cdb, NULL, 0));
  g_assert_cmpuint (f->r.data_len, ==, 8 + 24 + 4 + 4020);
  g_assert_cmpuint (df_get_be16 (f->din + 8 + 26), ==, 4020);
  g_assert_cmpuint (strlen ((const char *) f->din + 8 + 28), ==,
                    4000 + strlen (",i,0x800000000003"));
  expect_good (prout (f, &lu, 0, 0, 0x42, 0, 0));
  iscsi_lu_detach (&lu);
}

static void
test_scsi_reserve6 (LuFx *f, gconstpointer data)
{
  uint8_t res[16] = { 0x16 }, rel[16] = { 0x17 }, tur[16] = { 0 };
  uint8_t inq[16] = { 0x12, 0, 0, 0, 96 }, res10[16] = { 0x56, 0x02 };

  (void) data;
  expect_good (run (f, res, NULL, 0));
  expect_good (run (f, res, NULL, 0)); /* again by the holder */
  expect_conflict (run_on (f, &f->lu2, res, NULL, 0));
  expect_conflict (run_on (f, &f->lu2, tur, NULL, 0));
  expect_good (run_on (f, &f->lu2, inq, NULL, 0));
  expect_good (run_on (f, &f->lu2, rel, NULL, 0)); /* a no-op */
  expect_conflict (run_on (f, &f->lu2, tur, NULL, 0));
  expect_good (run (f, tur, NULL, 0));
  iscsi_lu_reset (&f->lu);      /* LOGICAL UNIT RESET releases it */
  expect_good (run_on (f, &f->lu2, res, NULL, 0));
  expect_conflict (run (f, tur, NULL, 0));
  iscsi_lu_detach (&f->lu2);    /* so does the loss of the nexus */
  expect_good (run (f, tur, NULL, 0));
  expect_sense (run (f, res10, NULL, 0), 0x05, 0x24, 0x00); /* LONGID */
  /* with a persistent registration, RESERVE and RELEASE conflict */
  expect_good (prout (f, &f->lu, 0, 0, 0, 0x77, 0));
  expect_conflict (run (f, res, NULL, 0));
  expect_conflict (run (f, rel, NULL, 0));
  expect_good (prout (f, &f->lu, 0, 0, 0x77, 0, 0));
}

static void
test_scsi_table (LuFx *f, gconstpointer data)
{
  uint8_t cdb[16] = { 0x04 };

  (void) data;
  expect_plan (cdb, SCSI_DIR_NONE, 0);
  expect_sense (run (f, cdb, NULL, 0), 0x05, 0x20, 0x00);
  cdb_lba (cdb, 16, 0x9e, 0, 32);
  cdb[1] = 0x11; /* a service action of SERVICE ACTION IN we lack */
  expect_plan (cdb, SCSI_DIR_NONE, 0);
  expect_sense (run (f, cdb, NULL, 0), 0x05, 0x24, 0x00);
  g_assert_cmpuint (df_get_be16 (f->r.sense + 16), ==, 1);
  cdb[1] = 0x10; /* READ CAPACITY (16) */
  expect_plan (cdb, SCSI_DIR_READ, 32);
  expect_good (run (f, cdb, NULL, 0));
  g_assert_cmpuint (df_get_be64 (f->din), ==, MEM_BLOCKS - 1);
  /* VPD B0 declares the COMPARE AND WRITE limit enforced above */
  memset (cdb, 0, sizeof cdb);
  cdb[0] = 0x12; cdb[1] = 1; cdb[2] = 0xb0; cdb[4] = 64;
  expect_good (run (f, cdb, NULL, 0));
  g_assert_cmpuint (f->din[5], ==, 128);
}

/* ---- dead-peer pings (NOP-In) ------------------------------------------------------ */

#define T0 (1000 * G_USEC_PER_SEC)
#define SEC(n) ((gint64) (n) * G_USEC_PER_SEC)

/* One clock tick; move the output into f->got. */
static bool
tick (Fx *f, gint64 now)
{
  bool alive = iscsi_conn_tick (f->c, now);

  df_engine_pump (iscsi_conn_engine (f->c), df_engine_sink_bytes, f->got);
  return alive;
}

/* The NOP-In of an idle session: RFC 7143 11.19 ping asking an answer. */
static uint32_t
expect_ping (Fx *f, uint32_t *stat_sn)
{
  static const uint8_t lun1[8] = { 0, ISCSI_LUN };
  uint8_t bhs[48];

  g_assert_true (next_pdu (f, bhs, NULL));
  g_assert_cmphex (bhs[0], ==, ISCSI_OP_NOP_IN);
  g_assert_cmphex (bhs[1], ==, 0x80);
  g_assert_cmpuint (df_get_be24 (bhs + 5), ==, 0); /* no data */
  g_assert_cmpmem (bhs + 8, 8, lun1, 8);
  g_assert_cmphex (df_get_be32 (bhs + 16), ==, 0xffffffff); /* ITT */
  g_assert_cmphex (df_get_be32 (bhs + 20), !=, 0xffffffff); /* TTT */
  g_assert_cmpuint (df_get_be32 (bhs + 28), ==, f->cmd_sn); /* ExpCmdSN */
  *stat_sn = df_get_be32 (bhs + 24);
  g_assert_false (next_pdu (f, bhs, NULL));
  return df_get_be32 (bhs + 20);
}

/* The initiator's answer: NOP-Out, immediate, ITT 0xffffffff, our TTT
 * and LUN, CmdSN not advanced (RFC 7143 11.18). */
static void
answer_ping (Fx *f, uint32_t ttt)
{
  uint8_t nop[48] = { ISCSI_OP_NOP_OUT | 0x40, 0x80 };

  nop[9] = ISCSI_LUN;
  df_put_be32 (nop + 16, 0xffffffff);
  df_put_be32 (nop + 20, ttt);
  df_put_be32 (nop + 24, f->cmd_sn);
  send_pdu (f, nop, NULL, 0);
}

static void
test_nop_ping (Fx *f, gconstpointer data)
{
  const uint8_t tur[16] = { 0x00 };
  uint8_t bhs[48];
  uint32_t ttt, ttt2, stat_sn, stat_sn2;

  (void) data;
  login_full (f, IQN "pc01");
  g_assert_true (tick (f, T0));
  g_assert_true (tick (f, T0 + SEC (ISCSI_NOP_INTERVAL_DEFAULT) - SEC (1)));
  g_assert_cmpuint (f->got->len, ==, 0); /* not idle long enough */
  /* a tick a few ms early still counts */
  g_assert_true (tick (f, T0 + SEC (ISCSI_NOP_INTERVAL_DEFAULT) - 5000));
  ttt = expect_ping (f, &stat_sn);
  g_assert_true (tick (f, T0 + SEC (12))); /* no second ping while waiting */
  g_assert_cmpuint (f->got->len, ==, 0);
  answer_ping (f, ttt);
  g_assert_cmpuint (f->got->len, ==, 0); /* an answer gets no answer */
  g_assert_true (tick (f, T0 + SEC (13)));
  /* The ping did not advance StatSN; the answer used no CmdSN. */
  scsi_cmd (f, tur, 0, false, false, false, NULL);
  g_assert_true (next_pdu (f, bhs, NULL));
  g_assert_cmphex (bhs[0], ==, ISCSI_OP_SCSI_RSP);
  g_assert_cmphex (bhs[3], ==, SCSI_GOOD);
  g_assert_cmpuint (df_get_be32 (bhs + 24), ==, stat_sn);
  /* Idle again from the tick that saw the command: the next ping, with a
   * new tag, comes one interval later. */
  g_assert_true (tick (f, T0 + SEC (14)));
  g_assert_true (tick (f, T0 + SEC (23)));
  g_assert_cmpuint (f->got->len, ==, 0);
  g_assert_true (tick (f, T0 + SEC (24)));
  ttt2 = expect_ping (f, &stat_sn2);
  g_assert_cmphex (ttt2, !=, ttt);
  g_assert_cmpuint (stat_sn2, ==, stat_sn + 1);
  g_assert_false (iscsi_conn_should_close (f->c));
}

/* No byte back within the timeout: the connection is dead. */
static void
test_nop_timeout (Fx *f, gconstpointer data)
{
  uint32_t stat_sn;
  gint64 sent = T0 + SEC (ISCSI_NOP_INTERVAL_DEFAULT);

  (void) data;
  login_full (f, IQN "pc01");
  g_assert_true (tick (f, T0));
  g_assert_true (tick (f, sent));
  expect_ping (f, &stat_sn);
  g_assert_true (tick (f, sent + SEC (ISCSI_NOP_TIMEOUT_DEFAULT) - SEC (1)));
  g_assert_false (iscsi_conn_should_close (f->c));
  g_assert_false (tick (f, sent + SEC (ISCSI_NOP_TIMEOUT_DEFAULT)));
  g_assert_true (iscsi_conn_should_close (f->c));
}

/* Any PDU proves the peer alive, also one that is not the answer (a
 * wrong tag, a command); a configured interval and timeout are used. */
static void
test_nop_other_traffic (Fx *f, gconstpointer data)
{
  uint32_t ttt, stat_sn;

  (void) data;
  iscsi_conn_set_nop (f->c, 2, 3);
  login_full (f, IQN "pc01");
  g_assert_true (tick (f, T0));
  g_assert_true (tick (f, T0 + SEC (2)));
  ttt = expect_ping (f, &stat_sn);
  answer_ping (f, ttt + 1); /* not our tag: ignored, but bytes came */
  g_assert_cmpuint (f->got->len, ==, 0);
  g_assert_true (tick (f, T0 + SEC (5)));
  g_assert_true (tick (f, T0 + SEC (6)));
  g_assert_cmpuint (f->got->len, ==, 0);
  g_assert_true (tick (f, T0 + SEC (7)));
  expect_ping (f, &stat_sn);
  g_assert_false (tick (f, T0 + SEC (10)));
}

/* Never pinged: the login phase, discovery sessions, pings turned off. */
static void
test_nop_not_pinged (Fx *f, gconstpointer data)
{
  (void) data;
  g_assert_true (tick (f, T0)); /* before any login */
  g_assert_true (tick (f, T0 + SEC (3600)));
  login_discovery (f);
  for (int i = 1; i <= 100; i++)
    g_assert_true (tick (f, T0 + SEC (3600 + 10 * i)));
  g_assert_cmpuint (f->got->len, ==, 0);
  iscsi_conn_free (f->c);
  f->c = iscsi_conn_new (f->t, "test", "127.0.0.1:3260");
  iscsi_conn_set_nop (f->c, 0, ISCSI_NOP_TIMEOUT_DEFAULT);
  login_full (f, IQN "pc01");
  for (int i = 0; i <= 100; i++)
    g_assert_true (tick (f, T0 + SEC (10 * i)));
  g_assert_cmpuint (f->got->len, ==, 0);
}

int
main (int argc, char **argv)
{
  test_db_init ();
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/iscsi/messages-utf8", test_messages_utf8);
  g_test_add_func ("/iscsi/crc32c", test_crc32c);
  g_test_add_func ("/iscsi/pdu-parse", test_pdu_parse);
  g_test_add_func ("/iscsi/out-roundtrip", test_out_roundtrip);
  g_test_add_func ("/iscsi/text-parse", test_text_parse);
  g_test_add_func ("/iscsi/text-long-value", test_long_value);
  g_test_add_func ("/iscsi/binary", test_binary);
  g_test_add_func ("/iscsi/number", test_number);
  g_test_add_func ("/iscsi/chap-md5", test_chap_md5);
  g_test_add_func ("/iscsi/chap-challenges", test_chap_challenges);
  g_test_add_func ("/iscsi/targets-history", test_targets_history);
  g_test_add_func ("/iscsi/target-names", test_target_names);
  g_test_add_func ("/iscsi/source-address", test_source_address);
#define FX(path, fn) \
  g_test_add ("/iscsi/engine/" path, Fx, NULL, fx_setup, fn, fx_teardown)
  FX ("login-oversize", test_login_oversize);
  FX ("login-missing-target", test_login_missing_target);
  FX ("login-unknown-target", test_login_unknown_target);
  FX ("chap-ok", test_chap_ok);
  FX ("chap-bad", test_chap_bad);
  FX ("chap-rate-limit", test_chap_rate_limit);
  FX ("cmdsn-window", test_cmdsn_window);
  FX ("other-lun-opcode", test_other_lun_and_opcode);
  FX ("datasn", test_datasn);
  FX ("tmf-during-io", test_tmf_during_io);
  FX ("discovery-filter", test_discovery_filter);
  FX ("reset-refuses-io", test_reset_refuses_io);
  FX ("reset-refuses-flush", test_reset_refuses_flush);
  FX ("nop-logout", test_nop_logout);
  FX ("reinstatement", test_reinstatement);
  FX ("targets-registry", test_targets_registry);
  FX ("ttt-wrap", test_ttt_wrap);
  FX ("text-duplicate-key", test_text_duplicate_key);
  FX ("nop-ping", test_nop_ping);
  FX ("nop-timeout", test_nop_timeout);
  FX ("nop-other-traffic", test_nop_other_traffic);
  FX ("nop-not-pinged", test_nop_not_pinged);
#define LU(path, fn) \
  g_test_add ("/iscsi/scsi/" path, LuFx, NULL, lu_setup, fn, lu_teardown)
  LU ("rw12-verify12", test_scsi_rw12);
  LU ("write-and-verify", test_scsi_write_verify);
  LU ("pre-fetch", test_scsi_prefetch);
  LU ("compare-and-write", test_scsi_compare_and_write);
  LU ("orwrite", test_scsi_orwrite);
  LU ("get-lba-status", test_scsi_get_lba_status);
  LU ("report-supported-opcodes", test_scsi_report_opcodes);
  LU ("persistent-reserve", test_scsi_persistent_reserve);
  LU ("persistent-reserve-long-name", test_scsi_pr_long_name);
  LU ("reserve6-release6", test_scsi_reserve6);
  LU ("table", test_scsi_table);
  return g_test_run ();
}
