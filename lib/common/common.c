/* diskfarm: small shared pieces (see common.h). */
#include "config.h"
#include "common.h"
#include "defaults.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

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

/* One stderr line: ISO-8601 UTC time with milliseconds, program, pid. */
static void
write_stderr_line (const char *label, const char *message)
{
  g_autoptr (GDateTime) now = g_date_time_new_now_utc ();
  g_autofree char *ts = g_date_time_format (now, "%Y-%m-%dT%H:%M:%S");
  fprintf (stderr, "%s.%03dZ %s[%d]: %s: %s\n", ts,
           g_date_time_get_microsecond (now) / 1000, log_progname,
           (int) getpid (), label, message ? message : "(no message)");
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
  write_stderr_line (level_name (level), message);
  return G_LOG_WRITER_HANDLED;
}

/* Not through g_log: G_LOG_LEVEL_ERROR aborts, and a critical may be made
 * fatal by G_DEBUG; a fatal start-up error must just be told. */
void
df_log_fatal (const char *message)
{
  if (!g_log_writer_is_journald (fileno (stderr)))
    {
      write_stderr_line ("error", message);
      return;
    }
  const GLogField fields[] = {
    { "MESSAGE", message, -1 },
    { "PRIORITY", "3", -1 },
    { "SYSLOG_IDENTIFIER", log_progname, -1 },
  };
  g_log_writer_journald (G_LOG_LEVEL_CRITICAL, fields, G_N_ELEMENTS (fields),
                         NULL);
}

void
df_log_init (const char *progname, bool verbose)
{
  log_progname = progname;
  log_verbose = verbose;
  g_log_set_writer_func (df_log_writer, NULL, NULL);
}

/* ---- sizes ------------------------------------------------------------- */

/* Suffix after the number -> power of two; "" is bytes. */
static bool
unit_shift (const char *u, unsigned *shift)
{
  static const char letters[] = "bkmgtpe";
  if (u[0] == '\0')
    {
      *shift = 0;
      return true;
    }
  const char *l = strchr (letters, g_ascii_tolower (u[0]));
  if (l == NULL)
    return false;
  *shift = 10 * (unsigned) (l - letters);
  /* "K", or the older "KB" / "KiB" spellings (not "BB", "BiB") */
  return u[1] == '\0'
         || (*shift > 0 && (g_ascii_strcasecmp (u + 1, "b") == 0
                            || g_ascii_strcasecmp (u + 1, "ib") == 0));
}

/* Decimal digits at *p into *v; false on overflow.  Advances *p. */
static bool
parse_digits (const char **p, uint64_t *v, unsigned *n_digits)
{
  *v = 0;
  *n_digits = 0;
  for (; g_ascii_isdigit (**p); (*p)++, (*n_digits)++)
    {
      unsigned d = (unsigned) (**p - '0');
      if (*v > (G_MAXUINT64 - d) / 10)
        return false;
      *v = *v * 10 + d;
    }
  return true;
}

/* floor (frac / 10^n_digits * 2^shift) by long division (frac < 10^n, n at
 * most 18, so nothing overflows); *exact: no remainder. */
static uint64_t
fraction_bytes (uint64_t frac, unsigned n_digits, unsigned shift, bool *exact)
{
  uint64_t den = 1, q = 0, r = frac;
  for (unsigned i = 0; i < n_digits; i++)
    den *= 10;
  for (unsigned i = 0; i < shift; i++)
    {
      r <<= 1;
      q = (q << 1) | (r >= den);
      if (r >= den)
        r -= den;
    }
  *exact = r == 0;
  return q;
}

static bool
size_error (GError **err, const char *s, const char *why)
{
  g_autofree char *shown = df_display_text (s, 64);
  g_set_error (err, DF_ERROR, DF_ERROR_INVALID, "invalid size '%s': %s",
               shown, why);
  return false;
}

