/* diskfarm console: `bootstrap sync|dhcp-config` and `farm set|show`.
 *
 * bootstrap sync copies Debian's iPXE binaries into <farm>/boot/ (each
 * through a temporary file and a rename, so a TFTP or HTTP transfer in
 * progress keeps the old file whole).  bootstrap dhcp-config prints what to
 * put into the site's DHCP server instead of running ProxyDHCP.  farm set
 * auto-add decides what the bootstrap service does with unknown MACs. */
#include "console.h"
#include "defaults.h"

#include <errno.h>
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>

#define IPXE_DIR "/usr/lib/ipxe"

static const char *const boot_files[] = {
  DF_BOOT_FILE_BIOS, DF_BOOT_FILE_EFI, "ipxe.lkrn", NULL
};

/* ---- bootstrap sync --------------------------------------------------- */

/* Copy src to dir/name through dir/.name.tmp (df_store_publish). */
static bool
copy_boot_file (const char *src, const char *dir, const char *name,
                GError **err)
{
  g_autofree char *dst = g_build_filename (dir, name, NULL);
  g_autofree char *tmpname = g_strdup_printf (".%s.tmp", name);
  g_autofree char *tmp = g_build_filename (dir, tmpname, NULL);
  g_autofree char *data = NULL;
  gsize len = 0;
  if (!g_file_get_contents (src, &data, &len, err)
      || !g_file_set_contents_full (tmp, data, (gssize) len,
                                    G_FILE_SET_CONTENTS_NONE, 0644, err)
      || !df_adopt_owner (-1, tmp, err))
    return false;
  return df_store_publish (-1, tmp, dst, DF_PUBLISH_REPLACE, err);
}

static bool
bootstrap_sync (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "bootstrap sync", "", 0, 0,
    "Copy the iPXE binaries (undionly.kpxe for BIOS, ipxe.efi for x86-64 "
    "UEFI, ipxe.lkrn for boot media) from Debian's ipxe package into "
    "<farm>/boot/, where bootstrapsvc serves them over TFTP and HTTP.",
    "  diskfarm bootstrap sync\n  diskfarm bootstrap sync --from /srv/ipxe\n",
  };
  g_autofree char *from = NULL;
  const GOptionEntry entries[] = {
    { "from", 0, 0, G_OPTION_ARG_FILENAME, &from,
      "Directory holding the binaries (default " IPXE_DIR ")", "DIR" },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (DfFarm) farm = df_cmd_open_farm (ctx, &spec, entries, &argc, &argv,
                                              err);
  if (!farm)
    return false;
  g_autofree char *boot = g_build_filename (df_farm_dir (farm), "boot", NULL);
  if (g_mkdir_with_parents (boot, 0755) < 0)
    {
      df_set_error_errno (err, errno, "create %s", boot);
      return false;
    }
  if (!df_adopt_owner (-1, boot, err))
    return false;
  g_autoptr (GPtrArray) records = df_record_list_new ();
  for (guint i = 0; boot_files[i]; i++)
    {
      g_autofree char *src = g_build_filename (from ? from : IPXE_DIR,
                                               boot_files[i], NULL);
      if (!copy_boot_file (src, boot, boot_files[i], err))
        {
          g_prefix_error (err, "bootstrap sync (is the ipxe package "
                          "installed?): ");
          return false;
        }
      g_autofree char *dst = g_build_filename (boot, boot_files[i], NULL);
      char sha[65];
      GStatBuf st;
      if (g_stat (dst, &st) < 0 || !df_file_sha256 (dst, sha, err))
        return false;
      DfRecord *r = df_record_new ();
      df_record_str (r, "file", "file", boot_files[i]);
      df_record_size (r, "size", "size", (uint64_t) st.st_size);
      df_record_str (r, "sha256", "sha256", sha);
      g_ptr_array_add (records, r);
    }
  g_autofree char *detail = g_strdup_printf ("{\"from\":\"%s\"}",
                                             from ? from : IPXE_DIR);
  if (!df_farm_audit (farm, "bootstrap.sync", "boot", detail, err))
    return false;
  df_print_list (records, ctx->json, "nothing copied");
  return true;
}

/* ---- bootstrap dhcp-config -------------------------------------------- */

#define BIOS_BOOT_FILE DF_BOOT_FILE_BIOS
#define EFI_BOOT_FILE DF_BOOT_FILE_EFI

/* dnsmasq settings for PXE through the site DHCP (new string).  Each
 * dhcp-boot line has tags no other line matches (dnsmasq's pick among
 * several matching lines is not documented). */
