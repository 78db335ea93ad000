/* bdm: the 8 MiB FAT boot partition (mkfs.fat + mtools + syslinux, run as
 * subprocesses on plain files) and the raw disk holding it. */
#include "bdm.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

#define SECTOR 512u
#define PART_START_LBA 2048u                           /* 1 MiB */
#define PART_SECTORS (BDM_PART_MIB * 1024u * 1024u / SECTOR)

/* Run argv (searched in PATH) with SOURCE_DATE_EPOCH set for mtools.
 * One error naming the tool and its stderr. */
static bool
run_tool (const BdmConfig *c, const char *const *argv, GError **err)
{
  g_auto(GStrv) env = g_get_environ ();
  g_autofree char *epoch = g_strdup_printf ("%" G_GINT64_FORMAT, c->epoch);
  env = g_environ_setenv (env, "SOURCE_DATE_EPOCH", epoch, TRUE);
  env = g_environ_setenv (env, "MTOOLS_SKIP_CHECK", "1", TRUE);
  g_autofree char *out = NULL;
  g_autofree char *errs = NULL;
  gint status = 0;
  g_autoptr(GError) spawn_err = NULL;
  if (!g_spawn_sync (NULL, (char **) argv, env, G_SPAWN_SEARCH_PATH, NULL,
                     NULL, &out, &errs, &status, &spawn_err))
    {
      g_set_error (err, BDM_ERROR, BDM_ERROR_TOOL,
                   "cannot run %s (packages dosfstools, mtools, syslinux): "
                   "%s", argv[0], spawn_err->message);
      return false;
    }
  if (!g_spawn_check_wait_status (status, NULL))
    {
      g_set_error (err, BDM_ERROR, BDM_ERROR_TOOL, "%s failed: %s", argv[0],
                   g_strstrip (errs));
      return false;
    }
  return true;
}

static bool
write_text (const char *path, char *text, GError **err)
{
  g_autofree char *t = text;
  if (g_file_set_contents (path, t, -1, err))
    return true;
  (*err)->domain = BDM_ERROR;
  (*err)->code = BDM_ERROR_IO;
  return false;
}

/* Copy host file src to ::dst inside the FAT image img. */
static bool
mcopy (const BdmConfig *c, const char *img, const char *src, const char *dst,
       GError **err)
{
  g_autofree char *target = g_strdup_printf ("::%s", dst);
  const char *argv[] = { "mcopy", "-o", "-i", img, src, target, NULL };
  return run_tool (c, argv, err);
}

bool
bdm_make_fat (const BdmConfig *c, guint64 hidden_sectors, const char *out,
              GError **err)
{
  if (!bdm_config_check (c, err))
    return false;
  g_autofree char *lkrn = bdm_payload (c->ipxe_dir, "ipxe.lkrn", "ipxe", err);
  if (lkrn == NULL)
    return false;
  g_autofree char *tmpdir = g_dir_make_tmp ("bdm-XXXXXX", err);
  if (tmpdir == NULL)
    return false;
  g_autofree char *cfg = g_build_filename (tmpdir, "syslinux.cfg", NULL);
  g_autofree char *script = g_build_filename (tmpdir, "boot.ipxe", NULL);
  g_autofree char *hidden = g_strdup_printf ("%" G_GUINT64_FORMAT,
                                             hidden_sectors);
  g_autofree char *kib = g_strdup_printf ("%u", BDM_PART_MIB * 1024);
  const char *mkfs[] = { "mkfs.fat", "-C", "-F", "16", "-s", "2", "-h", hidden,
                         "-i", "DF0B0071", "-n", "DISKFARM", "--invariant",
                         out, kib, NULL };
  const char *mmd[] = { "mmd", "-i", out, "::diskfarm", NULL };
  const char *sysl[] = { "syslinux", "--install", out, NULL };
  g_unlink (out);
  bool ok = write_text (cfg, bdm_render_syslinux_cfg (c, "/diskfarm"), err)
    && write_text (script, bdm_render_script (c), err)
    && run_tool (c, mkfs, err) && run_tool (c, mmd, err)
    && mcopy (c, out, lkrn, "diskfarm/ipxe.lkrn", err)
    && mcopy (c, out, script, "diskfarm/boot.ipxe", err)
    && mcopy (c, out, cfg, "syslinux.cfg", err)
    && run_tool (c, sysl, err);
  g_unlink (cfg);
  g_unlink (script);
  g_rmdir (tmpdir);
  return ok;
}

/* CHS triple of an LBA for an MBR entry (255 heads, 63 sectors; past
 * cylinder 1023 the conventional 1023/254/63). */
