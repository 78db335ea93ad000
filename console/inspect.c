/* diskfarm console: read-only inspection of a version through libguestfs
 * (`vdisk inspect`, `version diff`). */
#include "console.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>

#include "initramfs.h"

#ifdef DF_HAVE_GUESTFS
#include <guestfs.h>
#endif

/* "NAME" or "NAME@N" -> the version (newest production when no @N). */
DfVersion *
df_inspect_resolve_ref (DfFarm *farm, const char *ref, GError **err)
{
  const char *at = strchr (ref, '@');
  g_autofree char *name = at ? g_strndup (ref, (gsize) (at - ref))
                             : g_strdup (ref);
  guint64 n64 = 0;
  g_autoptr (GError) local = NULL;
  if (at && !g_ascii_string_to_unsigned (at + 1, 10, 0, G_MAXINT, &n64,
                                         &local))
    {
      df_usage_error (err, "version '%s': %s", at + 1, local->message);
      return NULL;
    }
  int n = at ? (int) n64 : -1;
  DfVersion *v = n >= 0 ? df_farm_version_get (farm, name, n, err)
                        : df_farm_version_for_type (farm, name, "production",
                                                    err);
  if (v && !v->sha256)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "version %s@%d is not sealed yet: inspect its parent or "
                   "seal it", v->vdisk, v->number);
      df_version_free (v);
      return NULL;
    }
  return v;
}

#ifdef DF_HAVE_GUESTFS

typedef guestfs_h GuestfsH;
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GuestfsH, guestfs_close)

static bool
gfs_fail (guestfs_h *g, const char *what, GError **err)
{
  const char *e = guestfs_last_error (g);
  g_set_error (err, DF_ERROR, DF_ERROR_IO, "libguestfs %s: %s", what,
               e ? e : "failed");
  return false;
}

/* A handle with the given files added read-only, launched. */
static guestfs_h *
gfs_launch (const char *const *paths, guint n, GError **err)
{
  guestfs_h *g = guestfs_create_flags (GUESTFS_CREATE_NO_ENVIRONMENT);
  if (!g)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_IO, "libguestfs: cannot create a "
                   "handle");
      return NULL;
    }
  guestfs_set_error_handler (g, NULL, NULL);
  if (guestfs_parse_environment (g) < 0)
    goto fail;
  for (guint i = 0; i < n; i++)
    if (guestfs_add_drive_opts (g, paths[i], GUESTFS_ADD_DRIVE_OPTS_READONLY,
                                1, GUESTFS_ADD_DRIVE_OPTS_FORMAT, "qcow2",
                                -1) < 0)
      goto fail;
  if (guestfs_launch (g) == 0)
    return g;
fail:
  gfs_fail (g, "launch", err);
  guestfs_close (g);
  return NULL;
}

static char *
gfs_str (char *s)
{
  return s;   /* guestfs strings are malloc()ed: g_free is free here */
}

/* One record per filesystem: device, type, label, mountpoint. */
static GPtrArray *
fs_records (guestfs_h *g, char **mps)
{
  GPtrArray *recs = df_record_list_new ();
  char **fss = guestfs_list_filesystems (g);
  for (guint i = 0; fss && fss[i]; i += 2)
    {
      DfRecord *r = df_record_new ();
      const char *mp = NULL;
      for (guint k = 0; mps && mps[k]; k += 2)
        if (strcmp (mps[k + 1], fss[i]) == 0)
          mp = mps[k];
      g_autofree char *label = strcmp (fss[i + 1], "unknown") ?
        gfs_str (guestfs_vfs_label (g, fss[i])) : NULL;
      df_record_str (r, "device", "device", fss[i]);
      df_record_str (r, "type", "type", fss[i + 1]);
      df_record_str (r, "label", "label", label && *label ? label : NULL);
      df_record_str (r, "mountpoint", "mountpoint", mp);
      g_ptr_array_add (recs, r);
    }
  g_strfreev (fss);
  return recs;
}

