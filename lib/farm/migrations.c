/* diskfarm: farm DB schema, as numbered migrations.
 *
 * Never edit a migration that has shipped: add a new one.  Each runs in its
 * own transaction together with the schema version that records it
 * (df_db_schema_set), so a farm is always at exactly one schema version.
 *
 * One list serves both backends.  A migration's sql is written in the
 * dialect of db.h, which db_pg.c rewrites for PostgreSQL (INTEGER ->
 * BIGINT, INTEGER PRIMARY KEY -> an identity column); one that needs what
 * SQLite alone has (PRAGMA, GLOB, randomblob, triggers with RAISE) gives
 * its PostgreSQL text as pg_sql, doing the same. */
#include "farm-private.h"
#include "common.h"

#define STR_(x) #x
#define STR(x) STR_ (x)

/* 1: vdisks, versions, collections, devices, audit, settings. */
#define MIGRATION_1_TABLES(SHA256_IS_HEX) \
  "CREATE TABLE vdisks (\n" \
  "  id           INTEGER PRIMARY KEY,\n" \
  "  name         TEXT NOT NULL UNIQUE,\n" \
  "  virtual_size INTEGER NOT NULL CHECK (virtual_size > 0),\n" \
  "  description  TEXT,\n" \
  "  created      TEXT NOT NULL\n" \
  ");\n" \
  "CREATE TABLE versions (\n" \
  "  id            INTEGER PRIMARY KEY,\n" \
  "  vdisk_id      INTEGER NOT NULL REFERENCES vdisks (id) ON DELETE CASCADE,\n" \
  "  number        INTEGER NOT NULL CHECK (number >= 0),\n" \
  "  parent        INTEGER CHECK (parent IS NULL OR parent < number),\n" \
  "  file          TEXT NOT NULL CHECK (file <> ''),\n" \
  "  sha256        TEXT CHECK (sha256 IS NULL OR (length (sha256) = 64\n" \
  "                  AND " SHA256_IS_HEX ")),\n" \
  "  virtual_size  INTEGER NOT NULL CHECK (virtual_size > 0),\n" \
  "  file_size     INTEGER NOT NULL CHECK (file_size >= 0),\n" \
  "  state         TEXT NOT NULL CHECK (state IN\n" \
  "                  ('maintenance', 'test', 'production', 'pending')),\n" \
  "  pending_state TEXT CHECK (pending_state IS NULL OR pending_state IN\n" \
  "                  ('maintenance', 'test', 'production')),\n" \
  "  pending_at    TEXT,\n" \
  "  created       TEXT NOT NULL,\n" \
  "  UNIQUE (vdisk_id, number),\n" \
  "  FOREIGN KEY (vdisk_id, parent) REFERENCES versions (vdisk_id, number)\n" \
  ");\n" \
  /* At most one maintenance version per vdisk. */ \
  "CREATE UNIQUE INDEX versions_one_maintenance ON versions (vdisk_id)\n" \
  "  WHERE state = 'maintenance';\n" \
  "CREATE TABLE collections (\n" \
  "  id          INTEGER PRIMARY KEY,\n" \
  "  name        TEXT NOT NULL UNIQUE,\n" \
  "  description TEXT,\n" \
  "  vdisk_id    INTEGER REFERENCES vdisks (id),\n" \
  "  created     TEXT NOT NULL\n" \
  ");\n" \
  "CREATE TABLE devices (\n" \
  "  id            INTEGER PRIMARY KEY,\n" \
  "  name          TEXT NOT NULL UNIQUE,\n" \
  "  mac           TEXT NOT NULL UNIQUE CHECK (length (mac) = 17),\n" \
  "  collection_id INTEGER REFERENCES collections (id),\n" \
  "  type          TEXT NOT NULL CHECK (type IN\n" \
  "                  ('production', 'test', 'maintenance')),\n" \
  "  vdisk_id      INTEGER NOT NULL REFERENCES vdisks (id),\n" \
  "  cache_mode    TEXT NOT NULL DEFAULT 'server',\n" \
  "  quota         INTEGER NOT NULL DEFAULT 0 CHECK (quota >= 0),\n" \
  "  generation    INTEGER NOT NULL DEFAULT 1,\n" \
  "  created       TEXT NOT NULL\n" \
  ");\n" \
  "CREATE INDEX devices_vdisk ON devices (vdisk_id);\n" \
  "CREATE INDEX devices_collection ON devices (collection_id);\n" \
  "CREATE INDEX collections_vdisk ON collections (vdisk_id);\n" \
  "CREATE TABLE audit (\n" \
  "  id     INTEGER PRIMARY KEY,\n" \
  "  at     TEXT NOT NULL,\n" \
  "  who    TEXT NOT NULL,\n" \
  "  action TEXT NOT NULL,\n" \
  "  object TEXT NOT NULL,\n" \
  "  detail TEXT\n" \
  ");\n" \
  "CREATE TABLE settings (\n" \
  "  key   TEXT PRIMARY KEY,\n" \
  "  value TEXT NOT NULL\n" \
  ");\n"
