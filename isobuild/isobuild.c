/* isobuild: deterministic bootable ISO mastering on libisofs (see
 * isobuild.h).  libisofs does every byte of ISO 9660 / Joliet / Rock Ridge /
 * El Torito / isohybrid; this file only builds its tree, sets its options
 * so the output is reproducible, and streams the result to a file. */
#include "isobuild.h"

#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LIBISOFS_WITHOUT_LIBBURN 1
#include <libisofs/libisofs.h>

G_DEFINE_QUARK (isobuild-error-quark, isobuild_error)

struct IsoBuild {
  IsoImage *image;           /* owned (one reference) */
};

/* libisofs is initialised once per process and never finished: iso_finish
 * would invalidate images still held by other IsoBuilds. */
static bool
libisofs_ready (GError **err)
{
  static gsize once;
  static int rc;
  if (g_once_init_enter (&once))
    {
      rc = iso_init ();
      if (rc >= 0)
        iso_set_msgs_severities ((char *) "NEVER",
                                 g_getenv ("ISOBUILD_DEBUG") != NULL
                                 ? (char *) "DEBUG" : (char *) "FATAL",
                                 (char *) "isobuild");
      g_once_init_leave (&once, 1);
    }
  if (rc < 0)
    {
      g_set_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_LIBISOFS,
                   "cannot initialise libisofs: %s", iso_error_to_msg (rc));
      return false;
    }
  return true;
}

static bool
iso_failed (int rc, GError **err, const char *what, const char *path)
{
  if (rc >= 0)
    return false;
  g_set_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_LIBISOFS, "%s '%s': %s",
               what, path, iso_error_to_msg (rc));
  return true;
}

IsoBuild *
isobuild_new (GError **err)
{
  if (!libisofs_ready (err))
    return NULL;
  IsoBuild *b = g_new0 (IsoBuild, 1);
  int rc = iso_image_new ("DISKFARM", &b->image);
  if (iso_failed (rc, err, "cannot create image", "DISKFARM"))
    {
      g_free (b);
      return NULL;
    }
  iso_tree_set_follow_symlinks (b->image, 0);
  iso_tree_set_ignore_hidden (b->image, 0);
  return b;
}

void
isobuild_free (IsoBuild *b)
{
  if (b == NULL)
    return;
  iso_image_unref (b->image);
  g_free (b);
}

/* ---- tree ------------------------------------------------------------- */

/* Check an ISO path: relative components, no "", ".", "..". */
static bool
check_iso_path (const char *iso_path, GError **err)
{
  g_auto(GStrv) parts = g_strsplit (iso_path, "/", -1);
  bool ok = parts[0] != NULL;
  for (guint i = 0; ok && parts[i] != NULL; i++)
    ok = parts[i][0] != '\0' && !g_str_equal (parts[i], ".")
         && !g_str_equal (parts[i], "..") && strlen (parts[i]) <= 255;
  if (!ok)
    g_set_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_PATH,
                 "bad path inside the ISO: '%s'", iso_path);
  return ok;
}

/* The directory dir_path ("a/b", "" for root), created as needed.
 * Borrowed from the image. */
static IsoDir *
ensure_dir (IsoBuild *b, const char *dir_path, GError **err)
{
  IsoDir *dir = iso_image_get_root (b->image);
  g_auto(GStrv) parts = g_strsplit (dir_path, "/", -1);
  for (guint i = 0; parts[i] != NULL; i++)
    {
      if (parts[i][0] == '\0')
        continue;
      IsoNode *node = NULL;
      if (iso_dir_get_node (dir, parts[i], &node) == 1)
        {
          if (iso_node_get_type (node) != LIBISO_DIR)
            {
              g_set_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_PATH,
                           "'%s' inside the ISO is a file, not a directory",
                           parts[i]);
              return NULL;
            }
          dir = (IsoDir *) node;
          continue;
        }
      IsoDir *sub = NULL;
      int rc = iso_tree_add_new_dir (dir, parts[i], &sub);
      if (iso_failed (rc, err, "cannot add directory", dir_path))
        return NULL;
      dir = sub;
    }
  return dir;
}