/* The OS record of the first root (or "unknown" fields). */
static DfRecord *
os_record (guestfs_h *g, const DfVersion *v, const char *root)
{
  DfRecord *r = df_record_new ();
  g_autofree char *ref = g_strdup_printf ("%s@%d", v->vdisk, v->number);
  df_record_str (r, "version", "version", ref);
  g_autofree char *type = root ? gfs_str (guestfs_inspect_get_type (g, root))
                               : NULL;
  g_autofree char *distro = root
    ? gfs_str (guestfs_inspect_get_distro (g, root)) : NULL;
  g_autofree char *product = root
    ? gfs_str (guestfs_inspect_get_product_name (g, root)) : NULL;
  g_autofree char *host = root
    ? gfs_str (guestfs_inspect_get_hostname (g, root)) : NULL;
  df_record_str (r, "root", "root", root);
  df_record_str (r, "os", "os", type);
  df_record_str (r, "distro", "distribution", distro);
  df_record_str (r, "product_name", "product name", product);
  df_record_str (r, "hostname", "hostname", host);
  if (root)
    {
      g_autofree char *ver = g_strdup_printf (
        "%d.%d", guestfs_inspect_get_major_version (g, root),
        guestfs_inspect_get_minor_version (g, root));
      df_record_str (r, "os_version", "os version", ver);
    }
  return r;
}

/* GPT partition type GUIDs (UEFI spec, and GRUB's BIOS boot partition). */
#define GPT_ESP "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
#define GPT_BIOS_BOOT "21686148-6449-6E6F-744E-656564454649"
#define MBR_ESP 0xef

/* Does partition dev hold the removable-media loader?  Mounted read-only
 * on / and unmounted again (FAT: the path's case is the disk's own). */
static bool
has_esp_loader (guestfs_h *g, const char *dev)
{
  if (guestfs_mount_ro (g, dev, "/") < 0)
    return false;
  char *path = guestfs_case_sensitive_path (g, "/EFI/BOOT/BOOTX64.EFI");
  bool found = path && guestfs_is_file (g, path) > 0;
  free (path);
  guestfs_umount_all (g);
  return found;
}

/* What decides which firmware boots the first disk. */
static DfBootFacts
boot_facts (guestfs_h *g)
{
  DfBootFacts f = { 0 };
  size_t n = 0;
  g_autofree char *mbr = guestfs_pread_device (g, "/dev/sda", 440, 0, &n);
  for (size_t i = 0; mbr && i < n; i++)
    f.mbr_boot_code |= mbr[i] != 0;
  g_autofree char *type = gfs_str (guestfs_part_get_parttype (g, "/dev/sda"));
  f.gpt = type && strcmp (type, "gpt") == 0;
  struct guestfs_partition_list *parts = type ? guestfs_part_list (g, "/dev/sda")
                                              : NULL;
  for (guint i = 0; parts && i < parts->len; i++)
    {
      int num = parts->val[i].part_num;
      g_autofree char *dev = g_strdup_printf ("/dev/sda%d", num);
      g_autofree char *guid = f.gpt
        ? gfs_str (guestfs_part_get_gpt_type (g, "/dev/sda", num)) : NULL;
      bool esp = f.gpt ? guid && g_ascii_strcasecmp (guid, GPT_ESP) == 0
                       : guestfs_part_get_mbr_id (g, "/dev/sda", num) == MBR_ESP;
      if (guid && g_ascii_strcasecmp (guid, GPT_BIOS_BOOT) == 0)
        f.bios_boot_partition = true;
      if (esp && has_esp_loader (g, dev))
        f.esp_loader = true;
    }
  if (parts)
    guestfs_free_partition_list (parts);
  return f;
}

/* An initramfs by its file name, as boot loaders and distributions name
 * them: initrd, initrd.img-<kver>, initramfs-<kver>.img, ... */
static bool
initramfs_name (const char *n)
{
  return g_str_has_prefix (n, "initrd") || g_str_has_prefix (n, "initramfs");
}

/* The record of the initramfs at path (on the filesystem mounted at /):
 * what it can take over.  Warns on stderr about what it cannot. */
