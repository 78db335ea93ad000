/* Unit tests: isobuild (paths, determinism, epoch) and bdm (server specs,
 * static address, script and config rendering).  Table-driven, malformed
 * input included. */
#include "bdm.h"
#include "isobuild.h"
#include "test-util.h"

#include <glib/gstdio.h>
#include <string.h>

static void
test_bad_paths (void)
{
  static const char *bad[] = { "", "/abs", "a//b", "../x", "a/./b", "a/..",
                               "dir/", NULL };
  g_autoptr(IsoBuild) b = isobuild_new (NULL);
  g_assert_nonnull (b);
  for (guint i = 0; bad[i] != NULL; i++)
    {
      g_autoptr(GError) err = NULL;
      g_assert_false (isobuild_add_data (b, bad[i], "x", 1, &err));
      g_assert_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_PATH);
    }
  g_autoptr(GError) err = NULL;
  g_assert_true (isobuild_add_data (b, "d/f", "x", 1, &err));
  g_assert_false (isobuild_add_data (b, "d/f", "y", 1, &err));
  g_assert_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_PATH);
  g_clear_error (&err);
  g_assert_false (isobuild_add_data (b, "d/f/g", "y", 1, &err));  /* f is a file */
  g_assert_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_PATH);
  g_clear_error (&err);
  g_assert_false (isobuild_add_file (b, "h", "/nonexistent/file", &err));
  g_assert_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_INPUT);
  g_clear_error (&err);
  g_assert_false (isobuild_add_file (b, "h", "/tmp", &err));       /* a dir */
  g_assert_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_INPUT);
}

/* Build a small ISO from memory (files added in the given order). */
static GBytes *
build (const char *const *names, gint64 epoch, const char *dir)
{
  g_autoptr(IsoBuild) b = isobuild_new (NULL);
  for (guint i = 0; names[i] != NULL; i++)
    g_assert_true (isobuild_add_data (b, names[i], names[i],
                                      strlen (names[i]), NULL));
  g_autofree char *out = g_build_filename (dir, "t.iso", NULL);
  IsoBuildOpts o = { .volume_id = "UNIT", .epoch = epoch };
  g_autoptr(GError) err = NULL;
  g_assert_true (isobuild_write (b, &o, out, &err));
  g_assert_no_error (err);
  char *data = NULL;
  gsize len = 0;
  g_assert_true (g_file_get_contents (out, &data, &len, NULL));
  g_unlink (out);
  return g_bytes_new_take (data, len);
}

static void
test_deterministic (void)
{
  g_autofree char *dir = g_dir_make_tmp ("test-isobuild-XXXXXX", NULL);
  const char *order1[] = { "b/two", "a/one", "c", NULL };
  const char *order2[] = { "c", "a/one", "b/two", NULL };
  g_autoptr(GBytes) x = build (order1, 1700000000, dir);
  g_usleep (1100 * 1000);            /* a second later: same bytes */
  g_autoptr(GBytes) y = build (order1, 1700000000, dir);
  g_autoptr(GBytes) z = build (order1, 1700000001, dir);
  g_autoptr(GBytes) w = build (order2, 1700000000, dir);
  g_assert_true (g_bytes_equal (x, y));
  g_assert_false (g_bytes_equal (x, z));
  /* directory records are sorted whatever the insertion order */
  g_assert_cmpuint (g_bytes_get_size (x), ==, g_bytes_get_size (w));
  const char *d = g_bytes_get_data (x, NULL);
  g_assert_cmpmem (d + 16 * 2048 + 1, 5, "CD001", 5);   /* PVD */
  g_assert_cmpmem (d + 16 * 2048 + 813, 16, "2023111422132000", 16);
  g_rmdir (dir);
}

static void
test_epoch (void)
{
  static const struct { const char *v; bool ok; gint64 want; } t[] = {
    { "1700000000", true, 1700000000 }, { "0", true, 0 },
    { "", true, ISOBUILD_EPOCH_DEFAULT }, { "abc", false, 0 },
    { "-1", false, 0 }, { "12x", false, 0 }, { "99999999999999", false, 0 },
  };
  for (guint i = 0; i < G_N_ELEMENTS (t); i++)
    {
      g_setenv ("SOURCE_DATE_EPOCH", t[i].v, TRUE);
      gint64 e = -5;
      g_autoptr(GError) err = NULL;
      g_assert_cmpint (isobuild_default_epoch (&e, &err), ==, t[i].ok);
      if (t[i].ok)
        g_assert_cmpint (e, ==, t[i].want);
      else
        g_assert_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_INPUT);
    }
  g_unsetenv ("SOURCE_DATE_EPOCH");
}

