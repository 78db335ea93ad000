/* diskfarm: raw images and format probing.
 *
 * A raw file is one chain layer whose virtual size is its file size.  Its
 * holes (SEEK_HOLE) become ZERO runs so that extents and copies stay sparse. */
#include "config.h"
#include "common.h"
#include "qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

bool
df_image_format_parse (const char *s, DfImageFormat *out, GError **err)
{
  if (s == NULL || strcmp (s, "auto") == 0)
    *out = DF_FMT_UNKNOWN;
  else if (strcmp (s, "raw") == 0)
    *out = DF_FMT_RAW;
  else if (strcmp (s, "qcow2") == 0)
    *out = DF_FMT_QCOW2;
  else
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "unknown image format '%s' (raw, qcow2 or auto)", s);
      return false;
    }
  return true;
}

const char *
df_image_format_name (DfImageFormat f)
{
  switch (f)
    {
    case DF_FMT_RAW: return "raw";
    case DF_FMT_QCOW2: return "qcow2";
    case DF_FMT_UNKNOWN: break;
    }
  return "auto";
}

int
df_pread_zfill (int fd, void *buf, size_t len, uint64_t off)
{
  char *p = buf;

  while (len > 0)
    {
      ssize_t r = pread (fd, p, len, (off_t) off);
      if (r < 0 && errno == EINTR)
        continue;
      if (r < 0)
        return -1;
      if (r == 0)
        {
          memset (p, 0, len);
          return 0;
        }
      p += r;
      off += (uint64_t) r;
      len -= (size_t) r;
    }
  return 0;
}

bool
df_image_probe (const char *path, DfImageFormat *out, GError **err)
{
  unsigned char magic[4] = { 0 };
  int fd = open (path, O_RDONLY | O_CLOEXEC);

  if (fd < 0)
    {
      if (errno == ENOENT)
        g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND, "no such file: %s",
                     path);
      else
        df_set_error_errno (err, errno, "open %s", path);
      return false;
    }
  if (df_pread_zfill (fd, magic, sizeof magic, 0) < 0)
    {
      df_set_error_errno (err, errno, "read %s", path);
      close (fd);
      return false;
    }
  close (fd);
  *out = memcmp (magic, "QFI\xfb", 4) == 0 ? DF_FMT_QCOW2 : DF_FMT_RAW;
  return true;
}

/* Append one run of kind over [start, end) of the raw file. */
static void
raw_add (GArray *runs, uint16_t file, DfRunKind kind, uint64_t start,
         uint64_t end)
{
  DfRun r = { .guest = start, .length = end - start, .file = file,
              .kind = (uint8_t) kind,
              .host = kind == DF_RUN_DATA ? start : 0 };
  if (end > start)
    df_runs_append (runs, &r);
}

bool
df_raw_map (int fd, DfChainLayer *layer, uint16_t file, GArray *runs,
            GError **err)
{
  uint64_t size = layer->file_size;
  uint64_t pos = 0;

  layer->format = DF_FMT_RAW;
  layer->virtual_size = size;
  while (pos < size)
    {
      off_t data = lseek (fd, (off_t) pos, SEEK_DATA);
      if (data < 0 && errno == ENXIO)
        data = (off_t) size;            /* hole up to EOF */
      else if (data < 0)
        {
          raw_add (runs, file, DF_RUN_DATA, pos, size);  /* no SEEK_DATA */
          return true;
        }
      off_t hole = lseek (fd, data, SEEK_HOLE);
      if (hole < 0 || (uint64_t) hole > size)
        hole = (off_t) size;
      raw_add (runs, file, DF_RUN_ZERO, pos, (uint64_t) data);
      raw_add (runs, file, DF_RUN_DATA, (uint64_t) data, (uint64_t) hole);
      pos = (uint64_t) hole;
    }
  (void) err;
  return true;
}
