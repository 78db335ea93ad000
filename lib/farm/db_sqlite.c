/* diskfarm: the SQLite backend of the farm DB seam (db.h).
 *
 * The only file of diskfarm that includes sqlite3.h; db.c hands it the
 * targets that are file paths.  One connection per
 * DfDb, WAL mode, foreign keys on, a 5 s busy wait.  Statements are cached
 * by SQL text (prepared once with SQLITE_PREPARE_PERSISTENT). */
#include "db-backend.h"
#include "common.h"

#include <sqlite3.h>
#include <string.h>

#define BUSY_TIMEOUT_MS 5000

typedef struct {
  DfDb base;
  sqlite3 *conn;
  char *path;
  GHashTable *cache;    /* SQL text (owned) -> SqlStmt* (owned) */
} SqlDb;

typedef struct {
  DfDbStmt base;
  SqlDb *db;
  sqlite3_stmt *st;
  bool cached;          /* lives in db->cache (else finalized at release) */
  bool in_use;          /* cached and handed out */
} SqlStmt;

static const DfDbOps sqlite_ops;

#define SQL_DB(d) ((SqlDb *) (d))
#define SQL_ST(s) ((SqlStmt *) (s))

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
set_error (GError **err, SqlDb *db, int rc, const char *what)
{
  const char *msg = db && db->conn ? sqlite3_errmsg (db->conn)
                                   : sqlite3_errstr (rc);
  g_set_error (err, DF_ERROR, error_code (rc), "%s: %s", what, msg);
}

/* ---- open / close ----------------------------------------------------- */

static void
stmt_free (gpointer p)
{
  SqlStmt *st = p;
  sqlite3_finalize (st->st);
  g_free (st);
}

static bool
exec_quiet (SqlDb *db, const char *sql)
{
  return sqlite3_exec (db->conn, sql, NULL, NULL, NULL) == SQLITE_OK;
}

static bool
configure (SqlDb *db, GError **err)
{
  sqlite3_extended_result_codes (db->conn, 1);
  sqlite3_busy_timeout (db->conn, BUSY_TIMEOUT_MS);
  if (!df_db_exec (&db->base, "PRAGMA foreign_keys = ON",
                   "farm.db: PRAGMA foreign_keys = ON", err))
    return false;
  g_autoptr (DfDbStmt) st = df_db_prepare (&db->base,
                                           "PRAGMA journal_mode = WAL", err);
  if (!st || df_db_step (st, err) != 1)
    return false;
  const char *mode = df_db_col_text (st, 0);
  if (!mode || g_ascii_strcasecmp (mode, "wal") != 0)
    g_warning ("%s: journal mode is %s, not WAL (file system without "
               "shared memory?)", db->path, mode ? mode : "unknown");
  return df_db_exec (&db->base, "PRAGMA synchronous = NORMAL",
                     "farm.db: PRAGMA synchronous = NORMAL", err);
}

DfDb *
df_db_sqlite_open (const char *path, bool create, GError **err)
{
  SqlDb *db = g_new0 (SqlDb, 1);
  db->base.ops = &sqlite_ops;
  g_autoptr (DfDb) owner = &db->base;
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
  return g_steal_pointer (&owner);
}

static void
sql_close (DfDb *base)
{
  SqlDb *db = SQL_DB (base);
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

static const char *
sql_name (DfDb *base)
{
  return SQL_DB (base)->path;
}

static bool
sql_exec (DfDb *base, const char *sql, const char *what, GError **err)
{
  SqlDb *db = SQL_DB (base);
  int rc = sqlite3_exec (db->conn, sql, NULL, NULL, NULL);
  if (rc == SQLITE_OK)
    return true;
  set_error (err, db, rc, what);
  return false;
}

/* ---- statements ------------------------------------------------------- */

static DfDbStmt *
sql_prepare (DfDb *base, const char *sql, GError **err)
{
  SqlDb *db = SQL_DB (base);
  SqlStmt *st = g_hash_table_lookup (db->cache, sql);
  if (st && !st->in_use)
    {
      st->in_use = true;
      return &st->base;
    }
  sqlite3_stmt *raw = NULL;
  int rc = sqlite3_prepare_v3 (db->conn, sql, -1, SQLITE_PREPARE_PERSISTENT,
                               &raw, NULL);
  if (rc != SQLITE_OK)
    {
      set_error (err, db, rc, "farm.db: prepare");
      return NULL;
    }
  SqlStmt *fresh = g_new0 (SqlStmt, 1);
  fresh->base.db = base;
  fresh->db = db;
  fresh->st = raw;
  if (!st)
    {
      fresh->cached = fresh->in_use = true;
      g_hash_table_insert (db->cache, g_strdup (sql), fresh);
    }
  return &fresh->base;
}

static void
sql_release (DfDbStmt *base)
{
  SqlStmt *st = SQL_ST (base);
  if (!st->cached)
    {
      stmt_free (st);
      return;
    }
  sqlite3_reset (st->st);
  sqlite3_clear_bindings (st->st);
  st->in_use = false;
}

static void
sql_bind_text (DfDbStmt *st, int i, const char *s)
{
  if (s)
    sqlite3_bind_text (SQL_ST (st)->st, i, s, -1, SQLITE_TRANSIENT);
  else
    sqlite3_bind_null (SQL_ST (st)->st, i);
}

static void
sql_bind_int64 (DfDbStmt *st, int i, gint64 v)
{
  sqlite3_bind_int64 (SQL_ST (st)->st, i, v);
}

static int
sql_step (DfDbStmt *base, GError **err)
{
  SqlStmt *st = SQL_ST (base);
  int rc = sqlite3_step (st->st);
  if (rc == SQLITE_ROW)
    return 1;
  if (rc == SQLITE_DONE)
    return 0;
  set_error (err, st->db, rc, "farm.db");
  return -1;
}

static gint64
sql_changes (DfDb *db)
{
  return sqlite3_changes (SQL_DB (db)->conn);
}

static bool
sql_col_is_null (DfDbStmt *st, int i)
{
  return sqlite3_column_type (SQL_ST (st)->st, i) == SQLITE_NULL;
}

static gint64
sql_col_int64 (DfDbStmt *st, int i)
{
  return sqlite3_column_int64 (SQL_ST (st)->st, i);
}

static const char *
sql_col_text (DfDbStmt *st, int i)
{
  return (const char *) sqlite3_column_text (SQL_ST (st)->st, i);
}

/* ---- transactions ----------------------------------------------------- */

static bool
sql_begin (DfDb *base, GError **err)
{
  SqlDb *db = SQL_DB (base);
  if (base->depth == 0 && !sqlite3_get_autocommit (db->conn))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                   "farm.db: a transaction is already open");
      return false;
    }
  g_autofree char *sql = base->depth == 0
    ? g_strdup ("BEGIN IMMEDIATE")
    : g_strdup_printf ("SAVEPOINT df_sp%u", base->depth);
  g_autofree char *what = g_strdup_printf ("farm.db: %s", sql);
  if (!sql_exec (base, sql, what, err))
    return false;
  base->depth++;
  return true;
}

