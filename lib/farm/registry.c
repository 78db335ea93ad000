/* diskfarm: the server registry and the store state (see farm.h).
 *
 * Registration fills or refreshes the servers row of the server's name,
 * so a row the admin added with `server add` is the same row the server
 * then heartbeats into.  Heartbeats and store-state records are one
 * statement each, outside any audit: they are telemetry, written every
 * few seconds. */
#include "farm.h"
#include "farm-private.h"
#include "common.h"

#include <string.h>

/* ---- names and clock -------------------------------------------------- */

const char *
df_server_state_name (DfServerState s)
{
  switch (s)
    {
    case DF_SERVER_HEALTHY:
      return "healthy";
    case DF_SERVER_UNHEALTHY:
      return "unhealthy";
    case DF_SERVER_NEVER_SEEN:
    default:
      return "never-seen";
    }
}

DfServerState
df_server_state (const DfServer *s, gint64 now_ms)
{
  if (s->heartbeat_ms <= 0)
    return DF_SERVER_NEVER_SEEN;
  return now_ms - s->heartbeat_ms <= s->timeout_ms ? DF_SERVER_HEALTHY
                                                   : DF_SERVER_UNHEALTHY;
}

gint64
df_farm_now_ms (void)
{
  return g_get_real_time () / 1000;
}

static const char *const store_state_names[] = {
  [DF_STORE_PRESENT] = "present",
  [DF_STORE_VERIFIED] = "verified",
  [DF_STORE_MISSING] = "missing",
  [DF_STORE_CORRUPT] = "corrupt",
};

const char *
df_store_state_name (DfStoreState s)
{
  g_assert ((guint) s < G_N_ELEMENTS (store_state_names));
  return store_state_names[s];
}

static DfStoreState
store_state_parse (const char *s)
{
  for (guint i = 0; i < G_N_ELEMENTS (store_state_names); i++)
    if (g_strcmp0 (s, store_state_names[i]) == 0)
      return (DfStoreState) i;
  return DF_STORE_CORRUPT; /* the CHECK constraint keeps others out */
}

/* ---- registration ------------------------------------------------------- */

static bool
check_registration (const DfServer *s, GError **err)
{
  if (!df_farm_check_server (s, err))
    return false;
  if (g_strcmp0 (s->kind, DF_SERVER_KIND_STREAM) != 0
      && g_strcmp0 (s->kind, DF_SERVER_KIND_BOOTSTRAP) != 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "server kind must be " DF_SERVER_KIND_STREAM " or "
                   DF_SERVER_KIND_BOOTSTRAP);
      return false;
    }
  if (s->timeout_ms < 1 || s->timeout_ms > 24 * 3600 * 1000)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "heartbeat timeout must be 1 ms to 24 h, not %" G_GINT64_FORMAT
                   " ms", s->timeout_ms);
      return false;
    }
  return true;
}

/* The row as registration leaves it: what it said, alive now, no load. */
static bool
registry_row_set (DfFarm *farm, const DfServer *s, gint64 now,
                  GError **err)
{
  const DfParam p[] = {
    DF_SERVER_PLACE (s), DF_TEXT (s->kind), DF_INT (now), DF_INT (now),
    DF_INT (s->timeout_ms), DF_TEXT (s->software), DF_TEXT (s->name)
  };
  return df_farm_exec (farm,
    "UPDATE servers SET address = ?, iscsi_port = ?, nbd_port = ?, "
    "admin_port = ?, power = ?, kind = ?, registered_ms = ?, "
    "heartbeat_ms = ?, timeout_ms = ?, sessions = 0, bytes_per_s = 0, "
    "cpu_permille = 0, software = ? WHERE name = ?", p, G_N_ELEMENTS (p),
    err);
}

/* The registration changes what `server add` recorded (or adds it). */
static bool
registration_changes (const DfServer *old, const DfServer *s)
{
  return !old || g_strcmp0 (old->address, s->address) != 0
         || old->iscsi_port != s->iscsi_port || old->nbd_port != s->nbd_port
         || old->admin_port != s->admin_port || old->power != s->power;
}

static bool
register_locked (DfFarm *farm, const DfServer *s, GError **err)
{
  GError *e = NULL;
  g_autoptr (DfServer) old = df_farm_server_get (farm, s->name, &e);
  if (!old && !g_error_matches (e, DF_ERROR, DF_ERROR_NOT_FOUND))
    {
      g_propagate_error (err, e);
      return false;
    }
  g_clear_error (&e);
  if (old && g_strcmp0 (old->kind, s->kind) != 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_EXISTS,
                   "server '%s' is a %s: a %s cannot register under its "
                   "name", s->name, old->kind, s->kind);
      return false;
    }
  if (!old && !df_farm_server_insert (farm, s, err))
    return false;
  if (!registry_row_set (farm, s, df_farm_now_ms (), err))
    return false;
  if (!registration_changes (old, s))
    return true;
  g_autofree char *detail = df_farm_server_audit_detail (s);
  return df_farm_audit_row (farm, "server.register", s->name, detail, err);
}

