/* diskfarm: the DfFarm: its directory tree, its DB connection (through
 * the backend seam db.h), its identity and its transactions.
 *
 * The entities live in their own files (vdisks.c, versions.c,
 * collections.c, devices.c, servers.c, chap.c, settings.c, audit.c); each
 * public mutator there checks its arguments first (no DB access), then
 * opens a write scope (df_farm_try -> df_farm_scope_begin: the
 * transaction, or a savepoint when the caller already holds a
 * df_farm_begin transaction), does its reads and writes plus exactly one
 * audit row, and closes the scope: commit on success, roll back to the
 * scope start on any failure, and at the outermost level run the body
 * again when PostgreSQL reports a serialization failure. */
#include "farm.h"
#include "farm-private.h"
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <glib/gstdio.h>
#include <string.h>

struct DfFarm {
  char *dir;
  char *db_path;        /* the DB target: <dir>/farm.db or a PostgreSQL
                         * URI/conninfo (may hold a password: never shown;
                         * messages use df_db_name) */
  char *who;            /* actor recorded in audit rows */
  DfDb *db;
  int schema_version;
  char *uuid;           /* farm_identity.uuid, read at open */
  char *offline_of;     /* a snapshot: the unreachable DB's name (shown) */
  GHashTable *offline_gens; /* a snapshot: the journal of generations
                             * given offline (offline.c), owned */
};

static const char *const farm_subdirs[] = { "store", "cache", "boot", "run" };

/* ---- open / close ----------------------------------------------------- */

static bool
make_tree (const char *dir, GError **err)
{
  if (g_mkdir_with_parents (dir, 0750) != 0)
    {
      df_set_error_errno (err, errno, "create farm directory %s", dir);
      return false;
    }
  for (gsize i = 0; i < G_N_ELEMENTS (farm_subdirs); i++)
    {
      g_autofree char *sub = g_build_filename (dir, farm_subdirs[i], NULL);
      if (g_mkdir (sub, 0750) != 0 && errno != EEXIST)
        {
          df_set_error_errno (err, errno, "create %s", sub);
          return false;
        }
    }
  return true;
}

/* Create an empty farm.db readable by the farm's group only (SQLite gives
 * its -wal and -shm files the same mode). */
static bool
make_db_file (const char *path, GError **err)
{
  int fd = g_open (path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0)
    {
      df_set_error_errno (err, errno, "create %s", path);
      return false;
    }
  close (fd);
  return true;
}

/* The farm's identity (migration 4), kept for df_farm_uuid. */
static bool
read_uuid (DfFarm *farm, GError **err)
{
  g_autoptr (DfDbStmt) st = df_farm_stmt (farm,
    "SELECT uuid FROM farm_identity WHERE id = 1", err);
  if (!st)
    return false;
  int rc = df_db_step (st, err);
  if (rc < 0)
    return false;
  if (rc == 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_CORRUPT,
                   "%s: the farm has no identity (farm_identity is empty)",
                   df_db_name (farm->db));
      return false;
    }
  farm->uuid = df_db_col_dup (st, 0);
  return true;
}

/* A PostgreSQL DB without the farm's schema is only made a farm by
 * init (create); SQLite's farm.db was checked for by its file. */
static bool
check_initialized (DfFarm *farm, bool create, GError **err)
{
  int version = 0;
  if (create || df_db_dialect (farm->db) != DF_DB_POSTGRESQL)
    return true;
  if (!df_db_schema_get (farm->db, DF_FARM_APPLICATION_ID, &version, err))
    return false;
  if (version > 0)
    return true;
  g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
               "no farm in the database %s (run 'diskfarm init --db ...')",
               df_db_name (farm->db));
  return false;
}

static bool
open_db (DfFarm *farm, bool create, GError **err)
{
  farm->db = df_db_open (farm->db_path, create, err);
  return farm->db
         && check_initialized (farm, create, err)
         && df_farm_migrate (farm->db, df_farm_migrations,
                             df_farm_n_migrations, &farm->schema_version, err)
         && read_uuid (farm, err);
}

