/* bdm: Boot Device Manager CLI.
 *
 *   bdm iso OUT.iso        | bdm partition OUT.img | bdm inject DISK
 *   [--server HOST[:PORT]]... [--farm DIR] [--ip A.B.C.D/NN ...] ...
 *
 * Errors end as one line "bdm: <message>" and exit 1. */
#include "bdm.h"
#include "conf.h"
#include "config.h"
#include "farm.h"
#include "common.h"

#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  char *config;
  char **servers;
  char *farm;
  char *db;             /* --db / [farm] database; NULL: <farm>/farm.db */
  gint http_port;
  gint iscsi_port;
  char *ip;
  char *gateway;
  char *dns;
  gint timeout;
  gint retries;
  gboolean verbose;
  gboolean local;
  gboolean efi;
  char *ipxe_dir;
  char *isolinux_dir;
  char *syslinux_dir;
} CliOpts;

/* Servers of the farm DB (servers table) in name order. */
static bool
add_farm_servers (BdmConfig *c, const CliOpts *o, GError **err)
{
  g_autoptr(DfFarm) farm = df_farm_open_db (o->farm, o->db, false, "bdm",
                                            err);
  if (farm == NULL)
    return false;
  g_autoptr(GPtrArray) list = df_farm_server_list (farm, err);
  if (list == NULL)
    return false;
  for (guint i = 0; i < list->len; i++)
    {
      const DfServer *s = list->pdata[i];
      bool v6 = strchr (s->address, ':') != NULL;
      g_autofree char *spec = v6 ? g_strdup_printf ("[%s]", s->address)
                                 : g_strdup (s->address);
      if (!bdm_config_add_server (c, spec, (guint16) o->http_port,
                                  s->iscsi_port, err))
        return false;
    }
  return true;
}

static bool
replace_str (char **dst, const char *src)
{
  if (src == NULL)
    return false;
  g_free (*dst);
  *dst = g_strdup (src);
  return true;
}

static void
conf_str (char **dst, const DfConf *conf, const char *key)
{
  if (*dst == NULL)
    *dst = g_strdup (df_conf_string (conf, "bdm", key));
}

static void
conf_int (gint *dst, const DfConf *conf, const char *key)
{
  if (*dst < 0)
    *dst = (gint) df_conf_int (conf, "bdm", key);
}

/* Fill what the command line left unset from diskfarm.conf [bdm] (and
 * [farm] dir for farm-servers=true).  [bdm] server is added by
 * build_config, which knows the grammar of a server. */
static void
apply_config (CliOpts *o, const DfConf *conf)
{
  conf_int (&o->http_port, conf, "http-port");
  conf_int (&o->iscsi_port, conf, "iscsi-port");
  conf_int (&o->timeout, conf, "timeout");
  conf_int (&o->retries, conf, "retries");
  o->local = o->local || df_conf_bool (conf, "bdm", "local-fallback");
  conf_str (&o->ipxe_dir, conf, "ipxe-dir");
  conf_str (&o->isolinux_dir, conf, "isolinux-dir");
  conf_str (&o->syslinux_dir, conf, "syslinux-dir");
  if (o->farm == NULL && df_conf_bool (conf, "bdm", "farm-servers"))
    o->farm = g_strdup (df_conf_string (conf, "farm", "dir"));
  if (o->farm != NULL && o->db == NULL)
    o->db = g_strdup (df_conf_string (conf, "farm", "database"));
}

/* The servers of [bdm] server, when no --server was given; a bad one is
 * reported at its line. */
static bool
add_conf_servers (BdmConfig *c, const CliOpts *o, const DfConf *conf,
                  GError **err)
{
  char *const *list = df_conf_list (conf, "bdm", "server");
  for (guint i = 0; o->servers == NULL && list && list[i] != NULL; i++)
    if (!bdm_config_add_server (c, list[i], (guint16) o->http_port,
                                (guint16) o->iscsi_port, err))
      {
        df_conf_prefix_error (conf, "bdm", "server", err);
        return false;
      }
  return true;
}

