/* Unit tests for lib/common: sizes, MACs, names, listen addresses, sha256,
 * diskfarm.conf. */
#include "common.h"
#include "conf.h"
#include "config.h"
#include "test-util.h"
#include <glib/gstdio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* qemu-img's size syntax; each malformed kind has its own message. */
static void
test_sizes (void)
{
  static const struct {
    const char *in; bool ok; uint64_t v; const char *msg;
  } rows[] = {
    { "0", true, 0, NULL },             { "512", true, 512, NULL },
    { "512B", true, 512, NULL },        { "512b", true, 512, NULL },
    { "4K", true, 4096, NULL },         { "4k", true, 4096, NULL },
    { "512K", true, 512 << 10, NULL },  { "4096M", true, 4096ULL << 20, NULL },
    { "10MiB", true, 10 << 20, NULL },  { "2G", true, 2ULL << 30, NULL },
    { "1.5G", true, 3ULL << 29, NULL }, { "1.5g", true, 3ULL << 29, NULL },
    { "0.5K", true, 512, NULL },        { "1.25M", true, 1310720, NULL },
    { "1T", true, 1ULL << 40, NULL },   { "3GB", true, 3ULL << 30, NULL },
    { "2P", true, 2ULL << 50, NULL },   { "15E", true, 15ULL << 60, NULL },
    { "15.5E", true, 31ULL << 59, NULL },
    { "18446744073709551615", true, G_MAXUINT64, NULL },
    { "", false, 0, "empty" },
    { "-1", false, 0, "expected a number" },
    { "+1", false, 0, "expected a number" },
    { " 1", false, 0, "expected a number" },
    { "G", false, 0, "expected a number" },
    { ".5G", false, 0, "expected a number" },
    { "0x10", false, 0, "unknown unit suffix" },
    { "12Q", false, 0, "unknown unit suffix" },
    { "1 G", false, 0, "unknown unit suffix" },
    { "1G ", false, 0, "unknown unit suffix" },
    { "1GG", false, 0, "unknown unit suffix" },
    { "1BB", false, 0, "unknown unit suffix" },
    { "1BiB", false, 0, "unknown unit suffix" },
    { "1.5", false, 0, "a fraction needs a unit" },
    { "1.5B", false, 0, "a fraction needs a unit" },
    { "1.G", false, 0, "digits after the '.'" },
    { "1.2.3G", false, 0, "unknown unit suffix" },
    { "0.1K", false, 0, "not a whole number of bytes" },
    { "1.0000000000000000001G", false, 0, "decimal places" },
    { "99999999999999999999", false, 0, "too large" },
    { "18446744073709551616", false, 0, "too large" },
    { "16E", false, 0, "too large" },
    { "15.99999E", false, 0, "not a whole number" },
    { "20000000T", false, 0, "too large" },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (rows); i++)
    {
      uint64_t v = 12345;
      g_autoptr (GError) err = NULL;
      g_test_message ("size '%s'", rows[i].in);
      bool ok = df_parse_size (rows[i].in, &v, &err);
      g_assert_cmpint (ok, ==, rows[i].ok);
      if (ok)
        {
          g_assert_cmpuint (v, ==, rows[i].v);
          continue;
        }
      g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
      g_assert_nonnull (strstr (err->message, rows[i].msg));
      g_assert_cmpuint (v, ==, 12345);
    }
  g_autofree char *h = df_format_size (3 << 20);
  g_assert_cmpstr (h, ==, "3.0 MiB");
}

