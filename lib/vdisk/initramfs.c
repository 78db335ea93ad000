/* diskfarm: reading a golden image's initramfs (initramfs.h).  The image
 * is concatenated cpio "newc" archives (the kernel's format: an early
 * uncompressed one with CPU microcode, then the main one, often
 * compressed); every length in a header is checked against the bytes
 * that are there. */
#include "initramfs.h"

#include "common.h"

#include <gio/gio.h>
#include <string.h>

#define CPIO_HDR 110
#define CPIO_TRAILER "TRAILER!!!"
#define MAX_UNPACKED ((gsize) 1 << 30) /* 1 GiB: no real initramfs is bigger */

typedef struct
{
  const char *magic;
  gsize magic_len;
  const char *tool; /* decompresses stdin to stdout with -dc */
} Codec;

static const Codec codecs[] = {
  { "\x1f\x8b", 2, "gzip" },
  { "\x28\xb5\x2f\xfd", 4, "zstd" },
  { "\xfd" "7zXZ\x00", 6, "xz" },
  { "\x02\x21\x4c\x18", 4, "lz4" },
  { "BZh", 3, "bzip2" },
  { "\x5d\x00\x00", 3, "lzma" },
};

static bool
hex8 (const guint8 *p, guint32 *v)
{
  guint32 x = 0;
  for (int i = 0; i < 8; i++)
    {
      int d = g_ascii_xdigit_value (p[i]);
      if (d < 0)
        return false;
      x = x << 4 | (guint32) d;
    }
  *v = x;
  return true;
}

static gsize
align4 (gsize n)
{
  return (n + 3) & ~(gsize) 3;
}

/* "./etc/x", "/etc/x" -> "etc/x" */
static const char *
entry_name (const char *n)
{
  while (n[0] == '.' && n[1] == '/')
    n += 2;
  while (n[0] == '/')
    n++;
  return n;
}

static bool
is_binary (const char *name, const char *base)
{
  static const char *const dirs[] = { "sbin/", "bin/", "usr/sbin/",
                                      "usr/bin/" };
  for (guint i = 0; i < G_N_ELEMENTS (dirs); i++)
    if (g_str_has_prefix (name, dirs[i])
        && strcmp (name + strlen (dirs[i]), base) == 0)
      return true;
  return false;
}

/* ISCSI_AUTO=true on a line of its own (quotes allowed), as open-iscsi's
 * local-top script sources it. */
static bool
says_iscsi_auto (const guint8 *data, gsize len)
{
  g_autofree char *text = g_strndup ((const char *) data, len);
  g_auto (GStrv) lines = g_strsplit (text, "\n", -1);
  for (guint i = 0; lines[i]; i++)
    {
      const char *l = g_strstrip (lines[i]);
      if (strcmp (l, "ISCSI_AUTO=true") == 0
          || strcmp (l, "ISCSI_AUTO=\"true\"") == 0
          || strcmp (l, "ISCSI_AUTO='true'") == 0)
        return true;
    }
  return false;
}

static void
note_entry (DfInitramfs *out, const char *raw, const guint8 *data,
            gsize len)
{
  const char *name = entry_name (raw);
  out->files++;
  if (g_str_has_prefix (name, "scripts/local") || strcmp (name, "scripts/functions") == 0)
    out->initramfs_tools = true;
  if (g_str_has_prefix (name, "usr/lib/dracut/") || strcmp (name, "usr/lib/dracut") == 0)
    out->dracut = true;
  if (strcmp (name, "scripts/local-top/iscsi") == 0)
    out->iscsi_hook = true;
  if (strcmp (name, "etc/iscsi.initramfs") == 0 && says_iscsi_auto (data, len))
    out->iscsi_auto = true;
  if (is_binary (name, "iscsistart"))
    out->iscsistart = true;
  if (is_binary (name, "nbd-client"))
    out->nbd_client = true;
}

static bool
unpack (const Codec *c, const guint8 *data, gsize len, GBytes **plain,
        GError **err)
{
  g_autoptr (GError) e = NULL;
  g_autoptr (GSubprocess) p = g_subprocess_new (
    G_SUBPROCESS_FLAGS_STDIN_PIPE | G_SUBPROCESS_FLAGS_STDOUT_PIPE
      | G_SUBPROCESS_FLAGS_STDERR_SILENCE,
    &e, c->tool, "-dc", NULL);
  if (!p)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_UNSUPPORTED,
                   "the initramfs is %s-compressed and %s cannot be run: %s",
                   c->tool, c->tool, e->message);
      return false;
    }
  g_autoptr (GBytes) in = g_bytes_new_static (data, len);
  if (!g_subprocess_communicate (p, in, NULL, plain, NULL, &e))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_IO, "%s -dc: %s", c->tool,
                   e->message);
      return false;
    }
  /* Trailing padding after the compressed stream makes some tools exit
   * non-zero although everything was decompressed: judge by the output. */
  if (*plain == NULL || g_bytes_get_size (*plain) == 0)
    {
      g_clear_pointer (plain, g_bytes_unref);
      g_set_error (err, DF_ERROR, DF_ERROR_CORRUPT,
                   "the initramfs's %s data does not decompress", c->tool);
      return false;
    }
  return true;
}

static bool scan (const guint8 *data, gsize len, int depth, DfInitramfs *out,
                  GError **err);

