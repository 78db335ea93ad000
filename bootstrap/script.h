/* diskfarm bootstrap: iPXE boot scripts.
 *
 * Pure text rendering, no I/O: the caller (http.c) resolves the device,
 * starts its boot generation and picks the healthy stream servers. */
#pragma once

#include <glib.h>
#include <stdbool.h>

#include "defaults.h" /* DF_IQN_PREFIX */

typedef struct {
  const char *address;      /* IPv4 literal, [IPv6] literal or host name */
  guint16 port;             /* iSCSI port */
} DfScriptTarget;

typedef struct {
  const char *device;       /* device name */
  const char *vdisk;        /* for the on-screen line (nullable) */
  gint64 generation;
  const char *chap_user;    /* both NULL: no CHAP */
  const char *chap_secret;
  const DfScriptTarget *targets;   /* least loaded first */
  guint n_targets;          /* >= 1 */
  const char *rendered_by;  /* this bootstrap server's address */
  const char *note;         /* nullable: one more on-screen line */
  /* The vDisk cannot boot under this firmware (both false: no check): the
   * script compares iPXE's ${platform} (pcbios, efi) and refuses with a
   * message instead of a sanboot that fails (Error 0x7f22208e). */
  bool no_bios, no_uefi;
  /* Nullable: the EFI loader (df_efi_loader_path_ok) a UEFI sanboot
   * starts (sanboot --filename) instead of \EFI\BOOT\BOOTX64.EFI. */
  const char *efi_loader;
} DfScriptParams;

/* The sanboot script (new string; it holds the CHAP secret when given:
 * free it with df_script_free).  CHAP values that iPXE could not take
 * literally (anything outside [A-Za-z0-9._:@+=/-]) are left out and
 * *chap_dropped set.  NULL when the device name (outside [A-Za-z0-9._-])
 * or a target address (outside [A-Za-z0-9._:-], or a [IPv6] literal) could
 * inject iPXE syntax: those go into commands unquoted.  IPv6 literals are
 * bracketed in the iscsi: URIs.  NULL also when efi_loader has
 * characters outside [A-Za-z0-9._-] and '\\'. */
char *df_script_render (const DfScriptParams *p, gboolean *chap_dropped);

/* Wipe and free a rendered script (nullable). */
void df_script_free (char *script);

/* A script that shows message on screen, waits and reboots (new string).
 * Used for unknown devices and refusals; message is sanitised. */
char *df_script_message (const char *title, const char *message);
