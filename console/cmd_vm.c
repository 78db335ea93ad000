/* diskfarm vm: hypervisor side through the libvirt API (not virsh).
 *
 *   vm attach-media DOMAIN --iso FILE | --partition FILE [--connect URI]
 *   vm provision --template T --count N --collection C --name-template 'web{02}'
 *                [--boot pxe|iso|partition] [--media FILE] [--cache MODE] ...
 *   vm list [--connect URI]
 *
 * Domain definitions are edited as XML (libxml2, XPath) and redefined with
 * virDomainDefineXML: a template or a shut-off domain changes for its next
 * start.  Boot media go first in the per-device boot order. */
#include "console.h"
#include "defaults.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xpath.h>
#include <stdio.h>
#include <string.h>

G_DEFINE_AUTOPTR_CLEANUP_FUNC (xmlDoc, xmlFreeDoc)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (xmlXPathContext, xmlXPathFreeContext)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (xmlXPathObject, xmlXPathFreeObject)

typedef virConnect VmConn;
static void vm_conn_close (VmConn *c) { if (c) virConnectClose (c); }
G_DEFINE_AUTOPTR_CLEANUP_FUNC (VmConn, vm_conn_close)
typedef virDomain VmDom;
static void vm_dom_free (VmDom *d) { if (d) virDomainFree (d); }
G_DEFINE_AUTOPTR_CLEANUP_FUNC (VmDom, vm_dom_free)

/* libvirt prints its errors itself unless told otherwise. */
static void
quiet_libvirt (void *opaque, virErrorPtr e)
{
}

static bool
virt_fail (GError **err, const char *what)
{
  const char *msg = virGetLastErrorMessage ();
  g_set_error (err, DF_ERROR, DF_ERROR_IO, "%s: %s", what,
               msg ? msg : "libvirt error");
  return false;
}

/* New connection (uri NULL: libvirt's default), or NULL + err. */
static VmConn *
vm_connect (const char *uri, GError **err)
{
  virSetErrorFunc (NULL, quiet_libvirt);
  VmConn *c = virConnectOpen (uri);
  if (c == NULL)
    virt_fail (err, uri ? uri : "cannot connect to the default hypervisor");
  return c;
}

/* ---- XML helpers ------------------------------------------------------ */

static xmlDoc *
parse_xml (const char *xml, GError **err)
{
  xmlDoc *doc = xmlReadMemory (xml, (int) strlen (xml), "domain.xml", NULL,
                               XML_PARSE_NONET | XML_PARSE_NOBLANKS);
  if (doc == NULL)
    g_set_error (err, DF_ERROR, DF_ERROR_INVALID, "bad domain XML");
  return doc;
}

/* Nodes matching expr (object owned by the caller; nodesetval may be
 * NULL). */
static xmlXPathObject *
xpath (xmlDoc *doc, const char *expr)
{
  g_autoptr(xmlXPathContext) ctx = xmlXPathNewContext (doc);
  return xmlXPathEvalExpression ((const xmlChar *) expr, ctx);
}

static guint
nodes_len (xmlXPathObject *o)
{
  return o != NULL && o->nodesetval != NULL ? (guint) o->nodesetval->nodeNr
                                            : 0;
}

/* First match's attribute (new string) or NULL. */
static char *
xpath_attr (xmlDoc *doc, const char *expr, const char *attr)
{
  g_autoptr(xmlXPathObject) o = xpath (doc, expr);
  if (nodes_len (o) == 0)
    return NULL;
  xmlChar *v = xmlGetProp (o->nodesetval->nodeTab[0], (const xmlChar *) attr);
  char *s = v ? g_strdup ((const char *) v) : NULL;
  xmlFree (v);
  return s;
}

static char *
doc_to_string (xmlDoc *doc)
{
  xmlChar *buf = NULL;
  int len = 0;
  xmlDocDumpFormatMemory (doc, &buf, &len, 1);
  char *s = g_strndup ((const char *) buf, (gsize) len);
  xmlFree (buf);
  return s;
}

static void
remove_nodes (xmlDoc *doc, const char *expr)
{
  g_autoptr(xmlXPathObject) o = xpath (doc, expr);
  for (guint i = 0; i < nodes_len (o); i++)
    {
      xmlUnlinkNode (o->nodesetval->nodeTab[i]);
      xmlFreeNode (o->nodesetval->nodeTab[i]);
    }
}

/* The device <os><boot dev='D'/> names: its first disk of that kind, or
 * interface; NULL for an unknown name or no such device. */
