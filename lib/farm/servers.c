/* diskfarm: stream servers and the auto-add settings in the farm DB.
 *
 * Rules of every mutator (farm.c): arguments are checked before the DB is
 * touched; each runs in one write scope together with its audit row, so a
 * refused call changes nothing. */
#include "farm.h"
#include "farm-private.h"
#include "common.h"

#include <arpa/inet.h>
#include <string.h>

/* ---- servers ---------------------------------------------------------- */

/* The fields of SERVER_COLS, in its order. */
static const DfField server_fields[] = {
  DF_FIELD (INT64, DfServer, id),
  DF_FIELD (TEXT, DfServer, name),
  DF_FIELD (TEXT, DfServer, address),
  DF_FIELD (PORT, DfServer, iscsi_port),
  DF_FIELD (PORT, DfServer, nbd_port),
  DF_FIELD (PORT, DfServer, admin_port),
  DF_FIELD (INT, DfServer, power),
  DF_FIELD (TEXT, DfServer, created),
  DF_FIELD (TEXT, DfServer, kind),
  DF_FIELD (INT64, DfServer, registered_ms),    /* NULL: 0, never */
  DF_FIELD (INT64, DfServer, heartbeat_ms),     /* NULL: 0, never */
  DF_FIELD (INT64, DfServer, timeout_ms),
  DF_FIELD (INT64, DfServer, load.sessions),
  DF_FIELD (INT64, DfServer, load.bytes_per_s),
  DF_FIELD (INT64, DfServer, load.cpu_permille),
  DF_FIELD (INT64, DfServer, load.free_bytes),
  DF_FIELD (INT64, DfServer, load.versions_held),
  DF_FIELD (INT64, DfServer, load.versions_verified),
  DF_FIELD (TEXT, DfServer, software),
  DF_FIELD (TEXT, DfServer, portal),            /* NULL: none */
};

static const DfRowType server_row =
  DF_ROW_TYPE (DfServer, server_fields, NULL, df_server_free);

void
df_server_free (DfServer *s)
{
  df_farm_row_free (&server_row, s);
}

#define SERVER_COLS \
  "id, name, address, iscsi_port, nbd_port, admin_port, power, created, " \
  "kind, registered_ms, heartbeat_ms, timeout_ms, sessions, bytes_per_s, " \
  "cpu_permille, free_bytes, versions_held, versions_verified, software, " \
  "portal"

/* The address goes into boot scripts and media: an IP literal or an RFC
 * 1123 host name, nothing else. */
static bool
check_address (const char *a, GError **err)
{
  if (!a || !*a)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "a server needs an address");
      return false;
    }
  return df_validate_host ("server address", a, err);
}

/* a, in network order, is 0.0.0.0, 127/8 or 224/4 (IPv4), or ::, ::1 or
 * ff00::/8 (IPv6). */
static bool
unusable_portal (int family, const guint8 *a)
{
  static const guint8 zero[16], one[16] = { [15] = 1 };
  if (family == AF_INET)
    return memcmp (a, zero, 4) == 0 || a[0] == 127 || (a[0] & 0xf0) == 0xe0;
  return memcmp (a, zero, 16) == 0 || memcmp (a, one, 16) == 0
         || a[0] == 0xff;
}

bool
df_farm_check_portal (const char *portal, GError **err)
{
  guint8 a[16];
  int family = strchr (portal, ':') ? AF_INET6 : AF_INET;
  if (inet_pton (family, portal, a) != 1)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "portal '%s' is not an IPv4 or IPv6 address (a floating "
                   "address moves between hosts: no host name)", portal);
      return false;
    }
  if (unusable_portal (family, a))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "portal '%s' cannot be a wildcard, loopback or multicast "
                   "address", portal);
      return false;
    }
  return true;
}

const char *
df_server_iscsi_address (const DfServer *s)
{
  return s->portal ? s->portal : s->address;
}

bool
df_farm_check_server (const DfServer *s, GError **err)
{
  if (!df_validate_name ("server", s->name, err) || !check_address (s->address, err))
    return false;
  if (s->portal && !df_farm_check_portal (s->portal, err))
    return false;
  if (s->iscsi_port == 0 || s->nbd_port == 0 || s->admin_port == 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "server ports must be 1-65535");
      return false;
    }
  if (s->power < 1 || s->power > 1000)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "server power must be 1-1000, not %d", s->power);
      return false;
    }
  return true;
}

bool
df_farm_server_insert (DfFarm *farm, const DfServer *s, GError **err)
{
  g_autofree char *at = df_farm_now ();
  const DfParam p[] = { DF_TEXT (s->name), DF_SERVER_PLACE (s), DF_TEXT (at),
                        DF_TEXT (s->portal) };
  if (df_farm_exec (farm,
    "INSERT INTO servers (name, address, iscsi_port, nbd_port, admin_port, "
    "power, created, portal) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", p,
    G_N_ELEMENTS (p), err))
    return true;
  if (err && *err && (*err)->code == DF_ERROR_EXISTS)
    {
      g_clear_error (err);
      g_set_error (err, DF_ERROR, DF_ERROR_EXISTS,
                   "a server named '%s' already exists", s->name);
    }
  return false;
}