/* Split iso_path into its parent directory (created) and leaf name. */
static IsoDir *
parent_of (IsoBuild *b, const char *iso_path, const char **leaf,
           GError **err)
{
  if (!check_iso_path (iso_path, err))
    return NULL;
  const char *slash = strrchr (iso_path, '/');
  g_autofree char *dir = slash ? g_strndup (iso_path, slash - iso_path)
                               : g_strdup ("");
  *leaf = slash ? slash + 1 : iso_path;
  IsoDir *parent = ensure_dir (b, dir, err);
  if (parent == NULL)
    return NULL;
  IsoNode *existing = NULL;
  if (iso_dir_get_node (parent, *leaf, &existing) == 1)
    {
      g_set_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_PATH,
                   "'%s' is already in the ISO", iso_path);
      return NULL;
    }
  return parent;
}

bool
isobuild_add_file (IsoBuild *b, const char *iso_path, const char *host_path,
                   GError **err)
{
  struct stat st;
  if (stat (host_path, &st) != 0 || !S_ISREG (st.st_mode)
      || access (host_path, R_OK) != 0)
    {
      int e = errno;
      g_set_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_INPUT,
                   "cannot read '%s': %s", host_path,
                   S_ISREG (st.st_mode) || e != 0 ? g_strerror (e)
                                                  : "not a regular file");
      return false;
    }
  const char *leaf = NULL;
  IsoDir *parent = parent_of (b, iso_path, &leaf, err);
  if (parent == NULL)
    return false;
  IsoNode *node = NULL;
  /* libisofs' local filesystem wants absolute paths, and would add a
   * symlink as a symlink: resolve (Debian's /usr/lib/ipxe/ipxe.lkrn is a
   * link to /boot). */
  g_autofree char *abs = realpath (host_path, NULL);
  if (abs == NULL)
    {
      g_set_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_INPUT,
                   "cannot resolve '%s': %s", host_path, g_strerror (errno));
      return false;
    }
  int rc = iso_tree_add_new_node (b->image, parent, leaf, abs, &node);
  return !iso_failed (rc, err, "cannot add file", host_path);
}

bool
isobuild_add_data (IsoBuild *b, const char *iso_path, const void *data,
                   gsize len, GError **err)
{
  const char *leaf = NULL;
  IsoDir *parent = parent_of (b, iso_path, &leaf, err);
  if (parent == NULL)
    return false;
  /* libisofs frees the buffer with free(); GLib allocates with malloc. */
  unsigned char *copy = malloc (len > 0 ? len : 1);
  if (copy == NULL)
    g_error ("out of memory");
  memcpy (copy, data, len);
  IsoStream *stream = NULL;
  int rc = iso_memory_stream_new (copy, len, &stream);
  if (iso_failed (rc, err, "cannot add data", iso_path))
    {
      free (copy);
      return false;
    }
  IsoFile *file = NULL;
  rc = iso_tree_add_new_file (parent, leaf, stream, &file);
  if (rc < 0)
    iso_stream_unref (stream);   /* on success the file took our reference */
  return !iso_failed (rc, err, "cannot add data", iso_path);
}