bool
df_parse_size (const char *s, uint64_t *out, GError **err)
{
  if (s == NULL || s[0] == '\0')
    return size_error (err, "", "empty");
  if (!g_ascii_isdigit (s[0]))
    return size_error (err, s, "expected a number such as 512, 4096M or "
                       "1.5G");
  const char *p = s;
  uint64_t whole, frac = 0;
  unsigned n_whole, n_frac = 0, shift;
  bool fraction = false, exact = true;
  if (!parse_digits (&p, &whole, &n_whole))
    return size_error (err, s, "too large");
  if (*p == '.')
    {
      p++;
      fraction = true;
      if (!g_ascii_isdigit (*p))
        return size_error (err, s, "expected digits after the '.'");
      if (!parse_digits (&p, &frac, &n_frac) || n_frac > 18)
        return size_error (err, s, "more than 18 decimal places");
    }
  if (!unit_shift (p, &shift))
    return size_error (err, s, "unknown unit suffix (use B, K, M, G, T, P "
                       "or E)");
  if (fraction && shift == 0)
    return size_error (err, s, "a fraction needs a unit, as in 1.5G");
  uint64_t part = fraction_bytes (frac, n_frac, shift, &exact);
  if (!exact)
    return size_error (err, s, "not a whole number of bytes");
  if (whole > (G_MAXUINT64 >> shift)
      || (whole << shift) > G_MAXUINT64 - part)
    return size_error (err, s, "too large (the limit is 16 EiB - 1 byte)");
  *out = (whole << shift) + part;
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
      g_autofree char *shown = df_display_text (s, 64);
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "invalid MAC address '%s': expected six hex bytes like "
                   "52:54:00:12:34:56", shown);
      return false;
    }
  g_snprintf (out, 18, "%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2],
              b[3], b[4], b[5]);
  return true;
}

/* MACs a device cannot have, or NULL (b: the six bytes). */
static const char *
mac_not_unicast (const guint8 b[6])
{
  static const guint8 zero[6] = { 0 };
  static const guint8 bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
  if (memcmp (b, zero, 6) == 0)
    return "is all zeros";
  if (memcmp (b, bcast, 6) == 0)
    return "is the broadcast address";
  if (b[0] & 1)
    return "is a multicast address (low bit of the first byte set)";
  return NULL;
}

bool
df_parse_device_mac (const char *s, char out[18], GError **err)
{
  if (!df_parse_mac (s, out, err))
    return false;
  guint8 b[6];
  for (int i = 0; i < 6; i++)
    b[i] = (guint8) (g_ascii_xdigit_value (out[3 * i]) << 4
                     | g_ascii_xdigit_value (out[3 * i + 1]));
  const char *why = mac_not_unicast (b);
  if (why == NULL)
    return true;
  g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
               "MAC address %s %s; a device needs its own unicast MAC", out,
               why);
  return false;
}

/* The character at p as text for a message: itself when printable UTF-8,
 * else "U+XXXX" or "byte 0xNN" (new string). */
static char *
describe_char (const char *p)
{
  gunichar c = g_utf8_get_char_validated (p, -1);
  if (c == (gunichar) -1 || c == (gunichar) -2)
    return g_strdup_printf ("byte 0x%02x", (guint8) *p);
  if (!g_unichar_isprint (c))
    return g_strdup_printf ("U+%04X", c);
  char buf[7] = { 0 };
  g_unichar_to_utf8 (c, buf);
  return g_strdup_printf ("'%s'", buf);
}

bool
df_validate_name (const char *what, const char *s, GError **err)
{
  gsize len = s ? strlen (s) : 0;
  g_autofree char *shown = df_display_text (s ? s : "", 64);
  if (len == 0 || len > 63)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "invalid %s name '%s': must be 1 to 63 characters", what,
                   shown);
      return false;
    }
  if (s[0] == '.' || s[0] == '-')
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "invalid %s name '%s': must not start with '%c'", what,
                   shown, s[0]);
      return false;
    }
  for (gsize i = 0; i < len; i++)
    if (!g_ascii_isalnum (s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
      {
        g_autofree char *c = describe_char (s + i);
        g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                     "invalid %s name '%s': character %s not allowed "
                     "(use letters, digits, '.', '_', '-')", what, shown, c);
        return false;
      }
  return true;
}