static bool
build_config (BdmConfig *c, const CliOpts *o, const DfConf *conf,
              GError **err)
{
  if (!bdm_config_init (c, err))
    return false;
  if (o->http_port < 1 || o->http_port > 65535 || o->iscsi_port < 1
      || o->iscsi_port > 65535 || o->timeout < 0 || o->retries < 1)
    {
      g_set_error (err, BDM_ERROR, BDM_ERROR_INVALID, "ports must be "
                   "1-65535, --timeout >= 0, --retries >= 1");
      return false;
    }
  for (guint i = 0; o->servers != NULL && o->servers[i] != NULL; i++)
    if (!bdm_config_add_server (c, o->servers[i], (guint16) o->http_port,
                                (guint16) o->iscsi_port, err))
      return false;
  if (!add_conf_servers (c, o, conf, err))
    return false;
  if (o->farm != NULL && !add_farm_servers (c, o, err))
    return false;
  if (o->ip != NULL && !bdm_config_set_ip (c, o->ip, err))
    return false;
  c->gateway = g_strdup (o->gateway);
  c->dns = g_strdup (o->dns);
  c->timeout_s = (guint) o->timeout;
  c->retries = (guint) o->retries;
  c->verbose = o->verbose;
  c->local_fallback = o->local;
  c->efi = o->efi;
  replace_str (&c->ipxe_dir, o->ipxe_dir);
  replace_str (&c->isolinux_dir, o->isolinux_dir);
  replace_str (&c->syslinux_dir, o->syslinux_dir);
  return bdm_config_check (c, err);
}

static bool
do_inject (const BdmConfig *c, const char *disk, GError **err)
{
  BdmInjectResult r = { 0 };
  if (!bdm_inject (c, disk, &r, err))
    return false;
  printf ("bdm: added boot partition %d (%s, sectors %" G_GUINT64_FORMAT
          "-%" G_GUINT64_FORMAT ") to %s\n", r.partnum, r.format,
          r.start_sector, r.start_sector + r.sectors - 1, disk);
  bdm_inject_result_clear (&r);
  return true;
}

static bool
run (const char *cmd, const char *arg, CliOpts *o, GError **err)
{
  BdmConfig c = { 0 };
  g_autoptr (DfConf) conf = df_conf_load (o->config, err);
  if (conf == NULL)
    return false;
  apply_config (o, conf);
  bool ok = build_config (&c, o, conf, err);
  if (ok && g_str_equal (cmd, "iso"))
    ok = bdm_make_iso (&c, arg, err);
  else if (ok && g_str_equal (cmd, "partition"))
    ok = bdm_make_partition_disk (&c, arg, err);
  else if (ok && g_str_equal (cmd, "inject"))
    ok = do_inject (&c, arg, err);
  else if (ok && g_str_equal (cmd, "script"))
    {
      g_autofree char *s = g_str_equal (arg, "-")
        ? bdm_render_script (&c) : NULL;
      if (s == NULL)
        {
          g_set_error (err, BDM_ERROR, BDM_ERROR_INVALID,
                       "script: give '-' to print on stdout");
          ok = false;
        }
      else
        fputs (s, stdout);
    }
  else if (ok)
    {
      g_set_error (err, BDM_ERROR, BDM_ERROR_INVALID,
                   "unknown command '%s' (iso, partition, inject, script)",
                   cmd);
      ok = false;
    }
  bdm_config_clear (&c);
  return ok;
}

static const char description[] =
  "Commands:\n"
  "  iso OUT.iso        bootable hybrid ISO (CD or disk)\n"
  "  partition OUT.img  raw disk: syslinux MBR + one active 8 MiB FAT\n"
  "                     boot partition\n"
  "  inject DISK        add that partition to an existing template disk\n"
  "                     (any format qemu reads; refuses when full)\n"
  "  script -           print the iPXE script\n"
  "\n"
  "Example:\n"
  "  bdm iso boot.iso --server 10.0.0.5 --server 10.0.0.6:8080\n"
  "  bdm partition boot.img --farm /var/lib/diskfarm --timeout 5\n"
  "  bdm script - --config site.conf    # [bdm] server=... in the file\n"
  "  bdm inject template.qcow2 --server 10.0.0.5 --ip 10.0.0.50/24 "
  "--gateway 10.0.0.1\n";

