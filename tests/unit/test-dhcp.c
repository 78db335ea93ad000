/* Unit tests: DHCP wire format and ProxyDHCP decisions
 * (bootstrap/dhcp_proto.c, proxydhcp.c), iPXE script rendering (script.c)
 * and the least-loaded order of stream servers (health.c). */
#include "dhcp_proto.h"
#include "health.h"
#include "proxydhcp.h"
#include "script.h"
#include "test-util.h"

#include <arpa/inet.h>
#include <string.h>

/* ---- packet construction ---------------------------------------------- */

typedef struct {
  guint8 b[2048];
  size_t len;
} Pkt;

static void
pkt_header (Pkt *p, guint8 op, guint8 hlen)
{
  memset (p, 0, sizeof *p);
  p->b[0] = op;
  p->b[1] = 1;
  p->b[2] = hlen;
  p->b[4] = 0x12;                     /* xid 12345678 */
  p->b[5] = 0x34;
  p->b[6] = 0x56;
  p->b[7] = 0x78;
  static const guint8 mac[6] = { 0x52, 0x54, 0, 0x12, 0x34, 0x56 };
  memcpy (p->b + 28, mac, 6);
  static const guint8 cookie[4] = { 99, 130, 83, 99 };
  memcpy (p->b + 236, cookie, 4);
  p->len = 240;
}

static void
pkt_raw (Pkt *p, const void *bytes, size_t n)
{
  memcpy (p->b + p->len, bytes, n);
  p->len += n;
}

static void
pkt_opt (Pkt *p, guint8 code, const void *v, guint8 len)
{
  p->b[p->len++] = code;
  p->b[p->len++] = len;
  pkt_raw (p, v, len);
}

static void
pkt_pxe (Pkt *p, guint8 type, int arch, bool ipxe)
{
  pkt_header (p, 1, 6);
  pkt_opt (p, 53, &type, 1);
  pkt_opt (p, 60, "PXEClient:Arch:00000:UNDI:002001", 32);
  if (arch >= 0)
    {
      guint8 a[2] = { (guint8) (arch >> 8), (guint8) arch };
      pkt_opt (p, 93, a, 2);
    }
  guint8 uuid[17] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                      16 };
  pkt_opt (p, 97, uuid, 17);
  if (ipxe)
    pkt_opt (p, 175, "\x15\x01\x01", 3);
}

static void
pkt_end (Pkt *p)
{
  p->b[p->len++] = 255;
}

/* A UEFI HTTP boot DISCOVER as OVMF's HttpBootDxe sends it. */
static void
pkt_http (Pkt *p, guint16 arch)
{
  pkt_header (p, 1, 6);
  pkt_opt (p, 53, "\1", 1);
  pkt_opt (p, 60, "HTTPClient:Arch:00016:UNDI:003001", 33);
  guint8 a[2] = { (guint8) (arch >> 8), (guint8) arch };
  pkt_opt (p, 93, a, 2);
  guint8 uuid[17] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                      16 };
  pkt_opt (p, 97, uuid, 17);
  pkt_end (p);
}

/* ---- parser table ----------------------------------------------------- */

typedef enum {
  MK_BIOS, MK_EFI7, MK_IPXE, MK_NOARCH, MK_USERCLASS, MK_USERCLASS3004,
  MK_OVERLOAD_FILE, MK_OVERLOAD_SNAME, MK_SHORT, MK_HUGE, MK_NO_END,
  MK_PAST_END, MK_LEN_BYTE_MISSING, MK_BOOTREPLY, MK_HLEN_17, MK_NO_COOKIE,
  MK_ARCH_ODD, MK_TYPE_LEN0, MK_UUID_SHORT, MK_OVERLOAD_BAD,
  MK_OVERLOAD_PAST_FIELD, MK_SERVER_ID_LEN3, MK_PADDING, MK_HTTP16,
  MK_HTTP7,
} Maker;