static gint
cmp_str (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

/* Names in host_dir, sorted (new array of new strings). */
static GPtrArray *
sorted_names (const char *host_dir, GError **err)
{
  g_autoptr(GDir) d = g_dir_open (host_dir, 0, err);
  if (d == NULL)
    {
      g_prefix_error (err, "cannot read directory: ");
      if (err != NULL && *err != NULL)
        {
          (*err)->domain = ISOBUILD_ERROR;
          (*err)->code = ISOBUILD_ERROR_INPUT;
        }
      return NULL;
    }
  GPtrArray *names = g_ptr_array_new_with_free_func (g_free);
  const char *n;
  while ((n = g_dir_read_name (d)) != NULL)
    g_ptr_array_add (names, g_strdup (n));
  g_ptr_array_sort (names, cmp_str);
  return names;
}

bool
isobuild_add_tree (IsoBuild *b, const char *iso_dir, const char *host_dir,
                   GError **err)
{
  if (iso_dir[0] != '\0' && ensure_dir (b, iso_dir, err) == NULL)
    return false;
  g_autoptr(GPtrArray) names = sorted_names (host_dir, err);
  if (names == NULL)
    return false;
  for (guint i = 0; i < names->len; i++)
    {
      const char *name = names->pdata[i];
      g_autofree char *host = g_build_filename (host_dir, name, NULL);
      g_autofree char *iso = iso_dir[0] ? g_strdup_printf ("%s/%s", iso_dir,
                                                           name)
                                        : g_strdup (name);
      struct stat st;
      if (lstat (host, &st) != 0)
        {
          g_set_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_INPUT,
                       "cannot read '%s': %s", host, g_strerror (errno));
          return false;
        }
      bool ok;
      if (S_ISDIR (st.st_mode))
        ok = ensure_dir (b, iso, err) != NULL
             && isobuild_add_tree (b, iso, host, err);
      else if (S_ISREG (st.st_mode))
        ok = isobuild_add_file (b, iso, host, err);
      else
        {
          g_set_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_INPUT,
                       "'%s' is not a regular file or directory", host);
          ok = false;
        }
      if (!ok)
        return false;
    }
  return true;
}

/* ---- options ---------------------------------------------------------- */

bool
isobuild_default_epoch (gint64 *out, GError **err)
{
  const char *s = g_getenv ("SOURCE_DATE_EPOCH");
  *out = ISOBUILD_EPOCH_DEFAULT;
  if (s == NULL || *s == '\0')
    return true;
  char *end = NULL;
  errno = 0;
  gint64 v = g_ascii_strtoll (s, &end, 10);
  /* ISO 9660 dates end in year 9999; stay within 4-digit years */
  if (errno != 0 || end == s || *end != '\0' || v < 0
      || v > G_GINT64_CONSTANT (253402300799))
    {
      g_set_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_INPUT,
                   "SOURCE_DATE_EPOCH '%s' is not a number of seconds "
                   "between 0 and 253402300799", s);
      return false;
    }
  *out = v;
  return true;
}

/* Read the whole isohdpfx.bin (at most 32 KiB) into sa[32768]. */
static bool
load_system_area (const char *path, char *sa, GError **err)
{
  g_autofree char *data = NULL;
  gsize len = 0;
  if (!g_file_get_contents (path, &data, &len, err))
    {
      (*err)->domain = ISOBUILD_ERROR;
      (*err)->code = ISOBUILD_ERROR_INPUT;
      return false;
    }
  if (len < 432 || len > 32768)
    {
      g_set_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_INPUT,
                   "'%s' is %zu bytes: not an isohybrid MBR (432 to 32768)",
                   path, len);
      return false;
    }
  memset (sa, 0, 32768);
  memcpy (sa, data, len);
  return true;
}

/* The volume UUID (YYYYMMDDhhmmsscc, UTC) libisofs writes into the volume
 * descriptors instead of the current time. */
static char *
vol_uuid_for (gint64 epoch)
{
  g_autoptr(GDateTime) t = g_date_time_new_from_unix_utc (epoch);
  return g_date_time_format (t, "%Y%m%d%H%M%S00");
}