static xmlNode *
legacy_boot_device (xmlDoc *doc, const char *dev)
{
  const char *expr =
    g_strcmp0 (dev, "hd") == 0
      ? "/domain/devices/disk[(not(@device) or @device='disk') and not(boot)]"
    : g_strcmp0 (dev, "cdrom") == 0
      ? "/domain/devices/disk[@device='cdrom' and not(boot)]"
    : g_strcmp0 (dev, "fd") == 0
      ? "/domain/devices/disk[@device='floppy' and not(boot)]"
    : g_strcmp0 (dev, "network") == 0
      ? "/domain/devices/interface[not(boot)]" : NULL;
  if (expr == NULL)
    return NULL;
  g_autoptr(xmlXPathObject) o = xpath (doc, expr);
  return nodes_len (o) > 0 ? o->nodesetval->nodeTab[0] : NULL;
}

/* <os><boot dev> cannot be mixed with per-device boot order: turn the
 * list into orders 1..n on the devices it names (libvirt starts qemu with
 * strict boot, so a device without an order would never boot) and drop
 * it. */
static void
os_boot_to_device_order (xmlDoc *doc)
{
  g_autoptr(xmlXPathObject) o = xpath (doc, "/domain/os/boot");
  int order = 1;
  for (guint i = 0; i < nodes_len (o); i++)
    {
      xmlChar *dev = xmlGetProp (o->nodesetval->nodeTab[i],
                                 (const xmlChar *) "dev");
      xmlNode *target = legacy_boot_device (doc, (const char *) dev);
      xmlFree (dev);
      if (target == NULL)
        continue;
      g_autofree char *num = g_strdup_printf ("%d", order++);
      xmlNode *boot = xmlNewChild (target, NULL, (const xmlChar *) "boot",
                                   NULL);
      xmlSetProp (boot, (const xmlChar *) "order", (const xmlChar *) num);
    }
  remove_nodes (doc, "/domain/os/boot");
}

/* Make room for a new first boot device: the legacy list becomes device
 * orders, then every order moves up by one. */
static void
shift_boot_order (xmlDoc *doc)
{
  os_boot_to_device_order (doc);
  g_autoptr(xmlXPathObject) o = xpath (doc, "/domain/devices/*/boot[@order]");
  for (guint i = 0; i < nodes_len (o); i++)
    {
      xmlNode *n = o->nodesetval->nodeTab[i];
      xmlChar *v = xmlGetProp (n, (const xmlChar *) "order");
      g_autofree char *next = g_strdup_printf ("%d",
                                               atoi ((const char *) v) + 1);
      xmlFree (v);
      xmlSetProp (n, (const xmlChar *) "order", (const xmlChar *) next);
    }
}

/* A free target name with prefix ("hd", "sd", "vd"). */
static char *
free_target (xmlDoc *doc, const char *prefix)
{
  for (char c = 'a'; c <= 'z'; c++)
    {
      g_autofree char *expr = g_strdup_printf (
        "/domain/devices/disk/target[@dev='%s%c']", prefix, c);
      g_autoptr(xmlXPathObject) o = xpath (doc, expr);
      if (nodes_len (o) == 0)
        return g_strdup_printf ("%s%c", prefix, c);
    }
  return NULL;
}

static xmlNode *
devices_node (xmlDoc *doc)
{
  g_autoptr(xmlXPathObject) o = xpath (doc, "/domain/devices");
  if (nodes_len (o) > 0)
    return o->nodesetval->nodeTab[0];
  return xmlNewChild (xmlDocGetRootElement (doc), NULL,
                      (const xmlChar *) "devices", NULL);
}

typedef enum { MEDIA_ISO, MEDIA_PARTITION } MediaKind;

/* Add the medium as the first boot device.  ISO: CD-ROM on IDE (SATA on
 * q35 machines).  Partition image: read-only virtio disk (SeaBIOS boots
 * it; every VM may share the one image).  Already attached: only moved
 * first. */
