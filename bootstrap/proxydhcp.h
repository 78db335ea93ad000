/* diskfarm bootstrap: ProxyDHCP on UDP 67 and 4011 (PXE 2.1).
 *
 * Answers PXEClient DISCOVERs (on 67) and REQUESTs (on 4011, or on 67 when
 * addressed to us) with next-server and the boot file for the client's
 * architecture; iPXE clients get the URL of their HTTP boot script; UEFI
 * HTTP boot clients (vendor class HTTPClient, arch 16) the URI of ipxe.efi
 * on our HTTP server.  Never
 * hands out addresses: the site's DHCP server does.  Silent while the
 * service is unhealthy, so another bootstrap server answers instead. */
#pragma once

#include "boottoken.h"
#include "dhcp_proto.h"

#include <glib.h>
#include <stdbool.h>

typedef struct DfProxyDhcp DfProxyDhcp;

/* Called before each answer: false keeps the server silent. */
typedef bool (*DfHealthyFunc) (gpointer data);

typedef struct {
  guint32 address;          /* ours, network order: 54, siaddr, 66 */
  const char *script_url;   /* "http://A:P/boot.ipxe?mac=${net0/mac}&..." */
  bool chain_ipxe;          /* iPXE ROMs also chain our own iPXE first */
  /* Boot files as full tftp:// URLs for iPXE ROMs that chain (an iPXE ROM
   * may take next-server from the site DHCP's ACK, not from us); NULL: the
   * plain names. */
  const char *chain_url_bios;
  const char *chain_url_efi;
  /* "http://A:P/ipxe.efi" for UEFI HTTP boot clients; NULL: not offered. */
  const char *http_boot_url;
  DfHealthyFunc healthy;
  gpointer healthy_data;
  /* Borrowed, nullable: when set, every script URL handed out gets
   * "&token=" + a one-time token for this MAC and transaction. */
  const DfBootTokens *tokens;
} DfProxyConfig;

/* Memory of the chain-loading of one MAC (chain_ipxe mode only). */
typedef struct {
  guint32 chain_xid;        /* DHCP session that was given the boot file */
  guint32 url_xid;          /* session that was given the script URL */
  gint64 at_us;             /* when the boot file was given */
} DfChainMemo;

/* The decision for one parsed request, without I/O: returns DF_DHCP_OFFER
 * or DF_DHCP_ACK with *boot_file set (borrowed: cfg->script_url or a
 * static name), or 0 with *why set (static text) for silence.  pxe_port:
 * it came to 4011.  memo: this MAC's chain memory (chain_ipxe mode), read
 * and updated; may be NULL otherwise. */
int df_proxydhcp_decide (const DfProxyConfig *cfg, const DfDhcpRequest *req,
                         bool pxe_port, DfChainMemo *memo, gint64 now_us,
                         const char **boot_file, const char **why);

/* The boot file name to send for a decision's file (new string): the
 * script URL with &token=... for req when cfg->tokens is set, else file. */
char *df_proxydhcp_boot_file (const DfProxyConfig *cfg,
                              const DfDhcpRequest *req, const char *file,
                              gint64 now_s);

/* Start serving on two bound UDP sockets (taken).  cfg strings are
 * copied, cfg->tokens is borrowed. */
DfProxyDhcp *df_proxydhcp_new (const DfProxyConfig *cfg, int fd67,
                               int fd4011);
void df_proxydhcp_free (DfProxyDhcp *p);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfProxyDhcp, df_proxydhcp_free)

/* Answers sent and packets ignored so far. */
void df_proxydhcp_counts (DfProxyDhcp *p, guint64 *answered,
                          guint64 *ignored);
