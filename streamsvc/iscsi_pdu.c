/* streamsvc: iSCSI PDU framing, digests, text keys (see iscsi.h).
 *
 * Everything read from the wire is checked against the bytes really there
 * and against the negotiated limits before use (BAD-INPUTS.md: AHS or
 * data segment longer than the negotiated size, tgt 093d2bf).
 */
#define G_LOG_DOMAIN "streamsvc-iscsi"

#include "iscsi_int.h"

#include <string.h>

#include "common.h"

/* ---- CRC32C (Castagnoli, reflected, poly 0x82F63B78) ---------------------- */

static uint32_t crc32c_table[8][256];

static gpointer
crc32c_init_once (gpointer unused)
{
  (void) unused;
  for (uint32_t i = 0; i < 256; i++)
    {
      uint32_t c = i;
      for (int k = 0; k < 8; k++)
        c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      crc32c_table[0][i] = c;
    }
  for (uint32_t i = 0; i < 256; i++)
    for (int t = 1; t < 8; t++)
      crc32c_table[t][i] = (crc32c_table[t - 1][i] >> 8)
                           ^ crc32c_table[0][crc32c_table[t - 1][i] & 0xff];
  return NULL;
}

/* crc is the running value (start with 0); returns the finished CRC. */
uint32_t
iscsi_crc32c (uint32_t crc, const void *buf, size_t len)
{
  static GOnce once = G_ONCE_INIT;
  const uint8_t *p = buf;

  g_once (&once, crc32c_init_once, NULL);
  crc = ~crc;
  while (len >= 8)
    {
      uint32_t lo = crc ^ ((uint32_t) p[0] | (uint32_t) p[1] << 8
                           | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24);
      crc = crc32c_table[7][lo & 0xff] ^ crc32c_table[6][(lo >> 8) & 0xff]
            ^ crc32c_table[5][(lo >> 16) & 0xff] ^ crc32c_table[4][lo >> 24]
            ^ crc32c_table[3][p[4]] ^ crc32c_table[2][p[5]]
            ^ crc32c_table[1][p[6]] ^ crc32c_table[0][p[7]];
      p += 8;
      len -= 8;
    }
  while (len-- > 0)
    crc = crc32c_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return ~crc;
}

static uint32_t
pad4 (uint32_t n)
{
  return (n + 3u) & ~3u;
}

/* ---- framing ---------------------------------------------------------------- */

const char *
iscsi_parse_result_name (iscsi_parse_result r)
{
  switch (r)
    {
    case ISCSI_PARSE_OK: return "ok";
    case ISCSI_PARSE_NEED_MORE: return "incomplete";
    case ISCSI_PARSE_AHS_TOO_LONG: return "AHS longer than allowed";
    case ISCSI_PARSE_DATA_TOO_LONG:
      return "data segment longer than MaxRecvDataSegmentLength";
    case ISCSI_PARSE_HEADER_DIGEST: return "header digest mismatch";
    case ISCSI_PARSE_DATA_DIGEST: return "data digest mismatch";
    }
  return "?";
}