char *
df_display_text (const char *s, gsize max_chars)
{
  g_autofree char *valid = g_utf8_make_valid (s ? s : "", -1);
  GString *out = g_string_new (NULL);
  gsize n = 0;
  for (const char *p = valid; *p; p = g_utf8_next_char (p), n++)
    {
      if (n == max_chars)
        {
          g_string_append (out, "...");
          break;
        }
      gunichar c = g_utf8_get_char (p);
      if (g_unichar_iscntrl (c))
        g_string_append_c (out, '?');
      else
        g_string_append_unichar (out, c);
    }
  return g_string_free (out, FALSE);
}

/* ---- host names --------------------------------------------------------- */

static bool
host_error (GError **err, const char *what, const char *s, const char *fmt,
            ...) G_GNUC_PRINTF (4, 5);

static bool
host_error (GError **err, const char *what, const char *s, const char *fmt,
            ...)
{
  va_list ap;
  va_start (ap, fmt);
  g_autofree char *why = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_autofree char *shown = df_display_text (s, 64);
  g_set_error (err, DF_ERROR, DF_ERROR_INVALID, "invalid %s '%s': %s", what,
               shown, why);
  return false;
}

gint64
df_real_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_REALTIME, &ts);
  return (gint64) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

bool
df_all_digits (const char *s, gsize len)
{
  for (gsize i = 0; i < len; i++)
    if (!g_ascii_isdigit (s[i]))
      return false;
  return len > 0;
}

/* One RFC 1123 label of len bytes at l. */
static bool
check_label (const char *what, const char *s, const char *l, gsize len,
             GError **err)
{
  if (len == 0)
    return host_error (err, what, s, "empty label (two dots, or a leading "
                       "dot)");
  if (len > 63)
    return host_error (err, what, s, "a label is longer than 63 characters");
  if (l[0] == '-' || l[len - 1] == '-')
    return host_error (err, what, s, "a label starts or ends with '-'");
  for (gsize i = 0; i < len; i++)
    if (!g_ascii_isalnum (l[i]) && l[i] != '-')
      {
        g_autofree char *c = describe_char (l + i);
        return host_error (err, what, s, "character %s is not allowed in a "
                           "host name (letters, digits, '-' and '.')", c);
      }
  return true;
}

bool
df_validate_host (const char *what, const char *s, GError **err)
{
  guint8 addr[16];
  if (s == NULL || s[0] == '\0')
    return host_error (err, what, "", "empty");
  if (strchr (s, ':') != NULL)
    return inet_pton (AF_INET6, s, addr) == 1
           || host_error (err, what, s, "not a valid IPv6 address");
  /* one trailing dot: a fully qualified name ("example.com.") */
  gsize len = strlen (s);
  const char *end = s + len - (len > 1 && s[len - 1] == '.');
  if (end - s > 253)
    return host_error (err, what, s, "longer than 253 characters");
  const char *last = g_strrstr_len (s, end - s, ".");
  last = last ? last + 1 : s;
  if (df_all_digits (last, (gsize) (end - last)))
    return inet_pton (AF_INET, s, addr) == 1
           || host_error (err, what, s, "not a valid IPv4 address (four "
                          "numbers 0-255 separated by dots)");
  for (const char *l = s;;)
    {
      const char *dot = memchr (l, '.', (gsize) (end - l));
      gsize n = dot ? (gsize) (dot - l) : (gsize) (end - l);
      if (!check_label (what, s, l, n, err))
        return false;
      if (dot == NULL)
        return true;
      l = dot + 1;
    }
}

/* ---- option values ------------------------------------------------------ */

static bool
blank (const char *v)
{
  for (; *v; v++)
    if (!g_ascii_isspace (*v))
      return false;
  return true;
}

static bool
entry_value_blank (const GOptionEntry *e)
{
  switch (e->arg)
    {
    case G_OPTION_ARG_STRING:
    case G_OPTION_ARG_FILENAME:
      {
        const char *v = *(char **) e->arg_data;
        return v != NULL && blank (v);
      }
    case G_OPTION_ARG_STRING_ARRAY:
    case G_OPTION_ARG_FILENAME_ARRAY:
      {
        char **v = *(char ***) e->arg_data;
        for (; v != NULL && *v != NULL; v++)
          if (blank (*v))
            return true;
        return false;
      }
    default:
      return false;
    }
}

