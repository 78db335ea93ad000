/* libFuzzer harness: DHCP packets (bootstrap/dhcp_proto.c) through the
 * ProxyDHCP decision and the reply builder. */
#include "dhcp_proto.h"
#include "proxydhcp.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  DfDhcpRequest req;
  GError *err = NULL;
  if (!df_dhcp_parse (data, size, &req, &err))
    {
      g_clear_error (&err);
      return 0;
    }
  DfProxyConfig cfg = {
    .address = 0x0500000a, .chain_ipxe = (size & 1) != 0,
    .script_url = "http://10.0.0.5/boot.ipxe?mac=${net0/mac}",
  };
  DfChainMemo memo = { 0 };
  const char *file = NULL, *why = NULL;
  for (int port = 0; port < 2; port++)
    {
      int type = df_proxydhcp_decide (&cfg, &req, port, &memo, 1, &file,
                                      &why);
      if (!type)
        continue;
      guint8 out[1024];
      DfDhcpReply r = { .msg_type = type, .server = cfg.address,
                        .boot_file = file };
      size_t n = df_dhcp_build_reply (&req, &r, out, sizeof out);
      g_assert (n == 0 || (n >= 300 && n <= sizeof out));
    }
  return 0;
}