static const char migration_1[] =
  "PRAGMA application_id = " STR (DF_FARM_APPLICATION_ID) ";\n"
  MIGRATION_1_TABLES ("sha256 NOT GLOB '*[^0-9a-f]*'");
/* PostgreSQL: db.h's COLLATE NOCASE (ASCII case-insensitive equality: the
 * names compared are ASCII) and instr(); db_pg.c's diskfarm_schema holds
 * the application id. */
static const char migration_1_pg[] =
  "CREATE COLLATION nocase (provider = icu, locale = 'und-u-ks-level2',\n"
  "  deterministic = false);\n"
  "CREATE FUNCTION instr (text, text) RETURNS bigint\n"
  "  LANGUAGE sql IMMUTABLE STRICT AS 'SELECT strpos ($1, $2)::bigint';\n"
  MIGRATION_1_TABLES ("sha256 ~ '^[0-9a-f]*$'");

/* 2: stream servers known to the bootstrap service (servers.c).  Farm
 * settings (auto-add of unknown devices) live in the settings table of 1. */
static const char migration_2[] =
  "CREATE TABLE servers (\n"
  "  id         INTEGER PRIMARY KEY,\n"
  "  name       TEXT NOT NULL UNIQUE,\n"
  "  address    TEXT NOT NULL CHECK (address <> ''),\n"
  "  iscsi_port INTEGER NOT NULL DEFAULT 3260\n"
  "               CHECK (iscsi_port BETWEEN 1 AND 65535),\n"
  "  nbd_port   INTEGER NOT NULL DEFAULT 10809\n"
  "               CHECK (nbd_port BETWEEN 1 AND 65535),\n"
  "  admin_port INTEGER NOT NULL DEFAULT 8001\n"
  "               CHECK (admin_port BETWEEN 1 AND 65535),\n"
  "  power      INTEGER NOT NULL DEFAULT 1 CHECK (power BETWEEN 1 AND 1000),\n"
  "  created    TEXT NOT NULL\n"
  ");\n";

/* 3: per-device iSCSI CHAP credentials (chap.c).  NULL = no CHAP.
 * Secrets are stored as given (binary-safe text of 12-255 bytes); the DB
 * file is the secret store, readable by the farm's owner only. */
static const char migration_3[] =
  "ALTER TABLE devices ADD COLUMN chap_user TEXT;\n"
  "ALTER TABLE devices ADD COLUMN chap_secret TEXT;\n"
  "ALTER TABLE devices ADD COLUMN mutual_secret TEXT;\n"
  "CREATE UNIQUE INDEX devices_chap_user ON devices (chap_user)\n"
  "  WHERE chap_user IS NOT NULL;\n";

/* 4: the farm's identity and one maintenance device per vdisk.
 * farm_identity holds one row: a random RFC 4122 version 4 UUID made here
 * (a new farm and an existing one alike), which streamsvc reports in
 * /v1/health so a console never counts another farm's sessions.
 * The maintenance rule is a pair of triggers rather than a partial unique
 * index: an existing farm that already has two maintenance devices on one
 * vdisk still opens (an index would make this migration fail), and every
 * change from now on obeys the rule.  lib/farm checks it first with a
 * message naming the existing device; the triggers are the backstop. */
