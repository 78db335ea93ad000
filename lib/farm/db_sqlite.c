/* diskfarm: the SQLite backend of the farm DB seam (db.h).
 *
 * The only file of diskfarm that includes sqlite3.h.  One connection per
 * DfDb, WAL mode, foreign keys on, a 5 s busy wait.  Statements are cached
 * by SQL text (prepared once with SQLITE_PREPARE_PERSISTENT). */
#include "db.h"
#include "common.h"

#include <sqlite3.h>
#include <string.h>

#define BUSY_TIMEOUT_MS 5000

struct DfDb {
  sqlite3 *conn;
  char *path;
  GHashTable *cache;    /* SQL text (owned) -> DfDbStmt* (owned) */
  guint depth;          /* open df_db_begin levels */
};

struct DfDbStmt {
  DfDb *db;
  sqlite3_stmt *st;
  bool cached;          /* lives in db->cache (else finalized at release) */
  bool in_use;          /* cached and handed out */
};

/* ---- errors ----------------------------------------------------------- */

static int
error_code (int rc)
{
  switch (rc & 0xff)
    {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return DF_ERROR_BUSY;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return DF_ERROR_CORRUPT;
    case SQLITE_CONSTRAINT:
      return rc == SQLITE_CONSTRAINT_UNIQUE
                 || rc == SQLITE_CONSTRAINT_PRIMARYKEY
               ? DF_ERROR_EXISTS : DF_ERROR_INVALID;
    case SQLITE_FULL:
      return DF_ERROR_NOSPC;
    default:
      return DF_ERROR_IO;
    }
}

/* *err = "what: <SQLite's message>" with the code error_code maps. */
static void
set_error (GError **err, DfDb *db, int rc, const char *what)
{
  const char *msg = db && db->conn ? sqlite3_errmsg (db->conn)
                                   : sqlite3_errstr (rc);
  g_set_error (err, DF_ERROR, error_code (rc), "%s: %s", what, msg);
}

/* ---- open / close ----------------------------------------------------- */

static void
stmt_free (gpointer p)
{
  DfDbStmt *st = p;
  sqlite3_finalize (st->st);
  g_free (st);
}

static bool
exec_quiet (DfDb *db, const char *sql)
{
  return sqlite3_exec (db->conn, sql, NULL, NULL, NULL) == SQLITE_OK;
}

static bool
configure (DfDb *db, GError **err)
{
  sqlite3_extended_result_codes (db->conn, 1);
  sqlite3_busy_timeout (db->conn, BUSY_TIMEOUT_MS);
  if (!df_db_exec (db, "PRAGMA foreign_keys = ON",
                   "farm.db: PRAGMA foreign_keys = ON", err))
    return false;
  g_autoptr (DfDbStmt) st = df_db_prepare (db, "PRAGMA journal_mode = WAL",
                                           err);
  if (!st || df_db_step (st, err) != 1)
    return false;
  const char *mode = df_db_col_text (st, 0);
  if (!mode || g_ascii_strcasecmp (mode, "wal") != 0)
    g_warning ("%s: journal mode is %s, not WAL (file system without "
               "shared memory?)", db->path, mode ? mode : "unknown");
  return df_db_exec (db, "PRAGMA synchronous = NORMAL",
                     "farm.db: PRAGMA synchronous = NORMAL", err);
}

DfDb *
df_db_open (const char *path, bool create, GError **err)
{
  g_autoptr (DfDb) db = g_new0 (DfDb, 1);
  db->path = g_strdup (path);
  db->cache = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                     stmt_free);
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX
              | (create ? SQLITE_OPEN_CREATE : 0);
  int rc = sqlite3_open_v2 (path, &db->conn, flags, NULL);
  if (rc != SQLITE_OK)
    {
      g_autofree char *what = g_strdup_printf ("open %s", path);
      set_error (err, db, rc, what);
      return NULL;
    }
  if (!configure (db, err))
    {
      g_prefix_error (err, "%s: ", path);
      return NULL;
    }
  return g_steal_pointer (&db);
}

void
df_db_close (DfDb *db)
{
  if (!db)
    return;
  g_hash_table_destroy (db->cache);
  if (db->conn)
    {
      if (!sqlite3_get_autocommit (db->conn))
        exec_quiet (db, "ROLLBACK");
      sqlite3_close (db->conn);
    }
  g_free (db->path);
  g_free (db);
}

const char *
df_db_name (DfDb *db)
{
  return db->path;
}

bool
df_db_exec (DfDb *db, const char *sql, const char *what, GError **err)
{
  int rc = sqlite3_exec (db->conn, sql, NULL, NULL, NULL);
  if (rc == SQLITE_OK)
    return true;
  set_error (err, db, rc, what);
  return false;
}

/* ---- statements ------------------------------------------------------- */

DfDbStmt *
df_db_prepare (DfDb *db, const char *sql, GError **err)
{
  DfDbStmt *st = g_hash_table_lookup (db->cache, sql);
  if (st && !st->in_use)
    {
      st->in_use = true;
      return st;
    }
  sqlite3_stmt *raw = NULL;
  int rc = sqlite3_prepare_v3 (db->conn, sql, -1, SQLITE_PREPARE_PERSISTENT,
                               &raw, NULL);
  if (rc != SQLITE_OK)
    {
      set_error (err, db, rc, "farm.db: prepare");
      return NULL;
    }
  DfDbStmt *fresh = g_new0 (DfDbStmt, 1);
  fresh->db = db;
  fresh->st = raw;
  if (!st)
    {
      fresh->cached = fresh->in_use = true;
      g_hash_table_insert (db->cache, g_strdup (sql), fresh);
    }
  return fresh;
}