static bool
attach_media_xml (xmlDoc *doc, MediaKind kind, const char *file, GError **err)
{
  g_autofree char *expr = g_strdup_printf (
    "/domain/devices/disk[source/@file='%s']", file);
  g_autoptr(xmlXPathObject) existing = xpath (doc, expr);
  shift_boot_order (doc);
  if (nodes_len (existing) > 0)
    {
      xmlNode *disk = existing->nodesetval->nodeTab[0];
      for (xmlNode *c = disk->children; c != NULL; c = c->next)
        if (c->type == XML_ELEMENT_NODE
            && xmlStrEqual (c->name, (const xmlChar *) "boot"))
          xmlSetProp (c, (const xmlChar *) "order", (const xmlChar *) "1");
      return true;
    }
  g_autofree char *machine = xpath_attr (doc, "/domain/os/type", "machine");
  bool q35 = machine != NULL && strstr (machine, "q35") != NULL;
  const char *bus = kind == MEDIA_PARTITION ? "virtio" : q35 ? "sata" : "ide";
  g_autofree char *dev = free_target (doc, kind == MEDIA_PARTITION ? "vd"
                                           : q35 ? "sd" : "hd");
  if (dev == NULL)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID, "no free disk target");
      return false;
    }
  xmlNode *disk = xmlNewChild (devices_node (doc), NULL,
                               (const xmlChar *) "disk", NULL);
  xmlSetProp (disk, (const xmlChar *) "type", (const xmlChar *) "file");
  xmlSetProp (disk, (const xmlChar *) "device", (const xmlChar *)
              (kind == MEDIA_ISO ? "cdrom" : "disk"));
  xmlNode *drv = xmlNewChild (disk, NULL, (const xmlChar *) "driver", NULL);
  xmlSetProp (drv, (const xmlChar *) "name", (const xmlChar *) "qemu");
  xmlSetProp (drv, (const xmlChar *) "type", (const xmlChar *) "raw");
  xmlNode *src = xmlNewChild (disk, NULL, (const xmlChar *) "source", NULL);
  xmlSetProp (src, (const xmlChar *) "file", (const xmlChar *) file);
  xmlNode *tgt = xmlNewChild (disk, NULL, (const xmlChar *) "target", NULL);
  xmlSetProp (tgt, (const xmlChar *) "dev", (const xmlChar *) dev);
  xmlSetProp (tgt, (const xmlChar *) "bus", (const xmlChar *) bus);
  xmlNewChild (disk, NULL, (const xmlChar *) "readonly", NULL);
  xmlNode *boot = xmlNewChild (disk, NULL, (const xmlChar *) "boot", NULL);
  xmlSetProp (boot, (const xmlChar *) "order", (const xmlChar *) "1");
  return true;
}

/* Network boot first: the first interface gets boot order 1. */
static bool
set_pxe_boot (xmlDoc *doc, GError **err)
{
  g_autoptr(xmlXPathObject) o = xpath (doc, "/domain/devices/interface");
  if (nodes_len (o) == 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "the template has no network interface to boot from");
      return false;
    }
  shift_boot_order (doc);
  xmlNode *nic = o->nodesetval->nodeTab[0];
  xmlNode *boot = xmlNewChild (nic, NULL, (const xmlChar *) "boot", NULL);
  xmlSetProp (boot, (const xmlChar *) "order", (const xmlChar *) "1");
  return true;
}

static bool
media_kind_check (const char *iso, const char *part, MediaKind *kind,
                  const char **file, GError **err)
{
  if ((iso == NULL) == (part == NULL))
    {
      df_usage_error (err, "give exactly one of --iso FILE, --partition FILE");
      return false;
    }
  *kind = iso ? MEDIA_ISO : MEDIA_PARTITION;
  *file = iso ? iso : part;
  if (!g_path_is_absolute (*file))
    {
      df_usage_error (err, "the media path must be absolute (the hypervisor "
                      "opens it): '%s'", *file);
      return false;
    }
  return true;
}

/* ---- attach-media ------------------------------------------------------- */

/* Define the domain from doc; print_xml: print the definition as libvirt
 * stored it (read back) on stdout. */
static bool
redefine (VmConn *conn, xmlDoc *doc, bool print_xml, GError **err)
{
  g_autofree char *xml = doc_to_string (doc);
  g_autoptr(VmDom) d = virDomainDefineXML (conn, xml);
  if (d == NULL)
    return virt_fail (err, "cannot define the domain");
  if (print_xml)
    {
      g_autofree char *back = virDomainGetXMLDesc (d, VIR_DOMAIN_XML_INACTIVE);
      if (back == NULL)
        return virt_fail (err, "cannot read the domain XML back");
      fputs (back, stdout);
    }
  return true;
}

static char *
inactive_xml (VmConn *conn, const char *name, GError **err)
{
  g_autoptr(VmDom) d = virDomainLookupByName (conn, name);
  if (d == NULL)
    {
      virt_fail (err, name);
      return NULL;
    }
  char *xml = virDomainGetXMLDesc (d, VIR_DOMAIN_XML_INACTIVE);
  if (xml == NULL)
    virt_fail (err, "cannot read the domain XML");
  return xml;
}

