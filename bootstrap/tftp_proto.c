/* diskfarm bootstrap: TFTP wire format.  See tftp_proto.h.
 *
 * Every field is read against the packet end: a string is a string only if
 * its NUL lies before the end.  The file name and mode must be terminated
 * (atftpd CVE-2021-46671); options after them are tolerated when their last
 * pair is cut short (counted as ignored), because some ROMs pad requests. */
#include "tftp_proto.h"
#include "common.h"

#include <string.h>

static bool
fail (GError **err, int *code, int c, const char *fmt, const char *arg)
{
  *code = c;
  g_set_error (err, DF_ERROR, DF_ERROR_INVALID, fmt, arg);
  return false;
}

/* The NUL-terminated string at *p, or NULL when no NUL before end. */
static const char *
take_string (const guint8 **p, const guint8 *end)
{
  const guint8 *nul = memchr (*p, 0, (size_t) (end - *p));
  if (!nul)
    return NULL;
  const char *s = (const char *) *p;
  *p = nul + 1;
  return s;
}

/* Decimal digits only, at most DF_TFTP_OPTVAL_MAX of them. */
static bool
parse_number (const char *s, guint64 *out)
{
  size_t n = strlen (s);
  if (n == 0 || n > DF_TFTP_OPTVAL_MAX)
    return false;
  guint64 v = 0;
  for (size_t i = 0; i < n; i++)
    {
      if (!g_ascii_isdigit (s[i]))
        return false;
      guint64 d = (guint64) (s[i] - '0');
      if (v > (G_MAXUINT64 - d) / 10)
        return false;
      v = v * 10 + d;
    }
  *out = v;
  return true;
}

typedef struct {
  const char *name;
  guint64 min, max;
} OptRange;

static const OptRange opt_ranges[] = {
  { "blksize", DF_TFTP_BLKSIZE_MIN, DF_TFTP_BLKSIZE_MAX },
  { "tsize", 0, G_MAXINT64 },
  { "timeout", 1, 255 },
  { "windowsize", 1, 65535 },
};

static const OptRange *
find_option (const char *name)
{
  for (guint i = 0; i < G_N_ELEMENTS (opt_ranges); i++)
    if (g_ascii_strcasecmp (name, opt_ranges[i].name) == 0)
      return &opt_ranges[i];
  return NULL;
}

/* Store one known option; false on a duplicate. */
static bool
store_option (DfTftpOptions *o, const OptRange *r, guint64 v, guint *seen)
{
  guint bit = 1u << (guint) (r - opt_ranges);
  if (*seen & bit)
    return false;
  *seen |= bit;
  if (r == &opt_ranges[0])
    o->blksize = (guint32) v;
  else if (r == &opt_ranges[1])
    o->tsize = true;
  else if (r == &opt_ranges[2])
    o->timeout = (guint8) v;
  else
    o->windowsize = (guint16) v;
  return true;
}

static bool
parse_one_option (const char *name, const char *value, DfTftpRequest *req,
                  guint *seen, int *code, GError **err)
{
  const OptRange *r = find_option (name);
  if (!r)
    {
      req->n_ignored++;         /* RFC 2347: unknown options are ignored */
      return true;
    }
  guint64 v;
  if (strlen (value) > DF_TFTP_OPTVAL_MAX)
    return fail (err, code, DF_TFTP_EOPTNEG,
                 "option %s: value too long", r->name);
  if (!parse_number (value, &v))
    return fail (err, code, DF_TFTP_EOPTNEG,
                 "option %s: value is not a decimal number", r->name);
  if (v < r->min || v > r->max)
    {
      *code = DF_TFTP_EOPTNEG;
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "option %s: %" G_GUINT64_FORMAT " is outside %"
                   G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT, r->name, v,
                   r->min, r->max);
      return false;
    }
  if (!store_option (&req->opt, r, v, seen))
    return fail (err, code, DF_TFTP_EOPTNEG, "option %s given twice",
                 r->name);
  return true;
}