static void
make (Pkt *p, Maker m)
{
  switch (m)
    {
    case MK_BIOS: pkt_pxe (p, 1, 0, false); pkt_end (p); break;
    case MK_HTTP16: pkt_http (p, 16); break;
    case MK_HTTP7: pkt_http (p, 7); break;
    case MK_EFI7: pkt_pxe (p, 1, 7, false); pkt_end (p); break;
    case MK_IPXE: pkt_pxe (p, 1, 0, true); pkt_end (p); break;
    case MK_NOARCH: pkt_pxe (p, 1, -1, false); pkt_end (p); break;
    case MK_USERCLASS:
      pkt_pxe (p, 1, 0, false); pkt_opt (p, 77, "iPXE", 4); pkt_end (p);
      break;
    case MK_USERCLASS3004:
      pkt_pxe (p, 1, 0, false); pkt_opt (p, 77, "\3abc\4iPXE", 9);
      pkt_end (p);
      break;
    case MK_OVERLOAD_FILE:
      pkt_header (p, 1, 6);
      pkt_opt (p, 53, "\1", 1);
      pkt_opt (p, 52, "\1", 1);
      pkt_end (p);
      memcpy (p->b + 108, "\x3c\x09PXEClient\x5d\x02\x00\x09\xff", 15);
      break;
    case MK_OVERLOAD_SNAME:
      pkt_header (p, 1, 6);
      pkt_opt (p, 53, "\1", 1);
      pkt_opt (p, 52, "\2", 1);
      pkt_end (p);
      memcpy (p->b + 44, "\x3c\x09PXEClient", 11);   /* runs to field end */
      break;
    case MK_SHORT: pkt_header (p, 1, 6); p->len = 239; break;
    case MK_HUGE: pkt_pxe (p, 1, 0, false); pkt_end (p); p->len = 1501; break;
    case MK_NO_END: pkt_pxe (p, 1, 0, false); break;
    case MK_PAST_END: pkt_pxe (p, 1, 0, false); pkt_raw (p, "\x3d\x40" "ab", 4);
      break;
    case MK_LEN_BYTE_MISSING: pkt_pxe (p, 1, 0, false); pkt_raw (p, "\x3d", 1);
      break;
    case MK_BOOTREPLY: pkt_pxe (p, 1, 0, false); pkt_end (p); p->b[0] = 2;
      break;
    case MK_HLEN_17: pkt_pxe (p, 1, 0, false); pkt_end (p); p->b[2] = 17;
      break;
    case MK_NO_COOKIE: pkt_pxe (p, 1, 0, false); pkt_end (p); p->b[236] = 0;
      break;
    case MK_ARCH_ODD:
      pkt_header (p, 1, 6); pkt_opt (p, 93, "\0\0\0", 3); pkt_end (p);
      break;
    case MK_TYPE_LEN0:
      pkt_header (p, 1, 6); pkt_opt (p, 53, "", 0); pkt_end (p);
      break;
    case MK_UUID_SHORT:
      pkt_header (p, 1, 6); pkt_opt (p, 97, "\0\1\2", 3); pkt_end (p);
      break;
    case MK_OVERLOAD_BAD:
      pkt_header (p, 1, 6); pkt_opt (p, 52, "\4", 1); pkt_end (p);
      break;
    case MK_OVERLOAD_PAST_FIELD:
      pkt_header (p, 1, 6); pkt_opt (p, 52, "\1", 1); pkt_end (p);
      memcpy (p->b + 230, "\x3c\x20PX", 4);    /* 32 bytes from 232 > 236 */
      break;
    case MK_SERVER_ID_LEN3:
      pkt_header (p, 1, 6); pkt_opt (p, 54, "\1\2\3", 3); pkt_end (p);
      break;
    case MK_PADDING:
      pkt_pxe (p, 1, 9, false); pkt_raw (p, "\0\0\0", 3); pkt_end (p);
      pkt_raw (p, "trailing junk after the end option", 34);
      break;
    }
}