bool
df_farm_server_register (DfFarm *farm, const DfServer *s, GError **err)
{
  if (!check_registration (s, err))
    return false;
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = register_locked (farm, s, err);
  return t.ok;
}

bool
df_farm_server_heartbeat (DfFarm *farm, const char *name, gint64 now_ms,
                          const DfServerLoad *l, GError **err)
{
  if (!df_validate_name ("server", name, err))
    return false;
  /* versions held and verified: what its store state says now (a store
   * sync or vdisk verify since the last beat counts at once) */
  const DfParam p[] = {
    DF_INT (now_ms), DF_INT (MAX (l->sessions, 0)),
    DF_INT (MAX (l->bytes_per_s, 0)), DF_INT (MAX (l->cpu_permille, 0)),
    DF_INT (MAX (l->free_bytes, 0)), DF_TEXT (name)
  };
  if (!df_farm_exec (farm,
    "UPDATE servers SET heartbeat_ms = ?, sessions = ?, bytes_per_s = ?, "
    "cpu_permille = ?, free_bytes = ?, "
    "versions_held = (SELECT count(*) FROM store_state "
    "  WHERE server_id = servers.id AND state <> 'missing'), "
    "versions_verified = (SELECT count(*) FROM store_state "
    "  WHERE server_id = servers.id AND state = 'verified') "
    "WHERE name = ?", p, G_N_ELEMENTS (p), err))
    return false;
  return df_farm_changed_row (farm, err, "no server named '%s'", name);
}

/* ---- store state -------------------------------------------------------- */

#define STORE_COLS \
  "s.name, d.name, v.number, st.state, st.sha256, st.checked_ms, st.detail"
#define STORE_FROM \
  " FROM store_state st JOIN servers s ON s.id = st.server_id" \
  " JOIN versions v ON v.id = st.version_id" \
  " JOIN vdisks d ON d.id = v.vdisk_id"

/* The columns of STORE_COLS, in order. */
static const DfField store_fields[] = {
  DF_FIELD (TEXT, DfStoreRecord, server),
  DF_FIELD (TEXT, DfStoreRecord, vdisk),
  DF_FIELD (INT, DfStoreRecord, number),
  DF_FIELD (SKIP, DfStoreRecord, state),
  DF_FIELD (TEXT, DfStoreRecord, sha256),
  DF_FIELD (INT64, DfStoreRecord, checked_ms),
  DF_FIELD (TEXT, DfStoreRecord, detail),
};

static void
store_record_finish (gpointer obj, DfDbStmt *st)
{
  DfStoreRecord *r = obj;
  r->state = store_state_parse (df_db_col_text (st, 3));
}

static const DfRowType store_row = DF_ROW_TYPE (
    DfStoreRecord, store_fields, store_record_finish, df_store_record_free);

void
df_store_record_free (DfStoreRecord *r)
{
  df_farm_row_free (&store_row, r);
}

/* Id of version vdisk@number (NOT_FOUND names it). */
static bool
version_id (DfFarm *farm, const char *vdisk, int number, gint64 *id,
            GError **err)
{
  g_autoptr (DfDbStmt) st = df_farm_stmt (farm,
    "SELECT v.id FROM versions v JOIN vdisks d ON d.id = v.vdisk_id "
    "WHERE d.name = ? AND v.number = ?", err);
  if (!st)
    return false;
  df_db_bind_text (st, 1, vdisk);
  df_db_bind_int64 (st, 2, number);
  int r = df_db_step (st, err);
  if (r == 1)
    *id = df_db_col_int64 (st, 0);
  else if (r == 0)
    g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND, "no version %s@%d",
                 vdisk, number);
  return r == 1;
}

static bool
server_id (DfFarm *farm, const char *name, gint64 *id, GError **err)
{
  return df_farm_lookup_id (farm, "server",
                            "SELECT id FROM servers WHERE name = ?", name, id,
                            err);
}

bool
df_farm_store_state_set (DfFarm *farm, const char *server, const char *vdisk,
                         int number, DfStoreState state, const char *sha256,
                         const char *detail, GError **err)
{
  g_autofree char *sha = NULL;
  gint64 sid = 0, vid = 0;
  if (!df_validate_name ("server", server, err)
      || !df_farm_check_sha256 (sha256, true, &sha, err)
      || !server_id (farm, server, &sid, err)
      || !version_id (farm, vdisk, number, &vid, err))
    return false;
  const DfParam p[] = {
    DF_INT (sid), DF_INT (vid), DF_TEXT (df_store_state_name (state)),
    DF_TEXT (sha), DF_INT (df_farm_now_ms ()), DF_TEXT (detail)
  };
  return df_farm_exec (farm,
    "INSERT INTO store_state (server_id, version_id, state, sha256, "
    "checked_ms, detail) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (server_id, version_id) DO UPDATE SET "
    "state = excluded.state, sha256 = excluded.sha256, "
    "checked_ms = excluded.checked_ms, detail = excluded.detail",
    p, G_N_ELEMENTS (p), err);
}