static bool
parse_options (const guint8 *p, const guint8 *end, DfTftpRequest *req,
               int *code, GError **err)
{
  guint seen = 0;
  while (p < end)
    {
      const char *name = take_string (&p, end);
      const char *value = name ? take_string (&p, end) : NULL;
      if (!name || !value)
        {
          req->n_ignored++;     /* cut-short trailing pair: harmless */
          return true;
        }
      if (*name == '\0')
        {
          req->n_ignored++;     /* padding NULs */
          continue;
        }
      if (strlen (name) > 32)
        return fail (err, code, DF_TFTP_EOPTNEG, "option name too long%s",
                     "");
      if (!parse_one_option (name, value, req, &seen, code, err))
        return false;
    }
  return true;
}

static bool
parse_mode (const char *mode, DfTftpRequest *req, int *code, GError **err)
{
  if (strlen (mode) >= sizeof req->mode)
    return fail (err, code, DF_TFTP_EBADOP, "transfer mode too long%s", "");
  for (size_t i = 0; mode[i]; i++)
    req->mode[i] = g_ascii_tolower (mode[i]);
  req->mode[strlen (mode)] = '\0';
  if (g_str_equal (req->mode, "octet"))
    return true;
  if (g_str_equal (req->mode, "netascii"))
    return fail (err, code, DF_TFTP_EUNDEF,
                 "transfer mode netascii is not supported (use octet)%s", "");
  return fail (err, code, DF_TFTP_EBADOP, "unknown transfer mode '%s'",
               req->mode);
}

bool
df_tftp_parse_request (const guint8 *buf, size_t len, DfTftpRequest *req,
                       int *code, GError **err)
{
  memset (req, 0, sizeof *req);
  if (len < 4)
    return fail (err, code, DF_TFTP_SILENT, "request of %s bytes is too short",
                 len == 0 ? "0" : len < 2 ? "1" : len == 2 ? "2" : "3");
  if (len > DF_TFTP_REQ_MAX)
    return fail (err, code, DF_TFTP_EBADOP, "request too long%s", "");
  const guint8 *p = buf + 2, *end = buf + len;
  req->opcode = (buf[0] << 8) | buf[1];
  if (req->opcode >= DF_TFTP_DATA && req->opcode <= DF_TFTP_OACK)
    return fail (err, code, DF_TFTP_SILENT, /* never answer an ERROR */
                 "DATA, ACK, ERROR or OACK sent to the request port%s", "");
  if (req->opcode != DF_TFTP_RRQ && req->opcode != DF_TFTP_WRQ)
    return fail (err, code, DF_TFTP_EBADOP, "unknown opcode%s", "");
  const char *name = take_string (&p, end);
  if (!name)
    return fail (err, code, DF_TFTP_EBADOP,
                 "file name is not NUL-terminated%s", "");
  if (strlen (name) > DF_TFTP_NAME_MAX)
    return fail (err, code, DF_TFTP_EACCESS, "file name too long%s", "");
  g_strlcpy (req->filename, name, sizeof req->filename);
  if (req->opcode == DF_TFTP_WRQ)
    return fail (err, code, DF_TFTP_EACCESS, "write requests are refused%s",
                 "");
  const char *mode = take_string (&p, end);
  if (!mode)
    return fail (err, code, DF_TFTP_EBADOP,
                 "transfer mode is not NUL-terminated%s", "");
  if (!parse_mode (mode, req, code, err))
    return false;
  return parse_options (p, end, req, code, err);
}