static IsoWriteOpts *
make_write_opts (gint64 epoch, GError **err)
{
  IsoWriteOpts *o = NULL;
  int rc = iso_write_opts_new (&o, 1);     /* profile 1: Rock Ridge */
  if (iso_failed (rc, err, "cannot create write options", "-"))
    return NULL;
  iso_write_opts_set_iso_level (o, 3);
  iso_write_opts_set_rockridge (o, 1);
  iso_write_opts_set_joliet (o, 1);
  iso_write_opts_set_hardlinks (o, 0);
  /* RRIP 1.10 PX entries carry no inode number: libisofs draws those from
   * a process-wide counter, which would make two builds in one process
   * differ. */
  iso_write_opts_set_rrip_version_1_10 (o, 1);
  iso_write_opts_set_rrip_1_10_px_ino (o, 0);
  iso_write_opts_set_aaip (o, 0);
  iso_write_opts_set_dir_rec_mtime (o, 1);
  iso_write_opts_set_sort_files (o, 1);
  iso_write_opts_set_always_gmt (o, 1);
  /* modes 0555/0444, uid/gid 0, every timestamp = epoch */
  iso_write_opts_set_replace_mode (o, 2, 2, 2, 2);
  iso_write_opts_set_default_dir_mode (o, 0555);
  iso_write_opts_set_default_file_mode (o, 0444);
  iso_write_opts_set_default_uid (o, 0);
  iso_write_opts_set_default_gid (o, 0);
  iso_write_opts_set_replace_timestamps (o, 2);
  iso_write_opts_set_default_timestamp (o, (time_t) epoch);
  g_autofree char *uuid = vol_uuid_for (epoch);
  iso_write_opts_set_pvd_times (o, (time_t) epoch, (time_t) epoch, 0,
                                (time_t) epoch, uuid);
  return o;
}

static const char *
catalog_path_for (const IsoBuildOpts *opts, char **owned)
{
  if (opts->boot_catalog != NULL)
    return opts->boot_catalog;
  const char *img = opts->bios_boot ? opts->bios_boot : opts->efi_boot;
  const char *slash = strrchr (img, '/');
  *owned = slash ? g_strdup_printf ("%.*s/boot.cat", (int) (slash - img), img)
                 : g_strdup ("boot.cat");
  return *owned;
}

/* El Torito entries: BIOS (default) then UEFI. */
static bool
setup_boot (IsoBuild *b, const IsoBuildOpts *opts, GError **err)
{
  if (opts->bios_boot == NULL && opts->efi_boot == NULL)
    return true;
  g_autofree char *owned = NULL;
  const char *cat = catalog_path_for (opts, &owned);
  g_autofree char *cat_abs = g_strdup_printf ("/%s", cat);
  const char *leaf = NULL;
  if (parent_of (b, cat, &leaf, err) == NULL)
    return false;
  ElToritoBootImage *boot = NULL;
  if (opts->bios_boot != NULL)
    {
      g_autofree char *p = g_strdup_printf ("/%s", opts->bios_boot);
      int rc = iso_image_set_boot_image (b->image, p, ELTORITO_NO_EMUL,
                                         cat_abs, &boot);
      if (iso_failed (rc, err, "cannot make BIOS boot entry", opts->bios_boot))
        return false;
      el_torito_set_load_size (boot, 4);
      el_torito_set_isolinux_options (boot, 1, 0);   /* boot info table */
    }
  if (opts->efi_boot != NULL)
    {
      g_autofree char *p = g_strdup_printf ("/%s", opts->efi_boot);
      int rc = opts->bios_boot == NULL
        ? iso_image_set_boot_image (b->image, p, ELTORITO_NO_EMUL, cat_abs,
                                    &boot)
        : iso_image_add_boot_image (b->image, p, ELTORITO_NO_EMUL, 0, &boot);
      if (iso_failed (rc, err, "cannot make UEFI boot entry", opts->efi_boot))
        return false;
      el_torito_set_boot_platform_id (boot, 0xef);
      el_torito_set_full_load (boot, 1);
    }
  iso_image_set_boot_catalog_hidden (b->image, 0);
  return true;
}

/* ---- writing ---------------------------------------------------------- */

bool
isobuild_write_file_atomic (const char *path, const void *data, gsize len,
                            GError **err)
{
  if (!g_file_set_contents_full (path, data, len,
                                 G_FILE_SET_CONTENTS_CONSISTENT, 0644, err))
    {
      (*err)->domain = ISOBUILD_ERROR;
      (*err)->code = ISOBUILD_ERROR_WRITE;
      return false;
    }
  return true;
}

/* A temporary file next to path: "<dir>/.<name>.XXXXXX".  Returns the fd
 * and sets *tmp (new string), or -1 + err. */
