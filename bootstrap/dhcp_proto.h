/* diskfarm bootstrap: DHCP/BOOTP wire format for ProxyDHCP (RFC 2131,
 * RFC 2132, PXE 2.1).
 *
 * Pure functions: parse a client packet against its real length into the
 * few fields a ProxyDHCP decision needs, decide the answer, and build the
 * reply.  Every option length is checked against the end of the area it
 * lies in (iPXE PR 1773, dnsmasq option_find1); option overload (52) is
 * followed into the file/sname fields, once. */
#pragma once

#include "defaults.h"

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DF_DHCP_FIXED_LEN 236         /* BOOTP header before the cookie */
#define DF_DHCP_MIN_LEN 240           /* + magic cookie */
#define DF_DHCP_MAX_LEN 1500          /* larger packets are refused */

enum {
  DF_DHCP_DISCOVER = 1, DF_DHCP_OFFER = 2, DF_DHCP_REQUEST = 3,
  DF_DHCP_ACK = 5, DF_DHCP_INFORM = 8,
};

typedef struct {
  guint8 op, htype, hlen;
  guint32 xid;                /* network order, copied back as is */
  guint16 secs, flags;        /* host order */
  guint32 ciaddr, giaddr;     /* network order */
  guint8 chaddr[16];
  int msg_type;               /* option 53, 0 when absent */
  bool pxeclient;             /* option 60 starts with "PXEClient" */
  bool httpclient;            /* option 60 starts with "HTTPClient": UEFI
                               * HTTP boot (UEFI 2.5+, section 24.7) */
  bool has_arch;
  guint16 arch;               /* option 93, first entry */
  bool ipxe;                  /* option 175 present or user class "iPXE" */
  bool has_uuid;
  guint8 uuid[17];            /* option 97 (type + 16 bytes) */
  guint8 uuid_len;
  bool has_server_id;
  guint32 server_id;          /* option 54, network order */
  char mac[18];               /* canonical chaddr when htype 1 / hlen 6 */
} DfDhcpRequest;

/* Parse a BOOTREQUEST.  False + err (precise) on anything malformed. */
bool df_dhcp_parse (const guint8 *buf, size_t len, DfDhcpRequest *req,
                    GError **err);

/* Client architectures (option 93) we have a boot file for. */
#define DF_DHCP_ARCH_BIOS 0
#define DF_DHCP_ARCH_EFI_X64 7
#define DF_DHCP_ARCH_EFI_BC 9
#define DF_DHCP_ARCH_EFI_X64_HTTP 16  /* x64 UEFI HTTP boot (RFC 4578 / IANA) */


/* The boot file for a PXE client of this architecture ("undionly.kpxe",
 * "ipxe.efi"), or NULL when we have none. */
const char *df_dhcp_boot_file_for_arch (guint16 arch);

/* What to send back (all borrowed strings). */
typedef struct {
  int msg_type;               /* DF_DHCP_OFFER or DF_DHCP_ACK */
  guint32 server;             /* our address, network order: 54 + siaddr */
  const char *boot_file;      /* file name or iPXE URL */
} DfDhcpReply;

/* Build the ProxyDHCP reply to req into out (cap >= 576): no yiaddr,
 * option 60 PXEClient, 54, 43 (PXE discovery control 8: boot from the
 * offered file without boot server discovery), 66/67, 97 echoed.  To a
 * UEFI HTTP boot client (req->httpclient): option 60 HTTPClient (the
 * firmware ignores an offer without it), 54, 67 the boot URI, 97 echoed;
 * no PXE options 43 and 66.  Returns its length, or 0 when the boot file
 * name does not fit. */
size_t df_dhcp_build_reply (const DfDhcpRequest *req, const DfDhcpReply *r,
                            guint8 *out, size_t cap);