iscsi_parse_result
iscsi_pdu_parse (const uint8_t *buf, size_t len, uint32_t max_data,
                 bool header_digest, bool data_digest, iscsi_pdu *pdu,
                 size_t *consumed)
{
  uint32_t ahs_len, dlen;
  size_t hlen, total;

  *consumed = 0;
  if (len < ISCSI_BHS_LEN)
    return ISCSI_PARSE_NEED_MORE;
  ahs_len = (uint32_t) buf[4] * 4u;
  dlen = df_get_be24 (buf + 5);
  if (ahs_len > ISCSI_MAX_AHS)
    return ISCSI_PARSE_AHS_TOO_LONG; /* unreachable with 8 bits; kept */
  if (dlen > max_data)
    return ISCSI_PARSE_DATA_TOO_LONG;
  hlen = ISCSI_BHS_LEN + ahs_len + (header_digest ? ISCSI_DIGEST_LEN : 0);
  total = hlen + (dlen ? pad4 (dlen) + (data_digest ? ISCSI_DIGEST_LEN : 0)
                       : 0);
  if (len < total)
    {
      *consumed = total;
      return ISCSI_PARSE_NEED_MORE;
    }
  pdu->bhs = buf;
  pdu->ahs = buf + ISCSI_BHS_LEN;
  pdu->ahs_len = ahs_len;
  pdu->data = buf + hlen;
  pdu->data_len = dlen;
  *consumed = total;
  if (header_digest
      && df_get_le32 (buf + ISCSI_BHS_LEN + ahs_len)
             != iscsi_crc32c (0, buf, ISCSI_BHS_LEN + ahs_len))
    return ISCSI_PARSE_HEADER_DIGEST;
  if (data_digest && dlen > 0
      && df_get_le32 (buf + hlen + pad4 (dlen))
             != iscsi_crc32c (0, buf + hlen, pad4 (dlen)))
    return ISCSI_PARSE_DATA_DIGEST;
  return ISCSI_PARSE_OK;
}

/* ---- output ----------------------------------------------------------------- */

size_t
iscsi_out_begin (GByteArray *out, uint32_t dlen, bool hd, bool dd)
{
  size_t off = out->len;
  size_t total = ISCSI_BHS_LEN + (hd ? ISCSI_DIGEST_LEN : 0)
                 + (dlen ? pad4 (dlen) + (dd ? ISCSI_DIGEST_LEN : 0) : 0);

  g_byte_array_set_size (out, (guint) (off + total));
  memset (out->data + off, 0, ISCSI_BHS_LEN + (hd ? ISCSI_DIGEST_LEN : 0));
  if (dlen)
    memset (out->data + off + ISCSI_BHS_LEN + (hd ? ISCSI_DIGEST_LEN : 0)
                + dlen,
            0, pad4 (dlen) - dlen);
  return off;
}

uint8_t *
iscsi_out_data (GByteArray *out, size_t off, bool hd)
{
  return out->data + off + ISCSI_BHS_LEN + (hd ? ISCSI_DIGEST_LEN : 0);
}

void
iscsi_out_end (GByteArray *out, size_t off, uint32_t dlen, bool hd, bool dd)
{
  uint8_t *bhs = out->data + off;
  uint8_t *data = iscsi_out_data (out, off, hd);

  df_put_be24 (bhs + 5, dlen);
  if (hd)
    df_put_le32 (bhs + ISCSI_BHS_LEN, iscsi_crc32c (0, bhs, ISCSI_BHS_LEN));
  if (dd && dlen)
    df_put_le32 (data + pad4 (dlen), iscsi_crc32c (0, data, pad4 (dlen)));
}

void
iscsi_out_trim (GByteArray *out, size_t off, uint32_t reserved,
                uint32_t dlen, bool hd, bool dd)
{
  size_t start = off + ISCSI_BHS_LEN + (hd ? ISCSI_DIGEST_LEN : 0);

  g_assert (dlen <= reserved);
  g_assert (out->len == start + (reserved ? pad4 (reserved)
                                             + (dd ? ISCSI_DIGEST_LEN : 0)
                                           : 0));
  g_byte_array_set_size (out, (guint) (start + (dlen ? pad4 (dlen)
                                                  + (dd ? ISCSI_DIGEST_LEN : 0)
                                                : 0)));
  if (dlen)
    memset (out->data + start + dlen, 0, pad4 (dlen) - dlen);
}

/* ---- text keys ----------------------------------------------------------------- */

static void
kv_free (gpointer p)
{
  iscsi_kv *kv = p;

  g_free (kv->key);
  g_free (kv->value);
  g_free (kv);
}

static bool
key_char_ok (char ch)
{
  return g_ascii_isalnum (ch) || ch == '.' || ch == '-' || ch == '+'
         || ch == '@' || ch == '_';
}