/* One cpio archive at *pos: its entries into out, *pos past its trailer. */
static bool
scan_cpio (const guint8 *data, gsize len, gsize *pos, DfInitramfs *out,
           GError **err)
{
  gsize p = *pos;
  for (;;)
    {
      guint32 fsize, nsize;
      if (len - p < CPIO_HDR)
        goto truncated;
      if (memcmp (data + p, "07070", 5) != 0
          || (data[p + 5] != '1' && data[p + 5] != '2'))
        {
          g_set_error (err, DF_ERROR, DF_ERROR_CORRUPT,
                       "initramfs: no cpio header at byte %" G_GSIZE_FORMAT,
                       p);
          return false;
        }
      if (!hex8 (data + p + 54, &fsize) || !hex8 (data + p + 94, &nsize)
          || nsize == 0)
        {
          g_set_error (err, DF_ERROR, DF_ERROR_CORRUPT,
                       "initramfs: bad cpio header at byte %" G_GSIZE_FORMAT,
                       p);
          return false;
        }
      gsize name_at = p + CPIO_HDR;
      if (len - name_at < nsize)
        goto truncated;
      gsize data_at = align4 (name_at + nsize);
      if (data_at > len || len - data_at < fsize)
        goto truncated;
      g_autofree char *name = g_strndup ((const char *) data + name_at,
                                         nsize - 1);
      p = align4 (data_at + fsize);
      if (strcmp (name, CPIO_TRAILER) == 0)
        break;
      note_entry (out, name, data + data_at, fsize);
      if (p > len)
        goto truncated;
    }
  *pos = MIN (p, len);
  return true;
truncated:
  g_set_error (err, DF_ERROR, DF_ERROR_CORRUPT,
               "initramfs: cpio archive truncated at byte %" G_GSIZE_FORMAT,
               p);
  return false;
}

/* Archives until the end; a compressed segment is the rest of the data. */
static bool
scan (const guint8 *data, gsize len, int depth, DfInitramfs *out,
      GError **err)
{
  gsize pos = 0;
  bool any = false;
  while (pos < len)
    {
      if (data[pos] == 0) /* padding between archives */
        {
          pos++;
          continue;
        }
      if (len - pos >= 6 && memcmp (data + pos, "07070", 5) == 0)
        {
          if (!scan_cpio (data, len, &pos, out, err))
            return false;
          any = true;
          continue;
        }
      for (guint i = 0; i < G_N_ELEMENTS (codecs); i++)
        {
          const Codec *c = &codecs[i];
          if (len - pos < c->magic_len
              || memcmp (data + pos, c->magic, c->magic_len) != 0)
            continue;
          if (depth > 0)
            break;
          g_autoptr (GBytes) plain = NULL;
          if (!unpack (c, data + pos, len - pos, &plain, err))
            return false;
          gsize n;
          const guint8 *d = g_bytes_get_data (plain, &n);
          return scan (d, MIN (n, MAX_UNPACKED), depth + 1, out, err);
        }
      if (any)
        return true; /* trailing bytes after the last archive: tolerated */
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "not an initramfs (no cpio archive, no known compression)");
      return false;
    }
  if (!any)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "not an initramfs (empty)");
      return false;
    }
  return true;
}

bool
df_initramfs_scan (const guint8 *data, gsize len, DfInitramfs *out,
                   GError **err)
{
  memset (out, 0, sizeof *out);
  return scan (data, len, 0, out, err);
}

bool
df_initramfs_scan_file (const char *path, DfInitramfs *out, GError **err)
{
  g_autoptr (GMappedFile) f = g_mapped_file_new (path, FALSE, err);
  if (!f)
    return false;
  return df_initramfs_scan ((const guint8 *) g_mapped_file_get_contents (f),
                            g_mapped_file_get_length (f), out, err);
}

bool
df_initramfs_iscsi_root (const DfInitramfs *i, const char **why)
{
  if (i->iscsi_hook && i->iscsi_auto)
    {
      *why = "open-iscsi logs in from the iBFT (ISCSI_AUTO=true)";
      return true;
    }
  if (i->iscsi_hook)
    {
      *why = "open-iscsi is in the initramfs without ISCSI_AUTO=true: put "
             "ISCSI_AUTO=true in /etc/iscsi/iscsi.initramfs and run "
             "update-initramfs -u (or add iscsi_auto to the kernel command "
             "line)";
      return false;
    }
  if (i->initramfs_tools)
    {
      *why = "no open-iscsi in the initramfs: install open-iscsi, put "
             "ISCSI_AUTO=true in /etc/iscsi/iscsi.initramfs and run "
             "update-initramfs -u";
      return false;
    }
  if (i->iscsistart)
    {
      *why = i->dracut ? "iscsistart (dracut: boot with rd.iscsi.firmware=1)"
                       : "iscsistart (its init must run iscsistart -b)";
      return true;
    }
  *why = i->dracut ? "no iscsistart: add dracut's iscsi module "
                     "(dracut --add iscsi) and boot with rd.iscsi.firmware=1"
                   : "no iscsistart and no open-iscsi hook in the initramfs";
  return false;
}

bool
df_initramfs_nbd_root (const DfInitramfs *i, const char **why)
{
  if (i->nbd_client)
    {
      *why = "nbd-client (root=/dev/nbd0pN nbdroot=HOST:PORT/device/NAME)";
      return true;
    }
  *why = i->initramfs_tools ? "no nbd-client in the initramfs: install "
                              "nbd-client and run update-initramfs -u"
                            : "no nbd-client in the initramfs";
  return false;
}

const char *
df_initramfs_flavour (const DfInitramfs *i)
{
  return i->initramfs_tools ? "initramfs-tools" : i->dracut ? "dracut"
                                                            : "other";
}