GPtrArray *
df_farm_store_state_list (DfFarm *farm, const char *vdisk, GError **err)
{
  const DfParam p[] = { DF_TEXT (vdisk) };
  return df_farm_select (farm, vdisk
    ? "SELECT " STORE_COLS STORE_FROM " WHERE d.name = ?"
      " ORDER BY d.name, v.number, s.name"
    : "SELECT " STORE_COLS STORE_FROM " ORDER BY d.name, v.number, s.name",
    p, vdisk ? 1 : 0, &store_row, err);
}

DfStoreRecord *
df_farm_store_state_get (DfFarm *farm, const char *server, const char *vdisk,
                         int number, GError **err)
{
  const DfParam p[] = { DF_TEXT (server), DF_TEXT (vdisk), DF_INT (number) };
  return df_farm_select_one (farm, "SELECT " STORE_COLS STORE_FROM
                             " WHERE s.name = ? AND d.name = ? "
                             "AND v.number = ?", p, G_N_ELEMENTS (p),
                             &store_row, err);
}

/* The farm has at least one store-state record. */
static bool
store_state_known (DfFarm *farm, bool *known, GError **err)
{
  g_autoptr (DfDbStmt) st = df_farm_stmt (farm,
    "SELECT 1 FROM store_state LIMIT 1", err);
  if (!st)
    return false;
  int r = df_db_step (st, err);
  *known = r == 1;
  return r >= 0;
}

/* server holds number itself verified. */
static bool
holds_one (DfFarm *farm, const char *server, const char *vdisk, int number,
           bool *holds, GError **err)
{
  GError *e = NULL;
  g_autoptr (DfStoreRecord) r = df_farm_store_state_get (farm, server, vdisk,
                                                         number, &e);
  if (e)
    {
      g_propagate_error (err, e);
      return false;
    }
  *holds = r && r->state == DF_STORE_VERIFIED;
  return true;
}

bool
df_farm_store_holds (DfFarm *farm, const char *server, const char *vdisk,
                     int number, bool *holds, GError **err)
{
  bool known = false;
  *holds = false;
  if (!store_state_known (farm, &known, err))
    return false;
  *holds = true;
  /* the version and every one it stacks on; an unsealed maintenance
   * version has no file of its own (its writes are a cache over its
   * parent) and is held where its parent is */
  while (known && *holds && number >= 0)
    {
      g_autoptr (DfVersion) v = df_farm_version_get (farm, vdisk, number,
                                                     err);
      if (!v || (v->sha256 && !holds_one (farm, server, vdisk, number,
                                          holds, err)))
        return false;
      number = v->parent;
    }
  return true;
}

bool
df_farm_version_replicating (DfFarm *farm, const char *vdisk, int number,
                             bool *pending, GError **err)
{
  *pending = false;
  g_autoptr (GPtrArray) servers = df_farm_server_list (farm, err);
  if (!servers)
    return false;
  gint64 now = df_farm_now_ms ();
  for (guint i = 0; i < servers->len && !*pending; i++)
    {
      const DfServer *s = servers->pdata[i];
      if (g_strcmp0 (s->kind, DF_SERVER_KIND_STREAM) != 0
          || df_server_state (s, now) != DF_SERVER_HEALTHY)
        continue;
      GError *e = NULL;
      g_autoptr (DfStoreRecord) r = df_farm_store_state_get (farm, s->name,
                                                             vdisk, number,
                                                             &e);
      if (e)
        {
          g_propagate_error (err, e);
          return false;
        }
      *pending = !r || r->state != DF_STORE_VERIFIED;
    }
  return true;
}

/* ---- verification ------------------------------------------------------- */

/* The state of v's file at path and why (new string) when not verified. */
static DfStoreState
hash_state (const DfVersion *v, const char *path, char sha[65], char **why)
{
  g_autoptr (GError) e = NULL;
  if (!g_file_test (path, G_FILE_TEST_EXISTS))
    {
      *why = g_strdup_printf ("no file %s", path);
      return DF_STORE_MISSING;
    }
  if (!df_file_sha256 (path, sha, &e))
    {
      *why = g_strdup (e->message);
      sha[0] = '\0';
      return DF_STORE_CORRUPT;
    }
  if (g_ascii_strcasecmp (sha, v->sha256) != 0)
    {
      *why = g_strdup_printf ("SHA-256 %s, the version's is %s", sha,
                              v->sha256);
      return DF_STORE_CORRUPT;
    }
  return DF_STORE_VERIFIED;
}

bool
df_farm_store_verify (DfFarm *farm, const char *server, const DfVersion *v,
                      DfStoreState *state, char **detail, GError **err)
{
  DfStoreState s = DF_STORE_PRESENT;
  g_autofree char *why = NULL;
  char sha[65] = "";
  bool ok = true;
  if (v->sha256)
    {
      g_autofree char *path = df_farm_version_path (farm, v->vdisk,
                                                    v->number);
      s = hash_state (v, path, sha, &why);
      ok = df_farm_store_state_set (farm, server, v->vdisk, v->number, s,
                                    sha[0] ? sha : NULL, why, err);
    }
  if (state)
    *state = s;
  if (detail)
    *detail = g_steal_pointer (&why);
  return ok;
}
