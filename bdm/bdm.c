/* bdm: configuration, iPXE script and syslinux config rendering, ISO. */
#include "bdm.h"
#include "isobuild.h"
#include "common.h"

#include <errno.h>
#include <gio/gio.h>
#include <string.h>
#include <unistd.h>

G_DEFINE_QUARK (bdm-error-quark, bdm_error)

bool
bdm_config_init (BdmConfig *c, GError **err)
{
  memset (c, 0, sizeof *c);
  c->retries = 1;
  c->ipxe_dir = g_strdup ("/usr/lib/ipxe");
  c->isolinux_dir = g_strdup ("/usr/lib/ISOLINUX");
  c->syslinux_dir = g_strdup ("/usr/lib/syslinux");
  if (!isobuild_default_epoch (&c->epoch, err))
    {
      (*err)->domain = BDM_ERROR;
      (*err)->code = BDM_ERROR_INVALID;
      return false;
    }
  return true;
}

void
bdm_config_clear (BdmConfig *c)
{
  for (guint i = 0; i < c->n_servers; i++)
    g_free (c->servers[i].host);
  g_free (c->ip);
  g_free (c->gateway);
  g_free (c->dns);
  g_free (c->ipxe_dir);
  g_free (c->isolinux_dir);
  g_free (c->syslinux_dir);
  memset (c, 0, sizeof *c);
}

/* A host for the iPXE URL and script: the farm's rule (df_validate_host:
 * IP literal or RFC 1123 name), so no spaces, quotes, '$' or '/'.  host is
 * "[v6]" when v6. */
static bool
host_ok (const char *host, bool v6, GError **err)
{
  g_autofree char *bare = v6 ? g_strndup (host + 1, strlen (host) - 2)
                             : g_strdup (host);
  if (v6 && strchr (bare, ':') == NULL)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "'%s' in brackets is not an IPv6 address", bare);
      return false;
    }
  return df_validate_host ("server address", bare, err);
}

static bool
parse_port (const char *s, guint16 *out)
{
  char *end = NULL;
  errno = 0;
  guint64 v = g_ascii_strtoull (s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v == 0 || v > 65535)
    return false;
  *out = (guint16) v;
  return true;
}

bool
bdm_config_add_server (BdmConfig *c, const char *spec, guint16 default_http,
                       guint16 iscsi_port, GError **err)
{
  if (c->n_servers == BDM_MAX_SERVERS)
    {
      g_set_error (err, BDM_ERROR, BDM_ERROR_INVALID,
                   "at most %d servers (failover order), '%s' is one too "
                   "many", BDM_MAX_SERVERS, spec);
      return false;
    }
  g_autofree char *host = NULL;
  g_autoptr (GError) why = NULL;
  guint16 port = default_http;
  const char *colon = strrchr (spec, ':');
  bool v6 = spec[0] == '[';
  if (v6)
    {
      const char *close = strchr (spec, ']');
      if (close == NULL || (close[1] != '\0' && close[1] != ':')
          || (close[1] == ':' && !parse_port (close + 2, &port)))
        goto bad;
      host = g_strndup (spec, close - spec + 1);
    }
  else if (colon != NULL)
    {
      if (!parse_port (colon + 1, &port))
        goto bad;
      host = g_strndup (spec, colon - spec);
    }
  else
    host = g_strdup (spec);
  if (!v6 && strchr (host, ':') != NULL)
    goto bad;
  if (!host_ok (host, v6, &why))
    {
      g_set_error (err, BDM_ERROR, BDM_ERROR_INVALID, "bad server '%s': %s",
                   spec, why->message);
      return false;
    }
  BdmServer *s = &c->servers[c->n_servers++];
  s->host = g_steal_pointer (&host);
  s->http_port = port;
  s->iscsi_port = iscsi_port;
  return true;
bad:
  g_set_error (err, BDM_ERROR, BDM_ERROR_INVALID,
               "bad server '%s': expected HOST[:PORT] or [IPV6][:PORT]", spec);
  return false;
}