static const char migration_4[] =
  "CREATE TABLE farm_identity (\n"
  "  id   INTEGER PRIMARY KEY CHECK (id = 1),\n"
  "  uuid TEXT NOT NULL CHECK (length (uuid) = 36)\n"
  ");\n"
  "INSERT INTO farm_identity (id, uuid)\n"
  "  SELECT 1, lower (substr (h, 1, 8) || '-' || substr (h, 9, 4) || '-4'\n"
  "    || substr (h, 14, 3) || '-'\n"
  "    || substr ('89ab', 1 + (unicode (substr (h, 17, 1)) % 4), 1)\n"
  "    || substr (h, 18, 3) || '-' || substr (h, 21, 12))\n"
  "  FROM (SELECT hex (randomblob (16)) AS h);\n"
  "CREATE TRIGGER devices_one_maintenance_insert\n"
  "  BEFORE INSERT ON devices FOR EACH ROW\n"
  "  WHEN NEW.type = 'maintenance' AND EXISTS (SELECT 1 FROM devices\n"
  "    WHERE vdisk_id = NEW.vdisk_id AND type = 'maintenance')\n"
  "  BEGIN SELECT RAISE (ABORT, 'one maintenance device per vdisk'); END;\n"
  "CREATE TRIGGER devices_one_maintenance_update\n"
  "  BEFORE UPDATE OF type, vdisk_id ON devices FOR EACH ROW\n"
  "  WHEN NEW.type = 'maintenance'\n"
  "    AND (OLD.type <> 'maintenance' OR OLD.vdisk_id <> NEW.vdisk_id)\n"
  "    AND EXISTS (SELECT 1 FROM devices WHERE vdisk_id = NEW.vdisk_id\n"
  "      AND type = 'maintenance' AND id <> NEW.id)\n"
  "  BEGIN SELECT RAISE (ABORT, 'one maintenance device per vdisk'); END;\n";
/* PostgreSQL: the same, with gen_random_uuid () and one plpgsql function
 * for both triggers (check_violation: DF_ERROR_INVALID, as SQLite's
 * RAISE (ABORT)). */
static const char migration_4_pg[] =
  "CREATE TABLE farm_identity (\n"
  "  id   BIGINT PRIMARY KEY CHECK (id = 1),\n"
  "  uuid TEXT NOT NULL CHECK (length (uuid) = 36)\n"
  ");\n"
  "INSERT INTO farm_identity (id, uuid)\n"
  "  VALUES (1, lower (gen_random_uuid ()::text));\n"
  "CREATE FUNCTION devices_one_maintenance () RETURNS trigger\n"
  "  LANGUAGE plpgsql AS $$\n"
  "BEGIN\n"
  "  IF NEW.type = 'maintenance'\n"
  "     AND (TG_OP = 'INSERT' OR OLD.type <> 'maintenance'\n"
  "          OR OLD.vdisk_id <> NEW.vdisk_id)\n"
  "     AND EXISTS (SELECT 1 FROM devices WHERE vdisk_id = NEW.vdisk_id\n"
  "       AND type = 'maintenance' AND id <> NEW.id) THEN\n"
  "    RAISE EXCEPTION 'one maintenance device per vdisk'\n"
  "      USING ERRCODE = 'check_violation';\n"
  "  END IF;\n"
  "  RETURN NEW;\n"
  "END $$;\n"
  "CREATE TRIGGER devices_one_maintenance_insert\n"
  "  BEFORE INSERT ON devices FOR EACH ROW\n"
  "  EXECUTE FUNCTION devices_one_maintenance ();\n"
  "CREATE TRIGGER devices_one_maintenance_update\n"
  "  BEFORE UPDATE OF type, vdisk_id ON devices FOR EACH ROW\n"
  "  EXECUTE FUNCTION devices_one_maintenance ();\n";

/* 5: a vDisk's store directory (store/<store>/), fixed when the vDisk is
 * created, so a rename changes its name and nothing on disk: published
 * version files are immutable (their SHA-256 is recorded and each names
 * its backing file), and open sessions keep their paths. */
static const char migration_5[] =
  "ALTER TABLE vdisks ADD COLUMN store TEXT;\n"
  "UPDATE vdisks SET store = name;\n"
  "CREATE UNIQUE INDEX vdisks_store ON vdisks (store);\n";

/* 6: a device's NBD TLS pre-shared key (nbd_psk.c): 64 lowercase hex
 * digits (32 random bytes, nbdkit's PSK file format), NULL = none.  The
 * PSK identity is the device name.  SQL that SQLite and PostgreSQL both
 * run as is (no GLOB): lib/farm writes the only values, and its reader
 * (streamsvc, exports.c) refuses any that is not hex. */