bool
df_options_check_values (const GOptionEntry *entries,
                         const char *const *may_be_empty, GError **err)
{
  for (const GOptionEntry *e = entries; e->long_name != NULL; e++)
    {
      if (e->arg_data == NULL || !entry_value_blank (e))
        continue;
      if (may_be_empty != NULL
          && g_strv_contains ((const char *const *) may_be_empty,
                              e->long_name)
          && (e->arg == G_OPTION_ARG_STRING || e->arg == G_OPTION_ARG_FILENAME)
          && **(char **) e->arg_data == '\0')
        continue;
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "option --%s: empty value", e->long_name);
      return false;
    }
  return true;
}

void
df_options_clear (const GOptionEntry *entries)
{
  for (const GOptionEntry *e = entries; e && e->long_name != NULL; e++)
    {
      if (e->arg_data == NULL)
        continue;
      switch (e->arg)
        {
        case G_OPTION_ARG_STRING:
        case G_OPTION_ARG_FILENAME:
          g_clear_pointer ((char **) e->arg_data, g_free);
          break;
        case G_OPTION_ARG_STRING_ARRAY:
        case G_OPTION_ARG_FILENAME_ARRAY:
          g_clear_pointer ((char ***) e->arg_data, g_strfreev);
          break;
        default:
          break;
        }
    }
}

GOptionEntry *
df_options_keep (const GOptionEntry *entries)
{
  gsize n = 0;
  while (entries[n].long_name != NULL)
    n++;
  return g_memdup2 (entries, (n + 1) * sizeof *entries);
}

void
df_options_release (GOptionEntry *kept)
{
  df_options_clear (kept);
  g_free (kept);
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
df_split_host_port (const char *s, char **host, const char **port_text)
{
  const char *colon;
  if (s[0] == '[')
    {
      const char *close = strchr (s, ']');
      if (close == NULL || (close[1] != '\0' && close[1] != ':'))
        return false;
      *host = g_strndup (s + 1, close - s - 1);
      colon = close[1] == ':' ? close + 1 : NULL;
    }
  else
    {
      colon = strrchr (s, ':');
      if (colon && strchr (s, ':') != colon)
        colon = NULL; /* bare IPv6 */
      *host = colon ? g_strndup (s, colon - s) : g_strdup (s);
    }
  *port_text = colon ? colon + 1 : NULL;
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
  g_autofree char *h = NULL;
  const char *port_text;
  if (!df_split_host_port (s, &h, &port_text))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "invalid address '%s': unbalanced '['", s);
      return false;
    }
  out->port = default_port;
  if (port_text && !parse_port (port_text, s, &out->port, err))
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
df_open_stat (const char *path, int flags, mode_t mode, struct stat *st,
              GError **err)
{
  int fd = open (path, flags, mode);
  if (fd >= 0 && fstat (fd, st) == 0)
    return fd;
  df_set_error_errno (err, errno, "open %s", path);
  if (fd >= 0)
    close (fd);
  return -1;
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
      if (!df_interrupt_check (err))
        {
          EVP_MD_CTX_free (ctx);
          close (fd);
          return false;
        }
    }
  close (fd);
  unsigned char md[32];
  EVP_DigestFinal_ex (ctx, md, NULL);
  EVP_MD_CTX_free (ctx);
  for (int i = 0; i < 32; i++)
    g_snprintf (out + 2 * i, 3, "%02x", md[i]);
  return true;
}

/* ---- TCP keepalive ------------------------------------------------------ */

bool
df_check_tcp_keepalive (gint64 timeout_s, GError **err)
{
  if (timeout_s == 0 || (timeout_s >= DF_TCP_KEEPALIVE_MIN
                         && timeout_s <= DF_TCP_KEEPALIVE_MAX))
    return true;
  g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
               "'%" G_GINT64_FORMAT "' is not 0 (off) or a number of seconds "
               "from %d to %d", timeout_s, DF_TCP_KEEPALIVE_MIN,
               DF_TCP_KEEPALIVE_MAX);
  return false;
}

static bool
set_int (int fd, int level, int name, const char *what, int v, GError **err)
{
  if (setsockopt (fd, level, name, &v, sizeof v) == 0)
    return true;
  df_set_error_errno (err, errno, "setsockopt %s %d", what, v);
  return false;
}

static GMutex log_limit_lock;