bool
bdm_config_set_ip (BdmConfig *c, const char *cidr, GError **err)
{
  const char *slash = strchr (cidr, '/');
  g_autofree char *addr = slash ? g_strndup (cidr, slash - cidr)
                                : g_strdup (cidr);
  g_autoptr(GInetAddress) a = g_inet_address_new_from_string (addr);
  char *end = NULL;
  guint64 prefix = slash ? g_ascii_strtoull (slash + 1, &end, 10) : 0;
  if (a == NULL || g_inet_address_get_family (a) != G_SOCKET_FAMILY_IPV4
      || slash == NULL || end == slash + 1 || *end != '\0' || prefix < 1
      || prefix > 32)
    {
      g_set_error (err, BDM_ERROR, BDM_ERROR_INVALID,
                   "bad static address '%s': expected A.B.C.D/PREFIX "
                   "(PREFIX 1-32)", cidr);
      return false;
    }
  g_free (c->ip);
  c->ip = g_steal_pointer (&addr);
  c->prefix = (guint) prefix;
  return true;
}

static bool
check_ipv4 (const char *what, const char *s, GError **err)
{
  g_autoptr(GInetAddress) a = s ? g_inet_address_new_from_string (s) : NULL;
  if (a != NULL && g_inet_address_get_family (a) == G_SOCKET_FAMILY_IPV4)
    return true;
  g_set_error (err, BDM_ERROR, BDM_ERROR_INVALID,
               "bad %s '%s': expected an IPv4 address", what, s);
  return false;
}

bool
bdm_config_check (const BdmConfig *c, GError **err)
{
  if (c->n_servers == 0)
    {
      g_set_error (err, BDM_ERROR, BDM_ERROR_INVALID,
                   "no server: give --server HOST[:PORT] (up to 4) or a "
                   "farm whose servers table is not empty");
      return false;
    }
  if (c->ip == NULL && (c->gateway != NULL || c->dns != NULL))
    {
      g_set_error (err, BDM_ERROR, BDM_ERROR_INVALID,
                   "--gateway and --dns need a static --ip");
      return false;
    }
  if (c->gateway != NULL && !check_ipv4 ("gateway", c->gateway, err))
    return false;
  if (c->dns != NULL && !check_ipv4 ("DNS server", c->dns, err))
    return false;
  if (c->retries < 1 || c->retries > 100 || c->timeout_s > 3600)
    {
      g_set_error (err, BDM_ERROR, BDM_ERROR_INVALID,
                   "--retries must be 1-100 and --timeout 0-3600 seconds");
      return false;
    }
  return true;
}

/* ---- rendering ---------------------------------------------------------- */

static char *
netmask_of (guint prefix)
{
  guint32 m = prefix == 0 ? 0 : 0xffffffffu << (32 - prefix);
  return g_strdup_printf ("%u.%u.%u.%u", m >> 24, (m >> 16) & 255,
                          (m >> 8) & 255, m & 255);
}

static void
render_network (GString *s, const BdmConfig *c)
{
  if (c->ip == NULL)
    {
      /* `ifconf -c dhcp`, not `dhcp`: in iPXE `dhcp` is a synonym of a
       * bare `ifconf`, which also runs IPv6 autoconfiguration and waits
       * for it; without a router on the LAN its router solicitations time
       * out only after about 12.7 s, on every boot. */
      g_string_append (s, "echo diskfarm: DHCP on net0\n");
      for (guint r = 0; r < c->retries; r++)
        g_string_append (s, "ifconf -c dhcp net0 && goto net_ok ||\n");
      g_string_append (s, "echo diskfarm: DHCP failed\ngoto no_server\n");
    }
  else
    {
      g_autofree char *mask = netmask_of (c->prefix);
      g_string_append_printf (s, "echo diskfarm: static address %s/%u\n"
                              "ifopen net0 ||\n"
                              "set net0/ip %s\nset net0/netmask %s\n",
                              c->ip, c->prefix, c->ip, mask);
      if (c->gateway != NULL)
        g_string_append_printf (s, "set net0/gateway %s\n", c->gateway);
      if (c->dns != NULL)
        g_string_append_printf (s, "set dns %s\n", c->dns);
    }
  g_string_append (s, ":net_ok\n");
  if (c->verbose)
    g_string_append (s, "ifstat\nroute\n");
}