static int
open_temp_near (const char *path, char **tmp, GError **err)
{
  g_autofree char *dir = g_path_get_dirname (path);
  g_autofree char *base = g_path_get_basename (path);
  *tmp = g_strdup_printf ("%s/.%s.XXXXXX", dir, base);
  int fd = g_mkstemp_full (*tmp, O_RDWR | O_CLOEXEC, 0644);
  if (fd < 0)
    {
      g_set_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_WRITE,
                   "cannot create a file in '%s': %s", dir,
                   g_strerror (errno));
      g_clear_pointer (tmp, g_free);
    }
  return fd;
}

static bool
write_all (int fd, const unsigned char *buf, size_t len)
{
  while (len > 0)
    {
      ssize_t n = write (fd, buf, len);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return false;
      buf += n;
      len -= (size_t) n;
    }
  return true;
}

/* Drain the libisofs burn source into fd.  libisofs' ring buffer answers
 * only whole requests (a read larger than what is left returns 0), so read
 * 2 KiB blocks, gathered into 1 MiB writes. */
static bool
pump (struct burn_source *src, int fd, const char *tmp, GError **err)
{
  enum { BLOCK = 2048, CHUNK = 512 * BLOCK };
  g_autofree unsigned char *buf = g_malloc (CHUNK);
  off_t want = src->get_size (src), done = 0;
  size_t fill = 0;
  for (;;)
    {
      int n = src->read_xt (src, buf + fill, BLOCK);
      if (n < 0 || (n == 0 && done != want))
        {
          /* the writer thread stopped early: an error, not the end */
          g_set_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_LIBISOFS,
                       "libisofs stopped after %jd of %jd bytes (an input "
                       "file changed or became unreadable?)",
                       (intmax_t) done, (intmax_t) want);
          return false;
        }
      fill += (size_t) n;
      done += n;
      if ((n == 0 || fill == CHUNK) && !write_all (fd, buf, fill))
        {
          g_set_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_WRITE,
                       "cannot write '%s': %s", tmp, g_strerror (errno));
          return false;
        }
      if (n == 0)
        return true;
      if (fill == CHUNK)
        fill = 0;
    }
}

static bool
finish_file (int fd, const char *tmp, const char *out_path, GError **err)
{
  if (fsync (fd) != 0 || close (fd) != 0)
    {
      g_set_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_WRITE,
                   "cannot write '%s': %s", tmp, g_strerror (errno));
      return false;
    }
  if (rename (tmp, out_path) != 0)
    {
      g_set_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_WRITE,
                   "cannot rename '%s' to '%s': %s", tmp, out_path,
                   g_strerror (errno));
      return false;
    }
  return true;
}

static bool
write_image (IsoBuild *b, IsoWriteOpts *o, const char *out_path,
             GError **err)
{
  struct burn_source *src = NULL;
  int rc = iso_image_create_burn_source (b->image, o, &src);
  if (iso_failed (rc, err, "cannot prepare image", out_path))
    return false;
  g_autofree char *tmp = NULL;
  int fd = open_temp_near (out_path, &tmp, err);
  bool ok = fd >= 0 && pump (src, fd, tmp, err);
  if (!ok && fd >= 0)
    {
      /* stop the libisofs writer thread before freeing its source */
      src->cancel (src);
      unsigned char sink[2048];
      while (src->read_xt (src, sink, sizeof sink) > 0)
        ;
    }
  src->free_data (src);
  free (src);
  if (ok)
    {
      ok = finish_file (fd, tmp, out_path, err);
      fd = -1;
    }
  if (fd >= 0)
    close (fd);
  if (!ok && tmp != NULL)
    g_unlink (tmp);
  return ok;
}