/* One "key=value" of len bytes (no NUL inside).  Returns a new kv or NULL. */
static iscsi_kv *
parse_pair (const char *p, size_t len, GError **err)
{
  const char *eq = memchr (p, '=', len);
  size_t klen, vlen;
  iscsi_kv *kv;

  if (eq == NULL)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "text pair without '=' (%zu bytes)", len);
      return NULL;
    }
  klen = (size_t) (eq - p);
  vlen = len - klen - 1;
  if (klen == 0 || klen > 63)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "text key of %zu bytes (1-63 allowed)", klen);
      return NULL;
    }
  for (size_t i = 0; i < klen; i++)
    if (!key_char_ok (p[i]))
      {
        g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                     "text key with invalid byte 0x%02x",
                     (unsigned) (uint8_t) p[i]);
        return NULL;
      }
  if (vlen > 8192)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "text value of %zu bytes (8192 allowed)", vlen);
      return NULL;
    }
  kv = g_new0 (iscsi_kv, 1);
  kv->key = g_strndup (p, klen);
  kv->value = g_strndup (eq + 1, vlen);
  return kv;
}

GPtrArray *
iscsi_text_parse (const uint8_t *data, size_t len, GError **err)
{
  g_autoptr (GPtrArray) kvs = g_ptr_array_new_with_free_func (kv_free);
  const char *p = (const char *) data;
  const char *end;

  if (len == 0)
    return g_steal_pointer (&kvs); /* an empty text (data may be NULL) */
  end = p + len;

  /* Trailing NUL padding (some initiators pad) is harmless. */
  while (end > p && end[-1] == '\0' && (end - 1 == p || end[-2] == '\0'))
    end--;
  while (p < end)
    {
      const char *nul = memchr (p, '\0', (size_t) (end - p));
      size_t plen = nul ? (size_t) (nul - p) : (size_t) (end - p);
      iscsi_kv *kv;

      if (plen == 0)
        {
          g_set_error (err, DF_ERROR, DF_ERROR_INVALID, "empty text pair");
          return NULL;
        }
      kv = parse_pair (p, plen, err);
      if (kv == NULL)
        return NULL;
      g_ptr_array_add (kvs, kv);
      p += plen + (nul ? 1 : 0);
    }
  return g_steal_pointer (&kvs);
}

bool
iscsi_text_has_duplicates (const GPtrArray *kvs)
{
  g_autoptr (GHashTable) seen = g_hash_table_new (g_str_hash, g_str_equal);

  for (guint i = 0; i < kvs->len; i++)
    {
      const iscsi_kv *kv = kvs->pdata[i];
      if (!g_hash_table_add (seen, kv->key))
        return true;
    }
  return false;
}

void
iscsi_text_add (GString *out, const char *key, const char *value)
{
  g_string_append (out, key);
  g_string_append_c (out, '=');
  g_string_append (out, value);
  g_string_append_c (out, '\0');
}

/* ---- binary and numeric values ---------------------------------------------- */

static int
hexval (char ch)
{
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F')
    return ch - 'A' + 10;
  return -1;
}

static GBytes *
decode_hex (const char *s, size_t max, GError **err)
{
  size_t n = strlen (s);
  g_autofree uint8_t *buf = NULL;

  if (n == 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID, "empty hex value");
      return NULL;
    }
  if (n % 2 != 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "odd-length hex value (%zu digits)", n);
      return NULL;
    }
  if (n / 2 > max)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "hex value of %zu bytes (at most %zu)", n / 2, max);
      return NULL;
    }
  buf = g_malloc (n / 2);
  for (size_t i = 0; i < n; i += 2)
    {
      int hi = hexval (s[i]), lo = hexval (s[i + 1]);
      if (hi < 0 || lo < 0)
        {
          g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                       "invalid hex digit in value");
          return NULL;
        }
      buf[i / 2] = (uint8_t) (hi << 4 | lo);
    }
  return g_bytes_new_take (g_steal_pointer (&buf), n / 2);
}