static char *
http_base (const BdmServer *sv)
{
  if (sv->http_port == 80)
    return g_strdup_printf ("http://%s", sv->host);
  return g_strdup_printf ("http://%s:%u", sv->host, sv->http_port);
}

/* One round: every bootstrap server in order (chain --replace does not
 * return on success). */
static void
render_bootstrap_round (GString *s, const BdmConfig *c, guint round)
{
  for (guint i = 0; i < c->n_servers; i++)
    {
      g_autofree char *base = http_base (&c->servers[i]);
      if (c->verbose)
        g_string_append_printf (s, "echo diskfarm: round %u, bootstrap %s\n",
                                round + 1, base);
      g_string_append_printf (s, "chain --replace --autofree %s/boot.ipxe?"
                              "mac=${net0/mac}&uuid=${uuid}&media=bdm ||\n",
                              base);
    }
}

static void
render_direct (GString *s, const BdmConfig *c)
{
  g_string_append (s, "echo diskfarm: no bootstrap server answered, "
                   "booting the stream servers directly\n");
  GString *uris = g_string_new (NULL);
  for (guint i = 0; i < c->n_servers; i++)
    g_string_append_printf (uris, " iscsi:%s::%u:1:" DF_IQN_PREFIX
                            "${net0/mac:hexhyp}", c->servers[i].host,
                            c->servers[i].iscsi_port);
  for (guint r = 0; r < c->retries; r++)
    g_string_append_printf (s, "sanboot%s ||\n", uris->str);
  g_string_free (uris, TRUE);
}

static void
render_tail (GString *s, const BdmConfig *c)
{
  g_string_append (s, ":no_server\n");
  if (c->local_fallback)
    g_string_append (s, "echo diskfarm: no server answered, booting the "
                     "local disk\nsanboot --no-describe --drive 0x80 ||\n");
  g_string_append (s, "echo diskfarm: boot failed, restarting in 30 s\n"
                   "sleep 30\nreboot\n");
}

char *
bdm_render_script (const BdmConfig *c)
{
  GString *s = g_string_new ("#!ipxe\n"
                             "# diskfarm boot media (bdm), generated: "
                             "bootstrap servers in failover order,\n"
                             "# then the stream servers' iSCSI targets.\n");
  for (guint i = 0; i < c->n_servers; i++)
    g_string_append_printf (s, "# server %u: %s http %u iscsi %u\n", i + 1,
                            c->servers[i].host, c->servers[i].http_port,
                            c->servers[i].iscsi_port);
  render_network (s, c);
  for (guint r = 0; r < c->retries; r++)
    render_bootstrap_round (s, c, r);
  render_direct (s, c);
  render_tail (s, c);
  return g_string_free (s, FALSE);
}

char *
bdm_render_syslinux_cfg (const BdmConfig *c, const char *dir)
{
  GString *s = g_string_new ("# diskfarm boot media (bdm), generated\n"
                             "SERIAL 0 115200\nDEFAULT diskfarm\n");
  if (c->timeout_s > 0)
    g_string_append_printf (s, "PROMPT 1\nTIMEOUT %u\n"
                            "SAY diskfarm: 'diskfarm' (default) or 'local', "
                            "%u s\n", c->timeout_s * 10, c->timeout_s);
  else
    g_string_append (s, "PROMPT 0\n");
  g_string_append_printf (s, "LABEL diskfarm\n  KERNEL %s/ipxe.lkrn\n"
                          "  INITRD %s/boot.ipxe\n", dir, dir);
  g_string_append (s, "LABEL local\n  LOCALBOOT 0x80\n");
  return g_string_free (s, FALSE);
}

/* ---- payloads ----------------------------------------------------------- */

char *
bdm_payload (const char *dir, const char *name, const char *package,
             GError **err)
{
  char *p = g_build_filename (dir, name, NULL);
  if (access (p, R_OK) == 0 && g_file_test (p, G_FILE_TEST_IS_REGULAR))
    return p;
  g_set_error (err, BDM_ERROR, BDM_ERROR_MISSING,
               "missing boot file %s (install the Debian package '%s' or "
               "point bdm at another directory)", p, package);
  g_free (p);
  return NULL;
}