bool
isobuild_write (IsoBuild *b, const IsoBuildOpts *opts, const char *out_path,
                GError **err)
{
  gint64 epoch = opts->epoch;
  if (epoch < 0 && !isobuild_default_epoch (&epoch, err))
    return false;
  const char *vol = opts->volume_id ? opts->volume_id : "DISKFARM";
  iso_image_set_volume_id (b->image, vol);
  iso_image_set_application_id (b->image, "DISKFARM ISOBUILD");
  iso_image_set_data_preparer_id (b->image, "");
  iso_image_set_publisher_id (b->image, "");
  if (opts->hybrid_mbr != NULL && opts->bios_boot == NULL)
    {
      g_set_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_INPUT,
                   "an isohybrid MBR needs an isolinux BIOS boot image");
      return false;
    }
  if (!setup_boot (b, opts, err))
    return false;
  IsoWriteOpts *o = make_write_opts (epoch, err);
  if (o == NULL)
    return false;
  bool ok = true;
  if (opts->hybrid_mbr != NULL)
    {
      g_autofree char *sa = g_malloc (32768);
      ok = load_system_area (opts->hybrid_mbr, sa, err);
      /* bit1: isohybrid patching of the syslinux MBR (partition table,
       * boot image LBA), as xorriso -isohybrid-mbr */
      int rc = ok ? iso_write_opts_set_system_area (o, sa, 1 << 1, 0) : 0;
      ok = ok && !iso_failed (rc, err, "cannot use isohybrid MBR",
                              opts->hybrid_mbr);
    }
  ok = ok && write_image (b, o, out_path, err);
  iso_write_opts_free (o);
  return ok;
}

/* ---- UEFI FAT image ----------------------------------------------------- */

static bool
run_tool (const char *const *argv, const char *epoch_s, GError **err)
{
  g_auto(GStrv) env = g_get_environ ();
  env = g_environ_setenv (env, "SOURCE_DATE_EPOCH", epoch_s, TRUE);
  env = g_environ_setenv (env, "MTOOLS_SKIP_CHECK", "1", TRUE);
  g_autofree char *out = NULL;
  g_autofree char *errs = NULL;
  gint status = 0;
  if (!g_spawn_sync (NULL, (char **) argv, env, G_SPAWN_SEARCH_PATH, NULL,
                     NULL, &out, &errs, &status, err))
    {
      g_prefix_error (err, "cannot run %s: ", argv[0]);
      (*err)->domain = ISOBUILD_ERROR;
      (*err)->code = ISOBUILD_ERROR_TOOL;
      return false;
    }
  if (!g_spawn_check_wait_status (status, NULL))
    {
      g_set_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_TOOL, "%s failed: %s",
                   argv[0], g_strstrip (errs));
      return false;
    }
  return true;
}

GBytes *
isobuild_make_efi_image (const char *efi_binary, gint64 epoch, GError **err)
{
  struct stat st;
  if (stat (efi_binary, &st) != 0 || !S_ISREG (st.st_mode))
    {
      g_set_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_INPUT,
                   "missing UEFI binary '%s'", efi_binary);
      return NULL;
    }
  g_autofree char *dir = g_dir_make_tmp ("isobuild-efi-XXXXXX", err);
  if (dir == NULL)
    return NULL;
  g_autofree char *img = g_build_filename (dir, "efi.img", NULL);
  /* room for the binary + FAT overhead, at least a 1440 KiB floppy */
  guint64 kib = MAX ((guint64) 1440, (guint64) st.st_size / 1024 * 11 / 10
                     + 256);
  g_autofree char *kib_s = g_strdup_printf ("%" G_GUINT64_FORMAT, kib);
  g_autofree char *epoch_s = g_strdup_printf ("%" G_GINT64_FORMAT, epoch);
  g_autofree char *dst = g_strdup ("::EFI/BOOT/BOOTX64.EFI");
  const char *mkfs[] = { "mkfs.fat", "-C", "--invariant", "-i", "DF0E0F1A",
                         "-n", "DFEFI", img, kib_s, NULL };
  const char *mmd[] = { "mmd", "-i", img, "::EFI", "::EFI/BOOT", NULL };
  const char *mcopy[] = { "mcopy", "-i", img, efi_binary, dst, NULL };
  GBytes *bytes = NULL;
  if (run_tool (mkfs, epoch_s, err) && run_tool (mmd, epoch_s, err)
      && run_tool (mcopy, epoch_s, err))
    {
      char *data = NULL;
      gsize len = 0;
      if (g_file_get_contents (img, &data, &len, err))
        bytes = g_bytes_new_take (data, len);
    }
  g_unlink (img);
  g_rmdir (dir);
  return bytes;
}
