/* Unit tests: TFTP wire format (bootstrap/tftp_proto.c), table-driven with
 * malformed requests, client packets, builders and path cleaning. */
#include "tftp_proto.h"
#include "test-util.h"

#include <string.h>

/* A request written as a C string with "\0" separators; len explicit. */
typedef struct {
  const char *name;
  const char *bytes;
  size_t len;
  bool ok;
  int code;                 /* when !ok */
  const char *msg_part;     /* when !ok: part of the message */
  const char *filename;     /* when ok */
  guint32 blksize;
  bool tsize;
  guint timeout, windowsize;
  guint ignored;
} ReqCase;

#define R(s) s, sizeof (s) - 1

static const ReqCase req_cases[] = {
  { "plain RRQ", R ("\0\1file.bin\0octet\0"), true, 0, NULL, "file.bin" },
  { "mode any case", R ("\0\1a\0OcTeT\0"), true, 0, NULL, "a" },
  { "all options", R ("\0\1f\0octet\0blksize\0" "1468\0tsize\0" "0\0timeout\0"
                      "3\0windowsize\0" "16\0"), true, 0, NULL, "f", 1468, true,
    3, 16 },
  { "option names any case", R ("\0\1f\0octet\0BLKSIZE\0" "512\0WindowSize\0"
                                "4\0"), true, 0, NULL, "f", 512, false, 0, 4 },
  { "unknown option ignored", R ("\0\1f\0octet\0multicast\0\0"), true, 0,
    NULL, "f", 0, false, 0, 0, 1 },
  { "trailing half option ignored", R ("\0\1f\0octet\0blksize\0" "512\0tsi"),
    true, 0, NULL, "f", 512, false, 0, 0, 1 },
  { "trailing name without value", R ("\0\1f\0octet\0tsize\0"), true, 0, NULL,
    "f", 0, false, 0, 0, 1 },
  { "padding NULs", R ("\0\1f\0octet\0\0\0"), true, 0, NULL, "f", 0, false, 0,
    0, 1 },
  { "blksize bounds low", R ("\0\1f\0octet\0blksize\0" "8\0"), true, 0, NULL,
    "f", 8 },
  { "blksize bounds high", R ("\0\1f\0octet\0blksize\0" "65464\0"), true, 0,
    NULL, "f", 65464 },
  { "windowsize max", R ("\0\1f\0octet\0windowsize\0" "65535\0"), true, 0,
    NULL, "f", 0, false, 0, 65535 },
  { "timeout bounds", R ("\0\1f\0octet\0timeout\0" "255\0"), true, 0, NULL,
    "f", 0, false, 255 },

  { "empty", R (""), false, DF_TFTP_SILENT, "too short" },
  { "3 bytes", R ("\0\1f"), false, DF_TFTP_SILENT, "too short" },
  { "no NUL after name", R ("\0\1file.bin"), false, DF_TFTP_EBADOP,
    "file name is not NUL-terminated" },
  { "no NUL after mode", R ("\0\1f\0octet"), false, DF_TFTP_EBADOP,
    "transfer mode is not NUL-terminated" },
  { "WRQ", R ("\0\2f\0octet\0"), false, DF_TFTP_EACCESS, "write requests" },
  { "ERROR to request port", R ("\0\5\0\1oops\0"), false, DF_TFTP_SILENT,
    "request port" },
  { "ACK to request port", R ("\0\4\0\1"), false, DF_TFTP_SILENT,
    "request port" },
  { "unknown opcode", R ("\0\11f\0octet\0"), false, DF_TFTP_EBADOP,
    "unknown opcode" },
  { "netascii", R ("\0\1f\0netascii\0"), false, DF_TFTP_EUNDEF, "netascii" },
  { "mail mode", R ("\0\1f\0mail\0"), false, DF_TFTP_EBADOP,
    "unknown transfer mode" },
  { "long mode", R ("\0\1f\0octetoctetoctetoctet\0"), false, DF_TFTP_EBADOP,
    "mode too long" },
  { "blksize 7", R ("\0\1f\0octet\0blksize\0" "7\0"), false, DF_TFTP_EOPTNEG,
    "outside 8-65464" },
  { "blksize 65465", R ("\0\1f\0octet\0blksize\0" "65465\0"), false,
    DF_TFTP_EOPTNEG, "outside" },
  { "blksize negative", R ("\0\1f\0octet\0blksize\0-1\0"), false,
    DF_TFTP_EOPTNEG, "not a decimal number" },
  { "blksize empty", R ("\0\1f\0octet\0blksize\0\0"), false, DF_TFTP_EOPTNEG,
    "not a decimal number" },
  { "blksize hex", R ("\0\1f\0octet\0blksize\0" "0x200\0"), false,
    DF_TFTP_EOPTNEG, "not a decimal number" },
  { "blksize overflow", R ("\0\1f\0octet\0blksize\0"
                           "99999999999999999999\0"), false, DF_TFTP_EOPTNEG,
    "not a decimal number" },
  { "overlong value (CVE-2011-2199)", R ("\0\1f\0octet\0blksize\0"
                                         "000000000000000000000512\0"), false,
    DF_TFTP_EOPTNEG, "value too long" },
  { "timeout 0", R ("\0\1f\0octet\0timeout\0" "0\0"), false, DF_TFTP_EOPTNEG,
    "outside 1-255" },
  { "timeout 256", R ("\0\1f\0octet\0timeout\0" "256\0"), false,
    DF_TFTP_EOPTNEG, "outside 1-255" },
  { "windowsize 0", R ("\0\1f\0octet\0windowsize\0" "0\0"), false,
    DF_TFTP_EOPTNEG, "outside 1-65535" },
  { "windowsize 65536", R ("\0\1f\0octet\0windowsize\0" "65536\0"), false,
    DF_TFTP_EOPTNEG, "outside 1-65535" },
  { "duplicate option", R ("\0\1f\0octet\0blksize\0" "512\0blksize\0"
                           "1024\0"), false, DF_TFTP_EOPTNEG, "given twice" },
  { "long option name", R ("\0\1f\0octet\0" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                           "\0" "1\0"), false, DF_TFTP_EOPTNEG,
    "option name too long" },
};