static DfRecord *
initramfs_record (guestfs_h *g, const char *dev, const char *path,
                  const char *tmp)
{
  DfRecord *r = df_record_new ();
  df_record_str (r, "device", "device", dev);
  df_record_str (r, "path", "path", path);
  DfInitramfs ir;
  g_autoptr (GError) e = NULL;
  if (guestfs_download (g, path, tmp) < 0)
    g_set_error (&e, DF_ERROR, DF_ERROR_IO, "%s", guestfs_last_error (g));
  bool ok = !e && df_initramfs_scan_file (tmp, &ir, &e);
  g_unlink (tmp);
  if (!ok)
    {
      df_record_str (r, "error", "error", e->message);
      fprintf (stderr, "diskfarm: warning: %s:%s: cannot read this "
               "initramfs: %s\n", dev, path, e->message);
      return r;
    }
  const char *iwhy, *nwhy;
  bool iscsi = df_initramfs_iscsi_root (&ir, &iwhy);
  bool nbd = df_initramfs_nbd_root (&ir, &nwhy);
  df_record_str (r, "flavour", "flavour", df_initramfs_flavour (&ir));
  df_record_bool (r, "iscsi_root", "iscsi root", iscsi);
  df_record_str (r, "iscsi_how", "iscsi via", iwhy);
  df_record_bool (r, "nbd_root", "nbd root", nbd);
  df_record_str (r, "nbd_how", "nbd via", nwhy);
  if (!iscsi)
    fprintf (stderr, "diskfarm: warning: %s:%s cannot take over an iSCSI "
             "root: %s\n", dev, path, iwhy);
  if (!nbd)
    fprintf (stderr, "diskfarm: warning: %s:%s cannot take over an NBD "
             "root: %s\n", dev, path, nwhy);
  return r;
}

/* Every initramfs in / and /boot of every filesystem (symlinks skipped:
 * Debian's /initrd.img points at one in /boot). */
static GPtrArray *
initramfs_records (guestfs_h *g, GError **err)
{
  GPtrArray *recs = df_record_list_new ();
  g_autofree char *tmpdir = g_dir_make_tmp ("diskfarm-inspect-XXXXXX", err);
  if (!tmpdir)
    return recs;
  g_autofree char *tmp = g_build_filename (tmpdir, "initrd", NULL);
  char **fss = guestfs_list_filesystems (g);
  for (guint i = 0; fss && fss[i]; i += 2)
    {
      if (strcmp (fss[i + 1], "swap") == 0 || strcmp (fss[i + 1], "unknown") == 0
          || guestfs_mount_ro (g, fss[i], "/") < 0)
        continue;
      static const char *const dirs[] = { "/", "/boot/" };
      for (guint d = 0; d < G_N_ELEMENTS (dirs); d++)
        {
          if (guestfs_is_dir (g, dirs[d]) <= 0)
            continue;
          char **names = guestfs_ls (g, dirs[d]);
          for (guint k = 0; names && names[k]; k++)
            {
              g_autofree char *path = g_strconcat (dirs[d], names[k], NULL);
              if (initramfs_name (names[k])
                  && guestfs_is_file_opts (g, path, -1) > 0
                  && guestfs_is_symlink (g, path) == 0)
                g_ptr_array_add (recs, initramfs_record (g, fss[i], path, tmp));
              free (names[k]);
            }
          free (names);
        }
      guestfs_umount_all (g);
    }
  g_strfreev (fss);
  g_rmdir (tmpdir);
  return recs;
}

