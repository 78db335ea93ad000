/* isobuild: deterministic bootable ISO mastering on libisofs.
 *
 * An IsoBuild collects a tree (files from the host or from memory, added in
 * any order) and writes one ISO 9660 image with Joliet and Rock Ridge,
 * optionally El Torito bootable (BIOS no-emulation with boot info table,
 * e.g. isolinux.bin; and/or a UEFI FAT image), optionally isohybrid (the
 * syslinux isohdpfx.bin MBR in the system area, as `xorriso -isohybrid-mbr`
 * does) so the same file boots as a disk.
 *
 * Determinism: every timestamp (files, directories, volume descriptors) is
 * the build epoch; owners are 0, modes fixed (0444 files, 0555 dirs);
 * libisofs sorts directory records; file data is laid out in tree order,
 * which isobuild_add_tree makes sorted.  Two builds of the same inputs are
 * byte-identical.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#define ISOBUILD_ERROR (isobuild_error_quark ())
GQuark isobuild_error_quark (void);

typedef enum {
  ISOBUILD_ERROR_INPUT,      /* a missing or unreadable input file */
  ISOBUILD_ERROR_PATH,       /* a bad or duplicate path inside the ISO */
  ISOBUILD_ERROR_LIBISOFS,   /* libisofs refused (message included) */
  ISOBUILD_ERROR_WRITE,      /* writing the output failed */
  ISOBUILD_ERROR_TOOL,       /* mkfs.fat / mcopy failed (UEFI image) */
} IsoBuildError;

typedef struct {
  const char *volume_id;     /* NULL: "DISKFARM" (max 32 chars, d-chars) */
  const char *bios_boot;     /* ISO path of the El Torito BIOS no-emulation
                                image ("isolinux/isolinux.bin") or NULL;
                                its boot info table is patched */
  const char *boot_catalog;  /* ISO path of the catalog; NULL: next to
                                bios_boot (or efi_boot) as "boot.cat" */
  const char *hybrid_mbr;    /* host path of isohdpfx.bin (needs bios_boot
                                to be isolinux) or NULL */
  const char *efi_boot;      /* ISO path of a FAT image holding
                                EFI/BOOT/BOOTX64.EFI, or NULL */
  gint64 epoch;              /* the build time (seconds since 1970); < 0:
                                isobuild_default_epoch () */
} IsoBuildOpts;

typedef struct IsoBuild IsoBuild;

/* New empty tree.  Free with isobuild_free. */
IsoBuild *isobuild_new (GError **err);
void isobuild_free (IsoBuild *b);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (IsoBuild, isobuild_free)

/* Add the host file host_path as iso_path ("dir/name"; parent directories
 * are created).  The file is read when the ISO is written.  Regular files
 * only; an existing iso_path is an error. */
bool isobuild_add_file (IsoBuild *b, const char *iso_path,
                        const char *host_path, GError **err);
/* Add data (copied) as iso_path. */
bool isobuild_add_data (IsoBuild *b, const char *iso_path, const void *data,
                        gsize len, GError **err);
/* Add every regular file and directory under host_dir below iso_dir ("" for
 * the root), in sorted name order.  Symlinks and special files are
 * refused. */
bool isobuild_add_tree (IsoBuild *b, const char *iso_dir,
                        const char *host_dir, GError **err);

/* Write the image to out_path through a temporary file in the same
 * directory, renamed on success (nothing is left behind on failure). */
bool isobuild_write (IsoBuild *b, const IsoBuildOpts *opts,
                     const char *out_path, GError **err);

/* SOURCE_DATE_EPOCH when set and valid, else ISOBUILD_EPOCH_DEFAULT.
 * Sets err only for a malformed SOURCE_DATE_EPOCH. */
#define ISOBUILD_EPOCH_DEFAULT G_GINT64_CONSTANT (1798761600) /* 2027-01-01 */
bool isobuild_default_epoch (gint64 *out, GError **err);

/* Make a FAT image (size chosen to fit) holding efi_binary as
 * EFI/BOOT/BOOTX64.EFI, with fixed volume ID and timestamps (mkfs.fat
 * --invariant + mtools).  Returns the image bytes, or NULL + err. */
GBytes *isobuild_make_efi_image (const char *efi_binary, gint64 epoch,
                                 GError **err);

/* Write bytes to path through a temporary file + rename (shared helper). */
bool isobuild_write_file_atomic (const char *path, const void *data,
                                 gsize len, GError **err);