/* The audit detail of an added or changed server (new string). */
char *
df_farm_server_audit_detail (const DfServer *s)
{
  g_autofree char *portal = s->portal
    ? g_strdup_printf (",\"portal\":\"%s\"", s->portal) : g_strdup ("");
  return g_strdup_printf (
    "{\"address\":\"%s\",\"iscsi_port\":%u,\"nbd_port\":%u,"
    "\"admin_port\":%u,\"power\":%d%s}", s->address, s->iscsi_port,
    s->nbd_port, s->admin_port, s->power, portal);
}

/* Writes s's row (insert or update), inside the write scope. */
typedef bool (*ServerRowFn) (DfFarm *farm, const DfServer *s, GError **err);

/* Add or update: s checked at the edge, then row and its audit row
 * (action, the place as detail) in one write scope. */
static bool
server_write (DfFarm *farm, const DfServer *s, ServerRowFn row,
              const char *action, GError **err)
{
  if (!df_farm_check_server (s, err))
    return false;
  g_autofree char *detail = df_farm_server_audit_detail (s);
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = row (farm, s, err)
           && df_farm_audit_row (farm, action, s->name, detail, err);
  return t.ok;
}

bool
df_farm_server_add (DfFarm *farm, const DfServer *s, GError **err)
{
  return server_write (farm, s, df_farm_server_insert, "server.add", err);
}

DfServer *
df_farm_server_get (DfFarm *farm, const char *name, GError **err)
{
  if (!df_validate_name ("server", name, err))
    return NULL;
  return df_farm_row_named (farm, "SELECT " SERVER_COLS " FROM servers "
                            "WHERE name = ?", "server", name, &server_row,
                            err);
}

GPtrArray *
df_farm_server_list (DfFarm *farm, GError **err)
{
  return df_farm_select (farm,
                         "SELECT " SERVER_COLS " FROM servers ORDER BY name",
                         NULL, 0, &server_row, err);
}

static bool
server_set_row (DfFarm *farm, const DfServer *s, GError **err)
{
  const DfParam p[] = { DF_SERVER_PLACE (s), DF_TEXT (s->portal),
                        DF_TEXT (s->name) };
  if (!df_farm_exec (farm,
    "UPDATE servers SET address = ?, iscsi_port = ?, nbd_port = ?, "
    "admin_port = ?, power = ?, portal = ? WHERE name = ?", p,
    G_N_ELEMENTS (p), err))
    return false;
  return df_farm_changed_row (farm, err, "no server named '%s'", s->name);
}

bool
df_farm_server_update (DfFarm *farm, const DfServer *s, GError **err)
{
  return server_write (farm, s, server_set_row, "server.set", err);
}

static bool
server_remove_locked (DfFarm *farm, const char *name, GError **err)
{
  const DfParam p[] = { DF_TEXT (name) };
  if (!df_farm_exec (farm,
    "DELETE FROM servers WHERE name = ?", p, G_N_ELEMENTS (p), err))
    return false;
  return df_farm_changed_row (farm, err, "no server named '%s'", name)
         && df_farm_audit_row (farm, "server.remove", name, NULL, err);
}

bool
df_farm_server_remove (DfFarm *farm, const char *name, GError **err)
{
  return df_farm_mutate_named (farm, "server", name, server_remove_locked,
                               err);
}

/* ---- auto-add --------------------------------------------------------- */

void
df_auto_add_free (DfAutoAdd *a)
{
  if (!a)
    return;
  g_free (a->collection);
  g_free (a->name_template);
  g_free (a);
}

DfAutoAdd *
df_farm_auto_add_get (DfFarm *farm, GError **err)
{
  GError *e = NULL;
  g_autoptr (DfAutoAdd) a = g_new0 (DfAutoAdd, 1);
  g_autofree char *en = df_farm_setting_get (farm, DF_SETTING_AUTO_ENABLED,
                                             &e);
  if (!e)
    a->collection = df_farm_setting_get (farm, DF_SETTING_AUTO_COLLECTION, &e);
  if (!e)
    a->name_template = df_farm_setting_get (farm, DF_SETTING_AUTO_TEMPLATE,
                                            &e);
  if (e)
    {
      g_propagate_error (err, e);
      return NULL;
    }
  a->enabled = en && g_str_equal (en, "true");
  if (!a->name_template)
    a->name_template = g_strdup (DF_AUTO_ADD_TEMPLATE);
  return g_steal_pointer (&a);
}