static const char migration_6[] =
  "ALTER TABLE devices ADD COLUMN nbd_psk TEXT\n"
  "  CHECK (nbd_psk IS NULL OR length (nbd_psk) = 64);\n";

/* 7: the one iSCSI initiator a device's target accepts (chap.c): NULL
 * the default rule (its boot script's name when the farm's iscsi-chap
 * policy is required, any otherwise), 'any', or an iSCSI name. */
static const char migration_7[] =
  "ALTER TABLE devices ADD COLUMN iscsi_initiator TEXT;\n";
/* 8: which firmware a vDisk boots under (what `vdisk inspect` found on
 * it, NULL until inspected) and the EFI loader a UEFI sanboot starts
 * instead of the removable-media default (NULL: \EFI\BOOT\BOOTX64.EFI). */
static const char migration_8[] =
  "ALTER TABLE vdisks ADD COLUMN firmware TEXT\n"
  "  CHECK (firmware IN ('bios', 'uefi', 'bios+uefi', 'none'));\n"
  "ALTER TABLE vdisks ADD COLUMN efi_loader TEXT;\n";

/* 9: the server registry (registry.c): what a server says of itself when
 * it registers and in each heartbeat.  Times are unix milliseconds
 * computed by the writer; NULL heartbeat_ms: never seen.  A row the admin
 * added keeps working as before (kind streamsvc, never seen). */
static const char migration_9[] =
  "ALTER TABLE servers ADD COLUMN kind TEXT NOT NULL DEFAULT 'streamsvc'\n"
  "  CHECK (kind IN ('streamsvc', 'bootstrapsvc'));\n"
  "ALTER TABLE servers ADD COLUMN registered_ms INTEGER;\n"
  "ALTER TABLE servers ADD COLUMN heartbeat_ms INTEGER;\n"
  "ALTER TABLE servers ADD COLUMN timeout_ms INTEGER NOT NULL DEFAULT 6000\n"
  "  CHECK (timeout_ms > 0);\n"
  "ALTER TABLE servers ADD COLUMN sessions INTEGER NOT NULL DEFAULT 0;\n"
  "ALTER TABLE servers ADD COLUMN bytes_per_s INTEGER NOT NULL DEFAULT 0;\n"
  "ALTER TABLE servers ADD COLUMN cpu_permille INTEGER NOT NULL DEFAULT 0;\n"
  "ALTER TABLE servers ADD COLUMN free_bytes INTEGER NOT NULL DEFAULT 0;\n"
  "ALTER TABLE servers ADD COLUMN versions_held INTEGER NOT NULL DEFAULT 0;\n"
  "ALTER TABLE servers ADD COLUMN versions_verified INTEGER NOT NULL\n"
  "  DEFAULT 0;\n"
  "ALTER TABLE servers ADD COLUMN software TEXT;\n";

/* 10: store state: what each server knows of its copy of each version
 * file (registry.c).  Rows go with their server or version. */
static const char migration_10[] =
  "CREATE TABLE store_state (\n"
  "  server_id  INTEGER NOT NULL REFERENCES servers (id) ON DELETE CASCADE,\n"
  "  version_id INTEGER NOT NULL REFERENCES versions (id) ON DELETE CASCADE,\n"
  "  state      TEXT NOT NULL CHECK (state IN\n"
  "               ('present', 'verified', 'missing', 'corrupt')),\n"
  "  sha256     TEXT,\n"
  "  checked_ms INTEGER NOT NULL,\n"
  "  detail     TEXT,\n"
  "  PRIMARY KEY (server_id, version_id)\n"
  ");\n"
  "CREATE INDEX store_state_version ON store_state (version_id);\n";

/* 11: cache leases (leases.c): which server may write a device's cache.
 * kind 'shared': a cache on storage every server reaches; its holder
 * renews expires_ms (unix ms, the holder's clock) and a takeover bumps
 * epoch, the fencing token also written next to the cache.  kind 'local':
 * a cache on the holder's own disk for boot generation generation (-1:
 * every generation, a cache that outlives boots); no expiry, never taken
 * over (another server refuses that generation).
 * A row is never deleted by a release (expires_ms 0), so epochs only
 * grow. */