static void sql_rollback (DfDb *base);

static bool
sql_commit (DfDb *base, GError **err)
{
  guint level = base->depth - 1;
  g_autofree char *sql = level == 0
    ? g_strdup ("COMMIT")
    : g_strdup_printf ("RELEASE df_sp%u", level);
  g_autofree char *what = g_strdup_printf ("farm.db: %s", sql);
  if (!sql_exec (base, sql, what, err))
    {
      sql_rollback (base);
      return false;
    }
  base->depth = level;
  return true;
}

static void
sql_rollback (DfDb *base)
{
  SqlDb *db = SQL_DB (base);
  guint level = base->depth - 1;
  g_autofree char *sql = level == 0
    ? g_strdup ("ROLLBACK")
    : g_strdup_printf ("ROLLBACK TO df_sp%u; RELEASE df_sp%u", level, level);
  if (!exec_quiet (db, sql) && level == 0
      && !sqlite3_get_autocommit (db->conn))
    g_warning ("farm.db: rollback failed: %s", sqlite3_errmsg (db->conn));
  base->depth = level;
}

/* ---- schema bookkeeping ----------------------------------------------- */

/* PRAGMA user_version is the schema version; PRAGMA application_id says
 * the file is a farm DB (migration 1 sets it); an empty file is ours to
 * create. */
static bool
sql_schema_get (DfDb *db, guint32 app_id, int *version, GError **err)
{
  gint64 v = 0, id = 0, objects = 0;
  if (!df_db_read_int64 (db, "PRAGMA user_version", &v, err)
      || !df_db_read_int64 (db, "PRAGMA application_id", &id, err)
      || !df_db_read_int64 (db, "SELECT count(*) FROM sqlite_master",
                            &objects, err))
    return false;
  *version = (int) v;
  if ((guint32) id == app_id || (id == 0 && *version == 0 && objects == 0))
    return true;
  g_set_error (err, DF_ERROR, DF_ERROR_CORRUPT,
                 "farm.db is an SQLite database but not a diskfarm farm DB "
               "(application_id 0x%08x, user_version %d)", (unsigned) id,
               *version);
  return false;
}

/* app_id: migration 1 sets PRAGMA application_id itself. */
static bool
sql_schema_set (DfDb *db, guint32 app_id, int version, GError **err)
{
  (void) app_id;
  g_autofree char *sql = g_strdup_printf ("PRAGMA user_version = %d",
                                          version);
  return sql_exec (db, sql, "farm.db: record schema version", err);
}

static int
sql_col_count (DfDbStmt *st)
{
  return sqlite3_column_count (SQL_ST (st)->st);
}

static const char *
sql_col_name (DfDbStmt *st, int i)
{
  return sqlite3_column_name (SQL_ST (st)->st, i);
}

static const DfDbOps sqlite_ops = {
  .dialect = DF_DB_SQLITE,
  .close = sql_close,
  .name = sql_name,
  .exec = sql_exec,
  .prepare = sql_prepare,
  .release = sql_release,
  .bind_text = sql_bind_text,
  .bind_int64 = sql_bind_int64,
  .step = sql_step,
  .changes = sql_changes,
  .col_is_null = sql_col_is_null,
  .col_int64 = sql_col_int64,
  .col_text = sql_col_text,
  .col_count = sql_col_count,
  .col_name = sql_col_name,
  .begin = sql_begin,
  .commit = sql_commit,
  .rollback = sql_rollback,
  .schema_get = sql_schema_get,
  .schema_set = sql_schema_set,
};