static bool
vm_attach_media (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "vm attach-media", "DOMAIN", 1, 1,
    "Attach boot media made by bdm to a libvirt domain or template "
    "definition and put them first in its boot order: an ISO as a CD-ROM, a "
    "boot partition image as a read-only disk.  Takes effect at the next "
    "start.",
    "  diskfarm vm attach-media tpl-web --iso /var/lib/diskfarm/boot/bdm.iso\n"
    "  diskfarm vm attach-media tpl-web --partition /srv/bdm.img "
    "--connect qemu:///system\n",
  };
  g_autofree char *iso = NULL, *part = NULL, *uri = NULL;
  gboolean print_xml = FALSE;
  const GOptionEntry entries[] = {
    { "print-xml", 0, 0, G_OPTION_ARG_NONE, &print_xml,
      "Print the definition libvirt stored", NULL },
    { "iso", 0, 0, G_OPTION_ARG_FILENAME, &iso, "Boot ISO (bdm iso)", "FILE" },
    { "partition", 0, 0, G_OPTION_ARG_FILENAME, &part,
      "Boot partition disk image (bdm partition)", "FILE" },
    { "connect", 'c', 0, G_OPTION_ARG_STRING, &uri, "libvirt URI", "URI" },
    G_OPTION_ENTRY_NULL
  };
  MediaKind kind;
  const char *file = NULL;
  if (!df_cmd_parse (ctx, &spec, entries, &argc, &argv, err)
      || !media_kind_check (iso, part, &kind, &file, err))
    return false;
  g_autoptr(VmConn) conn = vm_connect (uri, err);
  g_autofree char *xml = conn ? inactive_xml (conn, argv[1], err) : NULL;
  g_autoptr(xmlDoc) doc = xml ? parse_xml (xml, err) : NULL;
  if (doc == NULL || !attach_media_xml (doc, kind, file, err)
      || !redefine (conn, doc, print_xml, err))
    return false;
  if (print_xml)
    return true;
  g_autoptr(DfRecord) r = df_record_new ();
  df_record_str (r, "domain", "domain", argv[1]);
  df_record_str (r, "media", "media", file);
  df_print_result (r, ctx->json, "domain '%s' boots first from %s", argv[1],
                   file);
  return true;
}

/* ---- provision ---------------------------------------------------------- */

/* "web{02}" -> "web07": {N} with N digits = zero-padded index, {n} plain. */
static char *
expand_name (const char *tpl, guint i, GError **err)
{
  const char *open = strchr (tpl, '{');
  const char *close = open ? strchr (open, '}') : NULL;
  if (open == NULL || close == NULL)
    {
      df_usage_error (err, "--name-template needs a {NN} or {n} field: '%s'",
                      tpl);
      return NULL;
    }
  g_autofree char *field = g_strndup (open + 1, close - open - 1);
  int width = g_str_equal (field, "n") ? 0 : (int) strlen (field);
  for (const char *p = field; width > 0 && *p; p++)
    if (*p != '0' && !(p[1] == '\0' && g_ascii_isdigit (*p)))
      width = -1;
  if (width < 0 || width > 9)
    {
      df_usage_error (err, "bad name field '{%s}' (use {n}, {02}, {003})",
                      field);
      return NULL;
    }
  return g_strdup_printf ("%.*s%0*u%s", (int) (open - tpl), tpl, width, i,
                          close + 1);
}

/* A locally administered-looking QEMU MAC not yet used by a device. */
static char *
new_mac (DfFarm *farm)
{
  for (;;)
    {
      char *mac = g_strdup_printf ("52:54:00:%02x:%02x:%02x",
                                   g_random_int_range (0, 256),
                                   g_random_int_range (0, 256),
                                   g_random_int_range (0, 256));
      g_autoptr(DfDevice) d = df_farm_device_get (farm, mac, NULL);
      if (d == NULL)
        return mac;
      g_free (mac);
    }
}

typedef struct {
  char *tpl_name;
  gint count;
  char *collection;
  char *name_tpl;
  char *boot;
  char *media;
  char *cache;
  char *uri;
  gboolean print_xml;
  char *nbd;
  char *disk_dir;
  gboolean no_secure_boot;
  GOptionEntry *entries;  /* the table that fills it (df_options_keep) */
} ProvOpts;