static const char migration_11[] =
  "CREATE TABLE cache_leases (\n"
  "  device      TEXT NOT NULL PRIMARY KEY,\n"
  "  kind        TEXT NOT NULL CHECK (kind IN ('shared', 'local')),\n"
  "  holder      TEXT NOT NULL CHECK (holder <> ''),\n"
  "  epoch       INTEGER NOT NULL CHECK (epoch > 0),\n"
  "  generation  INTEGER NOT NULL,\n"
  "  expires_ms  INTEGER NOT NULL CHECK (expires_ms >= 0),\n"
  "  acquired_ms INTEGER NOT NULL\n"
  ");\n";

/* 12: a stream server's floating iSCSI portal (servers.c): the address
 * boot scripts name for its iSCSI target, held by its own host and
 * adopted by a survivor when that host dies (keepalived VRRP, `diskfarm
 * server portal-config`).  NULL: the server's own address. */
static const char migration_12[] =
  "ALTER TABLE servers ADD COLUMN portal TEXT CHECK (portal <> '');\n";

const DfMigration df_farm_migrations[] = {
  { 1, "initial schema", migration_1, migration_1_pg },
  { 2, "stream servers", migration_2, NULL },
  { 3, "iSCSI CHAP credentials", migration_3, NULL },
  { 4, "farm identity, one maintenance device per vdisk", migration_4,
    migration_4_pg },
  { 5, "vdisk store directory", migration_5, NULL },
  { 6, "NBD TLS pre-shared keys", migration_6, NULL },
  { 7, "iSCSI initiator binding", migration_7, NULL },
  { 8, "vdisk firmware and EFI loader", migration_8, NULL },
  { 9, "server registry", migration_9, NULL },
  { 10, "store state", migration_10, NULL },
  { 11, "cache leases", migration_11, NULL },
  { 12, "floating iSCSI portals", migration_12, NULL },
};
const guint df_farm_n_migrations = G_N_ELEMENTS (df_farm_migrations);

/* Called inside the migration's transaction: apply the next step if one is
 * pending.  *done is set when the DB is already at latest. */
static bool
migrate_step (DfDb *db, const DfMigration *list, guint n, int *version,
              bool *done, GError **err)
{
  int latest = (int) n, uv = 0;
  if (!df_db_schema_get (db, DF_FARM_APPLICATION_ID, &uv, err))
    return false;
  *version = uv;
  if (uv > latest)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_UNSUPPORTED,
                   "farm.db has schema version %d, newer than this diskfarm "
                   "understands (%d): upgrade diskfarm", uv, latest);
      return false;
    }
  if (uv < 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_CORRUPT,
                   "farm.db has a negative schema version %d", uv);
      return false;
    }
  *done = uv == latest;
  if (*done)
    return true;
  const DfMigration *m = &list[uv];
  g_assert (m->version == uv + 1);
  g_autofree char *what = g_strdup_printf ("schema migration %d (%s)",
                                           m->version, m->name);
  const char *sql = df_db_dialect (db) == DF_DB_POSTGRESQL && m->pg_sql
                    ? m->pg_sql : m->sql;
  if (!df_db_exec (db, sql, what, err)
      || !df_db_schema_set (db, DF_FARM_APPLICATION_ID, m->version, err))
    return false;
  *version = m->version;
  g_info ("farm.db: applied %s", what);
  return true;
}

static bool
migrate_locked (DfDb *db, const DfMigration *list, guint n, int *version,
                GError **err)
{
  for (;;)
    {
      bool done = false;
      if (!df_db_begin (db, err))
        {
          g_prefix_error (err, "begin migration: ");
          return false;
        }
      if (!migrate_step (db, list, n, version, &done, err))
        {
          df_db_rollback (db);
          return false;
        }
      if (!df_db_commit (db, err))
        return false;
      if (done)
        return true;
    }
}

bool
df_farm_migrate (DfDb *db, const DfMigration *list, guint n, int *version,
                 GError **err)
{
  /* Fast path without a write lock: most opens find the DB current. */
  int uv = 0;
  if (!df_db_schema_get (db, DF_FARM_APPLICATION_ID, &uv, err))
    return false;
  if (uv == (int) n)
    {
      *version = uv;
      return true;
    }
  if (!df_db_schema_lock (db, DF_FARM_APPLICATION_ID, true, err))
    return false;
  bool ok = migrate_locked (db, list, n, version, err);
  if (!df_db_schema_lock (db, DF_FARM_APPLICATION_ID, false,
                          ok ? err : NULL))
    return false;
  return ok;
}
