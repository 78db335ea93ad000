/* diskfarm: small shared pieces (see common.h). */
#include "config.h"
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/evp.h>

G_DEFINE_QUARK (diskfarm-error-quark, df_error)

/* ---- logging ----------------------------------------------------------- */

static bool log_verbose;
static const char *log_progname = "diskfarm";

static const char *
level_name (GLogLevelFlags level)
{
  switch (level & G_LOG_LEVEL_MASK)
    {
    case G_LOG_LEVEL_ERROR: return "error";
    case G_LOG_LEVEL_CRITICAL: return "critical";
    case G_LOG_LEVEL_WARNING: return "warning";
    case G_LOG_LEVEL_MESSAGE: return "notice";
    case G_LOG_LEVEL_INFO: return "info";
    default: return "debug";
    }
}

static GLogWriterOutput
df_log_writer (GLogLevelFlags level, const GLogField *fields, gsize n_fields,
               gpointer user_data)
{
  if ((level & (G_LOG_LEVEL_DEBUG | G_LOG_LEVEL_INFO)) && !log_verbose)
    return G_LOG_WRITER_HANDLED;
  if (g_log_writer_is_journald (fileno (stderr)))
    return g_log_writer_journald (level, fields, n_fields, user_data);

  const char *message = NULL;
  for (gsize i = 0; i < n_fields; i++)
    if (g_strcmp0 (fields[i].key, "MESSAGE") == 0)
      message = fields[i].value;
  g_autoptr (GDateTime) now = g_date_time_new_now_utc ();
  g_autofree char *ts = g_date_time_format (now, "%H:%M:%S.%f");
  ts[12] = '\0'; /* milliseconds */
  fprintf (stderr, "%s %s[%d]: %s: %s\n", ts, log_progname, (int) getpid (),
           level_name (level), message ? message : "(no message)");
  return G_LOG_WRITER_HANDLED;
}

void
df_log_init (const char *progname, bool verbose)
{
  log_progname = progname;
  log_verbose = verbose;
  g_log_set_writer_func (df_log_writer, NULL, NULL);
}

/* ---- sizes ------------------------------------------------------------- */

static bool
unit_shift (const char *u, unsigned *shift)
{
  static const struct { const char *names[4]; unsigned shift; } units[] = {
    { { "", "b", NULL, NULL }, 0 },
    { { "k", "kb", "kib", NULL }, 10 },
    { { "m", "mb", "mib", NULL }, 20 },
    { { "g", "gb", "gib", NULL }, 30 },
    { { "t", "tb", "tib", NULL }, 40 },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (units); i++)
    for (gsize j = 0; j < 4 && units[i].names[j]; j++)
      if (g_ascii_strcasecmp (u, units[i].names[j]) == 0)
        {
          *shift = units[i].shift;
          return true;
        }
  return false;
}

bool
df_parse_size (const char *s, uint64_t *out, GError **err)
{
  if (s == NULL || !g_ascii_isdigit (s[0]))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "invalid size '%s': expected a number with an optional "
                   "unit (K, M, G, T)", s ? s : "");
      return false;
    }
  char *end;
  errno = 0;
  guint64 n = g_ascii_strtoull (s, &end, 10);
  unsigned shift;
  if (errno != 0 || !unit_shift (end, &shift))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "invalid size '%s': expected a number with an optional "
                   "unit (K, M, G, T)", s);
      return false;
    }
  if (shift > 0 && n > (G_MAXUINT64 >> shift))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID, "size '%s' is too large",
                   s);
      return false;
    }
  *out = n << shift;
  return true;
}

char *
df_format_size (uint64_t bytes)
{
  static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
  double v = (double) bytes;
  gsize u = 0;
  while (v >= 1024.0 && u + 1 < G_N_ELEMENTS (units))
    {
      v /= 1024.0;
      u++;
    }
  if (u == 0)
    return g_strdup_printf ("%" G_GUINT64_FORMAT " B", bytes);
  return g_strdup_printf ("%.1f %s", v, units[u]);
}

/* ---- MAC and names ----------------------------------------------------- */

/* Separator positions of each accepted spelling, by string length. */
static bool
mac_shape_ok (const char *s, gsize len)
{
  switch (len)
    {
    case 12: /* aabbccddeeff */
      return true;
    case 14: /* aabb.ccdd.eeff */
      return s[4] == '.' && s[9] == '.';
    case 17: /* aa:bb:.. or aa-bb-.. */
      if (s[2] != ':' && s[2] != '-')
        return false;
      for (gsize i = 5; i < 17; i += 3)
        if (s[i] != s[2])
          return false;
      return true;
    default:
      return false;
    }
}

bool
df_parse_mac (const char *s, char out[18], GError **err)
{
  gsize len = s ? strlen (s) : 0;
  guint8 b[6] = { 0 };
  int nibbles = 0;
  bool ok = mac_shape_ok (s, len);
  for (gsize i = 0; ok && i < len; i++)
    {
      int v = g_ascii_xdigit_value (s[i]);
      if (v >= 0)
        {
          b[nibbles / 2] = (guint8) ((b[nibbles / 2] << 4) | v);
          nibbles++;
        }
      else if (s[i] != ':' && s[i] != '-' && s[i] != '.')
        ok = false;
    }
  if (!ok || nibbles != 12)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "invalid MAC address '%s': expected six hex bytes like "
                   "52:54:00:12:34:56", s ? s : "");
      return false;
    }
  g_snprintf (out, 18, "%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2],
              b[3], b[4], b[5]);
  return true;
}

