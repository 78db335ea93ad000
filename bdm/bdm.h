/* bdm: Boot Device Manager library.  Renders the iPXE boot script and the
 * (iso|sys)linux config for a set of servers, and writes the boot media:
 * an ISO (isobuild), a raw disk with one 8 MiB active FAT boot partition,
 * or that partition injected into an existing template disk (libguestfs).
 *
 * Media layout: isolinux/syslinux loads Debian's ipxe.lkrn as a kernel with
 * the script as its INITRD (no iPXE rebuild).  The script tries each
 * bootstrap server's http://HOST[:PORT]/boot.ipxe?mac=...&uuid=... in
 * failover order, then sanboots the stream servers' iSCSI targets directly
 * (iPXE multipath, target by MAC), then optionally the local disk.
 *
 * FAT is written by mkfs.fat + mtools (subprocesses) and syslinux's mtools
 * installer; no loop mount, no root needed. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#define BDM_ERROR (bdm_error_quark ())
GQuark bdm_error_quark (void);

typedef enum {
  BDM_ERROR_INVALID,     /* a bad option value */
  BDM_ERROR_MISSING,     /* a missing iPXE / syslinux payload file */
  BDM_ERROR_TOOL,        /* mkfs.fat, mcopy, syslinux failed or missing */
  BDM_ERROR_IO,          /* reading or writing a file */
  BDM_ERROR_FORMAT,      /* unknown / unsupported disk format or table */
  BDM_ERROR_NOSPACE,     /* no room for the boot partition */
  BDM_ERROR_GUESTFS,     /* libguestfs failed */
} BdmError;

#define BDM_MAX_SERVERS 4
#define BDM_PART_MIB 8
#include "defaults.h" /* DF_IQN_PREFIX */

typedef struct {
  char *host;            /* IPv4, [IPv6] or name, as written in URLs */
  guint16 http_port;     /* bootstrap HTTP (boot.ipxe) */
  guint16 iscsi_port;    /* stream server iSCSI, the direct fallback */
} BdmServer;

typedef struct {
  BdmServer servers[BDM_MAX_SERVERS];   /* failover order */
  guint n_servers;
  char *ip;              /* static address, NULL: DHCP */
  guint prefix;          /* static netmask length */
  char *gateway;         /* static, nullable */
  char *dns;             /* static, nullable */
  guint timeout_s;       /* boot menu timeout; 0: no menu, boot at once */
  guint retries;         /* rounds over all servers, >= 1 */
  bool verbose;          /* the script prints its network and each try */
  bool local_fallback;   /* boot the local disk when no server answers */
  char *ipxe_dir;        /* ipxe.lkrn, ipxe.efi */
  char *isolinux_dir;    /* isolinux.bin, isohdpfx.bin */
  char *syslinux_dir;    /* modules/bios/ldlinux.c32, mbr/mbr.bin */
  bool efi;              /* ISO: add the UEFI El Torito entry */
  gint64 epoch;          /* timestamps of every output */
} BdmConfig;

/* Defaults: DHCP, 1 retry round... payload dirs from Debian's packages,
 * epoch from SOURCE_DATE_EPOCH (else a constant). */
bool bdm_config_init (BdmConfig *c, GError **err);
void bdm_config_clear (BdmConfig *c);

/* Append "HOST[:HTTP-PORT]" (IPv6: "[addr]:port").  At most 4. */
bool bdm_config_add_server (BdmConfig *c, const char *spec,
                            guint16 default_http, guint16 iscsi_port,
                            GError **err);
/* "A.B.C.D/NN" static address. */
bool bdm_config_set_ip (BdmConfig *c, const char *cidr, GError **err);
/* Whole-config check (at least one server, gateway/dns need --ip...). */
bool bdm_config_check (const BdmConfig *c, GError **err);

/* The iPXE script (new string). */
char *bdm_render_script (const BdmConfig *c);
/* isolinux.cfg / syslinux.cfg (new string); dir is where ipxe.lkrn and
 * boot.ipxe live on the medium ("/diskfarm"). */
char *bdm_render_syslinux_cfg (const BdmConfig *c, const char *dir);

/* Write OUT.iso (temporary file + rename). */
bool bdm_make_iso (const BdmConfig *c, const char *out, GError **err);
/* Write OUT as an 8 MiB FAT filesystem with hidden_sectors set (its start
 * LBA on the disk), syslinux installed, ipxe.lkrn, syslinux.cfg and the
 * script (not renamed: a helper for the two below). */
bool bdm_make_fat (const BdmConfig *c, guint64 hidden_sectors,
                   const char *out, GError **err);
/* Write OUT: raw disk, syslinux mbr.bin, one active 8 MiB FAT partition at
 * 1 MiB (temporary file + rename). */
bool bdm_make_partition_disk (const BdmConfig *c, const char *out,
                              GError **err);

typedef struct {
  int partnum;           /* the new partition's number */
  guint64 start_sector;
  guint64 sectors;
  char *format;          /* detected disk format */
} BdmInjectResult;
void bdm_inject_result_clear (BdmInjectResult *r);

/* Add the boot partition to an existing disk image in any format qemu
 * reads (MBR partition table or blank disk), make it the only active one
 * and put syslinux's MBR boot code in place.  Refuses (BDM_ERROR_NOSPACE)
 * when no 8 MiB gap after the last partition or no free primary slot;
 * existing partitions are never moved or resized.  The disk is changed in
 * place; every check is made before the first write.  local_fallback is
 * refused (the local disk would boot this partition again). */
bool bdm_inject (const BdmConfig *c, const char *disk, BdmInjectResult *res,
                 GError **err);

/* Path of a payload file, checked readable (new string), or NULL +
 * BDM_ERROR_MISSING naming the Debian package. */
char *bdm_payload (const char *dir, const char *name, const char *package,
                   GError **err);
/* syslinux's MBR boot code (mbr/mbr.bin under c->syslinux_dir, 1 to 440
 * bytes, what fits before the disk signature): a new buffer in *code and
 * its length in *len, or false + BDM_ERROR_MISSING. */
bool bdm_mbr_code (const BdmConfig *c, char **code, gsize *len,
                   GError **err);