static char *
dnsmasq_text (const char *addr, const char *url, const char *http_boot)
{
  return g_strdup_printf (
    "# dnsmasq: PXE through the site DHCP (no ProxyDHCP needed).\n"
    "# Options 66/67: next-server %s, boot file by architecture;\n"
    "# iPXE clients (option 175 / user class iPXE) get the script;\n"
    "# UEFI HTTP boot (arch 16) gets ipxe.efi's URI, class HTTPClient.\n"
    "dhcp-match=set:ipxe,175\n"
    "dhcp-userclass=set:ipxe,iPXE\n"
    "dhcp-match=set:efi64,option:client-arch,7\n"
    "dhcp-match=set:efi64,option:client-arch,9\n"
    "dhcp-match=set:efihttp,option:client-arch,16\n"
    "dhcp-option-force=tag:efihttp,60,HTTPClient\n"
    "dhcp-boot=tag:!ipxe,tag:!efi64,tag:!efihttp," BIOS_BOOT_FILE ",,%s\n"
    "dhcp-boot=tag:!ipxe,tag:efi64," EFI_BOOT_FILE ",,%s\n"
    "dhcp-boot=tag:!ipxe,tag:efihttp,%s\n"
    "dhcp-boot=tag:ipxe,%s\n", addr, addr, addr, http_boot, url);
}

/* ISC dhcpd settings for the same (new string). */
static char *
isc_text (const char *addr, const char *url, const char *http_boot)
{
  return g_strdup_printf (
    "# ISC dhcpd: PXE through the site DHCP (no ProxyDHCP needed).\n"
    "option client-arch code 93 = unsigned integer 16;\n"
    "next-server %s;\n"
    "option tftp-server-name \"%s\";                  # option 66\n"
    "if exists user-class and option user-class = \"iPXE\" {\n"
    "  filename \"%s\";\n"
    "  option bootfile-name \"%s\";                    # option 67\n"
    "} elsif option client-arch = 16 {                # UEFI HTTP boot\n"
    "  option vendor-class-identifier \"HTTPClient\";\n"
    "  filename \"%s\";\n"
    "  option bootfile-name \"%s\";\n"
    "} elsif option client-arch = 7 or option client-arch = 9 {\n"
    "  filename \"" EFI_BOOT_FILE "\";\n"
    "  option bootfile-name \"" EFI_BOOT_FILE "\";\n"
    "} else {\n"
    "  filename \"" BIOS_BOOT_FILE "\";\n"
    "  option bootfile-name \"" BIOS_BOOT_FILE "\";\n"
    "}\n", addr, addr, url, url, http_boot, http_boot);
}

/* The settings as text for people, or one JSON object: the facts (next
 * server, boot files, script URL) and each requested configuration text
 * (null when not requested). */
static void
print_dhcp_config (const char *addr, int http_port, const char *url,
                   const char *format, bool json)
{
  g_autofree char *http_boot = g_strdup_printf (
    "http://%s:%d/" DF_BOOT_FILE_EFI, addr, http_port);
  g_autofree char *dnsmasq = g_str_equal (format, "isc") ? NULL
                             : dnsmasq_text (addr, url, http_boot);
  g_autofree char *isc = g_str_equal (format, "dnsmasq") ? NULL
                         : isc_text (addr, url, http_boot);
  if (!json)
    {
      printf ("%s%s%s", dnsmasq ? dnsmasq : "", dnsmasq && isc ? "\n" : "",
              isc ? isc : "");
      return;
    }
  g_autoptr (DfRecord) r = df_record_new ();
  df_record_str (r, "next_server", "next server", addr);
  df_record_int (r, "http_port", "http port", http_port);
  df_record_str (r, "bios_boot_file", "bios boot file", BIOS_BOOT_FILE);
  df_record_str (r, "efi_boot_file", "efi boot file", EFI_BOOT_FILE);
  df_record_str (r, "script_url", "script url", url);
  df_record_str (r, "http_boot_url", "uefi http boot url", http_boot);
  df_record_str (r, "dnsmasq", "dnsmasq", dnsmasq);
  df_record_str (r, "isc", "isc", isc);
  df_print_result (r, true, "%s", "");
}

