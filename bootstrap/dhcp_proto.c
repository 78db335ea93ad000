/* diskfarm bootstrap: DHCP wire format for ProxyDHCP.  See dhcp_proto.h. */
#include "dhcp_proto.h"
#include "common.h"

#include <arpa/inet.h>
#include <string.h>

static const guint8 magic_cookie[4] = { 99, 130, 83, 99 };

enum {
  OPT_PAD = 0, OPT_VENDOR = 43, OPT_OVERLOAD = 52, OPT_MSG_TYPE = 53,
  OPT_SERVER_ID = 54, OPT_CLASS_ID = 60, OPT_TFTP_SERVER = 66,
  OPT_BOOTFILE = 67, OPT_USER_CLASS = 77, OPT_ARCH = 93, OPT_UUID = 97,
  OPT_IPXE_ENCAP = 175, OPT_END = 255,
};

static bool
set_err (GError **err, const char *msg)
{
  g_set_error_literal (err, DF_ERROR, DF_ERROR_INVALID, msg);
  return false;
}

/* User class (77): RFC 3004 length-prefixed items, or iPXE's raw "iPXE". */
static bool
user_class_is_ipxe (const guint8 *v, guint8 len)
{
  if (len == 4 && memcmp (v, "iPXE", 4) == 0)
    return true;
  for (guint i = 0; i < len;)
    {
      guint8 n = v[i];
      if (n == 0 || i + 1 + n > len)
        return false;
      if (n == 4 && memcmp (v + i + 1, "iPXE", 4) == 0)
        return true;
      i += 1 + n;
    }
  return false;
}

/* Record one option (first occurrence wins). */
static bool
take_option (DfDhcpRequest *req, guint8 code, const guint8 *v, guint8 len,
             guint *seen_overload, GError **err)
{
  switch (code)
    {
    case OPT_MSG_TYPE:
      if (len != 1)
        return set_err (err, "option 53 (message type) length is not 1");
      if (!req->msg_type)
        req->msg_type = v[0];
      break;
    case OPT_CLASS_ID:
      if (len >= 9 && memcmp (v, "PXEClient", 9) == 0)
        req->pxeclient = true;
      if (len >= 10 && memcmp (v, "HTTPClient", 10) == 0)
        req->httpclient = true;
      break;
    case OPT_ARCH:
      if (len < 2 || len % 2)
        return set_err (err, "option 93 (client architecture) length is "
                             "not a positive multiple of 2");
      if (!req->has_arch)
        {
          req->has_arch = true;
          req->arch = (guint16) ((v[0] << 8) | v[1]);
        }
      break;
    case OPT_UUID:
      if (len != 17)
        return set_err (err, "option 97 (client UUID) length is not 17");
      if (!req->has_uuid)
        {
          req->has_uuid = true;
          req->uuid_len = len;
          memcpy (req->uuid, v, len);
        }
      break;
    case OPT_SERVER_ID:
      if (len != 4)
        return set_err (err, "option 54 (server identifier) length is not 4");
      req->has_server_id = true;
      memcpy (&req->server_id, v, 4);
      break;
    case OPT_IPXE_ENCAP:
      req->ipxe = true;
      break;
    case OPT_USER_CLASS:
      if (user_class_is_ipxe (v, len))
        req->ipxe = true;
      break;
    case OPT_OVERLOAD:
      if (len != 1 || v[0] < 1 || v[0] > 3)
        return set_err (err, "option 52 (overload) is not 1, 2 or 3");
      *seen_overload = v[0];
      break;
    default:
      break;
    }
  return true;
}

/* Walk the options in [p, end).  need_end: the area must close with 255
 * (the main options field); file/sname areas may just run to their end. */
static bool
walk_options (DfDhcpRequest *req, const guint8 *p, const guint8 *end,
              bool need_end, guint *overload, GError **err)
{
  while (p < end)
    {
      guint8 code = *p++;
      if (code == OPT_PAD)
        continue;
      if (code == OPT_END)
        return true;
      if (p >= end)
        return set_err (err, "option code at the end of the packet has no "
                             "length byte");
      guint8 len = *p++;
      if (len > end - p)
        return set_err (err, "option length runs past the end of the "
                             "packet");
      if (!take_option (req, code, p, len, overload, err))
        return false;
      p += len;
    }
  if (need_end)
    return set_err (err, "options have no end option (255)");
  return true;
}

static void
parse_header (const guint8 *b, DfDhcpRequest *req)
{
  req->op = b[0];
  req->htype = b[1];
  req->hlen = b[2];
  memcpy (&req->xid, b + 4, 4);
  req->secs = (guint16) ((b[8] << 8) | b[9]);
  req->flags = (guint16) ((b[10] << 8) | b[11]);
  memcpy (&req->ciaddr, b + 12, 4);
  memcpy (&req->giaddr, b + 24, 4);
  memcpy (req->chaddr, b + 28, 16);
  if (req->htype == 1 && req->hlen == 6)
    g_snprintf (req->mac, sizeof req->mac,
                "%02x:%02x:%02x:%02x:%02x:%02x", b[28], b[29], b[30], b[31],
                b[32], b[33]);
}

