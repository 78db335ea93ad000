/* diskfarm bootstrap: ProxyDHCP.  See proxydhcp.h.
 *
 * Each datagram is one exchange: parse (dhcp_proto.c), decide
 * (df_proxydhcp_decide), build, send.  Replies to a client without an
 * address (source 0.0.0.0) are broadcast to port 68 on the interface the
 * request came in on (IP_PKTINFO), through the relay when giaddr is set,
 * and otherwise unicast back to the source. */
#include "proxydhcp.h"
#include "ratelimit.h"
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <glib-unix.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHAIN_MEMO_US (300 * G_USEC_PER_SEC)

struct DfProxyDhcp {
  DfProxyConfig cfg;
  char *script_url, *chain_url_bios, *chain_url_efi, *http_boot_url;
  int fd67, fd4011;
  guint src67, src4011;
  GHashTable *memos;            /* MAC string -> DfChainMemo (owned) */
  guint64 answered, ignored;
  DfLogBurst refusal_log;       /* refusal log lines */
};

/* ---- decision --------------------------------------------------------- */

static int
reply_type (const DfProxyConfig *cfg, const DfDhcpRequest *req,
            bool pxe_port, const char **why)
{
  if (req->msg_type == DF_DHCP_DISCOVER && !pxe_port)
    return DF_DHCP_OFFER;
  if (req->msg_type == DF_DHCP_REQUEST && pxe_port)
    return DF_DHCP_ACK;
  if (req->msg_type == DF_DHCP_REQUEST && req->has_server_id
      && req->server_id == cfg->address)
    return DF_DHCP_ACK;
  *why = req->msg_type == DF_DHCP_REQUEST
           ? "REQUEST for another server" : "not a DISCOVER or REQUEST";
  return 0;
}

/* iPXE client in chain mode: does this DHCP session chain our iPXE first? */
static bool
chain_first (DfChainMemo *memo, const DfDhcpRequest *req, gint64 now_us)
{
  bool fresh = memo->at_us && now_us - memo->at_us < CHAIN_MEMO_US;
  if (fresh && req->xid == memo->chain_xid)
    return true;                      /* same ROM session (4011 request) */
  if (fresh && (memo->url_xid == 0 || memo->url_xid == req->xid))
    {
      memo->url_xid = req->xid;       /* our chained iPXE: the script */
      return false;
    }
  memo->chain_xid = req->xid;         /* a new boot: chain again */
  memo->url_xid = 0;
  memo->at_us = now_us;
  return true;
}

/* A UEFI HTTP boot client: the URI of ipxe.efi on our HTTP server, which
 * then boots as any iPXE client does (PXEClient, user class iPXE). */
static int
decide_http (const DfProxyConfig *cfg, const DfDhcpRequest *req, int type,
             const char **boot_file, const char **why)
{
  if (!req->has_arch || req->arch != DF_DHCP_ARCH_EFI_X64_HTTP)
    {
      *why = "HTTP boot client architecture (option 93) is not x64 UEFI "
             "HTTP (16)";
      return 0;
    }
  if (!cfg->http_boot_url)
    {
      *why = "UEFI HTTP boot is not offered by this server";
      return 0;
    }
  *boot_file = cfg->http_boot_url;
  return type;
}

int
df_proxydhcp_decide (const DfProxyConfig *cfg, const DfDhcpRequest *req,
                     bool pxe_port, DfChainMemo *memo, gint64 now_us,
                     const char **boot_file, const char **why)
{
  int type = reply_type (cfg, req, pxe_port, why);
  if (!type)
    return 0;
  if (!req->mac[0] && (req->pxeclient || req->httpclient))
    {
      *why = "hardware address is not Ethernet";
      return 0;
    }
  if (req->httpclient && !req->pxeclient)
    return decide_http (cfg, req, type, boot_file, why);
  if (!req->pxeclient)
    {
      *why = "not a PXE client (no option 60 PXEClient)";
      return 0;
    }
  guint16 arch = req->has_arch ? req->arch : DF_DHCP_ARCH_BIOS;
  const char *file = df_dhcp_boot_file_for_arch (arch);
  if (!file)
    {
      *why = "no boot file for this client architecture (option 93)";
      return 0;
    }
  bool efi = arch != DF_DHCP_ARCH_BIOS;
  const char *chain_url = efi ? cfg->chain_url_efi : cfg->chain_url_bios;
  if (req->ipxe && !(cfg->chain_ipxe && memo && chain_first (memo, req,
                                                             now_us)))
    file = cfg->script_url;
  else if (req->ipxe && chain_url)
    file = chain_url;
  else if (!req->ipxe && cfg->chain_ipxe && memo)
    {
      memo->chain_xid = req->xid;     /* a plain PXE ROM chains too */
      memo->url_xid = 0;
      memo->at_us = now_us;
    }
  *boot_file = file;
  return type;
}