bool
df_log_limit_pass (DfLogLimit *l, guint *suppressed)
{
  gint64 now = g_get_monotonic_time ();
  bool pass;

  g_mutex_lock (&log_limit_lock);
  pass = now >= l->next_us;
  if (pass)
    {
      *suppressed = l->suppressed;
      l->suppressed = 0;
      l->next_us = now + DF_LOG_LIMIT_INTERVAL_S * G_USEC_PER_SEC;
    }
  else
    l->suppressed++;
  g_mutex_unlock (&log_limit_lock);
  return pass;
}

bool
df_tcp_set_keepalive (int fd, guint timeout_s, GError **err)
{
  int idle = (int) timeout_s / 3;
  int intvl = (int) timeout_s / 6;

  g_return_val_if_fail (df_check_tcp_keepalive (timeout_s, NULL), false);
  if (timeout_s == 0)
    return set_int (fd, SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE", 0, err)
           && set_int (fd, IPPROTO_TCP, TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT",
                       0, err);
  return set_int (fd, SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE", 1, err)
         && set_int (fd, IPPROTO_TCP, TCP_KEEPIDLE, "TCP_KEEPIDLE", idle, err)
         && set_int (fd, IPPROTO_TCP, TCP_KEEPINTVL, "TCP_KEEPINTVL", intvl,
                     err)
         && set_int (fd, IPPROTO_TCP, TCP_KEEPCNT, "TCP_KEEPCNT",
                     DF_TCP_KEEPALIVE_PROBES, err)
         && set_int (fd, IPPROTO_TCP, TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT",
                     (int) timeout_s * 1000, err);
}

/* ---- NBD TLS mode ------------------------------------------------------ */

static const char *const tls_mode_names[] = {
  [DF_TLS_OFF] = "off",
  [DF_TLS_ON] = "on",
  [DF_TLS_REQUIRE] = "require",
};

bool
df_tls_mode_parse (const char *s, DfTlsMode *mode, GError **err)
{
  for (guint i = 0; s != NULL && i < G_N_ELEMENTS (tls_mode_names); i++)
    if (strcmp (s, tls_mode_names[i]) == 0)
      {
        *mode = (DfTlsMode) i;
        return true;
      }
  g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
               "'%s' is not off, on or require", s != NULL ? s : "");
  return false;
}

const char *
df_tls_mode_name (DfTlsMode mode)
{
  g_return_val_if_fail ((guint) mode < G_N_ELEMENTS (tls_mode_names), "?");
  return tls_mode_names[mode];
}

/* ---- secrets ---------------------------------------------------------- */

void
df_secret_wipe (void *p, size_t n)
{
  if (p && n)
    OPENSSL_cleanse (p, n);
}

void
df_secret_free (char *s)
{
  if (!s)
    return;
  df_secret_wipe (s, strlen (s));
  g_free (s);
}

bool
df_secret_equal (const char *a, const char *b)
{
  if (a == NULL || b == NULL)
    return false;
  size_t n = strlen (a);
  return n == strlen (b) && CRYPTO_memcmp (a, b, n) == 0;
}

char *
df_random_hex (size_t n, GError **err)
{
  g_autofree guint8 *raw = g_malloc (n);
  if (RAND_bytes (raw, (int) n) != 1)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_IO, "no random bytes");
      return NULL;
    }
  char *hex = g_malloc (2 * n + 1);
  for (size_t i = 0; i < n; i++)
    g_snprintf (hex + 2 * i, 3, "%02x", raw[i]);
  df_secret_wipe (raw, n);
  return hex;
}

char *
df_admin_socket_path (const char *farm_dir)
{
  g_autofree char *given = g_canonicalize_filename (farm_dir, "/");
  g_autofree char *dflt = g_canonicalize_filename (DF_DEFAULT_FARM, "/");
  if (strcmp (given, dflt) == 0)
    return g_build_filename (DF_RUNTIME_DIR, DF_ADMIN_SOCKET, NULL);
  return g_build_filename (farm_dir, "run", DF_ADMIN_SOCKET, NULL);
}

char *
df_device_initiator_iqn (const char *device)
{
  g_autofree char *iqn = g_strconcat (DF_IQN_PREFIX, device, NULL);

  return g_ascii_strdown (iqn, -1);
}