/* Syntax is df_parse_mac's; a device's MAC must be unicast. */
static void
test_device_macs (void)
{
  static const struct { const char *in, *msg; } rows[] = {
    { "52:54:00:12:34:56", NULL },
    { "02:00:00:00:00:01", NULL },   /* locally administered: fine */
    { "ff:ff:ff:ff:ff:ff", "is the broadcast address" },
    { "FFFF.FFFF.FFFF", "is the broadcast address" },
    { "00:00:00:00:00:00", "is all zeros" },
    { "000000000000", "is all zeros" },
    { "01:00:5e:00:00:01", "is a multicast address" },
    { "33:33:00:00:00:01", "is a multicast address" },
    { "03:00:00:00:00:00", "is a multicast address" },
    { "zz:00:00:00:00:00", "invalid MAC address" },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (rows); i++)
    {
      char out[18] = "";
      g_autoptr (GError) err = NULL;
      g_test_message ("device mac '%s'", rows[i].in);
      bool ok = df_parse_device_mac (rows[i].in, out, &err);
      g_assert_cmpint (ok, ==, rows[i].msg == NULL);
      if (ok)
        continue;
      g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
      g_assert_nonnull (strstr (err->message, rows[i].msg));
      g_assert_null (strchr (err->message, '\n'));
    }
  /* lookups still parse any MAC */
  char out[18];
  g_assert_true (df_parse_mac ("ff:ff:ff:ff:ff:ff", out, NULL));
}

static void
test_hosts (void)
{
  static const struct { const char *in, *msg; } rows[] = {
    { "10.0.0.11", NULL }, { "0.0.0.0", NULL }, { "255.255.255.255", NULL },
    { "::1", NULL }, { "fe80::1", NULL }, { "2001:db8::5", NULL },
    { "ss1", NULL }, { "ss1.example.com", NULL }, { "a-b.c0", NULL },
    { "1.example.com", NULL }, { "3com.net", NULL }, { "example.com.", NULL },
    { "", "empty" },
    { "999.1.1.1", "not a valid IPv4 address" },
    { "1.2.3", "not a valid IPv4 address" },
    { "1.2.3.4.5", "not a valid IPv4 address" },
    { "01.2.3.4", "not a valid IPv4 address" },
    { "256.0.0.1", "not a valid IPv4 address" },
    { "12345", "not a valid IPv4 address" },
    { "::g", "not a valid IPv6 address" },
    { "1.2.3.4:80", "not a valid IPv6 address" },
    { "a..b", "empty label" }, { ".a", "empty label" },
    { "-a.com", "starts or ends with '-'" },
    { "a-.com", "starts or ends with '-'" },
    { "a_b.com", "character '_' is not allowed" },
    { "a b", "character ' ' is not allowed" },
    { "caf\xc3\xa9.fr", "character '\xc3\xa9' is not allowed" },
    { "bad\xff.fr", "character byte 0xff is not allowed" },
    { "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com",
      "longer than 63" },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (rows); i++)
    {
      g_autoptr (GError) err = NULL;
      g_autofree char *esc = g_strescape (rows[i].in, NULL);
      g_test_message ("host '%s'", esc);
      bool ok = df_validate_host ("server address", rows[i].in, &err);
      g_assert_cmpint (ok, ==, rows[i].msg == NULL);
      if (ok)
        continue;
      g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
      g_assert_nonnull (strstr (err->message, rows[i].msg));
      g_assert_true (g_utf8_validate (err->message, -1, NULL));
    }
  g_autofree char *longest = g_strnfill (254, 'a');
  for (int i = 63; i < 254; i += 64)
    longest[i] = '.';
  g_assert_false (df_validate_host ("server address", longest, NULL));
}

/* Messages quote untrusted text without cutting a UTF-8 character. */
static void
test_display_text (void)
{
  g_autofree char *a = df_display_text ("\xc3\xa9\xc3\xa9\xc3\xa9", 2);
  g_assert_cmpstr (a, ==, "\xc3\xa9\xc3\xa9...");
  g_autofree char *b = df_display_text ("a\xff" "b\nc", 10);
  g_assert_cmpstr (b, ==, "a\xef\xbf\xbd" "b?c");
  g_autofree char *c = df_display_text ("short", 64);
  g_assert_cmpstr (c, ==, "short");

  /* a long name of 2-byte characters: the message is valid UTF-8 */
  GString *name = g_string_new (NULL);
  for (int i = 0; i < 200; i++)
    g_string_append (name, "\xc3\xa9");
  g_autoptr (GError) err = NULL;
  g_assert_false (df_validate_name ("device", name->str, &err));
  g_assert_true (g_utf8_validate (err->message, -1, NULL));
  g_assert_cmpuint (strlen (err->message), <, 300);
  g_clear_error (&err);
  g_assert_false (df_validate_name ("device", "pc\xc3\xa9", &err));
  g_assert_true (g_utf8_validate (err->message, -1, NULL));
  g_assert_nonnull (strstr (err->message, "character '\xc3\xa9' not allowed"));
  g_string_free (name, TRUE);
}