typedef struct {
  const char *name;
  Maker maker;
  bool ok;
  const char *msg_part;       /* !ok */
  bool pxeclient, ipxe, has_arch;
  guint16 arch;
  bool httpclient;
} ParseCase;

static const ParseCase parse_cases[] = {
  { "BIOS DISCOVER", MK_BIOS, true, NULL, true, false, true, 0 },
  { "EFI x64", MK_EFI7, true, NULL, true, false, true, 7 },
  { "UEFI HTTP boot", MK_HTTP16, true, NULL, false, false, true, 16, true },
  { "iPXE option 175", MK_IPXE, true, NULL, true, true, true, 0 },
  { "no option 93", MK_NOARCH, true, NULL, true, false, false, 0 },
  { "user class iPXE", MK_USERCLASS, true, NULL, true, true, true, 0 },
  { "user class RFC 3004", MK_USERCLASS3004, true, NULL, true, true, true, 0 },
  { "overload into file", MK_OVERLOAD_FILE, true, NULL, true, false, true, 9 },
  { "overload into sname", MK_OVERLOAD_SNAME, true, NULL, true, false, false,
    0 },
  { "padding + junk after end", MK_PADDING, true, NULL, true, false, true, 9 },
  { "short", MK_SHORT, false, "shorter than" },
  { "huge", MK_HUGE, false, "longer than 1500" },
  { "no end option", MK_NO_END, false, "no end option" },
  { "option past the end", MK_PAST_END, false, "runs past the end" },
  { "length byte missing", MK_LEN_BYTE_MISSING, false, "no length byte" },
  { "BOOTREPLY", MK_BOOTREPLY, false, "not a BOOTREQUEST" },
  { "hlen 17", MK_HLEN_17, false, "above 16" },
  { "no cookie", MK_NO_COOKIE, false, "magic cookie" },
  { "arch odd length", MK_ARCH_ODD, false, "option 93" },
  { "message type length 0", MK_TYPE_LEN0, false, "option 53" },
  { "uuid short", MK_UUID_SHORT, false, "option 97" },
  { "overload 4", MK_OVERLOAD_BAD, false, "option 52" },
  { "overloaded option past field", MK_OVERLOAD_PAST_FIELD, false,
    "runs past the end" },
  { "server id length 3", MK_SERVER_ID_LEN3, false, "option 54" },
};

static void
test_parse (void)
{
  for (guint i = 0; i < G_N_ELEMENTS (parse_cases); i++)
    {
      const ParseCase *c = &parse_cases[i];
      Pkt p;
      DfDhcpRequest req;
      g_autoptr (GError) err = NULL;
      g_test_message ("case: %s", c->name);
      make (&p, c->maker);
      bool ok = df_dhcp_parse (p.b, p.len, &req, &err);
      g_assert_cmpint (ok, ==, c->ok);
      if (!ok)
        {
          g_assert_nonnull (strstr (err->message, c->msg_part));
          continue;
        }
      g_assert_cmpint (req.pxeclient, ==, c->pxeclient);
      g_assert_cmpint (req.ipxe, ==, c->ipxe);
      g_assert_cmpint (req.has_arch, ==, c->has_arch);
      g_assert_cmpuint (req.arch, ==, c->arch);
      g_assert_cmpint (req.httpclient, ==, c->httpclient);
      g_assert_cmpstr (req.mac, ==, "52:54:00:12:34:56");
    }
}

/* Every truncation of a valid packet parses or fails cleanly. */
static void
test_truncations (void)
{
  Pkt p;
  make (&p, MK_IPXE);
  for (size_t n = 0; n <= p.len; n++)
    {
      DfDhcpRequest req;
      g_autoptr (GError) err = NULL;
      guint8 *copy = g_memdup2 (p.b, n ? n : 1);
      bool ok = df_dhcp_parse (copy, n, &req, &err);
      g_assert_true (ok == (n == p.len));
      g_free (copy);
    }
}