bool
df_inspect_run (DfCtx *ctx, DfFarm *farm, const DfVersion *v, GError **err)
{
  g_autofree char *path = df_farm_version_path (farm, v->vdisk, v->number);
  const char *paths[] = { path };
  g_autoptr (GuestfsH) g = gfs_launch (paths, 1, err);
  if (!g)
    return false;
  char **roots = guestfs_inspect_os (g);
  if (!roots)
    return gfs_fail (g, "inspect", err);
  const char *root = roots[0];
  char **mps = root ? guestfs_inspect_get_mountpoints (g, root) : NULL;
  DfBootFacts facts = boot_facts (g);
  DfFirmware fw = df_firmware_from_facts (&facts);
  if (!df_farm_vdisk_set_firmware (farm, v->vdisk, fw, err))
    {
      g_strfreev (mps);
      g_strfreev (roots);
      return false;
    }
  DfRecord *osr = os_record (g, v, root);
  df_record_str (osr, "firmware", "boots under", df_firmware_name (fw));
  if (fw == DF_FIRMWARE_BIOS || fw == DF_FIRMWARE_NONE)
    g_printerr ("diskfarm: warning: %s@%d has no EFI System Partition with "
                "\\EFI\\BOOT\\BOOTX64.EFI: UEFI clients are refused (or "
                "give it one: vdisk set --efi-loader)\n", v->vdisk, v->number);
  if (fw == DF_FIRMWARE_UEFI || fw == DF_FIRMWARE_NONE)
    g_printerr ("diskfarm: warning: %s@%d has no BIOS boot code: BIOS "
                "clients are refused\n", v->vdisk, v->number);
  g_autoptr (DfReport) rep = df_report_new (osr);
  df_report_add_list (rep, "filesystems", "Filesystems", fs_records (g, mps));
  g_autofree char *type = root ? guestfs_inspect_get_type (g, root) : NULL;
  if (!type || strcmp (type, "windows") != 0) /* Windows boots iBFT natively */
    {
      GError *e = NULL;
      g_autoptr (GPtrArray) irs = initramfs_records (g, &e);
      if (e)
        {
          g_propagate_error (err, e);
          g_strfreev (mps);
          g_strfreev (roots);
          return false;
        }
      if (irs->len == 0)
        fprintf (stderr, "diskfarm: warning: no initramfs found (in / or "
                 "/boot of any filesystem): nothing will take over a root "
                 "on iSCSI or NBD from the firmware\n");
      df_report_add_list (rep, "initramfs", "Initramfs",
                          g_steal_pointer (&irs));
    }
  df_report_print (rep, ctx->json);
  g_strfreev (mps);
  g_strfreev (roots);
  return true;
}

/* Mount the filesystems of the OS on drive index d (else its first
 * mountable filesystem) read-only under prefix (made by mkmountpoint). */
static bool
mount_drive (guestfs_h *g, char **roots, char d, const char *prefix,
             GError **err)
{
  g_autofree char *dev = g_strdup_printf ("/dev/sd%c", d);
  for (guint i = 0; roots && roots[i]; i++)
    {
      if (!g_str_has_prefix (roots[i], dev))
        continue;
      char **mps = guestfs_inspect_get_mountpoints (g, roots[i]);
      /* Pairs (mountpoint, device), shortest mountpoint first. */
      for (gsize len = 1; len < 4096; len++)
        for (guint k = 0; mps && mps[k]; k += 2)
          if (strlen (mps[k]) == len)
            {
              g_autofree char *mp = g_strconcat (prefix, mps[k], NULL);
              /* The guest's fstab says /dev/sdX as if it were alone:
               * point it at this drive. */
              g_autofree char *fsdev = g_strdup (mps[k + 1]);
              if (g_str_has_prefix (fsdev, "/dev/sd") && fsdev[7])
                fsdev[7] = d;
              guestfs_mount_ro (g, fsdev, len > 1 ? mp : prefix);
            }
      g_strfreev (mps);
      return true;
    }
  char **fss = guestfs_list_filesystems (g);
  for (guint i = 0; fss && fss[i]; i += 2)
    if (g_str_has_prefix (fss[i], dev) && strcmp (fss[i + 1], "swap")
        && guestfs_mount_ro (g, fss[i], prefix) == 0)
      break;
  g_strfreev (fss);
  return true;
}

/* Read "sha256  ./path" lines into path -> sum. */
static GHashTable *
read_sums (const char *file, GError **err)
{
  g_autofree char *text = NULL;
  if (!g_file_get_contents (file, &text, NULL, err))
    return NULL;
  GHashTable *t = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                         g_free);
  g_auto (GStrv) lines = g_strsplit (text, "\n", -1);
  for (guint i = 0; lines[i]; i++)
    {
      char *sp = strstr (lines[i], "  ");
      if (!sp)
        continue;
      const char *p = sp + 2;
      if (g_str_has_prefix (p, "./"))
        p += 1;
      g_hash_table_insert (t, g_strdup (p),
                           g_strndup (lines[i], (gsize) (sp - lines[i])));
    }
  return t;
}

