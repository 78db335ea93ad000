/* diskfarm: floating iSCSI portals.  See farm.h "floating portals".
 *
 * Every stream server with a portal runs keepalived (Debian's package)
 * with the file rendered here: one VRRP instance per server's portal, this
 * host MASTER of its own and BACKUP of the others, all tracking the local
 * streamsvc's /v1/health.  When a server's streamsvc (or its host) dies,
 * its instances go to FAULT (or fall silent) and the backup with the
 * highest priority adopts the portal and announces it by gratuitous ARP;
 * the iBFT initiators that knew only that address log in again there. */
#include "farm.h"
#include "common.h"

#include <string.h>

#define PRIORITY_OWN 200
#define PRIORITY_BACKUP_TOP 150

/* The stream servers that take part: the ones with a portal (bootstrap
 * servers never hold one), by name (the registry's order). */
static GPtrArray *
portal_servers (GPtrArray *servers)
{
  GPtrArray *out = g_ptr_array_new ();
  for (guint i = 0; i < servers->len; i++)
    {
      const DfServer *s = servers->pdata[i];
      if (s->portal && g_strcmp0 (s->kind, DF_SERVER_KIND_BOOTSTRAP) != 0)
        g_ptr_array_add (out, (gpointer) s);
    }
  return out;
}

/* Backup order for one portal: more power first, then by name. */
static gint
backup_compare (gconstpointer pa, gconstpointer pb)
{
  const DfServer *a = *(const DfServer *const *) pa;
  const DfServer *b = *(const DfServer *const *) pb;
  if (a->power != b->power)
    return a->power > b->power ? -1 : 1;
  return strcmp (a->name, b->name);
}

int
df_portal_priority (GPtrArray *servers, const char *owner, const char *host)
{
  if (g_strcmp0 (owner, host) == 0)
    return PRIORITY_OWN;
  g_autoptr (GPtrArray) ps = portal_servers (servers);
  g_autoptr (GPtrArray) backups = g_ptr_array_new ();
  for (guint i = 0; i < ps->len; i++)
    if (strcmp (((DfServer *) ps->pdata[i])->name, owner) != 0)
      g_ptr_array_add (backups, ps->pdata[i]);
  g_ptr_array_sort (backups, backup_compare);
  for (guint i = 0; i < backups->len; i++)
    if (strcmp (((DfServer *) backups->pdata[i])->name, host) == 0)
      return MAX (1, PRIORITY_BACKUP_TOP - (int) i);
  return 0;
}

/* keepalived reads words: an interface name is 1-15 bytes of [A-Za-z0-9._@-]
 * (the kernel's IFNAMSIZ less the NUL). */
static bool
check_interface (const char *ifname, GError **err)
{
  size_t n = ifname ? strlen (ifname) : 0;
  bool ok = n >= 1 && n <= 15;
  for (size_t i = 0; ok && i < n; i++)
    ok = g_ascii_isalnum (ifname[i]) || strchr ("._@-", ifname[i]);
  if (!ok)
    g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                 "interface '%s' is not a network interface name (1-15 of "
                 "A-Z a-z 0-9 . _ @ -)", ifname ? ifname : "");
  return ok;
}

/* The health URL goes into keepalived's script line, which it splits at
 * spaces: printable ASCII without spaces or quotes, http:// only. */
static bool
check_health_url (const char *url, GError **err)
{
  bool ok = g_str_has_prefix (url, "http://") && strlen (url) <= 512;
  for (const char *p = url; ok && *p; p++)
    ok = g_ascii_isgraph (*p) && !strchr ("\"'\\", *p);
  if (!ok)
    g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                 "health URL '%s' must be http://... without spaces or "
                 "quotes", url);
  return ok;
}

/* http://ADDRESS:ADMIN/v1/health of s (new string). */
static char *
health_url_of (const DfServer *s)
{
  bool v6 = strchr (s->address, ':') != NULL;
  return g_strdup_printf ("http://%s%s%s:%u/v1/health", v6 ? "[" : "",
                          s->address, v6 ? "]" : "", s->admin_port);
}

