/* Unit tests for lib/common: sizes, MACs, names, listen addresses, sha256. */
#include "common.h"
#include <glib/gstdio.h>

static void
test_sizes (void)
{
  static const struct { const char *in; bool ok; uint64_t v; } rows[] = {
    { "0", true, 0 },          { "512", true, 512 },
    { "4K", true, 4096 },      { "4k", true, 4096 },
    { "10MiB", true, 10 << 20 }, { "2G", true, 2ULL << 30 },
    { "1T", true, 1ULL << 40 }, { "3GB", true, 3ULL << 30 },
    { "", false, 0 },          { "-1", false, 0 },
    { "1.5G", false, 0 },      { "12Q", false, 0 },
    { "G", false, 0 },         { " 1", false, 0 },
    { "1 G", false, 0 },       { "99999999999999999999", false, 0 },
    { "20000000T", false, 0 },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (rows); i++)
    {
      uint64_t v = 12345;
      g_autoptr (GError) err = NULL;
      bool ok = df_parse_size (rows[i].in, &v, &err);
      g_test_message ("size '%s'", rows[i].in);
      g_assert_cmpint (ok, ==, rows[i].ok);
      if (ok)
        g_assert_cmpuint (v, ==, rows[i].v);
      else
        g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
    }
  g_autofree char *h = df_format_size (3 << 20);
  g_assert_cmpstr (h, ==, "3.0 MiB");
}

static void
test_macs (void)
{
  static const struct { const char *in, *out; } rows[] = {
    { "52:54:00:12:34:56", "52:54:00:12:34:56" },
    { "52-54-00-AB-cd-EF", "52:54:00:ab:cd:ef" },
    { "5254.00ab.cdef", "52:54:00:ab:cd:ef" },
    { "525400ABCDEF", "52:54:00:ab:cd:ef" },
    { "", NULL }, { "52:54:00:12:34", NULL },
    { "52:54:00:12:34:567", NULL }, { "52:54-00:12:34:56", NULL },
    { "52:54:00:12:34:5g", NULL }, { "5254.00ab.cdeg", NULL },
    { "52:54:00:12:34:56:", NULL }, { "aa:bb:cc:dd:", NULL },
    { "525400abcdef00", NULL }, { "52.54.00.12.34.56", NULL },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (rows); i++)
    {
      char out[18] = "";
      g_autoptr (GError) err = NULL;
      g_test_message ("mac '%s'", rows[i].in);
      bool ok = df_parse_mac (rows[i].in, out, &err);
      g_assert_cmpint (ok, ==, rows[i].out != NULL);
      if (ok)
        g_assert_cmpstr (out, ==, rows[i].out);
      else
        g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
    }
}

static void
test_names (void)
{
  static const struct { const char *in; bool ok; } rows[] = {
    { "web01", true }, { "a", true }, { "win10_x64-v2.1", true },
    { "", false }, { ".hidden", false }, { "-x", false }, { "a/b", false },
    { "a b", false }, { "../x", false }, { "é", false },
    { "0123456789012345678901234567890123456789012345678901234567890123",
      false },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (rows); i++)
    {
      g_autoptr (GError) err = NULL;
      g_assert_cmpint (df_validate_name ("vdisk", rows[i].in, &err), ==,
                       rows[i].ok);
    }
}

static void
test_listen (void)
{
  static const struct {
    const char *in; bool ok; const char *host, *path; uint16_t port;
  } rows[] = {
    { "127.0.0.1:10809", true, "127.0.0.1", NULL, 10809 },
    { "127.0.0.1", true, "127.0.0.1", NULL, 99 },
    { ":2000", true, NULL, NULL, 2000 },
    { "[::1]:3260", true, "::1", NULL, 3260 },
    { "::1", true, "::1", NULL, 99 },
    { "unix:/tmp/s", true, NULL, "/tmp/s", 0 },
    { "localhost:0", true, "localhost", NULL, 0 },
    { "unix:", false, NULL, NULL, 0 },
    { "1.2.3.4:65536", false, NULL, NULL, 0 },
    { "1.2.3.4:x", false, NULL, NULL, 0 },
    { "example.com:80", false, NULL, NULL, 0 },
    { "[::1:80", false, NULL, NULL, 0 },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (rows); i++)
    {
      DfListenAddr a;
      g_autoptr (GError) err = NULL;
      g_test_message ("listen '%s'", rows[i].in);
      bool ok = df_parse_listen (rows[i].in, 99, &a, &err);
      g_assert_cmpint (ok, ==, rows[i].ok);
      if (!ok)
        continue;
      g_assert_cmpstr (a.host, ==, rows[i].host);
      g_assert_cmpstr (a.unix_path, ==, rows[i].path);
      g_assert_cmpuint (a.port, ==, rows[i].port);
      df_listen_addr_clear (&a);
    }
}

static void
test_sha256 (void)
{
  g_autofree char *path = NULL;
  int fd = g_file_open_tmp ("df-sha-XXXXXX", &path, NULL);
  g_assert_cmpint (fd, >=, 0);
  g_assert_cmpint (write (fd, "abc", 3), ==, 3);
  close (fd);
  char hex[65];
  g_assert_true (df_file_sha256 (path, hex, NULL));
  g_assert_cmpstr (hex, ==, "ba7816bf8f01cfea414140de5dae2223"
                            "b00361a396177a9cb410ff61f20015ad");
  g_unlink (path);
  g_autoptr (GError) err = NULL;
  g_assert_false (df_file_sha256 (path, hex, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/common/sizes", test_sizes);
  g_test_add_func ("/common/macs", test_macs);
  g_test_add_func ("/common/names", test_names);
  g_test_add_func ("/common/listen", test_listen);
  g_test_add_func ("/common/sha256", test_sha256);
  return g_test_run ();
}