static void
prov_opts_clear (ProvOpts *o)
{
  df_options_release (o->entries);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (ProvOpts, prov_opts_clear)

/* True when mode (nullable) keeps no write cache on the server (its row
 * has no store: hypervisor), so the domain needs its own qcow2 overlay. */
static bool
cache_on_hypervisor (const char *mode)
{
  DfCacheMode m;

  return mode != NULL && df_cache_mode_parse (mode, &m, NULL)
         && df_cache_mode_desc (&m)->open_store == NULL;
}

/* The NBD URI of device name's export for its overlay: this host's relay
 * (streamsvc --relay, failing over between the farm's servers), or the
 * one server of --nbd.  New string. */
static char *
overlay_backing (const ProvOpts *o, const char *name)
{
  if (o->nbd != NULL)
    return g_strdup_printf ("nbd://%s/device/%s", o->nbd, name);
  return g_strdup_printf ("nbd+unix:///device/%s?socket=" DF_RELAY_SOCKET,
                          name);
}

/* cache hypervisor: a qcow2 overlay whose backing is the device's NBD
 * export, as the VM's first disk.  qemu-img -u: the server need not run,
 * so the size (the vDisk's) is given. */
static bool
add_hypervisor_overlay (xmlDoc *doc, const ProvOpts *o, const char *name,
                        uint64_t size, GError **err)
{
  if (o->disk_dir == NULL)
    {
      df_usage_error (err, "--cache hypervisor needs --disk-dir DIR");
      return false;
    }
  g_autofree char *file = g_strdup_printf ("%s/%s.qcow2", o->disk_dir, name);
  g_autofree char *backing = overlay_backing (o, name);
  g_autofree char *bytes = g_strdup_printf ("%" G_GUINT64_FORMAT, size);
  const char *argv[] = { "qemu-img", "create", "-q", "-f", "qcow2", "-u",
                         "-F", "raw", "-b", backing, file, bytes, NULL };
  gint status = 0;
  g_autofree char *errs = NULL;
  if (!g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH
                     | G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, NULL, &errs,
                     &status, err))
    return false;
  if (!g_spawn_check_wait_status (status, NULL))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_IO, "qemu-img create %s: %s",
                   file, g_strstrip (errs));
      return false;
    }
  shift_boot_order (doc);
  g_autofree char *snippet = g_strdup_printf (
    "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
    "<source file='%s'/><target dev='vdz' bus='virtio'/>"
    "<boot order='1'/></disk>", file);
  xmlNode *list = NULL;
  if (xmlParseInNodeContext (devices_node (doc), snippet,
                             (int) strlen (snippet), 0, &list) != XML_ERR_OK)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID, "overlay disk XML");
      return false;
    }
  xmlAddChild (devices_node (doc), list);
  return true;
}

/* Why the template boots with UEFI Secure Boot on (static text), or NULL.
 * `<os firmware='efi'>` without features lets libvirt pick a firmware, and
 * it prefers the Secure Boot one with Microsoft's keys enrolled. */
static const char *
secure_boot_reason (xmlDoc *doc)
{
  static const struct { const char *expr, *why; } rules[] = {
    { "/domain/os/loader[@secure='yes']", "<loader secure='yes'>" },
    { "/domain/os/firmware/feature[@name='secure-boot' and @enabled='yes']",
      "firmware feature secure-boot" },
    { "/domain/os/firmware/feature[@name='enrolled-keys' and @enabled='yes']",
      "firmware feature enrolled-keys" },
    { "/domain/os[@firmware='efi' and not(loader)]"
      "[not(firmware/feature[@name='secure-boot' and @enabled='no'])]",
      "<os firmware='efi'> without secure-boot disabled (libvirt then picks "
      "the Secure Boot firmware)" },
  };
  for (guint i = 0; i < G_N_ELEMENTS (rules); i++)
    {
      g_autoptr(xmlXPathObject) o = xpath (doc, rules[i].expr);
      if (nodes_len (o) > 0)
        return rules[i].why;
    }
  return NULL;
}

/* Secure Boot off for a clone: libvirt picks a firmware without it
 * (firmware autoselection with both features disabled). */
static void
disable_secure_boot (xmlDoc *doc)
{
  remove_nodes (doc, "/domain/os/loader");
  remove_nodes (doc, "/domain/os/nvram");
  remove_nodes (doc, "/domain/os/firmware");
  g_autoptr(xmlXPathObject) os = xpath (doc, "/domain/os");
  if (nodes_len (os) == 0)
    return;
  xmlNode *n = os->nodesetval->nodeTab[0];
  xmlSetProp (n, (const xmlChar *) "firmware", (const xmlChar *) "efi");
  xmlNode *fw = xmlNewChild (n, NULL, (const xmlChar *) "firmware", NULL);
  const char *features[] = { "secure-boot", "enrolled-keys" };
  for (guint i = 0; i < G_N_ELEMENTS (features); i++)
    {
      xmlNode *f = xmlNewChild (fw, NULL, (const xmlChar *) "feature", NULL);
      xmlSetProp (f, (const xmlChar *) "enabled", (const xmlChar *) "no");
      xmlSetProp (f, (const xmlChar *) "name", (const xmlChar *) features[i]);
    }
}

/* Each clone its own UEFI variable store: the template's NVRAM path (its
 * text or <source>) goes, attributes such as template= stay, and libvirt
 * makes <nvram dir>/<clone>_VARS.fd from the template at first start. */