static bool
bootstrap_dhcp_config (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "bootstrap dhcp-config", "", 0, 0,
    "Print the options the site's DHCP server needs to send PXE clients to "
    "a bootstrap server without ProxyDHCP (options 66 next-server and 67 "
    "boot file; the HTTP script URL for iPXE; for UEFI HTTP boot, client "
    "architecture 16, the URI of ipxe.efi on its HTTP server with vendor "
    "class HTTPClient), as dnsmasq and ISC dhcpd "
    "configuration (--json: one object with the next server, boot files, "
    "script URL, HTTP boot URL and each configuration text).  Run bootstrapsvc with "
    "--no-proxydhcp then.  Scripts fetched this way carry no one-time boot "
    "token: no CHAP secret, no new boot generation, no auto-add (see "
    "bootstrapsvc(8)).",
    "  diskfarm bootstrap dhcp-config --address 10.0.0.5\n"
    "  diskfarm bootstrap dhcp-config --address 10.0.0.5 --format isc\n",
  };
  g_autofree char *address = NULL, *format = NULL;
  gint http_port = 80;
  const GOptionEntry entries[] = {
    { "address", 'a', 0, G_OPTION_ARG_STRING, &address,
      "Address of the bootstrap server (its --address)", "IP" },
    { "http-port", 0, 0, G_OPTION_ARG_INT, &http_port,
      "Its HTTP port (default 80)", "PORT" },
    { "format", 0, 0, G_OPTION_ARG_STRING, &format,
      "dnsmasq, isc or both (default both)", "FORMAT" },
    G_OPTION_ENTRY_NULL
  };
  if (!df_cmd_parse (ctx, &spec, entries, &argc, &argv, err))
    return false;
  GInetAddress *ia = address ? g_inet_address_new_from_string (address) : NULL;
  if (!ia || g_inet_address_get_family (ia) != G_SOCKET_FAMILY_IPV4)
    {
      g_clear_object (&ia);
      df_usage_error (err, "bootstrap dhcp-config: --address must be an "
                      "IPv4 address");
      return false;
    }
  g_object_unref (ia);
  if (http_port < 1 || http_port > 65535)
    {
      df_usage_error (err, "--http-port must be 1-65535");
      return false;
    }
  const char *f = format ? format : "both";
  if (!g_str_equal (f, "dnsmasq") && !g_str_equal (f, "isc")
      && !g_str_equal (f, "both"))
    {
      df_usage_error (err, "--format must be dnsmasq, isc or both");
      return false;
    }
  g_autofree char *url = g_strdup_printf (
    "http://%s:%d/boot.ipxe?mac=${net0/mac}&uuid=${uuid}", address,
    http_port);
  print_dhcp_config (address, http_port, url, f, ctx->json);
  return true;
}

const DfCmd df_bootstrap_cmds[] = {
  { "sync", "copy the iPXE binaries into <farm>/boot/", bootstrap_sync },
  { "dhcp-config", "print site DHCP settings instead of ProxyDHCP",
    bootstrap_dhcp_config },
  { NULL, NULL, NULL }
};

/* ---- farm set / show -------------------------------------------------- */

static DfRecord *
auto_add_record (const DfAutoAdd *a)
{
  DfRecord *r = df_record_new ();
  df_record_bool (r, "auto_add", "auto-add", a->enabled);
  df_record_str (r, "auto_add_collection", "auto-add collection",
                 a->collection);
  df_record_str (r, "auto_add_template", "auto-add name template",
                 a->name_template);
  return r;
}

static bool
parse_on_off (const char *s, bool *out, GError **err)
{
  if (g_str_equal (s, "on") || g_str_equal (s, "true") || g_str_equal (s, "yes"))
    *out = true;
  else if (g_str_equal (s, "off") || g_str_equal (s, "false")
           || g_str_equal (s, "no"))
    *out = false;
  else
    {
      df_usage_error (err, "expected on or off, not '%s'", s);
      return false;
    }
  return true;
}

/* farm set auto-add on|off [--collection] [--template] */
static bool
farm_set_auto_add (DfCtx *ctx, const char *value, const char *collection,
                   const char *tmpl, GError **err)
{
  bool on;
  if (!parse_on_off (value, &on, err))
    return false;
  g_autoptr (DfFarm) farm = df_ctx_open_farm (ctx, false, err);
  if (!farm)
    return false;
  g_autoptr (DfAutoAdd) a = df_farm_auto_add_get (farm, err);
  if (!a)
    return false;
  a->enabled = on;
  if (collection)
    g_free (a->collection), a->collection = g_strdup (collection);
  if (tmpl)
    g_free (a->name_template), a->name_template = g_strdup (tmpl);
  if (!df_farm_auto_add_set (farm, a, err))
    return false;
  g_autoptr (DfRecord) r = auto_add_record (a);
  df_print_result (r, ctx->json, "auto-add %s%s%s%s%s", on ? "on" : "off",
                   on ? ": collection " : "", on ? a->collection : "",
                   on ? ", names " : "", on ? a->name_template : "");
  return true;
}