static void
test_server_specs (void)
{
  static const struct {
    const char *spec; bool ok; const char *host; guint16 port;
  } t[] = {
    { "10.0.0.1", true, "10.0.0.1", 80 },
    { "10.0.0.1:8080", true, "10.0.0.1", 8080 },
    { "boot.example.org:81", true, "boot.example.org", 81 },
    { "[fd00::1]:82", true, "[fd00::1]", 82 },
    { "[fd00::1]", true, "[fd00::1]", 80 },
    { "10.0.0.1:0", false, NULL, 0 }, { "10.0.0.1:65536", false, NULL, 0 },
    { "10.0.0.1:", false, NULL, 0 }, { ":80", false, NULL, 0 },
    { "", false, NULL, 0 }, { "a b", false, NULL, 0 },
    { "fd00::1", false, NULL, 0 }, { "[fd00::1", false, NULL, 0 },
    { "[fd00::1]x", false, NULL, 0 }, { "h/ost", false, NULL, 0 },
    { "h$x", false, NULL, 0 }, { "10.0.0.1:80x", false, NULL, 0 },
    /* the farm's host rule (df_validate_host) */
    { "999.1.1.1", false, NULL, 0 }, { "999.1.1.1:80", false, NULL, 0 },
    { "ss_1.lan", false, NULL, 0 }, { "-ss.lan", false, NULL, 0 },
    { "[fd00::1::2]", false, NULL, 0 }, { "[10.0.0.1]", false, NULL, 0 },
    { "[]", false, NULL, 0 },
  };
  for (guint i = 0; i < G_N_ELEMENTS (t); i++)
    {
      BdmConfig c;
      g_assert_true (bdm_config_init (&c, NULL));
      g_autoptr(GError) err = NULL;
      bool ok = bdm_config_add_server (&c, t[i].spec, 80, 3260, &err);
      if (ok != t[i].ok)
        g_error ("'%s': expected %s", t[i].spec, t[i].ok ? "ok" : "error");
      if (ok)
        {
          g_assert_cmpstr (c.servers[0].host, ==, t[i].host);
          g_assert_cmpuint (c.servers[0].http_port, ==, t[i].port);
        }
      else
        g_assert_error (err, BDM_ERROR, BDM_ERROR_INVALID);
      bdm_config_clear (&c);
    }
  BdmConfig c;
  g_assert_true (bdm_config_init (&c, NULL));
  for (int i = 0; i < 4; i++)
    g_assert_true (bdm_config_add_server (&c, "10.0.0.1", 80, 3260, NULL));
  g_autoptr(GError) err = NULL;
  g_assert_false (bdm_config_add_server (&c, "10.0.0.5", 80, 3260, &err));
  g_assert_error (err, BDM_ERROR, BDM_ERROR_INVALID);
  bdm_config_clear (&c);
}

static void
test_static_ip (void)
{
  static const struct { const char *v; bool ok; } t[] = {
    { "10.0.0.5/24", true }, { "10.0.0.5/32", true }, { "10.0.0.5", false },
    { "10.0.0.5/0", false }, { "10.0.0.5/33", false }, { "10.0.0.5/", false },
    { "10.0.0.5/2x", false }, { "fd00::1/64", false }, { "x/24", false },
    { "10.0.0.256/24", false },
  };
  for (guint i = 0; i < G_N_ELEMENTS (t); i++)
    {
      BdmConfig c;
      g_assert_true (bdm_config_init (&c, NULL));
      g_autoptr(GError) err = NULL;
      if (bdm_config_set_ip (&c, t[i].v, &err) != t[i].ok)
        g_error ("'%s': expected %s", t[i].v, t[i].ok ? "ok" : "error");
      bdm_config_clear (&c);
    }
}

static void
test_script (void)
{
  BdmConfig c;
  g_assert_true (bdm_config_init (&c, NULL));
  g_autoptr(GError) err = NULL;
  g_assert_false (bdm_config_check (&c, &err));        /* no server */
  g_clear_error (&err);
  g_assert_true (bdm_config_add_server (&c, "10.0.0.1:8080", 80, 3260, NULL));
  g_assert_true (bdm_config_add_server (&c, "10.0.0.2", 80, 3261, NULL));
  c.retries = 2;
  c.local_fallback = true;
  g_assert_true (bdm_config_check (&c, NULL));
  g_autofree char *s = bdm_render_script (&c);
  g_assert_true (g_str_has_prefix (s, "#!ipxe\n"));
  const char *a = strstr (s, "chain --replace --autofree http://10.0.0.1:8080/"
                          "boot.ipxe?mac=${net0/mac}&uuid=${uuid}");
  const char *b = strstr (s, "http://10.0.0.2/boot.ipxe");
  const char *d = strstr (s, "sanboot iscsi:10.0.0.1::3260:1:iqn.2026-11.org."
                          "diskfarm:${net0/mac:hexhyp} iscsi:10.0.0.2::3261:1:");
  const char *l = strstr (s, "sanboot --no-describe --drive 0x80");
  g_assert_true (a && b && d && l && a < b && b < d && d < l);
  g_assert_nonnull (strstr (b + 1, "http://10.0.0.2/boot.ipxe"));  /* round 2 */
  /* DHCP alone: a bare `dhcp` (= `ifconf`) waits for IPv6 routers too */
  g_assert_nonnull (strstr (s, "\nifconf -c dhcp net0 && goto net_ok ||\n"));
  g_assert_null (strstr (s, "\ndhcp "));
  c.gateway = g_strdup ("10.0.0.254");
  g_assert_false (bdm_config_check (&c, &err));         /* gateway w/o ip */
  g_clear_error (&err);
  g_assert_true (bdm_config_set_ip (&c, "10.0.0.50/23", NULL));
  g_assert_true (bdm_config_check (&c, NULL));
  g_autofree char *s2 = bdm_render_script (&c);
  g_assert_nonnull (strstr (s2, "set net0/netmask 255.255.254.0\n"));
  g_assert_null (strstr (s2, "dhcp net0"));
  c.timeout_s = 3;
  g_autofree char *cfg = bdm_render_syslinux_cfg (&c, "/diskfarm");
  g_assert_nonnull (strstr (cfg, "TIMEOUT 30\n"));
  g_assert_nonnull (strstr (cfg, "KERNEL /diskfarm/ipxe.lkrn\n"
                            "  INITRD /diskfarm/boot.ipxe\n"));
  bdm_config_clear (&c);
}

static const TuTest tests[] = {
  { "/isobuild/bad-paths", test_bad_paths },
  { "/isobuild/deterministic", test_deterministic },
  { "/isobuild/epoch", test_epoch },
  { "/bdm/server-specs", test_server_specs },
  { "/bdm/static-ip", test_static_ip },
  { "/bdm/script", test_script },
};

TU_MAIN (tests)