static void
test_requests (void)
{
  for (guint i = 0; i < G_N_ELEMENTS (req_cases); i++)
    {
      const ReqCase *c = &req_cases[i];
      DfTftpRequest req;
      int code = 12345;
      g_autoptr (GError) err = NULL;
      g_test_message ("case: %s", c->name);
      bool ok = df_tftp_parse_request ((const guint8 *) c->bytes, c->len,
                                       &req, &code, &err);
      g_assert_cmpint (ok, ==, c->ok);
      if (!ok)
        {
          g_assert_cmpint (code, ==, c->code);
          g_assert_nonnull (err);
          g_assert_nonnull (strstr (err->message, c->msg_part));
          continue;
        }
      g_assert_no_error (err);
      g_assert_cmpstr (req.filename, ==, c->filename);
      g_assert_cmpstr (req.mode, ==, "octet");
      g_assert_cmpuint (req.opt.blksize, ==, c->blksize);
      g_assert_cmpint (req.opt.tsize, ==, c->tsize);
      g_assert_cmpuint (req.opt.timeout, ==, c->timeout);
      g_assert_cmpuint (req.opt.windowsize, ==, c->windowsize);
      g_assert_cmpuint (req.n_ignored, ==, c->ignored);
    }
}

static void
test_long_name (void)
{
  guint8 buf[DF_TFTP_REQ_MAX + 8];
  buf[0] = 0;
  buf[1] = 1;
  memset (buf + 2, 'a', 300);
  buf[302] = 0;
  memcpy (buf + 303, "octet", 6);
  DfTftpRequest req;
  int code;
  g_autoptr (GError) err = NULL;
  g_assert_false (df_tftp_parse_request (buf, 309, &req, &code, &err));
  g_assert_cmpint (code, ==, DF_TFTP_EACCESS);
  g_clear_error (&err);
  memset (buf, 'x', sizeof buf);
  buf[0] = 0;
  buf[1] = 1;
  g_assert_false (df_tftp_parse_request (buf, DF_TFTP_REQ_MAX + 1, &req,
                                         &code, &err));
  g_assert_nonnull (strstr (err->message, "request too long"));
}

typedef struct {
  const char *name;
  const char *bytes;
  size_t len;
  bool ok;
  int opcode;
  guint16 block, error_code;
  const char *message;
} ClientCase;

