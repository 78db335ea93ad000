/* diskfarm: what a golden image's initramfs can take over from the boot
 * firmware (initramfs.c).  A diskless target's OS must log in again to
 * the disk it was booted from: on iSCSI through the iBFT that iPXE's
 * sanboot left (initramfs-tools + open-iscsi with ISCSI_AUTO=true, or an
 * initramfs running iscsistart -b, as dracut does), on NBD with
 * nbd-client.  The rules live here, once; `diskfarm vdisk inspect` reads
 * the initramfs out of the image and prints the verdicts. */
#pragma once

#include <glib.h>
#include <stdbool.h>

typedef struct
{
  bool initramfs_tools; /* Debian/Ubuntu initramfs-tools (scripts/local) */
  bool dracut;          /* dracut (usr/lib/dracut) */
  bool iscsi_hook;      /* open-iscsi's initramfs-tools script */
  bool iscsi_auto;      /* its etc/iscsi.initramfs says ISCSI_AUTO=true */
  bool iscsistart;      /* an iscsistart binary */
  bool nbd_client;      /* an nbd-client binary */
  unsigned files;       /* entries seen */
} DfInitramfs;

/* Read the initramfs at path: concatenated cpio (newc) archives, each
 * plain or compressed (gzip, zstd, xz, lz4, bzip2, lzma: decompressed by
 * that tool, which must be installed), and fill *out.  False + err when
 * the file is no initramfs or a tool is missing. */
bool df_initramfs_scan_file (const char *path, DfInitramfs *out,
                             GError **err);

/* The same on bytes already in memory. */
bool df_initramfs_scan (const guint8 *data, gsize len, DfInitramfs *out,
                        GError **err);

/* Whether the initramfs takes over a root on iSCSI through the iBFT.
 * Returns true or false and sets *why (static text): how it does, or
 * what is missing and how to fix it. */
bool df_initramfs_iscsi_root (const DfInitramfs *i, const char **why);

/* Whether it takes over a root on NBD (nbd-client); *why as above. */
bool df_initramfs_nbd_root (const DfInitramfs *i, const char **why);

/* "initramfs-tools", "dracut" or "other" (static). */
const char *df_initramfs_flavour (const DfInitramfs *i);