char *
df_proxydhcp_boot_file (const DfProxyConfig *cfg, const DfDhcpRequest *req,
                        const char *file, gint64 now_s)
{
  if (file != cfg->script_url || !cfg->tokens)
    return g_strdup (file);
  g_autofree char *token = df_boot_token_issue (cfg->tokens, req->mac,
                                                ntohl (req->xid), now_s);
  return g_strdup_printf ("%s&token=%s", file, token);
}

/* ---- I/O -------------------------------------------------------------- */

static void
send_reply (DfProxyDhcp *p, int fd, const guint8 *pkt, size_t len,
            const DfDhcpRequest *req, const struct sockaddr_in *src,
            int ifindex)
{
  struct sockaddr_in dst = { .sin_family = AF_INET };
  if (req->giaddr)
    {
      dst.sin_addr.s_addr = req->giaddr;
      dst.sin_port = htons (67);
    }
  else if (src->sin_addr.s_addr != 0)
    dst = *src;
  else
    {
      dst.sin_addr.s_addr = INADDR_BROADCAST;
      dst.sin_port = htons (68);
    }
  union { char c[CMSG_SPACE (sizeof (struct in_pktinfo))];
          struct cmsghdr align; } cbuf;
  memset (&cbuf, 0, sizeof cbuf);
  struct iovec iov = { (void *) pkt, len };
  struct msghdr mh = { .msg_name = &dst, .msg_namelen = sizeof dst,
                       .msg_iov = &iov, .msg_iovlen = 1 };
  if (ifindex > 0)
    {
      mh.msg_control = cbuf.c;
      mh.msg_controllen = sizeof cbuf.c;
      struct cmsghdr *c = CMSG_FIRSTHDR (&mh);
      c->cmsg_level = IPPROTO_IP;
      c->cmsg_type = IP_PKTINFO;
      c->cmsg_len = CMSG_LEN (sizeof (struct in_pktinfo));
      struct in_pktinfo pi = { .ipi_ifindex = ifindex };
      memcpy (CMSG_DATA (c), &pi, sizeof pi);
    }
  if (sendmsg (fd, &mh, MSG_DONTWAIT) < 0)
    g_message ("proxydhcp: send to %s:%u: %s", inet_ntoa (dst.sin_addr),
               ntohs (dst.sin_port), g_strerror (errno));
}

static DfChainMemo *
memo_for (DfProxyDhcp *p, const char *mac)
{
  if (!p->cfg.chain_ipxe)
    return NULL;
  DfChainMemo *m = g_hash_table_lookup (p->memos, mac);
  if (!m)
    {
      if (g_hash_table_size (p->memos) > 100000)
        g_hash_table_remove_all (p->memos);
      m = g_new0 (DfChainMemo, 1);
      g_hash_table_insert (p->memos, g_strdup (mac), m);
    }
  return m;
}

static void
handle_packet (DfProxyDhcp *p, int fd, const guint8 *buf, size_t len,
               const struct sockaddr_in *src, int ifindex, bool pxe_port)
{
  DfDhcpRequest req;
  g_autoptr (GError) err = NULL;
  const char *why = NULL, *file = NULL;
  if (!df_dhcp_parse (buf, len, &req, &err))
    {
      p->ignored++;
      if (df_log_burst_allow (&p->refusal_log, g_get_monotonic_time ()))
        g_message ("proxydhcp: packet from %s ignored: %s",
                   inet_ntoa (src->sin_addr), err->message);
      return;
    }
  int type = df_proxydhcp_decide (&p->cfg, &req, pxe_port,
                                  memo_for (p, req.mac),
                                  g_get_monotonic_time (), &file, &why);
  if (type && p->cfg.healthy && !p->cfg.healthy (p->cfg.healthy_data))
    type = 0, why = "this bootstrap server is unhealthy";
  if (!type)
    {
      p->ignored++;
      bool loud = (req.pxeclient || req.httpclient) && df_log_burst_allow (&p->refusal_log, g_get_monotonic_time ());
      if (loud)
        g_message ("proxydhcp: %s (arch %u%s): not answering: %s",
                   req.mac[0] ? req.mac : "?", req.arch,
                   req.ipxe ? ", iPXE"
                   : req.httpclient && !req.pxeclient ? ", HTTPClient" : "",
                   why);
      return;
    }
  g_autofree char *boot_file = df_proxydhcp_boot_file (
    &p->cfg, &req, file, g_get_real_time () / G_USEC_PER_SEC);
  guint8 out[1024];
  DfDhcpReply r = { .msg_type = type, .server = p->cfg.address,
                    .boot_file = boot_file };
  size_t n = df_dhcp_build_reply (&req, &r, out, sizeof out);
  if (!n)
    {
      g_message ("proxydhcp: %s: boot file name does not fit a reply",
                 req.mac);
      return;
    }
  send_reply (p, fd, out, n, &req, src, ifindex);
  p->answered++;
  /* The token is left out of the log: whoever reads it could redeem it. */
  g_message ("proxydhcp: %s %s (arch %u%s) -> %s%s", req.mac,
             type == DF_DHCP_OFFER ? "offer" : "ack", req.arch,
             req.ipxe ? ", iPXE"
             : req.httpclient && !req.pxeclient ? ", HTTPClient" : "", file,
             boot_file[strlen (file)] ? "&token=(one-time token)" : "");
}