static int
b64val (char ch)
{
  if (ch >= 'A' && ch <= 'Z')
    return ch - 'A';
  if (ch >= 'a' && ch <= 'z')
    return ch - 'a' + 26;
  if (ch >= '0' && ch <= '9')
    return ch - '0' + 52;
  if (ch == '+')
    return 62;
  if (ch == '/')
    return 63;
  return -1;
}

/* Strict base64: length a multiple of 4, '=' only as final padding. */
static GBytes *
decode_b64 (const char *s, size_t max, GError **err)
{
  size_t n = strlen (s), pad = 0, out_len;
  g_autofree uint8_t *buf = NULL;
  size_t o = 0;

  if (n == 0 || n % 4 != 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "base64 value of %zu characters (a non-zero multiple of 4 "
                   "needed)", n);
      return NULL;
    }
  while (pad < 2 && s[n - 1 - pad] == '=')
    pad++;
  out_len = n / 4 * 3 - pad;
  if (out_len == 0 || out_len > max)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "base64 value of %zu bytes (1-%zu allowed)", out_len, max);
      return NULL;
    }
  buf = g_malloc (n / 4 * 3);
  for (size_t i = 0; i < n; i += 4)
    {
      int v[4];
      for (int k = 0; k < 4; k++)
        {
          bool padding = i + (size_t) k >= n - pad;
          v[k] = padding ? 0 : b64val (s[i + (size_t) k]);
          if (v[k] < 0)
            {
              g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                           "invalid base64 character in value");
              return NULL;
            }
        }
      buf[o++] = (uint8_t) (v[0] << 2 | v[1] >> 4);
      buf[o++] = (uint8_t) ((v[1] & 0xf) << 4 | v[2] >> 2);
      buf[o++] = (uint8_t) ((v[2] & 0x3) << 6 | v[3]);
    }
  return g_bytes_new_take (g_steal_pointer (&buf), out_len);
}

GBytes *
iscsi_decode_binary (const char *s, size_t max, GError **err)
{
  if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
    return decode_hex (s + 2, max, err);
  if (s[0] == '0' && (s[1] == 'b' || s[1] == 'B'))
    return decode_b64 (s + 2, max, err);
  g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
               "binary value without 0x or 0b prefix");
  return NULL;
}

bool
iscsi_decode_number (const char *s, uint64_t max, uint64_t *out,
                     GError **err)
{
  uint64_t v = 0;

  if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X' || s[1] == 'b'
                      || s[1] == 'B'))
    {
      g_autoptr (GBytes) b = iscsi_decode_binary (s, 8, err);
      gsize n;
      const uint8_t *p;

      if (b == NULL)
        return false;
      p = g_bytes_get_data (b, &n);
      for (gsize i = 0; i < n; i++)
        v = v << 8 | p[i];
    }
  else
    {
      if (*s == '\0')
        {
          g_set_error (err, DF_ERROR, DF_ERROR_INVALID, "empty number");
          return false;
        }
      for (const char *p = s; *p; p++)
        {
          if (*p < '0' || *p > '9' || v > (UINT64_MAX - 9) / 10)
            {
              g_autofree char *shown = df_display_text (s, 20);
              g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                           "invalid number '%s'", shown);
              return false;
            }
          v = v * 10 + (uint64_t) (*p - '0');
        }
    }
  if (v > max)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "number %" G_GUINT64_FORMAT " above %" G_GUINT64_FORMAT,
                   v, max);
      return false;
    }
  *out = v;
  return true;
}

char *
iscsi_encode_hex (const uint8_t *buf, size_t len)
{
  GString *s = g_string_sized_new (2 + 2 * len);

  g_string_append (s, "0x");
  for (size_t i = 0; i < len; i++)
    g_string_append_printf (s, "%02x", buf[i]);
  return g_string_free (s, FALSE);
}