bool
bdm_mbr_code (const BdmConfig *c, char **code, gsize *len, GError **err)
{
  g_autofree char *dir = g_build_filename (c->syslinux_dir, "mbr", NULL);
  g_autofree char *path = bdm_payload (dir, "mbr.bin", "syslinux-common",
                                       err);
  g_autofree char *data = NULL;
  if (path == NULL || !g_file_get_contents (path, &data, len, err))
    return false;
  if (*len == 0 || *len > 440)
    {
      g_set_error (err, BDM_ERROR, BDM_ERROR_MISSING,
                   "%s is %zu bytes: not a syslinux MBR (at most 440)", path,
                   *len);
      return false;
    }
  *code = g_steal_pointer (&data);
  return true;
}

/* ---- ISO ------------------------------------------------------------------ */

static bool
add_payload (IsoBuild *b, const char *iso_path, const char *dir,
             const char *name, const char *pkg, GError **err)
{
  g_autofree char *p = bdm_payload (dir, name, pkg, err);
  return p != NULL && isobuild_add_file (b, iso_path, p, err);
}

static bool
add_text (IsoBuild *b, const char *iso_path, char *text, GError **err)
{
  g_autofree char *t = text;
  return isobuild_add_data (b, iso_path, t, strlen (t), err);
}

static bool
add_efi (IsoBuild *b, const BdmConfig *c, GError **err)
{
  g_autofree char *efi = bdm_payload (c->ipxe_dir, "ipxe.efi", "ipxe", err);
  if (efi == NULL)
    return false;
  g_autoptr(GBytes) img = isobuild_make_efi_image (efi, c->epoch, err);
  gsize len = 0;
  return img != NULL
         && isobuild_add_data (b, "efi/efiboot.img",
                               g_bytes_get_data (img, &len),
                               g_bytes_get_size (img), err);
}

static void
to_bdm_error (GError **err)
{
  if (err != NULL && *err != NULL && (*err)->domain == ISOBUILD_ERROR)
    {
      bool missing = (*err)->code == ISOBUILD_ERROR_INPUT;
      (*err)->domain = BDM_ERROR;
      (*err)->code = missing ? BDM_ERROR_MISSING : BDM_ERROR_IO;
    }
}

bool
bdm_make_iso (const BdmConfig *c, const char *out, GError **err)
{
  if (!bdm_config_check (c, err))
    return false;
  g_autofree char *mbr = bdm_payload (c->isolinux_dir, "isohdpfx.bin",
                                      "isolinux", err);
  g_autoptr(IsoBuild) b = mbr ? isobuild_new (err) : NULL;
  g_autofree char *mods = g_build_filename (c->syslinux_dir, "modules",
                                            "bios", NULL);
  bool ok = b != NULL
    && add_payload (b, "isolinux/isolinux.bin", c->isolinux_dir,
                    "isolinux.bin", "isolinux", err)
    && add_payload (b, "isolinux/ldlinux.c32", mods, "ldlinux.c32",
                    "syslinux-common", err)
    && add_payload (b, "diskfarm/ipxe.lkrn", c->ipxe_dir, "ipxe.lkrn",
                    "ipxe", err)
    && add_text (b, "isolinux/isolinux.cfg",
                 bdm_render_syslinux_cfg (c, "/diskfarm"), err)
    && add_text (b, "diskfarm/boot.ipxe", bdm_render_script (c), err)
    && (!c->efi || add_efi (b, c, err));
  IsoBuildOpts o = {
    .volume_id = "DISKFARM_BDM", .bios_boot = "isolinux/isolinux.bin",
    .boot_catalog = "isolinux/boot.cat", .hybrid_mbr = mbr,
    .efi_boot = c->efi ? "efi/efiboot.img" : NULL, .epoch = c->epoch,
  };
  ok = ok && isobuild_write (b, &o, out, err);
  to_bdm_error (err);
  return ok;
}