static void
read_socket (DfProxyDhcp *p, int fd, bool pxe_port)
{
  for (guint i = 0; i < 64; i++)
    {
      guint8 buf[2048];
      union { char c[CMSG_SPACE (sizeof (struct in_pktinfo))];
              struct cmsghdr align; } cbuf;
      struct sockaddr_in src;
      struct iovec iov = { buf, sizeof buf };
      struct msghdr mh = { .msg_name = &src, .msg_namelen = sizeof src,
                           .msg_iov = &iov, .msg_iovlen = 1,
                           .msg_control = cbuf.c,
                           .msg_controllen = sizeof cbuf.c };
      ssize_t n = recvmsg (fd, &mh, MSG_DONTWAIT | MSG_TRUNC);
      if (n < 0)
        return;
      int ifindex = 0;
      for (struct cmsghdr *c = CMSG_FIRSTHDR (&mh); c; c = CMSG_NXTHDR (&mh, c))
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO)
          {
            struct in_pktinfo pi;
            memcpy (&pi, CMSG_DATA (c), sizeof pi);
            ifindex = pi.ipi_ifindex;
          }
      /* Huge or truncated datagrams: the parser refuses len > 1500. */
      size_t len = (size_t) n > sizeof buf ? sizeof buf : (size_t) n;
      handle_packet (p, fd, buf, len, &src, ifindex, pxe_port);
    }
}

static gboolean
on_67 (gint fd, GIOCondition cond, gpointer data)
{
  read_socket (data, fd, false);
  return G_SOURCE_CONTINUE;
}

static gboolean
on_4011 (gint fd, GIOCondition cond, gpointer data)
{
  read_socket (data, fd, true);
  return G_SOURCE_CONTINUE;
}

static void
prepare_socket (int fd)
{
  int one = 1;
  setsockopt (fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
  setsockopt (fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof one);
}

DfProxyDhcp *
df_proxydhcp_new (const DfProxyConfig *cfg, int fd67, int fd4011)
{
  DfProxyDhcp *p = g_new0 (DfProxyDhcp, 1);
  p->cfg = *cfg;
  p->script_url = g_strdup (cfg->script_url);
  p->cfg.script_url = p->script_url;
  p->chain_url_bios = g_strdup (cfg->chain_url_bios);
  p->cfg.chain_url_bios = p->chain_url_bios;
  p->chain_url_efi = g_strdup (cfg->chain_url_efi);
  p->cfg.chain_url_efi = p->chain_url_efi;
  p->http_boot_url = g_strdup (cfg->http_boot_url);
  p->cfg.http_boot_url = p->http_boot_url;
  p->fd67 = fd67;
  p->fd4011 = fd4011;
  p->memos = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  prepare_socket (fd67);
  prepare_socket (fd4011);
  p->src67 = g_unix_fd_add (fd67, G_IO_IN, on_67, p);
  p->src4011 = g_unix_fd_add (fd4011, G_IO_IN, on_4011, p);
  return p;
}

void
df_proxydhcp_free (DfProxyDhcp *p)
{
  if (!p)
    return;
  g_source_remove (p->src67);
  g_source_remove (p->src4011);
  close (p->fd67);
  close (p->fd4011);
  g_hash_table_destroy (p->memos);
  g_free (p->script_url);
  g_free (p->chain_url_bios);
  g_free (p->chain_url_efi);
  g_free (p->http_boot_url);
  g_free (p);
}

void
df_proxydhcp_counts (DfProxyDhcp *p, guint64 *answered, guint64 *ignored)
{
  *answered = p->answered;
  *ignored = p->ignored;
}