bool
df_tftp_parse_client (const guint8 *buf, size_t len, DfTftpClientPacket *pkt,
                      int *code, GError **err)
{
  memset (pkt, 0, sizeof *pkt);
  if (len < 2)
    return fail (err, code, DF_TFTP_SILENT, "packet too short%s", "");
  pkt->opcode = (buf[0] << 8) | buf[1];
  if (pkt->opcode == DF_TFTP_ERROR)
    {
      /* atftpd CVE-2019-11365: 3-byte or 4-byte ERRORs are still errors. */
      if (len >= 4)
        pkt->error_code = (guint16) ((buf[2] << 8) | buf[3]);
      size_t i = 0;
      for (size_t k = 4; k < len && buf[k] && i + 1 < sizeof pkt->message; k++)
        pkt->message[i++] = g_ascii_isprint (buf[k]) ? (char) buf[k] : '?';
      pkt->message[i] = '\0';
      return true;
    }
  if (pkt->opcode != DF_TFTP_ACK)
    return fail (err, code, DF_TFTP_EBADOP,
                 "unexpected opcode during a read transfer%s", "");
  if (len < 4)
    return fail (err, code, DF_TFTP_EBADOP, "ACK shorter than 4 bytes%s", "");
  pkt->block = (guint16) ((buf[2] << 8) | buf[3]);
  return true;
}

size_t
df_tftp_build_error (guint8 *out, size_t cap, int code, const char *message)
{
  size_t mlen = strlen (message);
  if (mlen > 200)
    mlen = 200;
  if (cap < 5 + mlen)
    return 0;
  out[0] = 0;
  out[1] = DF_TFTP_ERROR;
  out[2] = (guint8) ((code >> 8) & 0xff);
  out[3] = (guint8) (code & 0xff);
  memcpy (out + 4, message, mlen);
  out[4 + mlen] = 0;
  return 5 + mlen;
}

size_t
df_tftp_build_data_header (guint8 *out, size_t cap, guint16 block)
{
  if (cap < 4)
    return 0;
  out[0] = 0;
  out[1] = DF_TFTP_DATA;
  out[2] = (guint8) (block >> 8);
  out[3] = (guint8) (block & 0xff);
  return 4;
}

/* Append "name\0value\0"; false when it does not fit. */
static bool
append_opt (guint8 *out, size_t cap, size_t *len, const char *name,
            guint64 value)
{
  char v[24];
  g_snprintf (v, sizeof v, "%" G_GUINT64_FORMAT, value);
  size_t need = strlen (name) + 1 + strlen (v) + 1;
  if (*len + need > cap)
    return false;
  memcpy (out + *len, name, strlen (name) + 1);
  *len += strlen (name) + 1;
  memcpy (out + *len, v, strlen (v) + 1);
  *len += strlen (v) + 1;
  return true;
}

size_t
df_tftp_build_oack (guint8 *out, size_t cap, const DfTftpOptions *opt,
                    guint64 tsize_value)
{
  if (cap < 2)
    return 0;
  out[0] = 0;
  out[1] = DF_TFTP_OACK;
  size_t len = 2;
  bool ok = (!opt->blksize || append_opt (out, cap, &len, "blksize",
                                          opt->blksize))
            && (!opt->tsize || append_opt (out, cap, &len, "tsize",
                                           tsize_value))
            && (!opt->timeout || append_opt (out, cap, &len, "timeout",
                                             opt->timeout))
            && (!opt->windowsize || append_opt (out, cap, &len, "windowsize",
                                                opt->windowsize));
  return ok ? len : 0;
}

bool
df_tftp_clean_path (const char *name, char *out, GError **err)
{
  g_autoptr (GString) gs = g_string_new (NULL);
  g_autofree char *copy = g_strdup (name);
  for (char *c = copy; *c; c++)
    {
      if ((guchar) *c < 0x20 || *c == 0x7f)
        {
          g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                       "file name has a control character");
          return false;
        }
      if (*c == '\\')
        *c = '/';
    }
  g_auto (GStrv) parts = g_strsplit (copy, "/", -1);
  for (guint i = 0; parts[i]; i++)
    {
      if (*parts[i] == '\0' || g_str_equal (parts[i], "."))
        continue;
      if (g_str_equal (parts[i], ".."))
        {
          g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                       "file name has a '..' component");
          return false;
        }
      if (gs->len)
        g_string_append_c (gs, '/');
      g_string_append (gs, parts[i]);
    }
  if (gs->len == 0 || gs->len > DF_TFTP_NAME_MAX)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   gs->len ? "file name too long" : "empty file name");
      return false;
    }
  memcpy (out, gs->str, gs->len + 1);
  return true;
}