static void
chs (guint64 lba, guint8 out[3])
{
  guint64 cyl = lba / (255 * 63);
  guint head = (guint) (lba / 63 % 255), sec = (guint) (lba % 63 + 1);
  if (cyl > 1023)
    {
      cyl = 1023;
      head = 254;
      sec = 63;
    }
  out[0] = (guint8) head;
  out[1] = (guint8) (sec | ((cyl >> 2) & 0xc0));
  out[2] = (guint8) (cyl & 0xff);
}

static void
put_le32 (guint8 *p, guint32 v)
{
  for (int i = 0; i < 4; i++)
    p[i] = (guint8) (v >> (8 * i));
}

/* The MBR: syslinux's boot code, a fixed disk signature, one active
 * FAT16-LBA (0x0e) partition. */
static bool
build_mbr (const BdmConfig *c, guint8 mbr[512], GError **err)
{
  g_autofree char *code = NULL;
  gsize len = 0;
  if (!bdm_mbr_code (c, &code, &len, err))
    return false;
  memset (mbr, 0, 512);
  memcpy (mbr, code, len);
  put_le32 (mbr + 440, 0xdf5eed01u);
  guint8 *e = mbr + 446;
  e[0] = 0x80;
  chs (PART_START_LBA, e + 1);
  e[4] = 0x0e;
  chs (PART_START_LBA + PART_SECTORS - 1, e + 5);
  put_le32 (e + 8, PART_START_LBA);
  put_le32 (e + 12, PART_SECTORS);
  mbr[510] = 0x55;
  mbr[511] = 0xaa;
  return true;
}

/* Copy the FAT image into fd at off. */
static bool
copy_into (const char *fat, int fd, guint64 off, GError **err)
{
  g_autofree char *data = NULL;
  gsize len = 0;
  if (!g_file_get_contents (fat, &data, &len, err))
    return false;
  if (len != (gsize) PART_SECTORS * SECTOR)
    {
      g_set_error (err, BDM_ERROR, BDM_ERROR_TOOL,
                   "mkfs.fat made %zu bytes, not %u MiB", len, BDM_PART_MIB);
      return false;
    }
  if (pwrite (fd, data, len, (off_t) off) != (ssize_t) len)
    {
      g_set_error (err, BDM_ERROR, BDM_ERROR_IO, "cannot write the disk: %s",
                   g_strerror (errno));
      return false;
    }
  return true;
}

static bool
fill_disk (const BdmConfig *c, int fd, const char *fat, GError **err)
{
  guint8 mbr[512];
  if (!build_mbr (c, mbr, err)
      || !bdm_make_fat (c, PART_START_LBA, fat, err)
      || !copy_into (fat, fd, (guint64) PART_START_LBA * SECTOR, err))
    return false;
  if (pwrite (fd, mbr, sizeof mbr, 0) != (ssize_t) sizeof mbr
      || fsync (fd) != 0)
    {
      g_set_error (err, BDM_ERROR, BDM_ERROR_IO, "cannot write the disk: %s",
                   g_strerror (errno));
      return false;
    }
  return true;
}

bool
bdm_make_partition_disk (const BdmConfig *c, const char *out, GError **err)
{
  if (!bdm_config_check (c, err))
    return false;
  g_autofree char *dir = g_path_get_dirname (out);
  g_autofree char *base = g_path_get_basename (out);
  g_autofree char *tmp = g_strdup_printf ("%s/.%s.XXXXXX", dir, base);
  g_autofree char *fat = g_strdup_printf ("%s/.%s.fat.XXXXXX", dir, base);
  int fd = g_mkstemp_full (tmp, O_RDWR | O_CLOEXEC, 0644);
  int fat_fd = fd >= 0 ? g_mkstemp_full (fat, O_RDWR | O_CLOEXEC, 0644) : -1;
  if (fd < 0 || fat_fd < 0)
    {
      g_set_error (err, BDM_ERROR, BDM_ERROR_IO, "cannot create a file in "
                   "'%s': %s", dir, g_strerror (errno));
      if (fd >= 0)
        {
          close (fd);
          g_unlink (tmp);
        }
      return false;
    }
  close (fat_fd);
  guint64 size = (guint64) (PART_START_LBA + PART_SECTORS) * SECTOR;
  bool ok = ftruncate (fd, (off_t) size) == 0;
  if (!ok)
    g_set_error (err, BDM_ERROR, BDM_ERROR_IO, "cannot size '%s': %s", tmp,
                 g_strerror (errno));
  ok = ok && fill_disk (c, fd, fat, err);
  close (fd);
  g_unlink (fat);
  if (ok && rename (tmp, out) != 0)
    {
      g_set_error (err, BDM_ERROR, BDM_ERROR_IO, "cannot rename '%s' to "
                   "'%s': %s", tmp, out, g_strerror (errno));
      ok = false;
    }
  if (!ok)
    g_unlink (tmp);
  return ok;
}