/* ---- decisions -------------------------------------------------------- */

#define URL "http://10.0.0.5:80/boot.ipxe?mac=${net0/mac}&uuid=${uuid}"
#define HTTP_BOOT_URL "http://10.0.0.5:80/ipxe.efi"

typedef struct {
  const char *name;
  Maker maker;
  guint8 type;                  /* rewrite option 53 */
  bool pxe_port;
  int want;                     /* 0 silence, else message type */
  const char *file;
  const char *why_part;         /* silence: part of why (optional) */
} DecideCase;

static const DecideCase decide_cases[] = {
  { "BIOS discover", MK_BIOS, 1, false, DF_DHCP_OFFER, "undionly.kpxe" },
  { "EFI discover", MK_EFI7, 1, false, DF_DHCP_OFFER, "ipxe.efi" },
  { "no arch -> BIOS", MK_NOARCH, 1, false, DF_DHCP_OFFER, "undionly.kpxe" },
  { "iPXE -> URL", MK_IPXE, 1, false, DF_DHCP_OFFER, URL },
  { "REQUEST on 4011", MK_BIOS, 3, true, DF_DHCP_ACK, "undionly.kpxe" },
  { "REQUEST on 67 without server id", MK_BIOS, 3, false, 0, NULL },
  { "DISCOVER on 4011", MK_BIOS, 1, true, 0, NULL },
  { "INFORM", MK_BIOS, 8, false, 0, NULL },
  { "RELEASE", MK_BIOS, 7, false, 0, NULL },
  { "UEFI HTTP boot -> ipxe.efi URI", MK_HTTP16, 1, false, DF_DHCP_OFFER,
    HTTP_BOOT_URL },
  { "HTTPClient arch 7", MK_HTTP7, 1, false, 0, NULL, "not x64 UEFI HTTP" },
  { "HTTP boot REQUEST for another server", MK_HTTP16, 3, false, 0, NULL },
  { "HTTP boot DISCOVER on 4011", MK_HTTP16, 1, true, 0, NULL },
};

static void
set_type (Pkt *p, guint8 type)
{
  for (size_t i = 240; i + 2 < p->len; i += 2 + p->b[i + 1])
    if (p->b[i] == 53)
      {
        p->b[i + 2] = type;
        return;
      }
}

static void
test_decide (void)
{
  DfProxyConfig cfg = { .address = inet_addr ("10.0.0.5"), .script_url = URL,
                        .http_boot_url = HTTP_BOOT_URL };
  for (guint i = 0; i < G_N_ELEMENTS (decide_cases); i++)
    {
      const DecideCase *c = &decide_cases[i];
      Pkt p;
      DfDhcpRequest req;
      make (&p, c->maker);
      set_type (&p, c->type);
      g_assert_true (df_dhcp_parse (p.b, p.len, &req, NULL));
      const char *file = NULL, *why = NULL;
      g_test_message ("case: %s", c->name);
      int got = df_proxydhcp_decide (&cfg, &req, c->pxe_port, NULL, 0, &file,
                                     &why);
      g_assert_cmpint (got, ==, c->want);
      if (got)
        g_assert_cmpstr (file, ==, c->file);
      else
        g_assert_nonnull (why);
      if (c->why_part)
        g_assert_nonnull (strstr (why, c->why_part));
    }
}

/* UEFI HTTP boot: a server without an HTTP boot URL stays silent and says
 * why; the reply echoes vendor class HTTPClient (the firmware drops offers
 * without it), carries the URI in option 67 and the file field, and no
 * PXE options (43, 66). */