int
main (int argc, char **argv)
{
  setlocale (LC_ALL, "");
  CliOpts o = { .http_port = -1, .iscsi_port = -1, .timeout = -1,
                .retries = -1 };
  gboolean version = FALSE;
  const GOptionEntry entries[] = {
    { "config", 0, 0, G_OPTION_ARG_FILENAME, &o.config,
      "Configuration file (default $DISKFARM_CONFIG, else "
      DF_DEFAULT_CONFIG "); options given here win over it", "FILE" },
    { "server", 's', 0, G_OPTION_ARG_STRING_ARRAY, &o.servers,
      "Bootstrap + stream server, up to 4, in failover order", "HOST[:PORT]" },
    { "farm", 0, 0, G_OPTION_ARG_FILENAME, &o.farm,
      "Add the servers of this farm's DB (after any --server)", "DIR" },
    { "db", 0, 0, G_OPTION_ARG_STRING, &o.db,
      "The farm DB of --farm: a PostgreSQL URI (postgresql://...) or "
      "conninfo (default: diskfarm.conf [farm] database, else the farm "
      "directory's farm.db)", "URI" },
    { "http-port", 0, 0, G_OPTION_ARG_INT, &o.http_port,
      "Bootstrap HTTP port when a server has none (default 80)", "PORT" },
    { "iscsi-port", 0, 0, G_OPTION_ARG_INT, &o.iscsi_port,
      "iSCSI port of --server stream servers (default "
      G_STRINGIFY (DF_ISCSI_PORT) ")", "PORT" },
    { "ip", 0, 0, G_OPTION_ARG_STRING, &o.ip,
      "Static address instead of DHCP", "A.B.C.D/NN" },
    { "gateway", 0, 0, G_OPTION_ARG_STRING, &o.gateway,
      "Static gateway", "A.B.C.D" },
    { "dns", 0, 0, G_OPTION_ARG_STRING, &o.dns, "Static DNS server",
      "A.B.C.D" },
    { "timeout", 't', 0, G_OPTION_ARG_INT, &o.timeout,
      "Boot menu timeout in seconds (0: no menu, default)", "SECONDS" },
    { "retries", 'r', 0, G_OPTION_ARG_INT, &o.retries,
      "Rounds over all servers before giving up (default 1)", "N" },
    { "verbose", 'v', 0, G_OPTION_ARG_NONE, &o.verbose,
      "The boot script prints its network and every attempt", NULL },
    { "local-fallback", 'l', 0, G_OPTION_ARG_NONE, &o.local,
      "Boot from the local disk when no server answers", NULL },
    { "efi", 0, 0, G_OPTION_ARG_NONE, &o.efi,
      "iso: add a UEFI El Torito entry (ipxe.efi; no script, see bdm(8))",
      NULL },
    { "ipxe-dir", 0, 0, G_OPTION_ARG_FILENAME, &o.ipxe_dir,
      "Where ipxe.lkrn/ipxe.efi are (default /usr/lib/ipxe)", "DIR" },
    { "isolinux-dir", 0, 0, G_OPTION_ARG_FILENAME, &o.isolinux_dir,
      "Where isolinux.bin/isohdpfx.bin are (default /usr/lib/ISOLINUX)",
      "DIR" },
    { "syslinux-dir", 0, 0, G_OPTION_ARG_FILENAME, &o.syslinux_dir,
      "syslinux data (default /usr/lib/syslinux)", "DIR" },
    { "version", 0, 0, G_OPTION_ARG_NONE, &version, "Print the version",
      NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr(GOptionContext) oc = g_option_context_new ("COMMAND TARGET");
  g_option_context_set_summary (oc, "Boot Device Manager: boot media "
    "(ISO, 8 MiB boot partition) that bring targets to the diskfarm.");
  g_option_context_set_description (oc, description);
  g_option_context_add_main_entries (oc, entries, NULL);
  g_autoptr(GError) err = NULL;
  bool ok = g_option_context_parse (oc, &argc, &argv, &err)
            && df_options_check_values (entries, NULL, &err);
  if (ok && version)
    {
      printf ("bdm (diskfarm) %s\n", DF_VERSION);
      df_options_clear (entries);
      return 0;
    }
  if (ok && argc != 3)
    {
      g_set_error (&err, BDM_ERROR, BDM_ERROR_INVALID, argc < 3
                   ? "missing COMMAND TARGET (see bdm --help)"
                   : "unexpected argument '%s'", argv[argc > 3 ? 3 : 0]);
      ok = false;
    }
  ok = ok && run (argv[1], argv[2], &o, &err);
  if (!ok)
    fprintf (stderr, "bdm: %s\n", err->message);
  df_options_clear (entries);
  return ok ? 0 : 1;
}