/* farm set auto-merge-depth N: the default of every vDisk without its own */
static bool
farm_set_merge_depth (DfCtx *ctx, const char *value, GError **err)
{
  guint64 n;
  if (!g_ascii_string_to_unsigned (value, 10, 0, DF_AUTO_MERGE_DEPTH_MAX, &n,
                                   NULL) || n == 1)
    {
      df_usage_error (err, "auto-merge-depth must be 0 (off) or 2-%d, not "
                      "'%s'", DF_AUTO_MERGE_DEPTH_MAX, value);
      return false;
    }
  g_autoptr (DfFarm) farm = df_ctx_open_farm (ctx, false, err);
  if (!farm || !df_farm_auto_merge_depth_set (farm, NULL, (int) n, err))
    return false;
  g_autoptr (DfRecord) r = df_record_new ();
  df_record_int (r, "auto_merge_depth", "auto-merge depth", (gint64) n);
  df_print_result (r, ctx->json, "auto-merge depth %d%s for vDisks without "
                   "their own", (int) n, n ? "" : " (off)");
  return true;
}

/* farm set nbd-tls off|on|require: streamsvc's TLS policy where neither
 * --tls nor diskfarm.conf sets one (read when streamsvc starts) */
static bool
farm_set_nbd_tls (DfCtx *ctx, const char *value, GError **err)
{
  DfTlsMode mode;

  if (!df_tls_mode_parse (value, &mode, err))
    {
      g_prefix_error (err, "farm set nbd-tls: ");
      return false;
    }
  g_autoptr (DfFarm) farm = df_ctx_open_farm (ctx, false, err);
  if (!farm || !df_farm_nbd_tls_set (farm, mode, err))
    return false;
  g_autoptr (DfRecord) r = df_record_new ();
  df_record_str (r, "nbd_tls", "nbd tls", df_tls_mode_name (mode));
  df_print_result (r, ctx->json, "nbd-tls %s (streamsvc reads it at start; "
                   "its --tls and diskfarm.conf [streamsvc] tls win over it)",
                   df_tls_mode_name (mode));
  return true;
}

/* farm set iscsi-chap required|optional */
static bool
farm_set_iscsi_chap (DfCtx *ctx, const char *value, GError **err)
{
  DfIscsiChapPolicy p;
  g_autoptr (GError) bad = NULL;
  if (!df_iscsi_chap_policy_parse (value, &p, &bad))
    {
      df_usage_error (err, "%s", bad->message);
      return false;
    }
  g_autoptr (DfFarm) farm = df_ctx_open_farm (ctx, false, err);
  if (!farm || !df_farm_iscsi_chap_policy_set (farm, p, err))
    return false;
  g_autoptr (DfRecord) r = df_record_new ();
  df_record_str (r, "iscsi_chap", "iSCSI CHAP", df_iscsi_chap_policy_name (p));
  df_print_result (r, ctx->json, "iSCSI CHAP %s for device targets",
                   df_iscsi_chap_policy_name (p));
  return true;
}

static bool
farm_set (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "farm set", "SETTING VALUE", 2, 2,
    "Change a farm setting.\n"
    "auto-add on|off: a machine whose MAC is unknown "
    "and that boots through bootstrap is added as a device of --collection "
    "(which must have a default vDisk), named by --template where {mac} is "
    "the MAC as 12 hex digits and {n} the first free number.  With auto-add "
    "off such machines are shown a 'not registered' message.\n"
    "auto-merge-depth N: after a seal that makes a chain longer than N "
    "files, merge its updates into one layer (0: off, 2-256); the default "
    "of every vDisk without its own ('diskfarm vdisk set --auto-merge-depth')."
    "  auto_merge_depth is accepted too.\n"
    "nbd-tls off|on|require: NBD TLS of the farm's stream servers: on offers "
    "it, require refuses everything but STARTTLS before it; a TLS identity "
    "(a device's PSK, 'diskfarm device set --nbd-psk generate', or a client "
    "certificate's CN) opens only its own device exports and the vDisks.  "
    "streamsvc reads it when it starts; its --tls and diskfarm.conf "
    "[streamsvc] tls win over it.\n"
    "iscsi-chap required|optional: required refuses every iSCSI login to a "
    "device target without CHAP (devices without credentials cannot log "
    "in), binds each device target to its boot script's InitiatorName "
    "unless 'device set --iscsi-initiator' says otherwise, and lists no "
    "device target to a discovery session without CHAP (vDisk inspection "
    "targets stay open).  optional (the default): devices without CHAP "
    "credentials are open.",
    "  diskfarm farm set auto-add on --collection lab --template 'lab-{n}'\n"
    "  diskfarm farm set auto-add off\n"
    "  diskfarm farm set auto-merge-depth 5\n"
    "  diskfarm farm set nbd-tls require\n"
    "  diskfarm farm set iscsi-chap required\n",
  };
  g_autofree char *collection = NULL, *tmpl = NULL;
  const GOptionEntry entries[] = {
    { "collection", 'c', 0, G_OPTION_ARG_STRING, &collection,
      "Collection new devices join (auto-add)", "NAME" },
    { "template", 't', 0, G_OPTION_ARG_STRING, &tmpl,
      "Device name template with {mac} or {n} (default "
      DF_AUTO_ADD_TEMPLATE ")", "TEMPLATE" },
    G_OPTION_ENTRY_NULL
  };
  if (!df_cmd_parse (ctx, &spec, entries, &argc, &argv, err))
    return false;
  if (g_str_equal (argv[1], "auto-add"))
    return farm_set_auto_add (ctx, argv[2], collection, tmpl, err);
  if (collection || tmpl)
    {
      df_usage_error (err, "farm set: --collection and --template go with "
                      "auto-add only");
      return false;
    }
  if (g_str_equal (argv[1], "auto-merge-depth")
      || g_str_equal (argv[1], "auto_merge_depth"))
    return farm_set_merge_depth (ctx, argv[2], err);
  if (g_str_equal (argv[1], "nbd-tls"))
    return farm_set_nbd_tls (ctx, argv[2], err);
  if (g_str_equal (argv[1], "iscsi-chap"))
    return farm_set_iscsi_chap (ctx, argv[2], err);
  df_usage_error (err, "farm set: unknown setting '%s' (known: auto-add, "
                  "auto-merge-depth, nbd-tls, iscsi-chap)", argv[1]);
  return false;
}