bool
df_dhcp_parse (const guint8 *buf, size_t len, DfDhcpRequest *req,
               GError **err)
{
  memset (req, 0, sizeof *req);
  if (len < DF_DHCP_MIN_LEN)
    return set_err (err, "packet shorter than a BOOTP header and cookie");
  if (len > DF_DHCP_MAX_LEN)
    return set_err (err, "packet longer than 1500 bytes");
  if (buf[0] != 1)
    return set_err (err, "not a BOOTREQUEST (op is not 1)");
  if (buf[2] > 16)
    return set_err (err, "hardware address length above 16");
  if (memcmp (buf + DF_DHCP_FIXED_LEN, magic_cookie, 4) != 0)
    return set_err (err, "no DHCP magic cookie");
  parse_header (buf, req);
  guint overload = 0;
  if (!walk_options (req, buf + DF_DHCP_MIN_LEN, buf + len, true, &overload,
                     err))
    return false;
  guint nested = 0;          /* overload inside overloaded fields: ignored */
  if ((overload & 1)
      && !walk_options (req, buf + 108, buf + 236, false, &nested, err))
    return false;
  if ((overload & 2)
      && !walk_options (req, buf + 44, buf + 108, false, &nested, err))
    return false;
  return true;
}

const char *
df_dhcp_boot_file_for_arch (guint16 arch)
{
  switch (arch)
    {
    case DF_DHCP_ARCH_BIOS:
      return DF_BOOT_FILE_BIOS;
    case DF_DHCP_ARCH_EFI_X64:
    case DF_DHCP_ARCH_EFI_BC:
      return DF_BOOT_FILE_EFI;
    default:
      return NULL;
    }
}

/* Append option code/len/value; false when it does not fit (keeps room
 * for the end option). */
static bool
put_option (guint8 *out, size_t cap, size_t *pos, guint8 code,
            const void *v, size_t len)
{
  if (len > 255 || *pos + 2 + len + 1 > cap)
    return false;
  out[(*pos)++] = code;
  out[(*pos)++] = (guint8) len;
  memcpy (out + *pos, v, len);
  *pos += len;
  return true;
}

static void
build_header (const DfDhcpRequest *req, const DfDhcpReply *r, guint8 *out)
{
  memset (out, 0, DF_DHCP_MIN_LEN);
  out[0] = 2;                                   /* BOOTREPLY */
  out[1] = req->htype;
  out[2] = req->hlen;
  memcpy (out + 4, &req->xid, 4);
  out[10] = (guint8) (req->flags >> 8);         /* keep the broadcast bit */
  memcpy (out + 12, &req->ciaddr, 4);
  memcpy (out + 20, &r->server, 4);             /* siaddr: next server */
  memcpy (out + 24, &req->giaddr, 4);
  memcpy (out + 28, req->chaddr, 16);
  memcpy (out + DF_DHCP_FIXED_LEN, magic_cookie, 4);
}

size_t
df_dhcp_build_reply (const DfDhcpRequest *req, const DfDhcpReply *r,
                     guint8 *out, size_t cap)
{
  size_t flen = strlen (r->boot_file);
  if (cap < 576 || flen == 0 || flen > 255)
    return 0;
  build_header (req, r, out);
  if (flen < 128)
    memcpy (out + 108, r->boot_file, flen);     /* file field */
  char server_s[INET_ADDRSTRLEN];
  inet_ntop (AF_INET, &r->server, server_s, sizeof server_s);
  /* PXE vendor options: 6 = discovery control, 8 = boot the offered file
   * without boot server discovery or menu. */
  static const guint8 vendor[] = { 6, 1, 8, 255 };
  guint8 type = (guint8) r->msg_type;
  size_t pos = DF_DHCP_MIN_LEN;
  bool http = req->httpclient && !req->pxeclient;
  bool ok = put_option (out, cap, &pos, OPT_MSG_TYPE, &type, 1)
            && put_option (out, cap, &pos, OPT_SERVER_ID, &r->server, 4)
            && (http ? put_option (out, cap, &pos, OPT_CLASS_ID, "HTTPClient",
                                   10)
                : put_option (out, cap, &pos, OPT_CLASS_ID, "PXEClient", 9)
                  && put_option (out, cap, &pos, OPT_VENDOR, vendor,
                                 sizeof vendor)
                  && put_option (out, cap, &pos, OPT_TFTP_SERVER, server_s,
                                 strlen (server_s)))
            && put_option (out, cap, &pos, OPT_BOOTFILE, r->boot_file, flen)
            && (!req->has_uuid
                || put_option (out, cap, &pos, OPT_UUID, req->uuid,
                               req->uuid_len));
  if (!ok)
    return 0;
  out[pos++] = OPT_END;
  while (pos < 300)
    out[pos++] = 0;                             /* BOOTP minimum size */
  return pos;
}