/* Empty or blank option values are refused, except where '' means none. */
static void
test_option_values (void)
{
  char *farm = NULL, *coll = NULL;
  char **listen = NULL;
  gint n = 0;
  const GOptionEntry entries[] = {
    { "farm", 0, 0, G_OPTION_ARG_FILENAME, &farm, "", "DIR" },
    { "collection", 0, 0, G_OPTION_ARG_STRING, &coll, "", "NAME" },
    { "listen", 0, 0, G_OPTION_ARG_STRING_ARRAY, &listen, "", "ADDR" },
    { "n", 0, 0, G_OPTION_ARG_INT, &n, "", "N" },
    G_OPTION_ENTRY_NULL
  };
  static const char *const none_ok[] = { "collection", NULL };
  static const struct { const char *args[3]; const char *msg; } rows[] = {
    { { NULL }, NULL },
    { { "--farm=/srv/farm", "--collection=", NULL }, NULL },
    { { "--farm=", NULL }, "option --farm: empty value" },
    { { "--farm=  ", NULL }, "option --farm: empty value" },
    { { "--collection= ", NULL }, "option --collection: empty value" },
    { { "--listen=a:1", "--listen=", NULL }, "option --listen: empty value" },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (rows); i++)
    {
      g_autoptr (GPtrArray) argv = g_ptr_array_new ();
      g_ptr_array_add (argv, (char *) "prog");
      for (int j = 0; j < 3 && rows[i].args[j]; j++)
        g_ptr_array_add (argv, (char *) rows[i].args[j]);
      int argc = (int) argv->len;
      char **av = (char **) argv->pdata;
      g_autoptr (GOptionContext) oc = g_option_context_new (NULL);
      g_option_context_add_main_entries (oc, entries, NULL);
      g_assert_true (g_option_context_parse (oc, &argc, &av, NULL));
      g_autoptr (GError) err = NULL;
      bool ok = df_options_check_values (entries, none_ok, &err);
      g_assert_cmpint (ok, ==, rows[i].msg == NULL);
      if (!ok)
        g_assert_cmpstr (err->message, ==, rows[i].msg);
      g_clear_pointer (&farm, g_free);
      g_clear_pointer (&coll, g_free);
      g_clear_pointer (&listen, g_strfreev);
    }
}

/* df_options_clear frees what parsing stored through the table (strings
 * and vectors, set back to NULL) and leaves other kinds as they are; a
 * kept copy of the table does the same. */