static void
test_http_boot (void)
{
  DfProxyConfig cfg = { .address = inet_addr ("10.0.0.5"), .script_url = URL };
  Pkt p;
  DfDhcpRequest req;
  const char *file = NULL, *why = NULL;
  make (&p, MK_HTTP16);
  g_assert_true (df_dhcp_parse (p.b, p.len, &req, NULL));
  g_assert_cmpint (df_proxydhcp_decide (&cfg, &req, false, NULL, 0, &file,
                                        &why), ==, 0);
  g_assert_nonnull (strstr (why, "HTTP boot is not offered"));
  cfg.http_boot_url = HTTP_BOOT_URL;
  g_assert_cmpint (df_proxydhcp_decide (&cfg, &req, false, NULL, 0, &file,
                                        &why), ==, DF_DHCP_OFFER);
  guint8 out[1024];
  DfDhcpReply r = { .msg_type = DF_DHCP_OFFER,
                    .server = inet_addr ("10.0.0.5"), .boot_file = file };
  size_t n = df_dhcp_build_reply (&req, &r, out, sizeof out);
  g_assert_cmpuint (n, >=, 300);
  g_assert_cmpmem (out + 16, 4, "\0\0\0\0", 4);           /* no yiaddr */
  g_assert_cmpstr ((char *) out + 108, ==, HTTP_BOOT_URL);
  bool class_ok = false, file_ok = false, pxe_opts = false;
  for (size_t i = 240; i < n && out[i] != 255; i += 2 + out[i + 1])
    {
      if (out[i] == 0)
        {
          i -= 1;                                         /* pad */
          continue;
        }
      const guint8 *v = out + i + 2;
      guint8 len = out[i + 1];
      if (out[i] == 60)
        class_ok = len == 10 && memcmp (v, "HTTPClient", 10) == 0;
      if (out[i] == 67)
        file_ok = len == strlen (HTTP_BOOT_URL)
                  && memcmp (v, HTTP_BOOT_URL, len) == 0;
      if (out[i] == 43 || out[i] == 66)
        pxe_opts = true;
    }
  g_assert_true (class_ok);
  g_assert_true (file_ok);
  g_assert_false (pxe_opts);
  /* A PXE client still gets PXEClient. */
  make (&p, MK_EFI7);
  g_assert_true (df_dhcp_parse (p.b, p.len, &req, NULL));
  r.boot_file = "ipxe.efi";
  n = df_dhcp_build_reply (&req, &r, out, sizeof out);
  out[0] = 1;
  DfDhcpRequest back;
  g_assert_true (df_dhcp_parse (out, n, &back, NULL));
  g_assert_true (back.pxeclient);
  g_assert_false (back.httpclient);
}

static void
test_decide_arch (void)
{
  DfProxyConfig cfg = { .address = inet_addr ("10.0.0.5"), .script_url = URL };
  for (int arch = 0; arch < 40; arch++)
    {
      Pkt p;
      DfDhcpRequest req;
      pkt_pxe (&p, 1, arch, false);
      pkt_end (&p);
      g_assert_true (df_dhcp_parse (p.b, p.len, &req, NULL));
      const char *file = NULL, *why = NULL;
      int got = df_proxydhcp_decide (&cfg, &req, false, NULL, 0, &file, &why);
      bool supported = arch == 0 || arch == 7 || arch == 9;
      g_assert_cmpint (got != 0, ==, supported);
      if (!supported)
        g_assert_nonnull (strstr (why, "architecture"));
    }
}

/* chain_ipxe: the ROM's session chains our iPXE, the chained iPXE (new
 * xid) gets the script; a later boot chains again. */