/* The farm's directory tree (and its SQLite file) exist, or are made. */
static bool
prepare_dir (DfFarm *farm, bool create, bool sqlite, GError **err)
{
  if (create)
    return make_tree (farm->dir, err)
           && (!sqlite || make_db_file (farm->db_path, err));
  if (sqlite ? g_file_test (farm->db_path, G_FILE_TEST_IS_REGULAR)
             : g_file_test (farm->dir, G_FILE_TEST_IS_DIR))
    return true;
  g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
               "no farm at %s (run 'diskfarm init')", farm->dir);
  return false;
}

DfFarm *
df_farm_open (const char *dir, bool create, const char *who, GError **err)
{
  return df_farm_open_db (dir, NULL, create, who, err);
}

DfFarm *
df_farm_open_db (const char *dir, const char *database, bool create,
                 const char *who, GError **err)
{
  g_autofree char *stripped = g_strstrip (g_strdup (dir ? dir : ""));
  if (stripped[0] == '\0')
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "the farm directory is an empty string");
      return NULL;
    }
  g_autoptr (DfFarm) farm = g_new0 (DfFarm, 1);
  farm->dir = g_strdup (dir);
  bool sqlite = !database || !*database || !df_db_target_is_pg (database);
  farm->db_path = database && *database
                  ? g_strdup (database)
                  : g_build_filename (dir, "farm.db", NULL);
  farm->who = g_strdup (who && *who ? who : "unknown");
  if (!prepare_dir (farm, create, sqlite, err) || !open_db (farm, create, err))
    return NULL;
  if (create)
    {
      /* diskfarm init: the farm has its admin token from the start */
      g_autoptr (DfSecret) token = df_farm_admin_token (farm, true, err);
      if (token == NULL)
        return NULL;
    }
  return g_steal_pointer (&farm);
}

DfFarm *
df_farm_open_snapshot (const char *dir, const char *database,
                       const char *who, GError **err)
{
  g_autofree char *path = df_farm_snapshot_path (dir);
  if (!g_file_test (path, G_FILE_TEST_IS_REGULAR))
    {
      g_autofree char *name = df_db_target_redacted (database);
      g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
                   "farm DB %s is unreachable and there is no local "
                   "snapshot (%s)", name, path);
      return NULL;
    }
  DfFarm *farm = df_farm_open_db (dir, path, false, who, err);
  if (farm != NULL)
    {
      farm->offline_of = df_db_target_redacted (database);
      farm->offline_gens = df_farm_offline_journal_load (dir);
    }
  return farm;
}

GHashTable *
df_farm_offline_gens (DfFarm *farm)
{
  return farm->offline_gens;
}

bool
df_farm_offline (DfFarm *farm)
{
  return farm->offline_of != NULL;
}

void
df_farm_close (DfFarm *farm)
{
  if (!farm)
    return;
  df_db_close (farm->db);
  g_free (farm->dir);
  g_free (farm->db_path);
  g_free (farm->who);
  g_free (farm->uuid);
  g_free (farm->offline_of);
  if (farm->offline_gens != NULL)
    g_hash_table_unref (farm->offline_gens);
  g_free (farm);
}

DfDb *
df_farm_db (DfFarm *farm)
{
  return farm->db;
}

const char *
df_farm_who (DfFarm *farm)
{
  return farm->who;
}

const char *
df_farm_dir (DfFarm *farm)
{
  return farm->dir;
}

bool
df_farm_db_is_remote (const char *database)
{
  return df_db_target_is_pg (database);
}

char *
df_farm_db_redact (const char *database)
{
  return database ? df_db_target_redacted (database) : NULL;
}

const char *
df_farm_db_name (DfFarm *farm)
{
  return df_db_name (farm->db);
}

const char *
df_farm_uuid (DfFarm *farm)
{
  return farm->uuid;
}

int
df_farm_schema_version (DfFarm *farm)
{
  return farm->schema_version;
}