static void
own_nvram (xmlDoc *doc)
{
  g_autoptr(xmlXPathObject) o = xpath (doc, "/domain/os/nvram");
  for (guint i = 0; i < nodes_len (o); i++)
    {
      xmlNode *n = o->nodesetval->nodeTab[i];
      while (n->children)
        {
          xmlNode *c = n->children;
          xmlUnlinkNode (c);
          xmlFreeNode (c);
        }
    }
}

/* The clone's XML: new name, no UUID (libvirt makes one), new MAC on every
 * interface (the first one is the device's), template disks dropped (the
 * clone boots the streamed vDisk), boot device as asked. */
static xmlDoc *
clone_xml (const char *tpl_xml, const ProvOpts *o, const char *name,
           const char *mac, uint64_t size, GError **err)
{
  g_autoptr(xmlDoc) doc = parse_xml (tpl_xml, err);
  if (doc == NULL)
    return NULL;
  remove_nodes (doc, "/domain/uuid");
  remove_nodes (doc, "/domain/devices/disk[@device='disk']");
  if (secure_boot_reason (doc))
    disable_secure_boot (doc);      /* tpl_check refused it otherwise */
  own_nvram (doc);
  g_autoptr(xmlXPathObject) n = xpath (doc, "/domain/name");
  if (nodes_len (n) == 0)
    return NULL;
  xmlNodeSetContent (n->nodesetval->nodeTab[0], (const xmlChar *) name);
  remove_nodes (doc, "/domain/devices/interface/mac");
  g_autoptr(xmlXPathObject) nics = xpath (doc, "/domain/devices/interface");
  for (guint i = 0; i < nodes_len (nics); i++)
    {
      xmlNode *m = xmlNewChild (nics->nodesetval->nodeTab[i], NULL,
                                (const xmlChar *) "mac", NULL);
      xmlSetProp (m, (const xmlChar *) "address", (const xmlChar *) mac);
      /* further interfaces: libvirt generates their MACs */
      if (i == 0)
        continue;
      xmlUnlinkNode (m);
      xmlFreeNode (m);
    }
  bool ok;
  if (g_str_equal (o->boot, "pxe"))
    ok = set_pxe_boot (doc, err);
  else
    ok = attach_media_xml (doc, g_str_equal (o->boot, "iso") ? MEDIA_ISO
                                                             : MEDIA_PARTITION,
                           o->media, err);
  if (ok && cache_on_hypervisor (o->cache))
    ok = add_hypervisor_overlay (doc, o, name, size, err);
  return ok ? g_steal_pointer (&doc) : NULL;
}

/* A Secure Boot template is refused unless --no-secure-boot. */
static bool
tpl_check (const char *tpl_xml, const ProvOpts *o, GError **err)
{
  g_autoptr(xmlDoc) doc = parse_xml (tpl_xml, err);
  if (doc == NULL)
    return false;
  const char *sb = secure_boot_reason (doc);
  if (sb && !o->no_secure_boot)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_UNSUPPORTED,
                   "template '%s' boots with UEFI Secure Boot (%s): the "
                   "firmware refuses Debian's unsigned ipxe.efi (\"Access "
                   "Denied\"); give --no-secure-boot to provision the clones "
                   "with Secure Boot off, or turn it off in the template",
                   o->tpl_name, sb);
      return false;
    }
  return true;
}

static bool
prov_check (const ProvOpts *o, GError **err)
{
  if (o->tpl_name == NULL || o->collection == NULL || o->name_tpl == NULL)
    {
      df_usage_error (err, "--template, --collection and --name-template are "
                      "required");
      return false;
    }
  if (o->count < 1 || o->count > 1000)
    {
      df_usage_error (err, "--count must be 1-1000, not %d", o->count);
      return false;
    }
  if (!g_str_equal (o->boot, "pxe") && !g_str_equal (o->boot, "iso")
      && !g_str_equal (o->boot, "partition"))
    {
      df_usage_error (err, "--boot must be pxe, iso or partition");
      return false;
    }
  if (!g_str_equal (o->boot, "pxe")
      && (o->media == NULL || !g_path_is_absolute (o->media)))
    {
      df_usage_error (err, "--boot %s needs --media /absolute/FILE", o->boot);
      return false;
    }
  /* the overlay path goes into the domain XML: it must be absolute */
  if (cache_on_hypervisor (o->cache)
      && (o->disk_dir == NULL || !g_path_is_absolute (o->disk_dir)))
    {
      df_usage_error (err, "--cache hypervisor needs --disk-dir "
                      "/absolute/DIR");
      return false;
    }
  return true;
}