bool
df_validate_name (const char *what, const char *s, GError **err)
{
  gsize len = s ? strlen (s) : 0;
  if (len == 0 || len > 63)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "invalid %s name '%s': must be 1 to 63 characters", what,
                   s ? s : "");
      return false;
    }
  if (s[0] == '.' || s[0] == '-')
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "invalid %s name '%s': must not start with '%c'", what, s,
                   s[0]);
      return false;
    }
  for (gsize i = 0; i < len; i++)
    if (!g_ascii_isalnum (s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
      {
        g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                     "invalid %s name '%s': character '%c' not allowed "
                     "(use letters, digits, '.', '_', '-')", what, s, s[i]);
        return false;
      }
  return true;
}

/* ---- listen addresses -------------------------------------------------- */

static bool
parse_port (const char *s, const char *whole, uint16_t *port, GError **err)
{
  guint64 v;
  if (!g_ascii_string_to_unsigned (s, 10, 0, 65535, &v, NULL))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "invalid address '%s': port '%s' is not a number in "
                   "0-65535", whole, s);
      return false;
    }
  *port = (uint16_t) v;
  return true;
}

bool
df_parse_listen (const char *s, uint16_t default_port, DfListenAddr *out,
                 GError **err)
{
  memset (out, 0, sizeof *out);
  if (g_str_has_prefix (s, "unix:"))
    {
      if (s[5] == '\0' || strlen (s + 5) >= 108)
        {
          g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                       "invalid address '%s': unix socket path empty or "
                       "longer than 107 bytes", s);
          return false;
        }
      out->unix_path = g_strdup (s + 5);
      return true;
    }
  const char *host = s, *colon;
  g_autofree char *h = NULL;
  if (s[0] == '[')
    {
      const char *close = strchr (s, ']');
      if (close == NULL || (close[1] != '\0' && close[1] != ':'))
        {
          g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                       "invalid address '%s': unbalanced '['", s);
          return false;
        }
      h = g_strndup (s + 1, close - s - 1);
      colon = close[1] == ':' ? close + 1 : NULL;
    }
  else
    {
      colon = strrchr (s, ':');
      if (colon && strchr (s, ':') != colon)
        colon = NULL, h = g_strdup (host); /* bare IPv6 */
      else
        h = colon ? g_strndup (s, colon - s) : g_strdup (s);
    }
  out->port = default_port;
  if (colon && !parse_port (colon + 1, s, &out->port, err))
    return false;
  if (h[0] != '\0' && !g_hostname_is_ip_address (h)
      && !g_str_equal (h, "localhost"))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "invalid address '%s': '%s' is not an IP address", s, h);
      return false;
    }
  out->host = h[0] ? g_steal_pointer (&h) : NULL;
  return true;
}

void
df_listen_addr_clear (DfListenAddr *a)
{
  g_clear_pointer (&a->host, g_free);
  g_clear_pointer (&a->unix_path, g_free);
}

/* ---- errors and I/O helpers ------------------------------------------- */

void
df_set_error_errno (GError **err, int errnum, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  g_autofree char *what = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_set_error (err, DF_ERROR,
               errnum == ENOSPC || errnum == EDQUOT ? DF_ERROR_NOSPC
               : errnum == ENOENT ? DF_ERROR_NOT_FOUND
               : errnum == EEXIST ? DF_ERROR_EXISTS : DF_ERROR_IO,
               "%s: %s", what, g_strerror (errnum));
}

int
df_pwrite_all (int fd, const void *buf, size_t len, uint64_t off)
{
  const char *p = buf;
  while (len > 0)
    {
      ssize_t r = pwrite (fd, p, len, off);
      if (r < 0 && errno == EINTR)
        continue;
      if (r < 0)
        return -1;
      p += r, len -= r, off += r;
    }
  return 0;
}

int
df_pread_all (int fd, void *buf, size_t len, uint64_t off)
{
  char *p = buf;
  while (len > 0)
    {
      ssize_t r = pread (fd, p, len, off);
      if (r < 0 && errno == EINTR)
        continue;
      if (r < 0)
        return -1;
      if (r == 0)
        {
          errno = EIO; /* short file */
          return -1;
        }
      p += r, len -= r, off += r;
    }
  return 0;
}

bool
df_fsync_dir_of (const char *path, GError **err)
{
  g_autofree char *dir = g_path_get_dirname (path);
  int fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || fsync (fd) < 0)
    {
      int e = errno;
      if (fd >= 0)
        close (fd);
      df_set_error_errno (err, e, "fsync %s", dir);
      return false;
    }
  close (fd);
  return true;
}

bool
df_file_sha256 (const char *path, char out[65], GError **err)
{
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    {
      df_set_error_errno (err, errno, "open %s", path);
      return false;
    }
  EVP_MD_CTX *ctx = EVP_MD_CTX_new ();
  EVP_DigestInit_ex (ctx, EVP_sha256 (), NULL);
  enum { BUFSZ = 1 << 20 };
  g_autofree char *buf = g_malloc (BUFSZ);
  ssize_t r;
  while ((r = read (fd, buf, BUFSZ)) != 0)
    {
      if (r < 0 && errno == EINTR)
        continue;
      if (r < 0)
        {
          df_set_error_errno (err, errno, "read %s", path);
          EVP_MD_CTX_free (ctx);
          close (fd);
          return false;
        }
      EVP_DigestUpdate (ctx, buf, r);
    }
  close (fd);
  unsigned char md[32];
  EVP_DigestFinal_ex (ctx, md, NULL);
  EVP_MD_CTX_free (ctx);
  for (int i = 0; i < 32; i++)
    g_snprintf (out + 2 * i, 3, "%02x", md[i]);
  return true;
}