/* ---- paths ------------------------------------------------------------ */

char *
df_farm_store_dir (DfFarm *farm, const char *vdisk)
{
  g_return_val_if_fail (df_validate_name ("vdisk", vdisk, NULL), NULL);
  g_autofree char *store = df_farm_store_of (farm, vdisk);
  return g_build_filename (farm->dir, "store", store, NULL);
}

char *
df_farm_version_path (DfFarm *farm, const char *vdisk, int number)
{
  g_return_val_if_fail (df_validate_name ("vdisk", vdisk, NULL), NULL);
  g_return_val_if_fail (number >= 0, NULL);
  g_autofree char *store = df_farm_store_dir (farm, vdisk);
  g_autofree char *file = NULL;
  g_autoptr (DfDbStmt) st = df_farm_stmt (farm,
    "SELECT r.file FROM versions r JOIN vdisks d ON d.id = r.vdisk_id "
    "WHERE d.name = ? AND r.number = ?", NULL);
  if (st)
    {
      df_db_bind_text (st, 1, vdisk);
      df_db_bind_int64 (st, 2, number);
      if (df_db_step (st, NULL) == 1)
        file = df_db_col_dup (st, 0);
    }
  if (file && g_path_is_absolute (file))
    return g_steal_pointer (&file);
  if (!file)
    file = g_strdup_printf ("%s.%d.qcow2", vdisk, number);
  return g_build_filename (store, file, NULL);
}

char *
df_farm_cache_dir (DfFarm *farm, const char *device)
{
  g_return_val_if_fail (df_validate_name ("device", device, NULL), NULL);
  return g_build_filename (farm->dir, "cache", device, NULL);
}

/* ---- transactions ----------------------------------------------------- */

bool
df_farm_begin (DfFarm *farm, GError **err)
{
  return df_db_begin (farm->db, err);
}

bool
df_farm_commit (DfFarm *farm, GError **err)
{
  return df_db_commit (farm->db, err);
}

void
df_farm_rollback (DfFarm *farm)
{
  df_db_rollback (farm->db);
}

bool
df_farm_scope_begin (DfFarm *farm, GError **err)
{
  if (farm->offline_of != NULL)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_IO,
                   "farm DB %s is unreachable (offline: serving known "
                   "devices from the local snapshot; changes are refused "
                   "until it is back)", farm->offline_of);
      return false;
    }
  return df_db_begin (farm->db, err);
}

bool
df_farm_scope_end (DfFarm *farm, bool ok, GError **err)
{
  if (ok)
    return df_db_commit (farm->db, err);
  df_db_rollback (farm->db);
  return false;
}

/* 1 ms up to 2^attempt ms (at most 128 ms), so racing hosts spread out. */
static void
retry_backoff (guint attempt)
{
  guint32 cap = 1u << MIN (attempt, 7u);
  g_usleep ((gulong) g_random_int_range (1, (gint32) cap + 1) * 1000);
}

bool
df_farm_mutate_named (DfFarm *farm, const char *what, const char *name,
                      DfNamedFn fn, GError **err)
{
  if (!df_validate_name (what, name, err))
    return false;
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = fn (farm, name, err);
  return t.ok;
}

bool
df_farm_try (DfFarm *farm, DfFarmTry *t, GError **err)
{
  if (t->running)
    {
      t->running = false;
      bool outermost = df_db_depth (farm->db) == 1;
      t->ok = df_farm_scope_end (farm, t->ok, err);
      if (t->ok || !outermost || !df_db_failed_busy (farm->db)
          || t->attempt + 1 >= DF_FARM_TRY_MAX)
        return false;
      t->attempt++;
      g_debug ("farm DB: lost a race with another writer; running the "
               "change again (attempt %u)", t->attempt + 1);
      g_clear_error (err);
      retry_backoff (t->attempt);
    }
  t->ok = false;
  if (!df_farm_scope_begin (farm, err))
    return false;
  t->running = true;
  return true;
}