static void
test_decide_chain (void)
{
  DfProxyConfig cfg = { .address = inet_addr ("10.0.0.5"), .script_url = URL,
                        .chain_ipxe = true };
  DfChainMemo memo = { 0 };
  Pkt p;
  DfDhcpRequest req;
  const char *file, *why;
  make (&p, MK_IPXE);
  g_assert_true (df_dhcp_parse (p.b, p.len, &req, NULL));
  g_assert_cmpint (df_proxydhcp_decide (&cfg, &req, false, &memo, 1000, &file,
                                        &why), ==, DF_DHCP_OFFER);
  g_assert_cmpstr (file, ==, "undionly.kpxe");
  req.msg_type = DF_DHCP_REQUEST;          /* same session on 4011 */
  g_assert_cmpint (df_proxydhcp_decide (&cfg, &req, true, &memo, 2000, &file,
                                        &why), ==, DF_DHCP_ACK);
  g_assert_cmpstr (file, ==, "undionly.kpxe");
  req.msg_type = DF_DHCP_DISCOVER;         /* the chained iPXE */
  req.xid ^= 0xffff;
  df_proxydhcp_decide (&cfg, &req, false, &memo, 3000000, &file, &why);
  g_assert_cmpstr (file, ==, URL);
  req.msg_type = DF_DHCP_REQUEST;
  df_proxydhcp_decide (&cfg, &req, true, &memo, 3100000, &file, &why);
  g_assert_cmpstr (file, ==, URL);
  req.msg_type = DF_DHCP_DISCOVER;         /* next boot: ROM again */
  req.xid ^= 0xff0000;
  df_proxydhcp_decide (&cfg, &req, false, &memo, 9000000, &file, &why);
  g_assert_cmpstr (file, ==, "undionly.kpxe");
}

static void
test_build_reply (void)
{
  Pkt p;
  DfDhcpRequest req;
  make (&p, MK_BIOS);
  g_assert_true (df_dhcp_parse (p.b, p.len, &req, NULL));
  guint8 out[1024];
  DfDhcpReply r = { .msg_type = DF_DHCP_OFFER,
                    .server = inet_addr ("10.0.0.5"),
                    .boot_file = "undionly.kpxe" };
  size_t n = df_dhcp_build_reply (&req, &r, out, sizeof out);
  g_assert_cmpuint (n, >=, 300);
  g_assert_cmpuint (out[0], ==, 2);
  g_assert_cmpmem (out + 4, 4, p.b + 4, 4);               /* xid */
  g_assert_cmpmem (out + 16, 4, "\0\0\0\0", 4);           /* no yiaddr */
  g_assert_cmpmem (out + 20, 4, &r.server, 4);            /* siaddr */
  g_assert_cmpstr ((char *) out + 108, ==, "undionly.kpxe");
  /* The reply parses with our own parser once op is flipped back. */
  out[0] = 1;
  DfDhcpRequest back;
  g_autoptr (GError) err = NULL;
  g_assert_true (df_dhcp_parse (out, n, &back, &err));
  g_assert_cmpint (back.msg_type, ==, DF_DHCP_OFFER);
  g_assert_true (back.pxeclient);
  g_assert_true (back.has_uuid);
  g_assert_true (back.has_server_id);
  /* A boot file name longer than 255 bytes does not fit. */
  g_autofree char *longname = g_strnfill (300, 'a');
  r.boot_file = longname;
  g_assert_cmpuint (df_dhcp_build_reply (&req, &r, out, sizeof out), ==, 0);
  r.boot_file = "x";
  g_assert_cmpuint (df_dhcp_build_reply (&req, &r, out, 100), ==, 0);
}

/* ---- scripts and server order ----------------------------------------- */

