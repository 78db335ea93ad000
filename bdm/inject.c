/* bdm inject: add the 8 MiB boot partition to an existing disk image with
 * libguestfs (any format qemu reads).  Every check (format, table type,
 * free slot, free space) is made before the first write; existing
 * partitions are never moved, resized or rewritten: only the MBR boot code,
 * the new table entry and the active flags change. */
#include "bdm.h"

#include <glib/gstdio.h>
#include <guestfs.h>
#include <string.h>
#include <unistd.h>

#define MIB (1024u * 1024u)
#define DEV "/dev/sda"

void
bdm_inject_result_clear (BdmInjectResult *r)
{
  g_free (r->format);
  memset (r, 0, sizeof *r);
}

static void
close_guestfs (guestfs_h *g)
{
  if (g != NULL)
    guestfs_close (g);
}

static bool
gfs_fail (guestfs_h *g, GError **err, const char *what)
{
  const char *msg = guestfs_last_error (g);
  g_set_error (err, BDM_ERROR, BDM_ERROR_GUESTFS, "%s: %s", what,
               msg ? msg : "libguestfs error");
  return false;
}

/* Detect the format (qemu-img through libguestfs) and open the disk
 * read-write.  The handle is launched on success. */
static guestfs_h *
open_disk (const char *disk, char **format, GError **err)
{
  if (access (disk, R_OK | W_OK) != 0)
    {
      g_set_error (err, BDM_ERROR, BDM_ERROR_IO, "cannot open '%s' for "
                   "writing: %s", disk, g_strerror (errno));
      return NULL;
    }
  guestfs_h *g = guestfs_create ();
  if (g == NULL)
    {
      g_set_error (err, BDM_ERROR, BDM_ERROR_GUESTFS,
                   "cannot create a libguestfs handle");
      return NULL;
    }
  guestfs_set_error_handler (g, NULL, NULL);
  char *fmt = guestfs_disk_format (g, disk);
  if (fmt == NULL || g_str_equal (fmt, "unknown"))
    {
      g_set_error (err, BDM_ERROR, BDM_ERROR_FORMAT, "'%s': unknown disk "
                   "format (%s)", disk,
                   fmt ? "qemu-img does not recognise it"
                       : guestfs_last_error (g));
      free (fmt);
      guestfs_close (g);
      return NULL;
    }
  *format = g_strdup (fmt);
  free (fmt);
  if (guestfs_add_drive_opts (g, disk, GUESTFS_ADD_DRIVE_OPTS_FORMAT,
                              *format, -1) != 0
      || guestfs_launch (g) != 0)
    {
      gfs_fail (g, err, "cannot start libguestfs on the disk");
      guestfs_close (g);
      return NULL;
    }
  return g;
}

/* Where the new partition goes: after the last partition, 1 MiB aligned.
 * Sets *start (bytes).  Checks the table type and the primary slots. */
static bool
plan (guestfs_h *g, const char *disk, guint64 *start, bool *blank,
      GError **err)
{
  gint64 size = guestfs_blockdev_getsize64 (g, DEV);
  if (size < 0)
    return gfs_fail (g, err, "cannot read the disk size");
  if (size < 64 * 1024)
    {
      g_set_error (err, BDM_ERROR, BDM_ERROR_FORMAT, "'%s' is not a disk "
                   "image (%" G_GINT64_FORMAT " bytes of data)", disk, size);
      return false;
    }
  char *type = guestfs_part_get_parttype (g, DEV);
  *blank = type == NULL;      /* no partition table at all */
  if (type != NULL && !g_str_equal (type, "msdos"))
    {
      g_set_error (err, BDM_ERROR, BDM_ERROR_FORMAT,
                   "'%s' has a %s partition table: only MBR (msdos) disks "
                   "can carry a BIOS boot partition", disk, type);
      free (type);
      return false;
    }
  free (type);
  guint64 last_end = MIB - 1;      /* nothing before 1 MiB */
  guint primaries = 0;
  if (!*blank)
    {
      struct guestfs_partition_list *l = guestfs_part_list (g, DEV);
      if (l == NULL)
        return gfs_fail (g, err, "cannot list partitions");
      for (guint32 i = 0; i < l->len; i++)
        {
          primaries += l->val[i].part_num <= 4;
          last_end = MAX (last_end, l->val[i].part_end);
        }
      guestfs_free_partition_list (l);
    }
  if (primaries >= 4)
    {
      g_set_error (err, BDM_ERROR, BDM_ERROR_NOSPACE, "'%s' has no free "
                   "primary partition slot (4 in use)", disk);
      return false;
    }
  *start = (last_end + 1 + MIB - 1) / MIB * MIB;
  if (*start + (guint64) BDM_PART_MIB * MIB > (guint64) size)
    {
      g_set_error (err, BDM_ERROR, BDM_ERROR_NOSPACE,
                   "'%s' is full: the boot partition needs %u MiB after the "
                   "last partition (which ends at %" G_GUINT64_FORMAT
                   " MiB of %" G_GINT64_FORMAT " MiB); grow the disk first "
                   "(qemu-img resize)", disk, BDM_PART_MIB,
                   (last_end + 1) / MIB, size / (gint64) MIB);
      return false;
    }
  return true;
}