static void
append_globals (GString *gs, const char *self, const char *farm_uuid,
                const char *url)
{
  g_string_append_printf (gs,
    "# keepalived.conf of stream server %s (farm %s): its floating iSCSI\n"
    "# portal and the other servers', written by `diskfarm server\n"
    "# portal-config %s`.  Write it again on every server when a server\n"
    "# or portal is added, changed or removed (router ids follow the\n"
    "# servers' order).\n"
    "global_defs {\n"
    "  router_id diskfarm-%s\n"
    "  script_user nobody nogroup\n"
    "  enable_script_security\n"
    "}\n\n"
    "# the local streamsvc answers its health URL: else every instance of\n"
    "# this host goes to FAULT and gives its portals up\n"
    "vrrp_script diskfarm_streamsvc {\n"
    "  script \"/usr/bin/curl -fsS -m 1 -o /dev/null %s\"\n"
    "  interval 1\n"
    "  timeout 2\n"
    "  fall 2\n"
    "  rise 2\n"
    "}\n", self, farm_uuid ? farm_uuid : "-", self, self, url);
}

static void
append_instance (GString *gs, const DfServer *owner, bool own, guint vrid,
                 int priority, const char *ifname)
{
  bool v6 = strchr (owner->portal, ':') != NULL;
  g_string_append_printf (gs,
    "\n# portal of %s%s\n"
    "vrrp_instance diskfarm_%s {\n"
    "  state %s\n"
    "  interface %s\n"
    "  virtual_router_id %u\n"
    "  priority %d\n"
    "  advert_int 1\n"
    "%s"
    "  virtual_ipaddress {\n"
    "    %s dev %s\n"
    "  }\n"
    "  track_script {\n"
    "    diskfarm_streamsvc\n"
    "  }\n"
    "}\n", owner->name, own ? " (this server's own)" : "", owner->name,
    own ? "MASTER" : "BACKUP", ifname, vrid, priority,
    v6 ? "  native_ipv6\n" : "", owner->portal, ifname);
}

char *
df_portal_keepalived_render (GPtrArray *servers, const char *self,
                             const char *farm_uuid,
                             const DfPortalConfOpts *o, GError **err)
{
  if (!check_interface (o->interface, err)
      || (o->health_url && !check_health_url (o->health_url, err)))
    return NULL;
  g_autoptr (GPtrArray) ps = portal_servers (servers);
  const DfServer *me = NULL;
  for (guint i = 0; i < ps->len; i++)
    if (strcmp (((DfServer *) ps->pdata[i])->name, self) == 0)
      me = ps->pdata[i];
  if (!me)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "server %s has no portal (set one with 'diskfarm server "
                   "set %s --portal IP')", self, self);
      return NULL;
    }
  if (o->vrid_base < 1 || o->vrid_base + ps->len - 1 > 255)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "router ids %u-%u: VRRP has 1-255 (give a smaller "
                   "--vrid-base)", o->vrid_base, o->vrid_base + ps->len - 1);
      return NULL;
    }
  g_autofree char *url = o->health_url ? g_strdup (o->health_url)
                                       : health_url_of (me);
  if (!check_health_url (url, err))
    return NULL;
  GString *gs = g_string_new (NULL);
  append_globals (gs, self, farm_uuid, url);
  for (guint i = 0; i < ps->len; i++)
    {
      const DfServer *owner = ps->pdata[i];
      append_instance (gs, owner, owner == me, o->vrid_base + i,
                       df_portal_priority (servers, owner->name, self),
                       o->interface);
    }
  return g_string_free (gs, FALSE);
}

char *
df_farm_portal_keepalived_conf (DfFarm *farm, const char *self,
                                const DfPortalConfOpts *o, GError **err)
{
  g_autoptr (DfServer) me = df_farm_server_get (farm, self, err);
  if (!me)
    return NULL;
  g_autoptr (GPtrArray) servers = df_farm_server_list (farm, err);
  if (!servers)
    return NULL;
  return df_portal_keepalived_render (servers, self, df_farm_uuid (farm), o,
                                      err);
}