static void
test_script (void)
{
  DfScriptTarget t[2] = { { "10.0.0.11", 3260 }, { "10.0.0.12", 3261 } };
  DfScriptParams p = { .device = "pc01", .vdisk = "win10", .generation = 7,
                       .targets = t, .n_targets = 2,
                       .rendered_by = "10.0.0.5" };
  gboolean dropped;
  g_autofree char *s = df_script_render (&p, &dropped);
  g_assert_true (g_str_has_prefix (s, "#!ipxe\n"));
  g_assert_nonnull (strstr (s, "\nset initiator-iqn "
                               "iqn.2026-11.org.diskfarm:pc01\n"));
  g_assert_nonnull (strstr (s, "\nsanboot iscsi:10.0.0.11::3260:1:"
                               "iqn.2026-11.org.diskfarm:pc01 "
                               "iscsi:10.0.0.12::3261:1:"
                               "iqn.2026-11.org.diskfarm:pc01 "
                               "|| goto failed\n"));
  g_assert_null (strstr (s, "username"));
  g_assert_false (dropped);
  p.chap_user = "pc01";
  p.chap_secret = "s3cr3t-Secret12";
  g_autofree char *c = df_script_render (&p, &dropped);
  g_assert_nonnull (strstr (c, "\nset username pc01\nset password "
                               "s3cr3t-Secret12\n"));
  p.chap_secret = "bad ${secret}";
  g_autofree char *d = df_script_render (&p, &dropped);
  g_assert_true (dropped);
  g_assert_null (strstr (d, "password"));
  g_assert_null (strstr (s, "platform"));          /* no check by default */
  p.chap_user = p.chap_secret = NULL;
  /* A UEFI-only vDisk refuses BIOS clients, a BIOS-only one UEFI clients
   * (iPXE's ${platform}), with a message naming the vDisk. */
  p.no_bios = true;
  g_autofree char *u = df_script_render (&p, &dropped);
  g_assert_nonnull (strstr (u, "\niseq ${platform} efi || goto wrong_firmware\n"
                               "sanboot iscsi:"));
  g_assert_nonnull (strstr (u, "\n:wrong_firmware\necho diskfarm: vDisk "
                               "win10 boots under UEFI only"));
  p.no_bios = false;
  p.no_uefi = true;
  g_autofree char *b = df_script_render (&p, &dropped);
  g_assert_nonnull (strstr (b, "\niseq ${platform} pcbios || goto "
                               "wrong_firmware\n"));
  g_assert_nonnull (strstr (b, "boots under BIOS only"));
  /* An EFI loader: sanboot --filename under UEFI, plain sanboot under
   * BIOS when the vDisk boots both. */
  p.no_uefi = false;
  p.efi_loader = "\\EFI\\debian\\grubx64.efi";
  g_autofree char *l = df_script_render (&p, &dropped);
  g_assert_nonnull (strstr (l, "\niseq ${platform} efi || goto sanboot_bios\n"
                               "sanboot --filename \\EFI\\debian\\grubx64.efi "
                               "iscsi:10.0.0.11::3260:1:"));
  g_assert_nonnull (strstr (l, "\n:sanboot_bios\nsanboot iscsi:"));
  g_assert_null (strstr (l, "wrong_firmware"));
  p.no_bios = true;
  g_autofree char *e = df_script_render (&p, &dropped);
  g_assert_nonnull (strstr (e, "\nsanboot --filename "));
  g_assert_null (strstr (e, "\nsanboot iscsi:"));
  g_assert_null (strstr (e, "sanboot_bios"));
  p.efi_loader = "\\EFI\\${x}.efi";
  g_assert_null (df_script_render (&p, &dropped));
  g_autofree char *m = df_script_message ("not registered", "mac ${x}\n#y");
  g_assert_null (strstr (m, "${"));
  g_assert_nonnull (strstr (m, "\nreboot\n"));
  /* Quotes would unbalance iPXE's argument quoting. */
  g_autofree char *q = df_script_message ("it's", "say \"hi\"");
  g_assert_null (strchr (q, '"'));
  g_assert_null (strchr (q, '\''));
}