/* The number of the partition starting at start (bytes), or -1. */
static int
find_part (guestfs_h *g, guint64 start)
{
  struct guestfs_partition_list *l = guestfs_part_list (g, DEV);
  int n = -1;
  for (guint32 i = 0; l != NULL && i < l->len; i++)
    if (l->val[i].part_start == start)
      n = l->val[i].part_num;
  if (l != NULL)
    guestfs_free_partition_list (l);
  return n;
}

/* Only the new partition is active (one active partition per MBR). */
static bool
set_active (guestfs_h *g, int partnum, GError **err)
{
  for (int n = 1; n <= 4; n++)
    {
      if (n == partnum)
        continue;
      if (guestfs_part_get_mbr_id (g, DEV, n) < 0)
        continue;                                     /* unused slot */
      if (guestfs_part_set_bootable (g, DEV, n, 0) != 0)
        return gfs_fail (g, err, "cannot clear an active flag");
    }
  if (guestfs_part_set_bootable (g, DEV, partnum, 1) != 0)
    return gfs_fail (g, err, "cannot mark the boot partition active");
  return true;
}

static bool
write_mbr_code (const BdmConfig *c, guestfs_h *g, GError **err)
{
  g_autofree char *code = NULL;
  gsize len = 0;
  if (!bdm_mbr_code (c, &code, &len, err))
    return false;
  if (guestfs_pwrite_device (g, DEV, code, len, 0) != (int) len)
    return gfs_fail (g, err, "cannot write the MBR boot code");
  return true;
}

/* Add, fill and activate the partition.  fat is the prepared FAT file. */
static bool
apply (const BdmConfig *c, guestfs_h *g, guint64 start, bool blank,
       const char *fat, BdmInjectResult *res, GError **err)
{
  guint64 first = start / 512, last = first + BDM_PART_MIB * 2048u - 1;
  if (blank && guestfs_part_init (g, DEV, "msdos") != 0)
    return gfs_fail (g, err, "cannot create an MBR partition table");
  if (guestfs_part_add (g, DEV, "p", (int64_t) first, (int64_t) last) != 0)
    return gfs_fail (g, err, "cannot add the boot partition");
  int n = find_part (g, start);
  if (n < 0)
    {
      g_set_error (err, BDM_ERROR, BDM_ERROR_GUESTFS, "the new partition "
                   "is not where it was put (sector %" G_GUINT64_FORMAT ")",
                   first);
      return false;
    }
  g_autofree char *part = g_strdup_printf ("%s%d", DEV, n);
  if (guestfs_part_set_mbr_id (g, DEV, n, 0x0e) != 0
      || guestfs_upload (g, fat, part) != 0)
    return gfs_fail (g, err, "cannot write the boot partition");
  if (!set_active (g, n, err) || !write_mbr_code (c, g, err))
    return false;
  if (guestfs_shutdown (g) != 0)
    return gfs_fail (g, err, "cannot flush the disk");
  res->partnum = n;
  res->start_sector = first;
  res->sectors = last - first + 1;
  return true;
}

bool
bdm_inject (const BdmConfig *c, const char *disk, BdmInjectResult *res,
            GError **err)
{
  if (!bdm_config_check (c, err))
    return false;
  if (c->local_fallback)
    {
      g_set_error (err, BDM_ERROR, BDM_ERROR_INVALID, "--local-fallback "
                   "cannot be used with inject: the local disk would boot "
                   "the injected partition again");
      return false;
    }
  g_autofree char *format = NULL;
  guestfs_h *g = open_disk (disk, &format, err);
  if (g == NULL)
    return false;
  guint64 start = 0;
  bool blank = false;
  g_autofree char *tmpdir = NULL;
  g_autofree char *fat = NULL;
  bool ok = plan (g, disk, &start, &blank, err)
    && (tmpdir = g_dir_make_tmp ("bdm-inject-XXXXXX", err)) != NULL;
  if (ok)
    {
      fat = g_build_filename (tmpdir, "boot.fat", NULL);
      ok = bdm_make_fat (c, start / 512, fat, err)
           && apply (c, g, start, blank, fat, res, err);
      g_unlink (fat);
      g_rmdir (tmpdir);
    }
  close_guestfs (g);
  if (ok)
    res->format = g_steal_pointer (&format);
  return ok;
}