/* Register one device and define its domain; the device is removed again
 * when libvirt refuses the definition. */
static bool
provision_one (DfFarm *farm, VmConn *conn, const ProvOpts *o,
               const char *tpl_xml, const DfVdisk *vdisk, guint i,
               GPtrArray *records, GError **err)
{
  g_autofree char *name = expand_name (o->name_tpl, i, err);
  if (name == NULL)
    return false;
  g_autofree char *mac = new_mac (farm);
  DfDevice d = { .name = name, .mac = mac, .collection = o->collection,
                 .type = (char *) "production", .vdisk = vdisk->name,
                 .cache_mode = o->cache ? o->cache
                                         : (char *) df_cache_mode_default () };
  if (!df_farm_device_add (farm, &d, err))
    return false;
  g_autoptr(xmlDoc) doc = clone_xml (tpl_xml, o, name, mac,
                                     vdisk->virtual_size, err);
  if (doc == NULL || !redefine (conn, doc, o->print_xml, err))
    {
      df_farm_device_remove (farm, name, NULL);
      g_prefix_error (err, "%s: ", name);
      return false;
    }
  DfRecord *r = df_record_new ();
  df_record_str (r, "name", "name", name);
  df_record_str (r, "mac", "mac", mac);
  df_record_str (r, "vdisk", "vdisk", vdisk->name);
  df_record_str (r, "boot", "boot", o->boot);
  g_ptr_array_add (records, r);
  return true;
}

static bool
vm_provision (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "vm provision", "", 0, 0,
    "Create COUNT domains from a libvirt template: new name, UUID and MAC, "
    "no template disks; each is registered as a device of the collection "
    "(its default vDisk) and boots from the network (pxe), the BDM ISO or "
    "the BDM boot partition.  With --cache hypervisor each gets a qcow2 "
    "overlay in --disk-dir whose backing is its NBD export through this "
    "host's relay (streamsvc --relay), or on --nbd's server.  UEFI templates: "
    "each clone gets its own NVRAM (the template's path is dropped, libvirt "
    "makes one per domain from the VARS template); a template with Secure "
    "Boot (loader secure='yes', firmware feature secure-boot or "
    "enrolled-keys, or firmware='efi' without secure-boot disabled) is "
    "refused, because the firmware refuses Debian's unsigned iPXE, unless "
    "--no-secure-boot: the clones then let libvirt pick a firmware without "
    "Secure Boot.",
    "  diskfarm vm provision --template tpl-web --count 3 --collection web "
    "--name-template 'web{02}' --boot iso --media /srv/bdm.iso\n",
  };
  g_auto(ProvOpts) o = { .count = 1 };
  g_autofree char *cache_help = g_strdup_printf ("Device cache mode: %s",
                                                 df_cache_modes_expected ());
  const GOptionEntry entries[] = {
    { "template", 0, 0, G_OPTION_ARG_STRING, &o.tpl_name,
      "Template domain", "DOMAIN" },
    { "count", 'n', 0, G_OPTION_ARG_INT, &o.count, "How many (1-1000)", "N" },
    { "collection", 0, 0, G_OPTION_ARG_STRING, &o.collection,
      "Collection (with a default vDisk)", "NAME" },
    { "name-template", 0, 0, G_OPTION_ARG_STRING, &o.name_tpl,
      "Names: {02} = zero-padded index, {n} = index", "TEMPLATE" },
    { "boot", 'b', 0, G_OPTION_ARG_STRING, &o.boot,
      "pxe (default), iso or partition", "HOW" },
    { "media", 0, 0, G_OPTION_ARG_FILENAME, &o.media,
      "The ISO or partition image for --boot iso|partition", "FILE" },
    { "cache", 0, 0, G_OPTION_ARG_STRING, &o.cache,
      cache_help, "MODE" },
    { "nbd", 0, 0, G_OPTION_ARG_STRING, &o.nbd,
      "--cache hypervisor: the overlays' backing is this one NBD server "
      "(default: this host's relay, streamsvc --relay on "
      DF_RELAY_SOCKET ", which fails over between the farm's servers)",
      "HOST:PORT" },
    { "disk-dir", 0, 0, G_OPTION_ARG_FILENAME, &o.disk_dir,
      "Where --cache hypervisor overlays go", "DIR" },
    { "connect", 'c', 0, G_OPTION_ARG_STRING, &o.uri, "libvirt URI", "URI" },
    { "print-xml", 0, 0, G_OPTION_ARG_NONE, &o.print_xml,
      "Print each definition libvirt stored (instead of the table)", NULL },
    { "no-secure-boot", 0, 0, G_OPTION_ARG_NONE, &o.no_secure_boot,
      "UEFI templates with Secure Boot: clones boot with it off", NULL },
    G_OPTION_ENTRY_NULL
  };
  o.entries = df_options_keep (entries);
  if (!df_cmd_parse (ctx, &spec, entries, &argc, &argv, err))
    return false;
  if (o.boot == NULL)
    o.boot = g_strdup ("pxe");
  if (!prov_check (&o, err))
    return false;
  g_autoptr(DfFarm) farm = df_ctx_open_farm (ctx, false, err);
  g_autoptr(DfCollection) col = farm ? df_farm_collection_get (farm,
                                                               o.collection,
                                                               err) : NULL;
  if (col == NULL)
    return false;
  if (col->vdisk == NULL)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID, "collection '%s' has no "
                   "default vDisk", col->name);
      return false;
    }
  g_autoptr(VmConn) conn = vm_connect (o.uri, err);
  g_autofree char *tpl_xml = conn ? inactive_xml (conn, o.tpl_name, err)
                                  : NULL;
  if (tpl_xml == NULL || !tpl_check (tpl_xml, &o, err))
    return false;
  g_autoptr(GPtrArray) records = df_record_list_new ();
  g_autoptr(DfVdisk) vdisk = df_farm_vdisk_get (farm, col->vdisk, err);
  if (vdisk == NULL)
    return false;
  for (guint i = 1; i <= (guint) o.count; i++)
    if (!provision_one (farm, conn, &o, tpl_xml, vdisk, i, records, err))
      {
        if (records->len > 0)
          g_prefix_error (err, "%u domain(s) made before: ", records->len);
        return false;
      }
  if (!o.print_xml)
    df_print_list (records, ctx->json, "nothing made");
  return true;
}