static const ClientCase client_cases[] = {
  { "ACK 0", R ("\0\4\0\0"), true, DF_TFTP_ACK, 0 },
  { "ACK 65535", R ("\0\4\377\377"), true, DF_TFTP_ACK, 65535 },
  { "ACK with trailing bytes", R ("\0\4\1\2xyz"), true, DF_TFTP_ACK, 258 },
  { "ERROR full", R ("\0\5\0\10refused\0"), true, DF_TFTP_ERROR, 0, 8,
    "refused" },
  { "ERROR no NUL", R ("\0\5\0\1abc"), true, DF_TFTP_ERROR, 0, 1, "abc" },
  { "ERROR 4 bytes", R ("\0\5\0\3"), true, DF_TFTP_ERROR, 0, 3, "" },
  { "ERROR 3 bytes (CVE-2019-11365)", R ("\0\5\0"), true, DF_TFTP_ERROR, 0,
    0, "" },
  { "ERROR 2 bytes", R ("\0\5"), true, DF_TFTP_ERROR, 0, 0, "" },
  { "ERROR control chars", R ("\0\5\0\0a\nb\0"), true, DF_TFTP_ERROR, 0, 0,
    "a?b" },
  { "short ACK", R ("\0\4\0"), false },
  { "1 byte", R ("\0"), false },
  { "DATA from client", R ("\0\3\0\1data"), false },
  { "RRQ on transfer port", R ("\0\1f\0octet\0"), false },
};

static void
test_client_packets (void)
{
  for (guint i = 0; i < G_N_ELEMENTS (client_cases); i++)
    {
      const ClientCase *c = &client_cases[i];
      DfTftpClientPacket p;
      int code;
      g_autoptr (GError) err = NULL;
      g_test_message ("case: %s", c->name);
      bool ok = df_tftp_parse_client ((const guint8 *) c->bytes, c->len, &p,
                                      &code, &err);
      g_assert_cmpint (ok, ==, c->ok);
      if (!ok)
        continue;
      g_assert_cmpint (p.opcode, ==, c->opcode);
      if (p.opcode == DF_TFTP_ACK)
        g_assert_cmpuint (p.block, ==, c->block);
      else
        {
          g_assert_cmpuint (p.error_code, ==, c->error_code);
          g_assert_cmpstr (p.message, ==, c->message);
        }
    }
}

static void
test_builders (void)
{
  guint8 buf[256];
  DfTftpOptions o = { .blksize = 1468, .tsize = true, .windowsize = 16 };
  size_t n = df_tftp_build_oack (buf, sizeof buf, &o, 74213);
  static const char want[] = "\0\6blksize\0" "1468\0tsize\0" "74213\0"
                             "windowsize\0" "16\0";
  g_assert_cmpuint (n, ==, sizeof want - 1);
  g_assert_cmpmem (buf, n, want, sizeof want - 1);
  g_assert_cmpuint (df_tftp_build_oack (buf, 10, &o, 1), ==, 0);
  n = df_tftp_build_error (buf, sizeof buf, 2, "no");
  g_assert_cmpmem (buf, n, "\0\5\0\2no\0", 7);
  g_assert_cmpuint (df_tftp_build_error (buf, 4, 2, "no"), ==, 0);
  n = df_tftp_build_data_header (buf, sizeof buf, 0xabcd);
  g_assert_cmpmem (buf, n, "\0\3\xab\xcd", 4);
}

typedef struct {
  const char *in;
  const char *out;          /* NULL: refused */
} PathCase;

static const PathCase path_cases[] = {
  { "undionly.kpxe", "undionly.kpxe" },
  { "/undionly.kpxe", "undionly.kpxe" },
  { "//a//b/./c", "a/b/c" },
  { "\\boot\\x64\\wdsnbp.com", "boot/x64/wdsnbp.com" },
  { "../etc/passwd", NULL },
  { "a/../../b", NULL },
  { "a/..", NULL },
  { "..\\..\\x", NULL },
  { "/", NULL },
  { "", NULL },
  { ".", NULL },
  { "a\tb", NULL },
  { "a\x7f", NULL },
  { "...", "..." },
  { "..a", "..a" },
};

static void
test_paths (void)
{
  for (guint i = 0; i < G_N_ELEMENTS (path_cases); i++)
    {
      char out[DF_TFTP_NAME_MAX + 1];
      g_autoptr (GError) err = NULL;
      bool ok = df_tftp_clean_path (path_cases[i].in, out, &err);
      g_test_message ("path: '%s'", path_cases[i].in);
      g_assert_cmpint (ok, ==, path_cases[i].out != NULL);
      if (ok)
        g_assert_cmpstr (out, ==, path_cases[i].out);
      else
        g_assert_nonnull (err);
    }
}

static const TuTest tests[] = {
  { "/tftp/requests", test_requests },
  { "/tftp/long-name", test_long_name },
  { "/tftp/client-packets", test_client_packets },
  { "/tftp/builders", test_builders },
  { "/tftp/paths", test_paths },
};

TU_MAIN (tests)
