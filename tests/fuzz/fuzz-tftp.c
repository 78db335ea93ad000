/* libFuzzer harness: TFTP requests, client packets and path cleaning
 * (bootstrap/tftp_proto.c). */
#include "tftp_proto.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  DfTftpRequest req;
  DfTftpClientPacket pkt;
  int code;
  GError *err = NULL;
  if (df_tftp_parse_request (data, size, &req, &code, &err))
    {
      char path[DF_TFTP_NAME_MAX + 1];
      if (df_tftp_clean_path (req.filename, path, &err))
        {
          /* never a ".." component, never absolute */
          g_autofree char *wrapped = g_strconcat ("/", path, "/", NULL);
          g_assert (strstr (wrapped, "/../") == NULL);
          g_assert (path[0] != '/');
        }
      g_clear_error (&err);
      guint8 oack[512];
      df_tftp_build_oack (oack, sizeof oack, &req.opt, size);
    }
  g_clear_error (&err);
  if (df_tftp_parse_client (data, size, &pkt, &code, &err))
    g_assert (pkt.opcode == DF_TFTP_ACK || pkt.opcode == DF_TFTP_ERROR);
  g_clear_error (&err);
  return 0;
}