static void
diff_add (GPtrArray *recs, const char *change, const char *path)
{
  DfRecord *r = df_record_new ();
  df_record_str (r, "change", "change", change);
  df_record_str (r, "path", "path", path);
  g_ptr_array_add (recs, r);
}

static gint
record_path_cmp (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

/* added / removed / changed regular files of b relative to a. */
static GPtrArray *
diff_sums (GHashTable *a, GHashTable *b)
{
  g_autoptr (GPtrArray) keys = g_ptr_array_new ();
  GHashTableIter it;
  gpointer k, val;
  g_hash_table_iter_init (&it, b);
  while (g_hash_table_iter_next (&it, &k, &val))
    g_ptr_array_add (keys, k);
  g_hash_table_iter_init (&it, a);
  while (g_hash_table_iter_next (&it, &k, &val))
    if (!g_hash_table_contains (b, k))
      g_ptr_array_add (keys, k);
  g_ptr_array_sort (keys, record_path_cmp);
  GPtrArray *recs = df_record_list_new ();
  for (guint i = 0; i < keys->len; i++)
    {
      const char *p = keys->pdata[i];
      const char *sa = g_hash_table_lookup (a, p);
      const char *sb = g_hash_table_lookup (b, p);
      if (!sa)
        diff_add (recs, "added", p);
      else if (!sb)
        diff_add (recs, "removed", p);
      else if (strcmp (sa, sb) != 0)
        diff_add (recs, "changed", p);
    }
  return recs;
}

bool
df_inspect_diff (DfCtx *ctx, DfFarm *farm, const DfVersion *va, const DfVersion *vb,
          GError **err)
{
  g_autofree char *pa = df_farm_version_path (farm, va->vdisk, va->number);
  g_autofree char *pb = df_farm_version_path (farm, vb->vdisk, vb->number);
  const char *paths[] = { pa, pb };
  g_autoptr (GuestfsH) g = gfs_launch (paths, 2, err);
  if (!g)
    return false;
  char **roots = guestfs_inspect_os (g);
  /* Both mount points exist before anything is mounted. */
  if (guestfs_mkmountpoint (g, "/a") < 0 || guestfs_mkmountpoint (g, "/b") < 0)
    {
      g_strfreev (roots);
      return gfs_fail (g, "mkmountpoint", err);
    }
  bool ok = mount_drive (g, roots, 'a', "/a", err)
            && mount_drive (g, roots, 'b', "/b", err);
  g_strfreev (roots);
  if (!ok)
    return false;
  g_autofree char *tmpdir = g_dir_make_tmp ("diskfarm-diff-XXXXXX", err);
  if (!tmpdir)
    return false;
  g_autofree char *fa = g_build_filename (tmpdir, "a", NULL);
  g_autofree char *fb = g_build_filename (tmpdir, "b", NULL);
  ok = guestfs_checksums_out (g, "sha256", "/a", fa) == 0
       && guestfs_checksums_out (g, "sha256", "/b", fb) == 0;
  if (!ok)
    gfs_fail (g, "checksums", err);
  g_autoptr (GHashTable) sa = ok ? read_sums (fa, err) : NULL;
  g_autoptr (GHashTable) sb = sa ? read_sums (fb, err) : NULL;
  g_unlink (fa);
  g_unlink (fb);
  g_rmdir (tmpdir);
  if (!sb)
    return false;
  g_autoptr (GPtrArray) changes = diff_sums (sa, sb);
  df_print_list (changes, ctx->json, "no differences");
  return true;
}

#else

static bool
no_guestfs (GError **err)
{
  g_set_error (err, DF_ERROR, DF_ERROR_UNSUPPORTED,
               "this diskfarm was built without libguestfs");
  return false;
}
bool
df_inspect_run (DfCtx *ctx, DfFarm *farm, const DfVersion *v, GError **err)
{
  return no_guestfs (err);
}

bool
df_inspect_diff (DfCtx *ctx, DfFarm *farm, const DfVersion *va,
                 const DfVersion *vb, GError **err)
{
  return no_guestfs (err);
}

#endif