/* ---- list ----------------------------------------------------------------- */

static DfRecord *
domain_record (DfFarm *farm, virDomainPtr d)
{
  DfRecord *r = df_record_new ();
  df_record_str (r, "domain", "domain", virDomainGetName (d));
  int active = virDomainIsActive (d);
  df_record_str (r, "state", "state", active == 1 ? "running" : "shut off");
  g_autofree char *xml = virDomainGetXMLDesc (d, VIR_DOMAIN_XML_INACTIVE);
  g_autoptr(xmlDoc) doc = xml ? parse_xml (xml, NULL) : NULL;
  g_autofree char *mac = doc ? xpath_attr (doc, "/domain/devices/interface"
                                           "/mac", "address") : NULL;
  df_record_str (r, "mac", "mac", mac);
  g_autoptr(DfDevice) dev = farm && mac ? df_farm_device_get (farm, mac, NULL)
                                        : NULL;
  g_autoptr(DfVersion) v = dev ? df_farm_version_for_type (farm, dev->vdisk,
                                                           dev->type, NULL)
                               : NULL;
  df_record_str (r, "device", "device", dev ? dev->name : NULL);
  df_record_str (r, "vdisk", "vdisk", dev ? dev->vdisk : NULL);
  df_record_opt_int (r, "version", "version", v != NULL, v ? v->number : 0);
  df_record_opt_int (r, "generation", "generation", dev != NULL,
                     dev ? dev->generation : 0);
  return r;
}

static bool
vm_list (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "vm list", "", 0, 0,
    "List the hypervisor's domains with the device each one is (by the MAC "
    "of its first interface), its vDisk, the version it boots and its boot "
    "generation.",
    "  diskfarm vm list --connect qemu:///system\n",
  };
  g_autofree char *uri = NULL;
  const GOptionEntry entries[] = {
    { "connect", 'c', 0, G_OPTION_ARG_STRING, &uri, "libvirt URI", "URI" },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (DfFarm) farm = df_cmd_open_farm (ctx, &spec, entries, &argc, &argv,
                                              err);
  if (farm == NULL)
    return false;
  g_autoptr(VmConn) conn = vm_connect (uri, err);
  if (conn == NULL)
    return false;
  virDomainPtr *doms = NULL;
  int n = virConnectListAllDomains (conn, &doms, 0);
  if (n < 0)
    return virt_fail (err, "cannot list domains");
  g_autoptr(GPtrArray) records = df_record_list_new ();
  for (int i = 0; i < n; i++)
    {
      g_ptr_array_add (records, domain_record (farm, doms[i]));
      virDomainFree (doms[i]);
    }
  free (doms);
  df_print_list (records, ctx->json, "no domain");
  return true;
}

const DfCmd df_vm_cmds[] = {
  { "attach-media", "attach BDM media first in the boot order",
    vm_attach_media },
  { "provision", "create domains from a template as devices", vm_provision },
  { "list", "domains with their device, vDisk and version", vm_list },
  { NULL, NULL, NULL }
};