void
df_db_stmt_release (DfDbStmt *st)
{
  if (!st)
    return;
  if (!st->cached)
    {
      stmt_free (st);
      return;
    }
  sqlite3_reset (st->st);
  sqlite3_clear_bindings (st->st);
  st->in_use = false;
}

void
df_db_bind_text (DfDbStmt *st, int i, const char *s)
{
  if (s)
    sqlite3_bind_text (st->st, i, s, -1, SQLITE_TRANSIENT);
  else
    sqlite3_bind_null (st->st, i);
}

void
df_db_bind_int64 (DfDbStmt *st, int i, gint64 v)
{
  sqlite3_bind_int64 (st->st, i, v);
}

void
df_db_bind_null (DfDbStmt *st, int i)
{
  sqlite3_bind_null (st->st, i);
}

int
df_db_step (DfDbStmt *st, GError **err)
{
  int rc = sqlite3_step (st->st);
  if (rc == SQLITE_ROW)
    return 1;
  if (rc == SQLITE_DONE)
    return 0;
  set_error (err, st->db, rc, "farm.db");
  return -1;
}

bool
df_db_run (DfDbStmt *st, GError **err)
{
  return df_db_step (st, err) == 0;
}

gint64
df_db_changes (DfDb *db)
{
  return sqlite3_changes (db->conn);
}

bool
df_db_col_is_null (DfDbStmt *st, int i)
{
  return sqlite3_column_type (st->st, i) == SQLITE_NULL;
}

gint64
df_db_col_int64 (DfDbStmt *st, int i)
{
  return sqlite3_column_int64 (st->st, i);
}

int
df_db_col_int (DfDbStmt *st, int i)
{
  return sqlite3_column_int (st->st, i);
}

const char *
df_db_col_text (DfDbStmt *st, int i)
{
  return (const char *) sqlite3_column_text (st->st, i);
}

char *
df_db_col_dup (DfDbStmt *st, int i)
{
  return g_strdup (df_db_col_text (st, i));
}

/* ---- transactions ----------------------------------------------------- */

bool
df_db_begin (DfDb *db, GError **err)
{
  if (db->depth == 0 && !sqlite3_get_autocommit (db->conn))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                   "farm.db: a transaction is already open");
      return false;
    }
  g_autofree char *sql = db->depth == 0
    ? g_strdup ("BEGIN IMMEDIATE")
    : g_strdup_printf ("SAVEPOINT df_sp%u", db->depth);
  g_autofree char *what = g_strdup_printf ("farm.db: %s", sql);
  if (!df_db_exec (db, sql, what, err))
    return false;
  db->depth++;
  return true;
}

bool
df_db_commit (DfDb *db, GError **err)
{
  g_return_val_if_fail (db->depth > 0, false);
  guint level = db->depth - 1;
  g_autofree char *sql = level == 0
    ? g_strdup ("COMMIT")
    : g_strdup_printf ("RELEASE df_sp%u", level);
  g_autofree char *what = g_strdup_printf ("farm.db: %s", sql);
  if (!df_db_exec (db, sql, what, err))
    {
      df_db_rollback (db);
      return false;
    }
  db->depth = level;
  return true;
}

void
df_db_rollback (DfDb *db)
{
  g_return_if_fail (db->depth > 0);
  guint level = db->depth - 1;
  g_autofree char *sql = level == 0
    ? g_strdup ("ROLLBACK")
    : g_strdup_printf ("ROLLBACK TO df_sp%u; RELEASE df_sp%u", level, level);
  if (!exec_quiet (db, sql) && level == 0
      && !sqlite3_get_autocommit (db->conn))
    g_warning ("farm.db: rollback failed: %s", sqlite3_errmsg (db->conn));
  db->depth = level;
}

guint
df_db_depth (DfDb *db)
{
  return db->depth;
}

/* ---- schema bookkeeping ----------------------------------------------- */

static bool
read_int (DfDb *db, const char *sql, int *out, GError **err)
{
  g_autoptr (DfDbStmt) st = df_db_prepare (db, sql, err);
  if (!st)
    return false;
  int r = df_db_step (st, err);
  if (r == 0)
    g_set_error (err, DF_ERROR, DF_ERROR_IO, "farm.db: %s: no row", sql);
  if (r != 1)
    return false;
  *out = df_db_col_int (st, 0);
  return true;
}

/* PRAGMA user_version is the schema version; PRAGMA application_id says
 * the file is a farm DB (migration 1 sets it); an empty file is ours to
 * create. */
bool
df_db_schema_get (DfDb *db, guint32 app_id, int *version, GError **err)
{
  int id = 0, objects = 0;
  if (!read_int (db, "PRAGMA user_version", version, err)
      || !read_int (db, "PRAGMA application_id", &id, err)
      || !read_int (db, "SELECT count(*) FROM sqlite_master", &objects, err))
    return false;
  if ((guint32) id == app_id || (id == 0 && *version == 0 && objects == 0))
    return true;
  g_set_error (err, DF_ERROR, DF_ERROR_CORRUPT,
                 "farm.db is an SQLite database but not a diskfarm farm DB "
               "(application_id 0x%08x, user_version %d)", (unsigned) id,
               *version);
  return false;
}

bool
df_db_schema_set (DfDb *db, int version, GError **err)
{
  g_autofree char *sql = g_strdup_printf ("PRAGMA user_version = %d",
                                          version);
  return df_db_exec (db, sql, "farm.db: record schema version", err);
}