static bool
farm_show (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "farm show", "", 0, 0,
    "Show the farm directory, its schema version, its identity (the UUID "
    "its stream servers report in /v1/health) and its settings.",
    "  diskfarm farm show\n",
  };
  g_autoptr (DfFarm) farm = df_cmd_open_farm (ctx, &spec, NULL, &argc,
                                              &argv, err);
  if (!farm)
    return false;
  g_autoptr (DfAutoAdd) a = df_farm_auto_add_get (farm, err);
  if (!a)
    return false;
  DfRecord *r = auto_add_record (a);
  df_record_int (r, "auto_merge_depth", "auto-merge depth",
                 df_farm_auto_merge_depth (farm, NULL, NULL));
  DfTlsMode tls;
  bool tls_set;
  if (!df_farm_nbd_tls_get (farm, &tls, &tls_set, err))
    return false;
  df_record_str (r, "nbd_tls", "nbd tls", df_tls_mode_name (tls));
  df_record_str (r, "iscsi_chap", "iSCSI CHAP",
                 df_iscsi_chap_policy_name (df_farm_iscsi_chap_policy (farm)));
  df_record_str (r, "farm", "farm", df_farm_dir (farm));
  df_record_int (r, "schema_version", "schema version",
                 df_farm_schema_version (farm));
  df_record_str (r, "uuid", "uuid", df_farm_uuid (farm));
  g_autoptr (DfReport) rep = df_report_new (r);
  df_report_print (rep, ctx->json);
  return true;
}

/* farm admin-token: for tools that are not the console (curl, scripts) */
static bool
farm_admin_token (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "farm admin-token", "", 0, 0,
    "Print the bearer token streamsvc's admin API asks of TCP clients for "
    "everything but /metrics and /v1/health (made now if the farm has "
    "none).  The console finds it by itself; this is for other tools.  "
    "Only users who can read farm.db (root, the diskfarm group) get it.",
    "  curl -H \"Authorization: Bearer $(diskfarm farm admin-token)\" "
    "http://10.0.0.5:8001/v1/sessions\n",
  };
  g_autoptr (DfFarm) farm = df_cmd_open_farm (ctx, &spec, NULL, &argc,
                                              &argv, err);
  if (!farm)
    return false;
  g_autoptr (DfSecret) token = df_farm_admin_token (farm, true, err);
  if (!token)
    return false;
  g_autoptr (DfRecord) r = df_record_new ();
  df_record_str (r, "admin_token", "admin token", token);
  df_print_result (r, ctx->json, "%s", token);
  return true;
}

const DfCmd df_farm_cmds[] = {
  { "set", "change a farm setting (auto-add, auto-merge-depth, nbd-tls, "
    "iscsi-chap)",
    farm_set },
  { "show", "show the farm and its settings", farm_show },
  { "admin-token", "print the admin API's bearer token (for curl)",
    farm_admin_token },
  { NULL, NULL, NULL }
};
