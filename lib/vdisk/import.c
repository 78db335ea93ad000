/* diskfarm: importing a disk image as a standalone sparse qcow2 base.
 *
 * raw and qcow2 (with any backing chain) are read natively through
 * df_chain_open and copied by df_qcow2_write_from_blk, so the chain is
 * flattened and all-zero clusters stay unallocated.  Foreign formats
 * (vhdx, vmdk, vpc, vdi, ...) are first converted with `qemu-img convert
 * -O qcow2` into a temporary file next to the destination, which is then
 * opened natively (range checks apply to it too) and rewritten. */
#include "config.h"
#include "common.h"
#include "qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Formats handed to qemu-img. */
static const char *const foreign_formats[] = {
  "vhdx", "vmdk", "vpc", "vdi", "qed", "qcow", "parallels", "dmg", "bochs",
  "cloop", NULL,
};

static bool
is_foreign (const char *fmt)
{
  return g_strv_contains (foreign_formats, fmt);
}

/* Guess a format name from the file's magic: "qcow2", "raw" or a foreign
 * format name.  Returns a static string. */
static const char *
sniff_format (int fd, uint64_t size)
{
  uint8_t h[0x48] = { 0 };
  char tail[8] = { 0 };
  uint32_t vdi;

  if (df_pread_zfill (fd, h, sizeof h, 0) < 0)
    return "raw";
  if (memcmp (h, "QFI\xfb", 4) == 0)
    return h[7] == 1 ? "qcow" : "qcow2";
  if (memcmp (h, "vhdxfile", 8) == 0)
    return "vhdx";
  if (memcmp (h, "KDMV", 4) == 0 || memcmp (h, "# Disk Descriptor", 17) == 0)
    return "vmdk";
  if (memcmp (h, "conectix", 8) == 0)
    return "vpc";
  if (memcmp (h, "QED\0", 4) == 0)
    return "qed";
  memcpy (&vdi, h + 0x40, 4);
  if (GUINT32_FROM_LE (vdi) == 0xbeda107fu)
    return "vdi";
  if (size >= 512 && df_pread_zfill (fd, tail, 8, size - 512) == 0
      && memcmp (tail, "conectix", 8) == 0)
    return "vpc";          /* fixed VHD: footer only */
  return "raw";
}

static bool
resolve_format (const char *src, const char *format, const char **out,
                GError **err)
{
  if (format != NULL && strcmp (format, "auto") != 0)
    {
      if (strcmp (format, "raw") != 0 && strcmp (format, "qcow2") != 0
          && !is_foreign (format))
        {
          g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                       "unknown image format '%s'", format);
          return false;
        }
      *out = format;
      return true;
    }
  struct stat st;
  int fd = df_open_stat (src, O_RDONLY | O_CLOEXEC, 0, &st, err);
  if (fd < 0)
    return false;
  *out = sniff_format (fd, (uint64_t) st.st_size);
  close (fd);
  return true;
}

/* A disk is whole sectors: streamsvc and initiators address 512-byte
 * blocks, and a tail shorter than one could never be read or written. */
static bool
check_disk_size (const char *src, uint64_t size, GError **err)
{
  if (size == 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "%s: the disk image is empty", src);
      return false;
    }
  if (size % DF_SECTOR_SIZE != 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "%s: disk size %" G_GUINT64_FORMAT " bytes is not a "
                   "multiple of %u (whole sectors)", src, size,
                   DF_SECTOR_SIZE);
      return false;
    }
  return true;
}

static bool
import_native (const char *src, DfImageFormat fmt, const char *dest,
               df_progress_cb progress, void *opaque, uint64_t *virtual_size,
               GError **err)
{
  g_autoptr (df_blk) chain = df_chain_open (src, fmt, err);

  if (chain == NULL || !check_disk_size (src, chain->size, err))
    return false;
  if (virtual_size != NULL)
    *virtual_size = chain->size;
  return df_qcow2_write_from_blk (chain, dest, progress, opaque, err);
}

/* qemu-img convert src (format fmt) into the new file tmp.  A signal
 * during the conversion reaches qemu-img too (df_interrupt_forward). */
static bool
run_qemu_img (const char *qemu_img, const char *src, const char *fmt,
              const char *tmp, GError **err)
{
  const char *argv[] = { qemu_img, "convert", "-q", "-f", fmt, "-O", "qcow2",
                         src, tmp, NULL };
  g_autoptr (GSubprocess) p = g_subprocess_newv (
    argv, G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_PIPE,
    err);
  if (p == NULL)
    return false;
  const char *id = g_subprocess_get_identifier (p);
  df_interrupt_forward (id ? atoi (id) : 0);
  g_autoptr (GBytes) errout = NULL;
  bool ok = g_subprocess_communicate (p, NULL, NULL, NULL, &errout, err);
  df_interrupt_forward (0);
  if (!ok || !df_interrupt_check (err))
    return false;
  if (!g_subprocess_get_successful (p))
    {
      gsize n = 0;
      const char *data = errout ? g_bytes_get_data (errout, &n) : NULL;
      g_autofree char *raw = g_strndup (data ? data : "", n);
      g_autofree char *msg = df_display_text (g_strstrip (raw), 400);
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "qemu-img convert -f %s %s failed: %s", fmt, src, msg);
      return false;
    }
  return true;
}

static bool
import_foreign (const char *src, const char *fmt, const char *dest,
                df_progress_cb progress, void *opaque,
                uint64_t *virtual_size, GError **err)
{
  g_autofree char *qemu_img = g_find_program_in_path ("qemu-img");
  if (qemu_img == NULL)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_UNSUPPORTED,
                   "importing %s images needs qemu-img, which is not "
                   "installed", fmt);
      return false;
    }
  if (g_file_test (dest, G_FILE_TEST_EXISTS))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_EXISTS, "%s already exists", dest);
      return false;
    }
  g_autofree char *tmp = g_strdup_printf ("%s.import.XXXXXX", dest);
  int fd = g_mkstemp_full (tmp, O_RDWR | O_CLOEXEC, 0644);
  if (fd < 0)
    {
      df_set_error_errno (err, errno, "create %s", tmp);
      return false;
    }
  close (fd);
  bool ok = run_qemu_img (qemu_img, src, fmt, tmp, err)
    && import_native (tmp, DF_FMT_QCOW2, dest, progress, opaque,
                      virtual_size, err);
  unlink (tmp);
  return ok;
}

bool
df_vdisk_import (const char *src_path, const char *format,
                 const char *dest_path, df_progress_cb progress, void *opaque,
                 uint64_t *virtual_size, GError **err)
{
  const char *fmt = NULL;

  if (!g_file_test (src_path, G_FILE_TEST_EXISTS))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND, "no such file: %s",
                   src_path);
      return false;
    }
  if (!resolve_format (src_path, format, &fmt, err))
    return false;
  if (strcmp (fmt, "raw") == 0)
    return import_native (src_path, DF_FMT_RAW, dest_path, progress, opaque,
                          virtual_size, err);
  if (strcmp (fmt, "qcow2") == 0)
    return import_native (src_path, DF_FMT_QCOW2, dest_path, progress,
                          opaque, virtual_size, err);
  return import_foreign (src_path, fmt, dest_path, progress, opaque,
                         virtual_size, err);
}