static void
test_option_clear (void)
{
  char *farm = NULL, *coll = NULL;
  char **listen = NULL;
  gint n = 0;
  gboolean flag = FALSE;
  const GOptionEntry entries[] = {
    { "farm", 0, 0, G_OPTION_ARG_FILENAME, &farm, "", "DIR" },
    { "collection", 0, 0, G_OPTION_ARG_STRING, &coll, "", "NAME" },
    { "listen", 0, 0, G_OPTION_ARG_STRING_ARRAY, &listen, "", "ADDR" },
    { "n", 0, 0, G_OPTION_ARG_INT, &n, "", "N" },
    { "flag", 0, 0, G_OPTION_ARG_NONE, &flag, "", NULL },
    G_OPTION_ENTRY_NULL
  };
  const char *args[] = { "prog", "--farm=/srv/farm", "--collection=lab",
                         "--listen=a:1", "--listen=b:2", "--n=7", "--flag" };
  for (int round = 0; round < 2; round++)
    {
      int argc = G_N_ELEMENTS (args);
      g_autofree char **av = g_memdup2 (args, sizeof args);
      char **avp = av;
      g_autoptr (GOptionContext) oc = g_option_context_new (NULL);
      g_option_context_add_main_entries (oc, entries, NULL);
      g_assert_true (g_option_context_parse (oc, &argc, &avp, NULL));
      g_assert_cmpstr (farm, ==, "/srv/farm");
      g_assert_cmpuint (g_strv_length (listen), ==, 2);
      g_autofree GOptionEntry *kept = round ? df_options_keep (entries) : NULL;
      df_options_clear (round ? kept : entries);
      g_assert_null (farm);
      g_assert_null (coll);
      g_assert_null (listen);
      g_assert_cmpint (n, ==, 7);
      g_assert_true (flag);
    }
  df_options_clear (NULL);
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

/* ---- diskfarm.conf ---------------------------------------------------- */

/* Malformed files: each refused with exactly this message. */
static void
test_conf_bad (void)
{
  static const struct { const char *text, *msg; } rows[] = {
    { "[streamsvc]\nnbd_listen=1.2.3.4:5\n",
      "t.conf:2: unknown key 'nbd_listen' in group [streamsvc]" },
    { "# c\n\n[streamsv]\nthreads=1\n", "t.conf:3: unknown group [streamsv]" },
    { "threads=1\n", "t.conf:1: key 'threads' before any [group]" },
    { "[farm]\njust words\n",
      "t.conf:2: not a [group], a key=value or a # comment: 'just words'" },
    { "[farm\n", "t.conf:1: malformed group header '[farm'" },
    { "[farm]\ndir=/a\n[streamsvc]\nthreads=2\n[farm]\ndir=/b\n",
      "t.conf:6: [farm] dir is already set on line 2" },
    { "[farm]\ndir=/a\n[streamsvc]\nfarm=/b\n",
      "t.conf:4: [streamsvc] farm and [farm] dir (line 2) are two spellings "
      "of one key" },
    { "[streamsvc]\nthreads=many\n",
      "t.conf:2: [streamsvc] threads: 'many' is not an integer from 0 to 256" },
    { "[streamsvc]\nthreads=257\n",
      "t.conf:2: [streamsvc] threads: '257' is not an integer from 0 to 256" },
    { "[streamsvc]\nthreads=-1\n",
      "t.conf:2: [streamsvc] threads: '-1' is not an integer from 0 to 256" },
    { "[streamsvc]\nthreads=4x\n",
      "t.conf:2: [streamsvc] threads: '4x' is not an integer from 0 to 256" },
    { "[streamsvc]\nthreads=\n",
      "t.conf:2: [streamsvc] threads: empty value (remove the line to get "
      "the default)" },
    { "[streamsvc]\nnbd-listen=127.0.0.1:0;1.2.3:80\n",
      "t.conf:2: [streamsvc] nbd-listen: invalid address '1.2.3:80': "
      "'1.2.3' is not an IP address" },
    { "[streamsvc]\nnbd-listen=127.0.0.1:0;;unix:/x\n",
      "t.conf:2: [streamsvc] nbd-listen: empty item in the list" },
    { "[streamsvc]\nadmin-listen=127.0.0.1:99999\n",
      "t.conf:2: [streamsvc] admin-listen: invalid address "
      "'127.0.0.1:99999': port '99999' is not a number in 0-65535" },
    { "[bootstrapsvc]\naddress=10.0.0.300\n",
      "t.conf:2: [bootstrapsvc] address: '10.0.0.300' is not an IPv4 "
      "address" },
    { "[bootstrapsvc]\naddress=::1\n",
      "t.conf:2: [bootstrapsvc] address: '::1' is not an IPv4 address" },
    { "[bootstrapsvc]\nchain-ipxe=yes\n",
      "t.conf:2: [bootstrapsvc] chain-ipxe: 'yes' is not true or false" },
    { "[bootstrapsvc]\nhealth-interval=50\n",
      "t.conf:2: [bootstrapsvc] health-interval: '50' is not an integer "
      "from 100 to 600000" },
    { "[bdm]\nserver[fr]=x\n", "t.conf:2: unknown key 'server[fr]' in group [bdm]" },
    { "[console]\nadmin = \n",
      "t.conf:2: [console] admin: empty value (remove the line to get the "
      "default)" },
    { "[farm]\ndir=\xff\n", "t.conf: not UTF-8 text" },
    { "[farm]\ndir=/a\\qb\n",
      "t.conf:2: [farm] dir: invalid escape sequence (write a backslash as "
      "\\\\)" },
    { "[bdm]\nserver=a;b\\q\n",
      "t.conf:2: [bdm] server: invalid escape sequence (write a backslash "
      "as \\\\)" },
    /* found by fuzz-conf: an escaped newline made a two-line message */
    { "[streamsvc]\nnbd-listen=:1;\\nix:/r\n",
      "t.conf:2: [streamsvc] nbd-listen: control character 0x0a in the "
      "value (escapes \\n, \\t, \\r are not allowed)" },
    { "[streamsvc]\nuser=a\\tb\n",
      "t.conf:2: [streamsvc] user: control character 0x09 in the value "
      "(escapes \\n, \\t, \\r are not allowed)" },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (rows); i++)
    {
      g_autoptr (GError) err = NULL;
      g_test_message ("conf %s", rows[i].text);
      g_autoptr (DfConf) c = df_conf_load_data (rows[i].text, "t.conf", &err);
      g_assert_null (c);
      g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
      g_assert_cmpstr (err->message, ==, rows[i].msg);
    }
}

/* Well-formed files: typed values, defaults, aliases, lines. */
static void
test_conf_good (void)
{
  g_autoptr (GError) err = NULL;
  g_autoptr (DfConf) c = df_conf_load_data (
    "# comment\n"
    "  [streamsvc]  \n"
    "farm = /srv/farm\n"
    "nbd-listen=127.0.0.1:0;unix:/run/x.sock\n"
    "threads = 8 \n"
    "admin-listen=none\n"
    "[bootstrapsvc]\n"
    "address=10.0.0.5\n"
    "no-proxydhcp=true\n"
    "[bdm]\n"
    "server=10.0.0.5;10.0.0.6:8080\n", "t.conf", &err);
  g_assert_no_error (err);
  g_assert_cmpstr (df_conf_string (c, "farm", "dir"), ==, "/srv/farm");
  g_assert_true (df_conf_is_set (c, "farm", "dir"));
  char *const *l = df_conf_list (c, "streamsvc", "nbd-listen");
  g_assert_cmpuint (g_strv_length ((char **) l), ==, 2);
  g_assert_cmpstr (l[1], ==, "unix:/run/x.sock");
  g_assert_null (df_conf_list (c, "streamsvc", "iscsi-listen"));
  g_assert_cmpint (df_conf_int (c, "streamsvc", "threads"), ==, 8);
  g_assert_cmpstr (df_conf_string (c, "streamsvc", "admin-listen"), ==,
                   "none");
  g_assert_true (df_conf_bool (c, "bootstrapsvc", "no-proxydhcp"));
  g_assert_false (df_conf_bool (c, "bootstrapsvc", "chain-ipxe"));
  g_assert_cmpint (df_conf_int (c, "bootstrapsvc", "http-port"), ==, 80);
  g_assert_false (df_conf_is_set (c, "bootstrapsvc", "http-port"));
  g_autofree char *t = df_conf_get_text (c, "bdm.server", &err);
  g_assert_cmpstr (t, ==, "10.0.0.5;10.0.0.6:8080");
  g_autofree char *t2 = df_conf_get_text (c, "streamsvc.farm", &err);
  g_assert_cmpstr (t2, ==, "/srv/farm");
  g_assert_null (df_conf_get_text (c, "bootstrapsvc.user", &err));
  g_assert_no_error (err);
  g_assert_null (df_conf_get_text (c, "farm.nodir", &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
  g_clear_error (&err);
  g_set_error (&err, DF_ERROR, DF_ERROR_INVALID, "bad server");
  df_conf_prefix_error (c, "bdm", "server", &err);
  g_assert_cmpstr (err->message, ==, "t.conf:11: [bdm] server: bad server");
}

/* An empty file gives every default; every default parses; every alias
 * points at a real key. */
static void
test_conf_defaults (void)
{
  g_autoptr (GError) err = NULL;
  g_autoptr (DfConf) c = df_conf_load_data ("", "empty", &err);
  g_assert_no_error (err);
  g_assert_cmpstr (df_conf_string (c, "farm", "dir"), ==, DF_DEFAULT_FARM);
  g_assert_cmpstr (df_conf_list (c, "streamsvc", "nbd-listen")[0], ==,
                   DF_NBD_DEFAULT_LISTEN);
  g_assert_cmpint (df_conf_int (c, "bootstrapsvc", "pxe-port"), ==, 4011);
  g_assert_null (df_conf_string (c, "bootstrapsvc", "address"));
  for (const DfConfKey *k = df_conf_schema; k->group != NULL; k++)
    {
      g_assert_nonnull (k->help);
      g_assert_true (df_conf_key_find (k->group, k->key) == k);
      if (k->alias_of != NULL)
        {
          g_free (df_conf_get_text (c, k->alias_of, &err));
          g_assert_no_error (err);
        }
    }
}

/* The file in force: --config, then $DISKFARM_CONFIG, then the default;
 * a missing default is fine, a missing explicit file is not. */
static void
test_conf_files (void)
{
  g_autoptr (GError) err = NULL;
  g_autofree char *dir = g_dir_make_tmp ("df-conf-XXXXXX", NULL);
  g_autofree char *path = g_build_filename (dir, "d.conf", NULL);
  g_autofree char *missing = g_build_filename (dir, "none.conf", NULL);
  g_assert_true (g_file_set_contents (path, "[farm]\ndir=/x\n", -1, NULL));
  bool expl;

  g_unsetenv ("DISKFARM_CONFIG");
  g_assert_cmpstr (df_conf_choose_path (NULL, &expl), ==, DF_DEFAULT_CONFIG);
  g_assert_false (expl);
  g_setenv ("DISKFARM_CONFIG", path, TRUE);
  g_assert_cmpstr (df_conf_choose_path (NULL, &expl), ==, path);
  g_assert_true (expl);
  g_autoptr (DfConf) c = df_conf_load (NULL, &err);
  g_assert_no_error (err);
  g_assert_cmpstr (df_conf_string (c, "farm", "dir"), ==, "/x");
  g_assert_cmpstr (df_conf_file (c), ==, path);

  g_assert_null (df_conf_load (missing, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
  g_autofree char *want = g_strdup_printf (
    "configuration file %s does not exist", missing);
  g_assert_cmpstr (err->message, ==, want);
  g_clear_error (&err);
  g_setenv ("DISKFARM_CONFIG", missing, TRUE);
  g_assert_null (df_conf_load (NULL, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
  g_clear_error (&err);
  g_unsetenv ("DISKFARM_CONFIG");
  g_unlink (path);
  g_rmdir (dir);
}

/* A connected TCP pair on loopback: *srv is the accepted end. */
static void
tcp_pair (int *cli, int *srv)
{
  struct sockaddr_in a = { .sin_family = AF_INET,
                           .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  socklen_t len = sizeof a;
  int l = socket (AF_INET, SOCK_STREAM, 0);

  g_assert_cmpint (l, >=, 0);
  g_assert_cmpint (bind (l, (struct sockaddr *) &a, sizeof a), ==, 0);
  g_assert_cmpint (listen (l, 1), ==, 0);
  g_assert_cmpint (getsockname (l, (struct sockaddr *) &a, &len), ==, 0);
  *cli = socket (AF_INET, SOCK_STREAM, 0);
  g_assert_cmpint (connect (*cli, (struct sockaddr *) &a, sizeof a), ==, 0);
  *srv = accept (l, NULL, NULL);
  g_assert_cmpint (*srv, >=, 0);
  close (l);
}

static int
get_int (int fd, int level, int name)
{
  int v = -1;
  socklen_t len = sizeof v;

  g_assert_cmpint (getsockopt (fd, level, name, &v, &len), ==, 0);
  return v;
}

/* The kernel holds what df_tcp_set_keepalive derives from its one knob. */
static void
test_keepalive (void)
{
  static const struct {
    guint timeout_s;
    int idle, intvl, user_ms;
  } cases[] = {
    { DF_TCP_KEEPALIVE_DEFAULT, 10, 5, 30000 },
    { 6, 2, 1, 6000 },
    { 3600, 1200, 600, 3600000 },
  };
  int cli, srv;
  g_autoptr (GError) err = NULL;

  tcp_pair (&cli, &srv);
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_assert_true (df_tcp_set_keepalive (srv, cases[i].timeout_s, &err));
      g_assert_cmpint (get_int (srv, SOL_SOCKET, SO_KEEPALIVE), ==, 1);
      g_assert_cmpint (get_int (srv, IPPROTO_TCP, TCP_KEEPIDLE), ==,
                       cases[i].idle);
      g_assert_cmpint (get_int (srv, IPPROTO_TCP, TCP_KEEPINTVL), ==,
                       cases[i].intvl);
      g_assert_cmpint (get_int (srv, IPPROTO_TCP, TCP_KEEPCNT), ==,
                       DF_TCP_KEEPALIVE_PROBES);
      g_assert_cmpint (get_int (srv, IPPROTO_TCP, TCP_USER_TIMEOUT), ==,
                       cases[i].user_ms);
      /* probes + their intervals fit in the timeout given */
      g_assert_cmpint (cases[i].idle + DF_TCP_KEEPALIVE_PROBES
                       * cases[i].intvl, <=, (int) cases[i].timeout_s);
    }
  g_assert_true (df_tcp_set_keepalive (srv, 0, &err));
  g_assert_cmpint (get_int (srv, SOL_SOCKET, SO_KEEPALIVE), ==, 0);
  g_assert_cmpint (get_int (srv, IPPROTO_TCP, TCP_USER_TIMEOUT), ==, 0);
  close (cli);
  close (srv);
}

static void
test_keepalive_range (void)
{
  static const struct {
    gint64 v;
    bool ok;
  } cases[] = {
    { 0, true }, { 6, true }, { 30, true }, { 86400, true }, { 1, false },
    { 5, false }, { -1, false }, { 86401, false }, { G_MAXINT64, false },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GError) err = NULL;
      g_assert_cmpint (df_check_tcp_keepalive (cases[i].v, &err), ==,
                       cases[i].ok);
      if (!cases[i].ok)
        g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
    }
}

/* A flood logs one line, the next interval's line counts what was left
 * out. */
static void
test_log_limit (void)
{
  DfLogLimit l = { 0 };
  guint suppressed = 99;

  g_assert_true (df_log_limit_pass (&l, &suppressed));
  g_assert_cmpuint (suppressed, ==, 0);
  for (int i = 0; i < 1000; i++)
    g_assert_false (df_log_limit_pass (&l, &suppressed));
  l.next_us = g_get_monotonic_time (); /* the interval is over */
  g_assert_true (df_log_limit_pass (&l, &suppressed));
  g_assert_cmpuint (suppressed, ==, 1000);
  g_assert_false (df_log_limit_pass (&l, &suppressed));
}

static const TuTest tests[] = {
  { "/common/sizes", test_sizes },
  { "/common/macs", test_macs },
  { "/common/device-macs", test_device_macs },
  { "/common/hosts", test_hosts },
  { "/common/display-text", test_display_text },
  { "/common/option-values", test_option_values },
  { "/common/option-clear", test_option_clear },
  { "/common/names", test_names },
  { "/common/listen", test_listen },
  { "/common/sha256", test_sha256 },
  { "/common/conf/bad", test_conf_bad },
  { "/common/conf/good", test_conf_good },
  { "/common/conf/defaults", test_conf_defaults },
  { "/common/conf/files", test_conf_files },
  { "/common/tcp-keepalive", test_keepalive },
  { "/common/tcp-keepalive-range", test_keepalive_range },
  { "/common/log-limit", test_log_limit },
};

TU_MAIN (tests)
