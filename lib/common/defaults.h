/* The names and numbers every diskfarm program agrees on: the iSCSI name
 * prefix of device targets and the default ports.  Defined here only. */
#pragma once

#include <glib.h>

/* Device targets: DF_IQN_PREFIX "<device>" or "<mac-with-hyphens>"; vDisk
 * inspection targets: DF_IQN_PREFIX "vdisk.<name>". */
#define DF_IQN_PREFIX "iqn.2026-11.org.diskfarm:"

#define DF_NBD_PORT 10809   /* IANA's NBD port */
#define DF_ISCSI_PORT 3260  /* IANA's iSCSI port */
#define DF_ADMIN_PORT 8001  /* streamsvc's admin HTTP API */
#define DF_HTTP_PORT 80     /* bootstrapsvc's boot scripts and files */

/* The admin API's POST by which a bootstrap server tells a stream server
 * the boot generation it gave while the farm DB is unreachable (farm.h
 * "offline boot generations"; body {"device": NAME, "generation": N}). */
#define DF_ADMIN_OFFLINE_GENERATIONS "/v1/offline-generations"

/* iPXE binaries bootstrapsvc hands out (Debian's ipxe package, copied to
 * <farm>/boot/ by `bootstrap sync`): BIOS PXE, and x86-64 UEFI over PXE
 * (TFTP) or UEFI HTTP boot. */
#define DF_BOOT_FILE_BIOS "undionly.kpxe"
#define DF_BOOT_FILE_EFI "ipxe.efi"

#define DF_NBD_DEFAULT_LISTEN "0.0.0.0:" G_STRINGIFY (DF_NBD_PORT)
/* The daemons' runtime directory (systemd RuntimeDirectory=diskfarm) and
 * the admin socket's name in it: the admin API listens on a UNIX socket
 * by default (df_admin_socket_path), on TCP only when told. */
#define DF_RUNTIME_DIR "/run/diskfarm"
#define DF_ADMIN_SOCKET "admin.sock"

/* streamsvc --relay on a hypervisor: where its VMs reach it (the libvirt
 * hook and `diskfarm vm provision --cache hypervisor` name the socket).
 * Loopback only: the relay serves this host's VMs. */
#define DF_RELAY_PORT 10810
#define DF_RELAY_SOCKET DF_RUNTIME_DIR "/relay.sock"
#define DF_RELAY_DEFAULT_LISTEN_UNIX "unix:" DF_RELAY_SOCKET
#define DF_RELAY_DEFAULT_LISTEN_TCP "127.0.0.1:" G_STRINGIFY (DF_RELAY_PORT)