/* IPv6 stream servers need brackets in iPXE's iscsi: URI. */
static void
test_script_ipv6 (void)
{
  DfScriptTarget t[2] = { { "fd00::11", 3260 }, { "10.0.0.12", 3260 } };
  DfScriptParams p = { .device = "pc01", .generation = 1, .targets = t,
                       .n_targets = 2, .rendered_by = "10.0.0.5" };
  gboolean dropped;
  g_autofree char *s = df_script_render (&p, &dropped);
  g_assert_nonnull (s);
  g_assert_nonnull (strstr (s, " iscsi:[fd00::11]::3260:1:"
                               "iqn.2026-11.org.diskfarm:pc01 "
                               "iscsi:10.0.0.12::3260:1:"));
}

/* Values that reach script commands unquoted (device name, server
 * addresses) are refused when they could inject iPXE syntax. */
static void
test_script_injection (void)
{
  static const char *const bad_devices[] = {
    "pc01\nshell", "pc ${x}", "pc01 || shell", "", "a\"b", "pc#1", NULL };
  static const char *const bad_addresses[] = {
    "10.0.0.1\nshell", "10.0.0.1 || shell", "${ip}", "", "[::1]]x",
    "h/..", NULL };
  DfScriptTarget t[1] = { { "10.0.0.11", 3260 } };
  DfScriptParams p = { .device = "pc01", .generation = 1, .targets = t,
                       .n_targets = 1, .rendered_by = "10.0.0.5" };
  gboolean dropped;
  for (guint i = 0; bad_devices[i]; i++)
    {
      p.device = bad_devices[i];
      g_autofree char *s = df_script_render (&p, &dropped);
      if (s)
        g_error ("device '%s' rendered:\n%s", bad_devices[i], s);
    }
  p.device = "pc01";
  for (guint i = 0; bad_addresses[i]; i++)
    {
      t[0].address = bad_addresses[i];
      g_autofree char *s = df_script_render (&p, &dropped);
      if (s)
        g_error ("address '%s' rendered:\n%s", bad_addresses[i], s);
    }
  /* The rendering server's own address only reaches a comment: sanitised. */
  t[0].address = "10.0.0.11";
  p.rendered_by = "10.0.0.5\nshell";
  g_autofree char *s = df_script_render (&p, &dropped);
  g_assert_nonnull (s);
  g_assert_null (strstr (s, "\nshell"));
}

static void
test_server_order (void)
{
  DfServerView a = { .name = (char *) "a", .healthy = true, .sessions = 10,
                     .power = 1 };
  DfServerView b = { .name = (char *) "b", .healthy = true, .sessions = 10,
                     .power = 4 };
  DfServerView c = { .name = (char *) "c", .healthy = false, .sessions = -1,
                     .power = 1 };
  DfServerView d = { .name = (char *) "d", .healthy = true, .sessions = 0,
                     .power = 1 };
  g_autoptr (GPtrArray) v = g_ptr_array_new ();
  g_ptr_array_add (v, &a);
  g_ptr_array_add (v, &c);
  g_ptr_array_add (v, &b);
  g_ptr_array_add (v, &d);
  g_ptr_array_sort (v, df_server_view_compare);
  g_assert_true (v->pdata[0] == &d);     /* 0 sessions */
  g_assert_true (v->pdata[1] == &b);     /* 10 / 4 */
  g_assert_true (v->pdata[2] == &a);     /* 10 / 1 */
  g_assert_true (v->pdata[3] == &c);     /* unhealthy last */
}

static const TuTest tests[] = {
  { "/dhcp/parse", test_parse },
  { "/dhcp/truncations", test_truncations },
  { "/dhcp/decide", test_decide },
  { "/dhcp/decide-arch", test_decide_arch },
  { "/dhcp/http-boot", test_http_boot },
  { "/dhcp/decide-chain", test_decide_chain },
  { "/dhcp/build-reply", test_build_reply },
  { "/dhcp/script", test_script },
  { "/dhcp/script-ipv6", test_script_ipv6 },
  { "/dhcp/script-injection", test_script_injection },
  { "/dhcp/server-order", test_server_order },
};

TU_MAIN (tests)