char *
df_auto_add_name (const char *tmpl, const char *mac, guint n, GError **err)
{
  g_autoptr (GString) out = g_string_new (NULL);
  for (const char *p = tmpl; *p;)
    {
      if (g_str_has_prefix (p, "{mac}"))
        {
          for (const char *m = mac; *m; m++)
            if (*m != ':')
              g_string_append_c (out, *m);
          p += 5;
        }
      else if (g_str_has_prefix (p, "{n}"))
        {
          g_string_append_printf (out, "%u", n);
          p += 3;
        }
      else if (*p == '{' || *p == '}')
        {
          g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                       "name template '%s': only {mac} and {n} may stand "
                       "in braces", tmpl);
          return NULL;
        }
      else
        g_string_append_c (out, *p++);
    }
  if (!df_validate_name ("device", out->str, err))
    {
      g_prefix_error (err, "name template '%s': ", tmpl);
      return NULL;
    }
  return g_string_free (g_steal_pointer (&out), FALSE);
}

static bool
setting_write (DfFarm *farm, const char *key, const char *value, GError **err)
{
  return df_farm_setting_set (farm, key, value, err);
}

static bool
check_auto_add (DfFarm *farm, const DfAutoAdd *a, GError **err)
{
  if (!a->enabled)
    return true;
  if (!a->collection)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "auto-add needs a collection (its default vdisk is what "
                   "new devices boot)");
      return false;
    }
  g_autoptr (DfCollection) c = df_farm_collection_get (farm, a->collection,
                                                       err);
  if (!c)
    return false;
  if (!c->vdisk)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "collection '%s' has no default vdisk: auto-added "
                   "devices would have nothing to boot", c->name);
      return false;
    }
  g_autofree char *probe = df_auto_add_name (
    a->name_template ? a->name_template : DF_AUTO_ADD_TEMPLATE,
    "52:54:00:00:00:01", 1, err);
  return probe != NULL;
}

bool
df_farm_auto_add_set (DfFarm *farm, const DfAutoAdd *a, GError **err)
{
  if (!check_auto_add (farm, a, err))
    return false;
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = setting_write (farm, DF_SETTING_AUTO_ENABLED,
                          a->enabled ? "true" : "false", err)
           && setting_write (farm, DF_SETTING_AUTO_COLLECTION, a->collection,
                             err)
           && setting_write (farm, DF_SETTING_AUTO_TEMPLATE, a->name_template,
                             err);
  return t.ok;
}

/* First free name from the template (numbers 1..9999 when it has {n}). */
static char *
free_device_name (DfFarm *farm, const char *tmpl, const char *mac,
                  GError **err)
{
  bool numbered = strstr (tmpl, "{n}") != NULL;
  for (guint n = 1; n < 10000; n++)
    {
      g_autofree char *name = df_auto_add_name (tmpl, mac, n, err);
      if (!name)
        return NULL;
      GError *e = NULL;
      g_autoptr (DfDevice) d = df_farm_device_get (farm, name, &e);
      if (!d && e && e->code == DF_ERROR_NOT_FOUND)
        {
          g_error_free (e);
          return g_steal_pointer (&name);
        }
      if (e)
        {
          g_propagate_error (err, e);
          return NULL;
        }
      if (!numbered)
        break;
    }
  g_set_error (err, DF_ERROR, DF_ERROR_EXISTS,
               "auto-add: no free device name from template '%s'", tmpl);
  return NULL;
}

static bool
auto_add_locked (DfFarm *farm, const DfAutoAdd *a, const char *mac,
                 char **name, GError **err)
{
  g_autoptr (DfCollection) c = df_farm_collection_get (farm, a->collection,
                                                       err);
  if (!c)
    return false;
  g_autofree char *dname = free_device_name (farm, a->name_template, mac,
                                             err);
  if (!dname)
    return false;
  DfDevice d = {
    .name = dname, .mac = (char *) mac, .collection = c->name,
    .type = (char *) "production", .vdisk = c->vdisk,
  }; /* cache_mode NULL: the farm's default */
  if (!df_farm_device_add (farm, &d, err))
    return false;
  *name = g_steal_pointer (&dname);
  return true;
}

bool
df_farm_auto_add_device (DfFarm *farm, const char *mac, char **name,
                         GError **err)
{
  char canon[18];
  if (!df_parse_mac (mac, canon, err))
    return false;
  g_autoptr (DfAutoAdd) a = df_farm_auto_add_get (farm, err);
  if (!a)
    return false;
  if (!a->enabled || !a->collection)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_UNSUPPORTED,
                   "auto-add is disabled");
      return false;
    }
  /* a re-run after a failed COMMIT makes the name again */
  g_autofree char *made = NULL;
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    {
      g_clear_pointer (&made, g_free);
      t.ok = auto_add_locked (farm, a, canon, &made, err);
    }
  if (t.ok)
    *name = g_steal_pointer (&made);
  return t.ok;
}
