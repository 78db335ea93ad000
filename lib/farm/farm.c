/* diskfarm: the farm directory and its SQLite database.
 *
 * Layout: every public mutator checks its arguments first (no DB access),
 * then opens a write scope (BEGIN IMMEDIATE, or a SAVEPOINT when the caller
 * already holds a df_farm_begin transaction), does its reads and writes
 * plus exactly one audit row, and closes the scope: commit on success,
 * roll back to the scope start on any failure.
 *
 * Prepared statements are cached per DfFarm, keyed by their SQL text; a
 * statement is reset when the FarmStmt holding it goes out of scope. */
#include "farm.h"
#include "farm-private.h"
#include "common.h"
#include "vdisk.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <glib/gstdio.h>
#include <sqlite3.h>
#include <string.h>

struct DfFarm {
  char *dir;
  char *db_path;
  char *who;            /* actor recorded in audit rows */
  sqlite3 *db;
  GHashTable *stmts;    /* SQL text (static) -> sqlite3_stmt*, owned */
  int schema_version;
  guint tx_depth;       /* df_farm_begin nesting */
  char *uuid;           /* farm_identity.uuid, read at open */
};

static const char *const farm_subdirs[] = { "store", "cache", "boot", "run" };

/* ---- errors ----------------------------------------------------------- */

void
df_farm_set_sqlite_error (GError **err, sqlite3 *db, int rc, const char *what)
{
  int code = DF_ERROR_IO;
  switch (rc & 0xff)
    {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      code = DF_ERROR_BUSY;
      break;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      code = DF_ERROR_CORRUPT;
      break;
    case SQLITE_CONSTRAINT:
      code = rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY
               ? DF_ERROR_EXISTS : DF_ERROR_INVALID;
      break;
    case SQLITE_FULL:
      code = DF_ERROR_NOSPC;
      break;
    default:
      break;
    }
  const char *msg = db ? sqlite3_errmsg (db) : sqlite3_errstr (rc);
  g_set_error (err, DF_ERROR, code, "%s: %s", what, msg);
}

/* ---- statements ------------------------------------------------------- */

/* A cached statement borrowed for one scope: reset on scope exit. */
typedef sqlite3_stmt FarmStmt;

static void
farm_stmt_done (FarmStmt *st)
{
  sqlite3_reset (st);
  sqlite3_clear_bindings (st);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC (FarmStmt, farm_stmt_done)

static void
stmt_finalize (gpointer st)
{
  sqlite3_finalize (st);
}

/* sql must be a string literal (it keys the cache).  Borrowed result. */
static FarmStmt *
stmt_get (DfFarm *farm, const char *sql, GError **err)
{
  sqlite3_stmt *st = g_hash_table_lookup (farm->stmts, sql);
  if (st)
    {
      g_assert (!sqlite3_stmt_busy (st));
      return st;
    }
  int rc = sqlite3_prepare_v3 (farm->db, sql, -1, SQLITE_PREPARE_PERSISTENT,
                               &st, NULL);
  if (rc != SQLITE_OK)
    {
      df_farm_set_sqlite_error (err, farm->db, rc, "farm.db: prepare");
      return NULL;
    }
  g_hash_table_insert (farm->stmts, (gpointer) sql, st);
  return st;
}

static bool
stmt_exec (DfFarm *farm, FarmStmt *st, GError **err)
{
  return df_farm_step (farm, st, err) == 0;
}

/* Builds one element (caller owns) from the current row of st. */
typedef gpointer (*RowFn) (FarmStmt *st);

/* Every remaining row of st, each built by from_row: a new array (caller
 * owns; free_fn frees its elements), or NULL + err on a step error. */
static GPtrArray *
rows_collect (DfFarm *farm, FarmStmt *st, RowFn from_row,
              GDestroyNotify free_fn, GError **err)
{
  g_autoptr (GPtrArray) out = g_ptr_array_new_with_free_func (free_fn);
  int r;
  while ((r = df_farm_step (farm, st, err)) == 1)
    g_ptr_array_add (out, from_row (st));
  return r == 0 ? g_steal_pointer (&out) : NULL;
}

/* The first row sql selects for key (bound at 1), built by from_row
 * (caller owns); NULL with *err set on an SQLite error and unset when
 * there is no such row.  sql must be a literal (stmt_get). */
static gpointer
row_find (DfFarm *farm, const char *sql, const char *key, RowFn from_row,
          GError **err)
{
  g_autoptr (FarmStmt) st = stmt_get (farm, sql, err);
  if (!st)
    return NULL;
  df_sql_bind_text (st, 1, key);
  return df_farm_step (farm, st, err) == 1 ? from_row (st) : NULL;
}

/* row_find, but a missing row is NOT_FOUND "no <what> named '<name>'". */
static gpointer
row_named (DfFarm *farm, const char *sql, const char *what, const char *name,
           RowFn from_row, GError **err)
{
  GError *local = NULL;
  gpointer row = row_find (farm, sql, name, from_row, &local);
  if (!row && !local)
    g_set_error (&local, DF_ERROR, DF_ERROR_NOT_FOUND, "no %s named '%s'",
                 what, name);
  if (local)
    g_propagate_error (err, local);
  return row;
}

static bool
exec_simple (DfFarm *farm, const char *sql, GError **err)
{
  int rc = sqlite3_exec (farm->db, sql, NULL, NULL, NULL);
  if (rc == SQLITE_OK)
    return true;
  g_autofree char *what = g_strdup_printf ("farm.db: %s", sql);
  df_farm_set_sqlite_error (err, farm->db, rc, what);
  return false;
}

/* ---- write scopes ----------------------------------------------------- */

typedef struct {
  DfFarm *farm;
  bool outer;   /* we opened the transaction (else a savepoint) */
} WriteScope;

static bool
scope_begin (DfFarm *farm, WriteScope *ws, GError **err)
{
  ws->farm = farm;
  ws->outer = sqlite3_get_autocommit (farm->db) != 0;
  return exec_simple (farm, ws->outer ? "BEGIN IMMEDIATE" : "SAVEPOINT df_mut",
                      err);
}

/* Close the scope: keep the work when ok, else undo it.  Returns the final
 * success (a failed COMMIT is rolled back and reported). */
static bool
scope_end (WriteScope *ws, bool ok, GError **err)
{
  DfFarm *farm = ws->farm;
  if (ok)
    {
      if (exec_simple (farm, ws->outer ? "COMMIT" : "RELEASE df_mut", err))
        return true;
    }
  if (ws->outer)
    sqlite3_exec (farm->db, "ROLLBACK", NULL, NULL, NULL);
  else
    sqlite3_exec (farm->db, "ROLLBACK TO df_mut; RELEASE df_mut", NULL, NULL,
                  NULL);
  return false;
}

/* ---- small helpers ---------------------------------------------------- */

/* Append "key":"value" (with a leading comma unless first). */
static void
json_kv (GString *gs, const char *key, const char *val)
{
  if (gs->len > 1)
    g_string_append_c (gs, ',');
  df_farm_json_str (gs, key);
  g_string_append_c (gs, ':');
  df_farm_json_str (gs, val);
}

static void
json_kv_int (GString *gs, const char *key, gint64 val)
{
  if (gs->len > 1)
    g_string_append_c (gs, ',');
  df_farm_json_str (gs, key);
  g_string_append_printf (gs, ":%" G_GINT64_FORMAT, val);
}

static char *
json_close (GString *gs)
{
  g_string_append_c (gs, '}');
  return g_string_free (gs, FALSE);
}

static bool
check_size (const char *what, uint64_t v, bool zero_ok, GError **err)
{
  if (v > (uint64_t) G_MAXINT64 || (!zero_ok && v == 0))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "%s %" G_GUINT64_FORMAT " is out of range", what, v);
      return false;
    }
  return true;
}

/* A file name inside store/<vdisk>/: one path component. */
static bool
check_file_name (const char *file, GError **err)
{
  if (!file || !*file || strlen (file) > 255 || strchr (file, '/')
      || strcmp (file, ".") == 0 || strcmp (file, "..") == 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "version file name '%s' must be one path component",
                   file ? file : "");
      return false;
    }
  for (const char *p = file; *p; p++)
    if ((unsigned char) *p < 0x20)
      {
        g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                     "version file name contains a control character");
        return false;
      }
  return true;
}

/* sha256: NULL (allowed only when null_ok) or 64 hex digits; *out receives
 * the lower-case form (newly allocated) or NULL. */
static bool
check_sha256 (const char *s, bool null_ok, char **out, GError **err)
{
  *out = NULL;
  if (!s)
    {
      if (null_ok)
        return true;
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "a published version needs its sha256");
      return false;
    }
  size_t n = strlen (s);
  for (size_t i = 0; i < n; i++)
    if (!g_ascii_isxdigit (s[i]))
      n = 0;
  if (n != 64)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "sha256 '%s' is not 64 hexadecimal digits", s);
      return false;
    }
  *out = g_ascii_strdown (s, -1);
  return true;
}

static const char *const device_types[] = { "production", "test",
                                            "maintenance" };

static bool
check_device_type (const char *type, GError **err)
{
  for (gsize i = 0; i < G_N_ELEMENTS (device_types); i++)
    if (type && strcmp (type, device_types[i]) == 0)
      return true;
  g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
               "device type '%s' is not production, test or maintenance",
               type ? type : "");
  return false;
}

/* The vdisk engine's own grammar (df_cache_mode_parse), so the DB never
 * holds a mode streamsvc would refuse at open.  *out: canonical form (new
 * string). */
static bool
check_cache_mode (const char *mode, char **out, GError **err)
{
  DfCacheMode m;
  if (!df_cache_mode_parse (mode, &m, err))
    return false;
  *out = df_cache_mode_to_string (&m);
  return true;
}

/* 0 (no quota) or at least one cache block: a smaller quota could hold no
 * block at all. */
static bool
check_quota (uint64_t quota, GError **err)
{
  if (!check_size ("quota", quota, true, err))
    return false;
  if (quota != 0 && quota < DF_CACHE_BLOCK_SIZE)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "quota %" G_GUINT64_FORMAT " bytes is below one cache "
                   "block (%u bytes); use at least 4K, or none", quota,
                   DF_CACHE_BLOCK_SIZE);
      return false;
    }
  return true;
}

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

static bool
configure_db (DfFarm *farm, GError **err)
{
  sqlite3_extended_result_codes (farm->db, 1);
  sqlite3_busy_timeout (farm->db, 5000);
  if (!exec_simple (farm, "PRAGMA foreign_keys = ON", err))
    return false;
  g_autoptr (FarmStmt) st = stmt_get (farm, "PRAGMA journal_mode = WAL", err);
  if (!st || df_farm_step (farm, st, err) != 1)
    return false;
  const char *mode = (const char *) sqlite3_column_text (st, 0);
  if (!mode || g_ascii_strcasecmp (mode, "wal") != 0)
    g_warning ("%s: journal mode is %s, not WAL (file system without "
               "shared memory?)", farm->db_path, mode ? mode : "unknown");
  return exec_simple (farm, "PRAGMA synchronous = NORMAL", err);
}

/* The farm's identity (migration 4), kept for df_farm_uuid. */
static bool
read_uuid (DfFarm *farm, GError **err)
{
  g_autoptr (FarmStmt) st = stmt_get (farm,
    "SELECT uuid FROM farm_identity WHERE id = 1", err);
  if (!st)
    return false;
  int rc = df_farm_step (farm, st, err);
  if (rc < 0)
    return false;
  if (rc == 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_CORRUPT,
                   "%s: the farm has no identity (farm_identity is empty)",
                   farm->db_path);
      return false;
    }
  farm->uuid = df_sql_col_dup (st, 0);
  return true;
}

static bool
open_db (DfFarm *farm, bool create, GError **err)
{
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX
              | (create ? SQLITE_OPEN_CREATE : 0);
  int rc = sqlite3_open_v2 (farm->db_path, &farm->db, flags, NULL);
  if (rc != SQLITE_OK)
    {
      g_autofree char *what = g_strdup_printf ("open %s", farm->db_path);
      df_farm_set_sqlite_error (err, farm->db, rc, what);
      return false;
    }
  if (!configure_db (farm, err))
    {
      g_prefix_error (err, "%s: ", farm->db_path);
      return false;
    }
  return df_farm_migrate (farm->db, df_farm_migrations, df_farm_n_migrations,
                          &farm->schema_version, err)
         && read_uuid (farm, err);
}

DfFarm *
df_farm_open (const char *dir, bool create, const char *who, GError **err)
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
  farm->db_path = g_build_filename (dir, "farm.db", NULL);
  farm->who = g_strdup (who && *who ? who : "unknown");
  farm->stmts = g_hash_table_new_full (g_str_hash, g_str_equal, NULL,
                                       stmt_finalize);
  if (create && (!make_tree (dir, err) || !make_db_file (farm->db_path, err)))
    return NULL;
  if (!create && !g_file_test (farm->db_path, G_FILE_TEST_IS_REGULAR))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
                   "no farm at %s (run 'diskfarm init')", dir);
      return NULL;
    }
  if (!open_db (farm, create, err))
    return NULL;
  return g_steal_pointer (&farm);
}

void
df_farm_close (DfFarm *farm)
{
  if (!farm)
    return;
  if (farm->stmts)
    g_hash_table_destroy (farm->stmts);
  if (farm->db)
    {
      if (!sqlite3_get_autocommit (farm->db))
        sqlite3_exec (farm->db, "ROLLBACK", NULL, NULL, NULL);
      sqlite3_close (farm->db);
    }
  g_free (farm->dir);
  g_free (farm->db_path);
  g_free (farm->who);
  g_free (farm->uuid);
  g_free (farm);
}

sqlite3 *
df_farm_sqlite (DfFarm *farm)
{
  return farm->db;
}

const char *
df_farm_dir (DfFarm *farm)
{
  return farm->dir;
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

/* The store directory name of vdisk: its row's, or for a vdisk not yet
 * added the one df_farm_vdisk_add will give it: the name itself unless a
 * renamed vdisk still holds that directory, then "<name>~2", "~3"... ('~'
 * is not allowed in names, so no later vdisk name can take it).  New
 * string; on a DB error the name itself (logged). */
static char *
store_of (DfFarm *farm, const char *vdisk)
{
  g_autoptr (GError) err = NULL;
  g_autoptr (FarmStmt) st = stmt_get (farm,
    "SELECT coalesce (store, name) FROM vdisks WHERE name = ?", &err);
  int r = -1;
  if (st)
    {
      df_sql_bind_text (st, 1, vdisk);
      r = df_farm_step (farm, st, &err);
    }
  if (r == 1)
    return df_sql_col_dup (st, 0);
  for (guint n = 1; r == 0 && n < 1000; n++)
    {
      g_autofree char *cand = n == 1 ? g_strdup (vdisk)
                                     : g_strdup_printf ("%s~%u", vdisk, n);
      g_autoptr (FarmStmt) taken = stmt_get (farm,
        "SELECT 1 FROM vdisks WHERE store = ?", &err);
      if (!taken)
        break;
      df_sql_bind_text (taken, 1, cand);
      int t = df_farm_step (farm, taken, &err);
      if (t == 0)
        return g_steal_pointer (&cand);
      if (t < 0)
        break;
    }
  if (err)
    g_warning ("farm.db: store directory of vdisk %s: %s", vdisk,
               err->message);
  return g_strdup (vdisk);
}

char *
df_farm_store_dir (DfFarm *farm, const char *vdisk)
{
  g_return_val_if_fail (df_validate_name ("vdisk", vdisk, NULL), NULL);
  g_autofree char *store = store_of (farm, vdisk);
  return g_build_filename (farm->dir, "store", store, NULL);
}

char *
df_farm_version_path (DfFarm *farm, const char *vdisk, int number)
{
  g_return_val_if_fail (df_validate_name ("vdisk", vdisk, NULL), NULL);
  g_return_val_if_fail (number >= 0, NULL);
  g_autofree char *store = df_farm_store_dir (farm, vdisk);
  g_autofree char *file = NULL;
  g_autoptr (FarmStmt) st = stmt_get (farm,
    "SELECT r.file FROM versions r JOIN vdisks d ON d.id = r.vdisk_id "
    "WHERE d.name = ? AND r.number = ?", NULL);
  if (st)
    {
      df_sql_bind_text (st, 1, vdisk);
      sqlite3_bind_int (st, 2, number);
      if (df_farm_step (farm, st, NULL) == 1)
        file = df_sql_col_dup (st, 0);
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
  if (farm->tx_depth == 0 && !sqlite3_get_autocommit (farm->db))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                   "farm.db: a transaction is already open");
      return false;
    }
  g_autofree char *sql = farm->tx_depth == 0
    ? g_strdup ("BEGIN IMMEDIATE")
    : g_strdup_printf ("SAVEPOINT df_tx%u", farm->tx_depth);
  if (!exec_simple (farm, sql, err))
    return false;
  farm->tx_depth++;
  return true;
}

bool
df_farm_commit (DfFarm *farm, GError **err)
{
  g_return_val_if_fail (farm->tx_depth > 0, false);
  guint level = farm->tx_depth - 1;
  g_autofree char *sql = level == 0
    ? g_strdup ("COMMIT")
    : g_strdup_printf ("RELEASE df_tx%u", level);
  if (!exec_simple (farm, sql, err))
    {
      df_farm_rollback (farm);
      return false;
    }
  farm->tx_depth = level;
  return true;
}

void
df_farm_rollback (DfFarm *farm)
{
  g_return_if_fail (farm->tx_depth > 0);
  guint level = farm->tx_depth - 1;
  g_autofree char *sql = level == 0
    ? g_strdup ("ROLLBACK")
    : g_strdup_printf ("ROLLBACK TO df_tx%u; RELEASE df_tx%u", level, level);
  int rc = sqlite3_exec (farm->db, sql, NULL, NULL, NULL);
  if (rc != SQLITE_OK && level == 0 && !sqlite3_get_autocommit (farm->db))
    g_warning ("farm.db: rollback failed: %s", sqlite3_errmsg (farm->db));
  farm->tx_depth = level;
}

/* ---- audit ------------------------------------------------------------ */

static bool
audit_insert (DfFarm *farm, const char *action, const char *object,
              const char *detail, GError **err)
{
  g_autoptr (FarmStmt) st = stmt_get (farm,
    "INSERT INTO audit (at, who, action, object, detail) "
    "VALUES (?, ?, ?, ?, ?)", err);
  if (!st)
    return false;
  g_autofree char *at = df_farm_now ();
  df_sql_bind_text (st, 1, at);
  df_sql_bind_text (st, 2, farm->who);
  df_sql_bind_text (st, 3, action);
  df_sql_bind_text (st, 4, object);
  df_sql_bind_text (st, 5, detail);
  return stmt_exec (farm, st, err);
}

bool
df_farm_audit (DfFarm *farm, const char *action, const char *object,
               const char *detail, GError **err)
{
  if (!action || !*action || !object)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "an audit entry needs an action and an object");
      return false;
    }
  WriteScope ws;
  if (!scope_begin (farm, &ws, err))
    return false;
  return scope_end (&ws, audit_insert (farm, action, object, detail, err),
                    err);
}

/* Run the DELETE sql (a literal, id bound at 1) and record action on
 * object with no detail.  Inside the caller's write scope. */
static bool
delete_audited (DfFarm *farm, const char *sql, gint64 id, const char *action,
                const char *object, GError **err)
{
  g_autoptr (FarmStmt) st = stmt_get (farm, sql, err);
  if (!st)
    return false;
  sqlite3_bind_int64 (st, 1, id);
  return stmt_exec (farm, st, err)
         && audit_insert (farm, action, object, NULL, err);
}

void
df_audit_free (DfAudit *a)
{
  if (!a)
    return;
  g_free (a->at);
  g_free (a->who);
  g_free (a->action);
  g_free (a->object);
  g_free (a->detail);
  g_free (a);
}

static gpointer
audit_from_row (FarmStmt *st)
{
  DfAudit *a = g_new0 (DfAudit, 1);
  a->id = sqlite3_column_int64 (st, 0);
  a->at = df_sql_col_dup (st, 1);
  a->who = df_sql_col_dup (st, 2);
  a->action = df_sql_col_dup (st, 3);
  a->object = df_sql_col_dup (st, 4);
  a->detail = df_sql_col_dup (st, 5);
  return a;
}

GPtrArray *
df_farm_audit_query (DfFarm *farm, const DfAuditFilter *f, GError **err)
{
  if (f->since && (strlen (f->since) != 20 || f->since[10] != 'T'
                   || f->since[19] != 'Z'))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "audit: time '%s' is not UTC YYYY-MM-DDTHH:MM:SSZ",
                   f->since);
      return NULL;
    }
  /* Times are stored as "YYYY-MM-DDTHH:MM:SSZ": text order is time order. */
  g_autoptr (FarmStmt) st = stmt_get (farm,
    "SELECT id, at, who, action, object, detail FROM audit "
    "WHERE (?1 IS NULL OR object = ?1 "
    "       OR substr (object, 1, length (?1) + 1) = ?1 || '@') "
    "  AND (?2 IS NULL OR action = ?2 OR (instr (?2, '.') = 0 "
    "       AND substr (action, 1, length (?2) + 1) = ?2 || '.')) "
    "  AND (?3 IS NULL OR at >= ?3) "
    "ORDER BY id DESC LIMIT ?4", err);
  if (!st)
    return NULL;
  df_sql_bind_text (st, 1, f->object);
  df_sql_bind_text (st, 2, f->action);
  df_sql_bind_text (st, 3, f->since);
  sqlite3_bind_int64 (st, 4, f->limit ? (gint64) f->limit : -1);
  return rows_collect (farm, st, audit_from_row,
                       (GDestroyNotify) df_audit_free, err);
}

GPtrArray *
df_farm_audit_list (DfFarm *farm, guint limit, GError **err)
{
  DfAuditFilter f = { .limit = limit };
  return df_farm_audit_query (farm, &f, err);
}

/* ---- lookups by name -------------------------------------------------- */

/* Id of the row named name in a table; NOT_FOUND names it.  The SQL is
 * chosen among literals so the statement cache keys stay static. */
static bool
lookup_id (DfFarm *farm, const char *what, const char *sql, const char *name,
           gint64 *id, GError **err)
{
  g_autoptr (FarmStmt) st = stmt_get (farm, sql, err);
  if (!st)
    return false;
  df_sql_bind_text (st, 1, name);
  int r = df_farm_step (farm, st, err);
  if (r < 0)
    return false;
  if (r == 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND, "no %s named '%s'",
                   what, name);
      return false;
    }
  *id = sqlite3_column_int64 (st, 0);
  return true;
}

static bool
vdisk_id (DfFarm *farm, const char *name, gint64 *id, GError **err)
{
  return lookup_id (farm, "vdisk", "SELECT id FROM vdisks WHERE name = ?",
                    name, id, err);
}

static bool
collection_id (DfFarm *farm, const char *name, gint64 *id, GError **err)
{
  return lookup_id (farm, "collection",
                    "SELECT id FROM collections WHERE name = ?", name, id,
                    err);
}

/* Names of rows (one column) selected by an id, joined with ", ". */
static bool
names_using (DfFarm *farm, const char *sql, gint64 id, char **out,
             GError **err)
{
  g_autoptr (FarmStmt) st = stmt_get (farm, sql, err);
  if (!st)
    return false;
  sqlite3_bind_int64 (st, 1, id);
  g_autoptr (GString) gs = g_string_new (NULL);
  int r;
  while ((r = df_farm_step (farm, st, err)) == 1)
    g_string_append_printf (gs, "%s%s", gs->len ? ", " : "",
                            (const char *) sqlite3_column_text (st, 0));
  if (r < 0)
    return false;
  *out = gs->len ? g_string_free (g_steal_pointer (&gs), FALSE) : NULL;
  return true;
}

/* ---- vdisks ----------------------------------------------------------- */

void
df_vdisk_free (DfVdisk *v)
{
  if (!v)
    return;
  g_free (v->name);
  g_free (v->description);
  g_free (v->created);
  g_free (v);
}

static gpointer
vdisk_from_row (FarmStmt *st)
{
  DfVdisk *v = g_new0 (DfVdisk, 1);
  v->id = sqlite3_column_int64 (st, 0);
  v->name = df_sql_col_dup (st, 1);
  v->virtual_size = (uint64_t) sqlite3_column_int64 (st, 2);
  v->description = df_sql_col_dup (st, 3);
  v->created = df_sql_col_dup (st, 4);
  return v;
}

static bool
version_insert (DfFarm *farm, gint64 vid, int number, int parent,
                const char *file, const char *sha256, uint64_t virtual_size,
                uint64_t file_size, DfVersionState state, GError **err)
{
  g_autoptr (FarmStmt) st = stmt_get (farm,
    "INSERT INTO versions (vdisk_id, number, parent, file, sha256, "
    "virtual_size, file_size, state, created) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", err);
  if (!st)
    return false;
  g_autofree char *now = df_farm_now ();
  sqlite3_bind_int64 (st, 1, vid);
  sqlite3_bind_int (st, 2, number);
  if (parent >= 0)
    sqlite3_bind_int (st, 3, parent);
  df_sql_bind_text (st, 4, file);
  df_sql_bind_text (st, 5, sha256);
  sqlite3_bind_int64 (st, 6, (gint64) virtual_size);
  sqlite3_bind_int64 (st, 7, (gint64) file_size);
  df_sql_bind_text (st, 8, df_version_state_name (state));
  df_sql_bind_text (st, 9, now);
  return stmt_exec (farm, st, err);
}

static bool
vdisk_add_locked (DfFarm *farm, const char *name, uint64_t virtual_size,
                  const char *base_file, const char *sha256,
                  uint64_t file_size, GError **err)
{
  gint64 id;
  if (vdisk_id (farm, name, &id, NULL))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_EXISTS, "vdisk '%s' already exists",
                   name);
      return false;
    }
  g_autofree char *store = store_of (farm, name);
  g_autoptr (FarmStmt) st = stmt_get (farm,
    "INSERT INTO vdisks (name, virtual_size, created, store) "
    "VALUES (?, ?, ?, ?)", err);
  if (!st)
    return false;
  g_autofree char *now = df_farm_now ();
  df_sql_bind_text (st, 1, name);
  sqlite3_bind_int64 (st, 2, (gint64) virtual_size);
  df_sql_bind_text (st, 3, now);
  df_sql_bind_text (st, 4, store);
  if (!stmt_exec (farm, st, err))
    return false;
  gint64 vid = sqlite3_last_insert_rowid (farm->db);
  if (!version_insert (farm, vid, 0, -1, base_file, sha256, virtual_size,
                       file_size, DF_VSTATE_PRODUCTION, err))
    return false;
  GString *gs = g_string_new ("{");
  json_kv_int (gs, "virtual_size", (gint64) virtual_size);
  json_kv (gs, "file", base_file);
  json_kv (gs, "sha256", sha256);
  g_autofree char *detail = json_close (gs);
  return audit_insert (farm, "vdisk.add", name, detail, err);
}

bool
df_farm_vdisk_add (DfFarm *farm, const char *name, uint64_t virtual_size,
                   const char *base_file, const char *sha256,
                   uint64_t file_size, GError **err)
{
  g_autofree char *sha = NULL;
  if (!df_validate_name ("vdisk", name, err)
      || !check_size ("virtual size", virtual_size, false, err)
      || !check_size ("file size", file_size, true, err)
      || !check_file_name (base_file, err)
      || !check_sha256 (sha256, false, &sha, err))
    return false;
  WriteScope ws;
  if (!scope_begin (farm, &ws, err))
    return false;
  return scope_end (&ws, vdisk_add_locked (farm, name, virtual_size,
                                           base_file, sha, file_size, err),
                    err);
}

DfVdisk *
df_farm_vdisk_get (DfFarm *farm, const char *name, GError **err)
{
  if (!df_validate_name ("vdisk", name, err))
    return NULL;
  return row_named (farm,
                    "SELECT id, name, virtual_size, description, created "
                    "FROM vdisks WHERE name = ?", "vdisk", name,
                    vdisk_from_row, err);
}

GPtrArray *
df_farm_vdisk_list (DfFarm *farm, GError **err)
{
  g_autoptr (FarmStmt) st = stmt_get (farm,
    "SELECT id, name, virtual_size, description, created FROM vdisks "
    "ORDER BY name", err);
  if (!st)
    return NULL;
  return rows_collect (farm, st, vdisk_from_row,
                       (GDestroyNotify) df_vdisk_free, err);
}

static bool
vdisk_remove_locked (DfFarm *farm, const char *name, GError **err)
{
  gint64 id;
  g_autofree char *devices = NULL, *collections = NULL;
  if (!vdisk_id (farm, name, &id, err)
      || !names_using (farm,
                       "SELECT name FROM devices WHERE vdisk_id = ? "
                       "ORDER BY name", id, &devices, err)
      || !names_using (farm,
                       "SELECT name FROM collections WHERE vdisk_id = ? "
                       "ORDER BY name", id, &collections, err))
    return false;
  if (devices || collections)
    {
      g_autoptr (GString) users = g_string_new (NULL);
      if (devices)
        g_string_append_printf (users, "devices %s", devices);
      if (collections)
        g_string_append_printf (users, "%scollections %s (default vdisk)",
                                users->len ? "; " : "", collections);
      g_set_error (err, DF_ERROR, DF_ERROR_BUSY, "vdisk '%s' is in use by %s",
                   name, users->str);
      return false;
    }
  return delete_audited (farm, "DELETE FROM vdisks WHERE id = ?", id,
                         "vdisk.remove", name, err);
}

bool
df_farm_vdisk_remove (DfFarm *farm, const char *name, GError **err)
{
  if (!df_validate_name ("vdisk", name, err))
    return false;
  WriteScope ws;
  if (!scope_begin (farm, &ws, err))
    return false;
  return scope_end (&ws, vdisk_remove_locked (farm, name, err), err);
}

static bool
vdisk_set_description_locked (DfFarm *farm, const char *name,
                              const char *text, GError **err)
{
  gint64 id;
  if (!vdisk_id (farm, name, &id, err))
    return false;
  g_autoptr (FarmStmt) st = stmt_get (farm,
    "UPDATE vdisks SET description = ? WHERE id = ?", err);
  if (!st)
    return false;
  df_sql_bind_text (st, 1, text);
  sqlite3_bind_int64 (st, 2, id);
  GString *gs = g_string_new ("{");
  json_kv (gs, "description", text);
  g_autofree char *detail = json_close (gs);
  return stmt_exec (farm, st, err)
         && audit_insert (farm, "vdisk.set", name, detail, err);
}

bool
df_farm_vdisk_set_description (DfFarm *farm, const char *name,
                               const char *text, GError **err)
{
  if (!df_validate_name ("vdisk", name, err))
    return false;
  if (text != NULL && strlen (text) > 1024)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "description of vdisk '%s' is longer than 1024 bytes",
                   name);
      return false;
    }
  WriteScope ws;
  if (!scope_begin (farm, &ws, err))
    return false;
  return scope_end (&ws,
                    vdisk_set_description_locked (farm, name, text, err),
                    err);
}

static int maintenance_number (DfFarm *farm, gint64 vid, GError **err);

static bool
vdisk_rename_locked (DfFarm *farm, const char *name, const char *new_name,
                     GError **err)
{
  gint64 id, other;
  if (!vdisk_id (farm, name, &id, err))
    return false;
  if (vdisk_id (farm, new_name, &other, NULL))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_EXISTS,
                   "vdisk '%s' already exists", new_name);
      return false;
    }
  GError *e = NULL;
  int maint = maintenance_number (farm, id, err);
  if (maint == -2)
    return false;
  if (maint >= 0)
    {
      /* Its writes live in <store>/<name>.<N>.maint/, named by the vdisk. */
      g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                   "vdisk '%s' has maintenance version %d: seal or delete it "
                   "before renaming", name, maint);
      return false;
    }
  g_autoptr (FarmStmt) st = stmt_get (farm,
    "UPDATE vdisks SET name = ?, store = coalesce (store, name) WHERE id = ?",
    err);
  if (!st)
    return false;
  df_sql_bind_text (st, 1, new_name);
  sqlite3_bind_int64 (st, 2, id);
  g_autofree char *old_key = df_farm_merge_depth_key (name);
  g_autofree char *new_key = df_farm_merge_depth_key (new_name);
  g_autofree char *depth = NULL;
  if (!stmt_exec (farm, st, err))
    return false;
  depth = df_farm_setting_get (farm, old_key, &e);
  if (e)
    {
      g_propagate_error (err, e);
      return false;
    }
  GString *gs = g_string_new ("{");
  json_kv (gs, "name", new_name);
  g_autofree char *detail = json_close (gs);
  return (!depth || (df_farm_setting_set (farm, old_key, NULL, err)
                     && df_farm_setting_set (farm, new_key, depth, err)))
         && audit_insert (farm, "vdisk.rename", name, detail, err);
}

bool
df_farm_vdisk_rename (DfFarm *farm, const char *name, const char *new_name,
                      GError **err)
{
  if (!df_validate_name ("vdisk", name, err)
      || !df_validate_name ("vdisk", new_name, err))
    return false;
  if (g_str_equal (name, new_name))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "vdisk '%s' already has that name", name);
      return false;
    }
  WriteScope ws;
  if (!scope_begin (farm, &ws, err))
    return false;
  return scope_end (&ws, vdisk_rename_locked (farm, name, new_name, err),
                    err);
}

/* ---- versions --------------------------------------------------------- */

static const char *const vstate_names[] = {
  [DF_VSTATE_MAINTENANCE] = "maintenance",
  [DF_VSTATE_TEST] = "test",
  [DF_VSTATE_PRODUCTION] = "production",
  [DF_VSTATE_PENDING] = "pending",
};

const char *
df_version_state_name (DfVersionState s)
{
  g_return_val_if_fail ((guint) s < G_N_ELEMENTS (vstate_names), "unknown");
  return vstate_names[s];
}

bool
df_version_state_parse (const char *s, DfVersionState *out, GError **err)
{
  for (guint i = 0; i < G_N_ELEMENTS (vstate_names); i++)
    if (s && strcmp (s, vstate_names[i]) == 0)
      {
        *out = (DfVersionState) i;
        return true;
      }
  g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
               "version state '%s' is not maintenance, test, production or "
               "pending", s ? s : "");
  return false;
}

void
df_version_free (DfVersion *v)
{
  if (!v)
    return;
  g_free (v->vdisk);
  g_free (v->file);
  g_free (v->sha256);
  g_free (v->pending_state);
  g_free (v->pending_at);
  g_free (v->created);
  g_free (v);
}

#define VERSION_COLUMNS \
  "SELECT r.id, v.name, r.number, r.parent, r.file, r.sha256, " \
  "r.virtual_size, r.file_size, r.state, r.pending_state, r.pending_at, " \
  "r.created FROM versions r JOIN vdisks v ON v.id = r.vdisk_id "

static gpointer
version_from_row (FarmStmt *st)
{
  DfVersion *v = g_new0 (DfVersion, 1);
  v->id = sqlite3_column_int64 (st, 0);
  v->vdisk = df_sql_col_dup (st, 1);
  v->number = sqlite3_column_int (st, 2);
  v->parent = sqlite3_column_type (st, 3) == SQLITE_NULL
                ? -1 : sqlite3_column_int (st, 3);
  v->file = df_sql_col_dup (st, 4);
  v->sha256 = df_sql_col_dup (st, 5);
  v->virtual_size = (uint64_t) sqlite3_column_int64 (st, 6);
  v->file_size = (uint64_t) sqlite3_column_int64 (st, 7);
  const char *state = (const char *) sqlite3_column_text (st, 8);
  if (!df_version_state_parse (state, &v->state, NULL))
    g_assert_not_reached ();   /* the CHECK constraint forbids it */
  v->pending_state = df_sql_col_dup (st, 9);
  v->pending_at = df_sql_col_dup (st, 10);
  v->created = df_sql_col_dup (st, 11);
  return v;
}

/* The row (vdisk, number), or NULL with *err unset when absent. */
static DfVersion *
version_find (DfFarm *farm, gint64 vid, int number, GError **err)
{
  g_autoptr (FarmStmt) st = stmt_get (farm,
    VERSION_COLUMNS "WHERE r.vdisk_id = ? AND r.number = ?", err);
  if (!st)
    return NULL;
  sqlite3_bind_int64 (st, 1, vid);
  sqlite3_bind_int (st, 2, number);
  return df_farm_step (farm, st, err) == 1 ? version_from_row (st) : NULL;
}

/* Number of the maintenance version of vid, or -1. */
static int
maintenance_number (DfFarm *farm, gint64 vid, GError **err)
{
  g_autoptr (FarmStmt) st = stmt_get (farm,
    "SELECT number FROM versions WHERE vdisk_id = ? "
    "AND state = 'maintenance'", err);
  if (!st)
    return -2;
  sqlite3_bind_int64 (st, 1, vid);
  int r = df_farm_step (farm, st, err);
  return r == 1 ? sqlite3_column_int (st, 0) : r == 0 ? -1 : -2;
}

static bool
check_one_maintenance (DfFarm *farm, const char *vdisk, gint64 vid,
                       GError **err)
{
  int m = maintenance_number (farm, vid, err);
  if (m == -2)
    return false;
  if (m >= 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                   "vdisk '%s' already has maintenance version %d", vdisk, m);
      return false;
    }
  return true;
}

typedef struct {
  const char *vdisk;
  int number, parent;
  const char *file;
  char *sha256;
  uint64_t virtual_size, file_size;
  DfVersionState state;
} VersionIn;

/* A new maintenance version: the vdisk's maintenance device(s) start a new
 * boot generation, so their next open binds to the new version's cache and
 * a session still bound to the old one is stale (streamsvc fences it).
 * One audit row "device.generation" per device, cause = "vdisk@N". */
static bool
maintenance_new_generation (DfFarm *farm, gint64 vid, const char *cause,
                            GError **err)
{
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GArray) gens = g_array_new (FALSE, FALSE, sizeof (gint64));
  {
    g_autoptr (FarmStmt) st = stmt_get (farm,
      "UPDATE devices SET generation = generation + 1 "
      "WHERE vdisk_id = ? AND type = 'maintenance' "
      "RETURNING name, generation", err);
    if (!st)
      return false;
    sqlite3_bind_int64 (st, 1, vid);
    int rc;
    while ((rc = df_farm_step (farm, st, err)) == 1)
      {
        gint64 gen = sqlite3_column_int64 (st, 1);
        g_ptr_array_add (names, df_sql_col_dup (st, 0));
        g_array_append_val (gens, gen);
      }
    if (rc < 0)
      return false;
  }
  for (guint i = 0; i < names->len; i++)
    {
      GString *gs = g_string_new ("{");
      json_kv_int (gs, "generation", g_array_index (gens, gint64, i));
      json_kv (gs, "cause", cause);
      g_autofree char *detail = json_close (gs);
      if (!audit_insert (farm, "device.generation", names->pdata[i], detail,
                         err))
        return false;
    }
  return true;
}

static bool
version_add_locked (DfFarm *farm, const VersionIn *in, GError **err)
{
  gint64 vid;
  if (!vdisk_id (farm, in->vdisk, &vid, err))
    return false;
  g_autoptr (DfVersion) dup = version_find (farm, vid, in->number, NULL);
  if (dup)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_EXISTS,
                   "vdisk '%s' already has version %d", in->vdisk, in->number);
      return false;
    }
  g_autoptr (DfVersion) parent = in->parent >= 0
    ? version_find (farm, vid, in->parent, NULL) : NULL;
  if (in->parent >= 0 && !parent)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
                   "vdisk '%s' has no version %d (parent of %d)", in->vdisk,
                   in->parent, in->number);
      return false;
    }
  if (in->state == DF_VSTATE_MAINTENANCE
      && !check_one_maintenance (farm, in->vdisk, vid, err))
    return false;
  if (!version_insert (farm, vid, in->number, in->parent, in->file,
                       in->sha256, in->virtual_size, in->file_size, in->state,
                       err))
    return false;
  GString *gs = g_string_new ("{");
  json_kv_int (gs, "parent", in->parent);
  json_kv (gs, "file", in->file);
  json_kv (gs, "sha256", in->sha256);
  json_kv (gs, "state", df_version_state_name (in->state));
  g_autofree char *detail = json_close (gs);
  g_autofree char *object = g_strdup_printf ("%s@%d", in->vdisk, in->number);
  return audit_insert (farm, "version.add", object, detail, err)
         && (in->state != DF_VSTATE_MAINTENANCE
             || maintenance_new_generation (farm, vid, object, err));
}

static bool
check_version_numbers (int number, int parent, GError **err)
{
  if (number < 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "version number %d is negative", number);
      return false;
    }
  if (parent < -1 || parent >= number)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "parent %d of version %d must be an older version or -1",
                   parent, number);
      return false;
    }
  return true;
}

static bool
check_settable_state (DfVersionState state, GError **err)
{
  if ((guint) state >= G_N_ELEMENTS (vstate_names))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID, "unknown version state %d",
                   (int) state);
      return false;
    }
  if (state == DF_VSTATE_PENDING)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "a version becomes pending only through a schedule "
                   "(target state and time)");
      return false;
    }
  return true;
}

bool
df_farm_version_add (DfFarm *farm, const char *vdisk, int number, int parent,
                     const char *file, const char *sha256,
                     uint64_t virtual_size, uint64_t file_size,
                     DfVersionState state, GError **err)
{
  VersionIn in = { vdisk, number, parent, file, NULL, virtual_size,
                   file_size, state };
  g_autofree char *sha = NULL;
  if (!df_validate_name ("vdisk", vdisk, err)
      || !check_version_numbers (number, parent, err)
      || !check_file_name (file, err)
      || !check_size ("virtual size", virtual_size, false, err)
      || !check_size ("file size", file_size, true, err)
      || !check_settable_state (state, err)
      || !check_sha256 (sha256, state == DF_VSTATE_MAINTENANCE, &sha, err))
    return false;
  in.sha256 = sha;
  WriteScope ws;
  if (!scope_begin (farm, &ws, err))
    return false;
  return scope_end (&ws, version_add_locked (farm, &in, err), err);
}

DfVersion *
df_farm_version_get (DfFarm *farm, const char *vdisk, int number,
                     GError **err)
{
  gint64 vid;
  if (!df_validate_name ("vdisk", vdisk, err))
    return NULL;
  if (number < 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "version number %d is negative", number);
      return NULL;
    }
  if (!vdisk_id (farm, vdisk, &vid, err))
    return NULL;
  GError *local = NULL;
  DfVersion *v = version_find (farm, vid, number, &local);
  if (!v && !local)
    g_set_error (&local, DF_ERROR, DF_ERROR_NOT_FOUND,
                 "vdisk '%s' has no version %d", vdisk, number);
  if (local)
    g_propagate_error (err, local);
  return v;
}

GPtrArray *
df_farm_version_list (DfFarm *farm, const char *vdisk, GError **err)
{
  gint64 vid;
  if (!df_validate_name ("vdisk", vdisk, err)
      || !vdisk_id (farm, vdisk, &vid, err))
    return NULL;
  g_autoptr (FarmStmt) st = stmt_get (farm,
    VERSION_COLUMNS "WHERE r.vdisk_id = ? ORDER BY r.number", err);
  if (!st)
    return NULL;
  sqlite3_bind_int64 (st, 1, vid);
  return rows_collect (farm, st, version_from_row,
                       (GDestroyNotify) df_version_free, err);
}

/* Newest version of vid in one of the states allowed by the mask
 * (bit per DfVersionState); NULL with *err unset when there is none. */
static DfVersion *
newest_in_states (DfFarm *farm, gint64 vid, guint mask, GError **err)
{
  g_autoptr (FarmStmt) st = stmt_get (farm,
    VERSION_COLUMNS "WHERE r.vdisk_id = ? AND ("
    "(r.state = 'maintenance' AND ?2 & 1) OR (r.state = 'test' AND ?2 & 2) "
    "OR (r.state = 'production' AND ?2 & 4)) "
    "ORDER BY r.number DESC LIMIT 1", err);
  if (!st)
    return NULL;
  G_STATIC_ASSERT (DF_VSTATE_MAINTENANCE == 0 && DF_VSTATE_TEST == 1
                   && DF_VSTATE_PRODUCTION == 2);
  sqlite3_bind_int64 (st, 1, vid);
  sqlite3_bind_int (st, 2, (int) mask);
  return df_farm_step (farm, st, err) == 1 ? version_from_row (st) : NULL;
}

#define VMASK(s) (1u << (s))

DfVersion *
df_farm_version_for_type (DfFarm *farm, const char *vdisk,
                          const char *device_type, GError **err)
{
  gint64 vid;
  if (!df_validate_name ("vdisk", vdisk, err)
      || !check_device_type (device_type, err)
      || !vdisk_id (farm, vdisk, &vid, err))
    return NULL;
  guint published = VMASK (DF_VSTATE_TEST) | VMASK (DF_VSTATE_PRODUCTION);
  guint mask = strcmp (device_type, "production") == 0
                 ? VMASK (DF_VSTATE_PRODUCTION) : published;
  GError *local = NULL;
  DfVersion *v = NULL;
  if (strcmp (device_type, "maintenance") == 0)
    v = newest_in_states (farm, vid, VMASK (DF_VSTATE_MAINTENANCE), &local);
  if (!v && !local)
    v = newest_in_states (farm, vid, mask, &local);
  if (!v && !local)
    g_set_error (&local, DF_ERROR, DF_ERROR_NOT_FOUND,
                 "vdisk '%s' has no version a %s device can boot (%s)",
                 vdisk, device_type,
                 mask == published ? "none in test or production"
                                   : "none in production");
  if (local)
    g_propagate_error (err, local);
  return v;
}

static bool
version_set_state_locked (DfFarm *farm, const char *vdisk, int number,
                          DfVersionState state, GError **err)
{
  gint64 vid;
  if (!vdisk_id (farm, vdisk, &vid, err))
    return false;
  g_autoptr (DfVersion) v = version_find (farm, vid, number, err);
  if (!v)
    {
      if (err && !*err)
        g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
                     "vdisk '%s' has no version %d", vdisk, number);
      return false;
    }
  if (state == DF_VSTATE_MAINTENANCE && v->state != DF_VSTATE_MAINTENANCE)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "version %s@%d is published and cannot return to "
                   "maintenance", vdisk, number);
      return false;
    }
  if (state != DF_VSTATE_MAINTENANCE && !v->sha256)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "version %s@%d has no sha256 yet (seal it first)", vdisk,
                   number);
      return false;
    }
  g_autoptr (FarmStmt) st = stmt_get (farm,
    "UPDATE versions SET state = ?, pending_state = NULL, pending_at = NULL "
    "WHERE id = ?", err);
  if (!st)
    return false;
  df_sql_bind_text (st, 1, df_version_state_name (state));
  sqlite3_bind_int64 (st, 2, v->id);
  if (!stmt_exec (farm, st, err))
    return false;
  GString *gs = g_string_new ("{");
  json_kv (gs, "from", df_version_state_name (v->state));
  json_kv (gs, "to", df_version_state_name (state));
  g_autofree char *detail = json_close (gs);
  g_autofree char *object = g_strdup_printf ("%s@%d", vdisk, number);
  return audit_insert (farm, "version.state", object, detail, err);
}

bool
df_farm_version_set_state (DfFarm *farm, const char *vdisk, int number,
                           DfVersionState state, GError **err)
{
  if (!df_validate_name ("vdisk", vdisk, err)
      || !check_version_numbers (number, -1, err)
      || !check_settable_state (state, err))
    return false;
  WriteScope ws;
  if (!scope_begin (farm, &ws, err))
    return false;
  return scope_end (&ws, version_set_state_locked (farm, vdisk, number, state,
                                                   err), err);
}

/* ---- collections ------------------------------------------------------ */

void
df_collection_free (DfCollection *c)
{
  if (!c)
    return;
  g_free (c->name);
  g_free (c->description);
  g_free (c->vdisk);
  g_free (c->created);
  g_free (c);
}

#define COLLECTION_COLUMNS \
  "SELECT c.id, c.name, c.description, v.name, c.created FROM collections c " \
  "LEFT JOIN vdisks v ON v.id = c.vdisk_id "

static gpointer
collection_from_row (FarmStmt *st)
{
  DfCollection *c = g_new0 (DfCollection, 1);
  c->id = sqlite3_column_int64 (st, 0);
  c->name = df_sql_col_dup (st, 1);
  c->description = df_sql_col_dup (st, 2);
  c->vdisk = df_sql_col_dup (st, 3);
  c->created = df_sql_col_dup (st, 4);
  return c;
}

static bool
collection_add_locked (DfFarm *farm, const char *name,
                       const char *description, const char *vdisk,
                       GError **err)
{
  gint64 cid, vid = 0;
  if (collection_id (farm, name, &cid, NULL))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_EXISTS,
                   "collection '%s' already exists", name);
      return false;
    }
  if (vdisk && !vdisk_id (farm, vdisk, &vid, err))
    return false;
  g_autoptr (FarmStmt) st = stmt_get (farm,
    "INSERT INTO collections (name, description, vdisk_id, created) "
    "VALUES (?, ?, ?, ?)", err);
  if (!st)
    return false;
  g_autofree char *now = df_farm_now ();
  df_sql_bind_text (st, 1, name);
  df_sql_bind_text (st, 2, description);
  if (vdisk)
    sqlite3_bind_int64 (st, 3, vid);
  df_sql_bind_text (st, 4, now);
  if (!stmt_exec (farm, st, err))
    return false;
  GString *gs = g_string_new ("{");
  json_kv (gs, "description", description);
  json_kv (gs, "vdisk", vdisk);
  g_autofree char *detail = json_close (gs);
  return audit_insert (farm, "collection.add", name, detail, err);
}

bool
df_farm_collection_add (DfFarm *farm, const char *name,
                        const char *description, const char *vdisk,
                        GError **err)
{
  if (!df_validate_name ("collection", name, err)
      || (vdisk && !df_validate_name ("vdisk", vdisk, err)))
    return false;
  WriteScope ws;
  if (!scope_begin (farm, &ws, err))
    return false;
  return scope_end (&ws, collection_add_locked (farm, name, description,
                                                vdisk, err), err);
}

DfCollection *
df_farm_collection_get (DfFarm *farm, const char *name, GError **err)
{
  if (!df_validate_name ("collection", name, err))
    return NULL;
  return row_named (farm, COLLECTION_COLUMNS "WHERE c.name = ?",
                    "collection", name, collection_from_row, err);
}

GPtrArray *
df_farm_collection_list (DfFarm *farm, GError **err)
{
  g_autoptr (FarmStmt) st = stmt_get (farm,
    COLLECTION_COLUMNS "ORDER BY c.name", err);
  if (!st)
    return NULL;
  return rows_collect (farm, st, collection_from_row,
                       (GDestroyNotify) df_collection_free, err);
}

/* Point auto-add at new_name when it names old_name (a rename). */
static bool
auto_add_follow_rename (DfFarm *farm, const char *old_name,
                        const char *new_name, GError **err)
{
  g_autoptr (DfAutoAdd) a = df_farm_auto_add_get (farm, err);
  if (!a)
    return false;
  if (g_strcmp0 (a->collection, old_name) != 0)
    return true;
  return df_farm_setting_set (farm, DF_SETTING_AUTO_COLLECTION, new_name,
                              err);
}

static bool
collection_set_locked (DfFarm *farm, const char *name, const char *new_name,
                       const char *description, const char *vdisk,
                       GError **err)
{
  gint64 cid, vid = 0, other;
  if (!collection_id (farm, name, &cid, err)
      || (vdisk && *vdisk && !vdisk_id (farm, vdisk, &vid, err)))
    return false;
  if (new_name && !g_str_equal (new_name, name)
      && collection_id (farm, new_name, &other, NULL))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_EXISTS,
                   "collection '%s' already exists", new_name);
      return false;
    }
  /* Each ?N IS NULL keeps the column; '' for text clears it. */
  g_autoptr (FarmStmt) st = stmt_get (farm,
    "UPDATE collections SET "
    "name = coalesce (?1, name), "
    "description = CASE WHEN ?2 IS NULL THEN description "
    "  ELSE nullif (?2, '') END, "
    "vdisk_id = CASE WHEN ?3 IS NULL THEN vdisk_id "
    "  WHEN ?3 = 0 THEN NULL ELSE ?3 END "
    "WHERE id = ?4", err);
  if (!st)
    return false;
  df_sql_bind_text (st, 1, new_name);
  df_sql_bind_text (st, 2, description);
  if (vdisk)
    sqlite3_bind_int64 (st, 3, vid);
  sqlite3_bind_int64 (st, 4, cid);
  GString *gs = g_string_new ("{");
  json_kv (gs, "name", new_name);
  json_kv (gs, "description", description);
  json_kv (gs, "vdisk", vdisk);
  g_autofree char *detail = json_close (gs);
  return stmt_exec (farm, st, err)
         && (!new_name || auto_add_follow_rename (farm, name, new_name, err))
         && audit_insert (farm, "collection.set", name, detail, err);
}

bool
df_farm_collection_set (DfFarm *farm, const char *name, const char *new_name,
                        const char *description, const char *vdisk,
                        GError **err)
{
  if (!df_validate_name ("collection", name, err)
      || (new_name && !df_validate_name ("collection", new_name, err))
      || (vdisk && *vdisk && !df_validate_name ("vdisk", vdisk, err)))
    return false;
  if (description && strlen (description) > 1024)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "description of collection '%s' is longer than 1024 "
                   "bytes", name);
      return false;
    }
  WriteScope ws;
  if (!scope_begin (farm, &ws, err))
    return false;
  return scope_end (&ws, collection_set_locked (farm, name, new_name,
                                                description, vdisk, err),
                    err);
}

static bool
collection_remove_locked (DfFarm *farm, const char *name, bool force,
                          GError **err)
{
  gint64 cid;
  g_autofree char *devices = NULL;
  g_autoptr (DfAutoAdd) a = NULL;
  if (!collection_id (farm, name, &cid, err)
      || !names_using (farm, "SELECT name FROM devices WHERE collection_id = ? "
                       "ORDER BY name", cid, &devices, err)
      || !(a = df_farm_auto_add_get (farm, err)))
    return false;
  if (a->enabled && g_strcmp0 (a->collection, name) == 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                   "collection '%s' receives auto-added devices: turn "
                   "auto-add off or point it at another collection first",
                   name);
      return false;
    }
  if (devices && !force)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                   "collection '%s' still has devices (%s): move or remove "
                   "them first, or --force to keep them without a "
                   "collection", name, devices);
      return false;
    }
  g_autoptr (FarmStmt) st = stmt_get (farm,
    "UPDATE devices SET collection_id = NULL WHERE collection_id = ?", err);
  if (!st)
    return false;
  sqlite3_bind_int64 (st, 1, cid);
  if (!stmt_exec (farm, st, err)
      || (a->collection && g_str_equal (a->collection, name)
          && !df_farm_setting_set (farm, DF_SETTING_AUTO_COLLECTION, NULL,
                                   err)))
    return false;
  /* {"devices": [...]}: those left in no collection */
  GString *gs = g_string_new ("{");
  df_farm_json_str (gs, "devices");
  g_string_append (gs, ":[");
  g_auto (GStrv) names = g_strsplit (devices ? devices : "", ", ", -1);
  for (char **n = names; devices && *n; n++)
    {
      if (n != names)
        g_string_append_c (gs, ',');
      df_farm_json_str (gs, *n);
    }
  g_string_append_c (gs, ']');
  g_autofree char *detail = json_close (gs);
  g_autoptr (FarmStmt) del = stmt_get (farm,
    "DELETE FROM collections WHERE id = ?", err);
  if (!del)
    return false;
  sqlite3_bind_int64 (del, 1, cid);
  return stmt_exec (farm, del, err)
         && audit_insert (farm, "collection.remove", name, detail, err);
}

bool
df_farm_collection_remove (DfFarm *farm, const char *name, bool force,
                           GError **err)
{
  if (!df_validate_name ("collection", name, err))
    return false;
  WriteScope ws;
  if (!scope_begin (farm, &ws, err))
    return false;
  return scope_end (&ws, collection_remove_locked (farm, name, force, err),
                    err);
}

/* ---- devices ---------------------------------------------------------- */

void
df_device_free (DfDevice *d)
{
  if (!d)
    return;
  g_free (d->name);
  g_free (d->mac);
  g_free (d->collection);
  g_free (d->type);
  g_free (d->vdisk);
  g_free (d->cache_mode);
  g_free (d->created);
  g_free (d);
}

#define DEVICE_COLUMNS \
  "SELECT d.id, d.name, d.mac, c.name, d.type, v.name, d.cache_mode, " \
  "d.quota, d.generation, d.created FROM devices d " \
  "JOIN vdisks v ON v.id = d.vdisk_id " \
  "LEFT JOIN collections c ON c.id = d.collection_id "

static gpointer
device_from_row (FarmStmt *st)
{
  DfDevice *d = g_new0 (DfDevice, 1);
  d->id = sqlite3_column_int64 (st, 0);
  d->name = df_sql_col_dup (st, 1);
  d->mac = df_sql_col_dup (st, 2);
  d->collection = df_sql_col_dup (st, 3);
  d->type = df_sql_col_dup (st, 4);
  d->vdisk = df_sql_col_dup (st, 5);
  d->cache_mode = df_sql_col_dup (st, 6);
  d->quota = (uint64_t) sqlite3_column_int64 (st, 7);
  d->generation = sqlite3_column_int64 (st, 8);
  d->created = df_sql_col_dup (st, 9);
  return d;
}

/* A device as checked at the edge, before any DB access. */
typedef struct {
  const char *name;
  char mac[18];
  const char *collection;   /* or NULL */
  const char *type;
  const char *vdisk;        /* NULL: the collection's default */
  char *vdisk_default;      /* owned copy of that default, or NULL */
  char *cache_mode;         /* canonical, owned */
  uint64_t quota;
} DeviceIn;

static void
device_in_clear (DeviceIn *in)
{
  g_free (in->cache_mode);
  g_free (in->vdisk_default);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (DeviceIn, device_in_clear)

static bool
check_device_name (const char *name, GError **err)
{
  char mac[18];
  if (!df_validate_name ("device", name, err))
    return false;
  if (df_parse_mac (name, mac, NULL))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "device name '%s' reads as a MAC address; choose another",
                   name);
      return false;
    }
  return true;
}

static bool
device_check (const DfDevice *d, DeviceIn *in, GError **err)
{
  in->name = d->name;
  in->collection = d->collection;
  in->type = d->type ? d->type : "production";
  in->vdisk = d->vdisk;
  in->quota = d->quota;
  if (!check_device_name (d->name, err))
    return false;
  if (!d->mac)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "device '%s' needs a MAC address", d->name);
      return false;
    }
  return df_parse_device_mac (d->mac, in->mac, err)
         && (!d->collection
             || df_validate_name ("collection", d->collection, err))
         && (!d->vdisk || df_validate_name ("vdisk", d->vdisk, err))
         && check_device_type (in->type, err)
         && check_cache_mode (d->cache_mode ? d->cache_mode
                                           : df_cache_mode_default (),
                              &in->cache_mode, err)
         && check_quota (d->quota, err);
}

/* Device row found by one column; NULL with *err unset when absent.
 * Device names are iSCSI target names, which are case-insensitive: a name
 * matches whatever its case (ASCII, as names are), so "PC01" finds pc01. */
static DfDevice *
device_find_by_name (DfFarm *farm, const char *name, GError **err)
{
  return row_find (farm, DEVICE_COLUMNS "WHERE d.name = ? COLLATE NOCASE",
                   name, device_from_row, err);
}

static DfDevice *
device_find_by_mac (DfFarm *farm, const char *mac, GError **err)
{
  return row_find (farm, DEVICE_COLUMNS "WHERE d.mac = ?", mac,
                   device_from_row, err);
}

/* PVS's rule: a vdisk has at most one maintenance device, the one that
 * boots its maintenance version read-write.  in (of type maintenance) may
 * be it when no device other than self_id (0: a new device) is.  Checked
 * when a device becomes one or moves to another vdisk (so a farm that had
 * two before the rule still edits them otherwise). */
static bool
check_maintenance_device (DfFarm *farm, const DeviceIn *in, gint64 self_id,
                          gint64 vid, GError **err)
{
  if (strcmp (in->type, "maintenance") != 0)
    return true;
  g_autoptr (FarmStmt) st = stmt_get (farm,
    "SELECT name FROM devices WHERE vdisk_id = ? AND type = 'maintenance' "
    "AND id <> ? ORDER BY name LIMIT 1", err);
  if (!st)
    return false;
  sqlite3_bind_int64 (st, 1, vid);
  sqlite3_bind_int64 (st, 2, self_id);
  int rc = df_farm_step (farm, st, err);
  if (rc < 0)
    return false;
  if (rc == 0)
    return true;
  g_set_error (err, DF_ERROR, DF_ERROR_EXISTS,
               "vdisk '%s' already has maintenance device '%s' (one "
               "maintenance device per vdisk): change its type first",
               in->vdisk, (const char *) sqlite3_column_text (st, 0));
  return false;
}

/* Resolve names to ids and check uniqueness of the MAC against every device
 * other than self_id (0 for a new device). */
static bool
device_resolve (DfFarm *farm, DeviceIn *in, gint64 self_id, gint64 *vid,
                gint64 *cid, GError **err)
{
  g_autoptr (DfDevice) other = device_find_by_mac (farm, in->mac, NULL);
  if (other && other->id != self_id)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_EXISTS,
                   "MAC %s is already used by device '%s'", in->mac,
                   other->name);
      return false;
    }
  *cid = 0;
  g_autoptr (DfCollection) coll = NULL;
  if (in->collection)
    {
      if (!(coll = df_farm_collection_get (farm, in->collection, err)))
        return false;
      *cid = coll->id;
    }
  if (!in->vdisk && coll && coll->vdisk)
    in->vdisk = in->vdisk_default = g_strdup (coll->vdisk);
  if (!in->vdisk)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "device '%s' needs a vdisk (none given and no collection "
                   "default)", in->name);
      return false;
    }
  return vdisk_id (farm, in->vdisk, vid, err);
}

static char *
device_detail (const DeviceIn *in)
{
  GString *gs = g_string_new ("{");
  json_kv (gs, "mac", in->mac);
  json_kv (gs, "vdisk", in->vdisk);
  json_kv (gs, "type", in->type);
  json_kv (gs, "cache_mode", in->cache_mode);
  json_kv (gs, "collection", in->collection);
  json_kv_int (gs, "quota", (gint64) in->quota);
  return json_close (gs);
}

static bool
device_add_locked (DfFarm *farm, DeviceIn *in, GError **err)
{
  gint64 vid, cid;
  g_autoptr (DfDevice) dup = device_find_by_name (farm, in->name, NULL);
  if (dup && strcmp (dup->name, in->name) != 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_EXISTS,
                   "device '%s' already exists as '%s' (MAC %s; device names "
                   "are case-insensitive)", in->name, dup->name, dup->mac);
      return false;
    }
  if (dup)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_EXISTS,
                   "device '%s' already exists (MAC %s)", in->name, dup->mac);
      return false;
    }
  if (!device_resolve (farm, in, 0, &vid, &cid, err)
      || !check_maintenance_device (farm, in, 0, vid, err))
    return false;
  g_autoptr (FarmStmt) st = stmt_get (farm,
    "INSERT INTO devices (name, mac, collection_id, type, vdisk_id, "
    "cache_mode, quota, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", err);
  if (!st)
    return false;
  g_autofree char *now = df_farm_now ();
  df_sql_bind_text (st, 1, in->name);
  df_sql_bind_text (st, 2, in->mac);
  if (cid)
    sqlite3_bind_int64 (st, 3, cid);
  df_sql_bind_text (st, 4, in->type);
  sqlite3_bind_int64 (st, 5, vid);
  df_sql_bind_text (st, 6, in->cache_mode);
  sqlite3_bind_int64 (st, 7, (gint64) in->quota);
  df_sql_bind_text (st, 8, now);
  if (!stmt_exec (farm, st, err))
    return false;
  g_autofree char *detail = device_detail (in);
  return audit_insert (farm, "device.add", in->name, detail, err);
}

bool
df_farm_device_add (DfFarm *farm, const DfDevice *d, GError **err)
{
  g_auto (DeviceIn) in = { 0 };
  if (!device_check (d, &in, err))
    return false;
  WriteScope ws;
  if (!scope_begin (farm, &ws, err))
    return false;
  return scope_end (&ws, device_add_locked (farm, &in, err), err);
}

DfDevice *
df_farm_device_get (DfFarm *farm, const char *key, GError **err)
{
  char mac[18];
  GError *local = NULL;
  DfDevice *d = NULL;
  if (key && df_parse_mac (key, mac, NULL))
    d = device_find_by_mac (farm, mac, &local);
  else if (!df_validate_name ("device", key, err))
    return NULL;
  else
    d = device_find_by_name (farm, key, &local);
  if (!d && !local)
    g_set_error (&local, DF_ERROR, DF_ERROR_NOT_FOUND,
                 "no device with %s '%s'",
                 df_parse_mac (key, mac, NULL) ? "MAC" : "name", key);
  if (local)
    g_propagate_error (err, local);
  return d;
}

GPtrArray *
df_farm_device_list (DfFarm *farm, const char *collection, GError **err)
{
  gint64 cid = 0;
  if (collection && (!df_validate_name ("collection", collection, err)
                     || !collection_id (farm, collection, &cid, err)))
    return NULL;
  g_autoptr (FarmStmt) st = stmt_get (farm,
    DEVICE_COLUMNS "WHERE ?1 IS NULL OR d.collection_id = ?1 "
    "ORDER BY d.name", err);
  if (!st)
    return NULL;
  if (collection)
    sqlite3_bind_int64 (st, 1, cid);
  return rows_collect (farm, st, device_from_row,
                       (GDestroyNotify) df_device_free, err);
}

/* Append {"field":{"from":a,"to":b}} members for fields that changed. */
static void
json_change (GString *gs, const char *key, const char *from, const char *to)
{
  if (g_strcmp0 (from, to) == 0)
    return;
  if (gs->len > 1)
    g_string_append_c (gs, ',');
  df_farm_json_str (gs, key);
  g_string_append (gs, ":{\"from\":");
  df_farm_json_str (gs, from);
  g_string_append (gs, ",\"to\":");
  df_farm_json_str (gs, to);
  g_string_append_c (gs, '}');
}

static char *
device_change_detail (const DfDevice *old, const DeviceIn *in)
{
  GString *gs = g_string_new ("{");
  json_change (gs, "mac", old->mac, in->mac);
  json_change (gs, "collection", old->collection, in->collection);
  json_change (gs, "type", old->type, in->type);
  json_change (gs, "vdisk", old->vdisk, in->vdisk);
  json_change (gs, "cache_mode", old->cache_mode, in->cache_mode);
  if (old->quota != in->quota)
    {
      if (gs->len > 1)
        g_string_append_c (gs, ',');
      g_string_append_printf (gs, "\"quota\":{\"from\":%" G_GUINT64_FORMAT
                              ",\"to\":%" G_GUINT64_FORMAT "}",
                              old->quota, in->quota);
    }
  return json_close (gs);
}

static bool
device_update_locked (DfFarm *farm, DeviceIn *in, GError **err)
{
  gint64 vid, cid;
  g_autoptr (DfDevice) old = device_find_by_name (farm, in->name, err);
  if (!old)
    {
      if (err && !*err)
        g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
                     "no device with name '%s'", in->name);
      return false;
    }
  if (!device_resolve (farm, in, old->id, &vid, &cid, err))
    return false;
  bool becomes = strcmp (old->type, "maintenance") != 0
                 || strcmp (old->vdisk, in->vdisk) != 0;
  if (becomes && !check_maintenance_device (farm, in, old->id, vid, err))
    return false;
  g_autoptr (FarmStmt) st = stmt_get (farm,
    "UPDATE devices SET mac = ?, collection_id = ?, type = ?, vdisk_id = ?, "
    "cache_mode = ?, quota = ? WHERE id = ?", err);
  if (!st)
    return false;
  df_sql_bind_text (st, 1, in->mac);
  if (cid)
    sqlite3_bind_int64 (st, 2, cid);
  df_sql_bind_text (st, 3, in->type);
  sqlite3_bind_int64 (st, 4, vid);
  df_sql_bind_text (st, 5, in->cache_mode);
  sqlite3_bind_int64 (st, 6, (gint64) in->quota);
  sqlite3_bind_int64 (st, 7, old->id);
  if (!stmt_exec (farm, st, err))
    return false;
  g_autofree char *detail = device_change_detail (old, in);
  return audit_insert (farm, "device.set", in->name, detail, err);
}

bool
df_farm_device_update (DfFarm *farm, const DfDevice *d, GError **err)
{
  g_auto (DeviceIn) in = { 0 };
  if (!device_check (d, &in, err))
    return false;
  WriteScope ws;
  if (!scope_begin (farm, &ws, err))
    return false;
  return scope_end (&ws, device_update_locked (farm, &in, err), err);
}

static bool
device_id (DfFarm *farm, const char *name, gint64 *id, GError **err)
{
  return lookup_id (farm, "device",
                    "SELECT id FROM devices WHERE name = ? COLLATE NOCASE",
                    name, id, err);
}

static bool
device_remove_locked (DfFarm *farm, const char *name, GError **err)
{
  gint64 id;
  if (!device_id (farm, name, &id, err))
    return false;
  return delete_audited (farm, "DELETE FROM devices WHERE id = ?", id,
                         "device.remove", name, err);
}

bool
df_farm_device_remove (DfFarm *farm, const char *name, GError **err)
{
  if (!df_validate_name ("device", name, err))
    return false;
  WriteScope ws;
  if (!scope_begin (farm, &ws, err))
    return false;
  return scope_end (&ws, device_remove_locked (farm, name, err), err);
}

static bool
device_generation_locked (DfFarm *farm, const char *name, gint64 *generation,
                          GError **err)
{
  gint64 id;
  if (!device_id (farm, name, &id, err))
    return false;
  g_autoptr (FarmStmt) st = stmt_get (farm,
    "UPDATE devices SET generation = generation + 1 WHERE id = ? "
    "RETURNING generation", err);
  if (!st)
    return false;
  sqlite3_bind_int64 (st, 1, id);
  if (df_farm_step (farm, st, err) != 1)
    return false;
  gint64 gen = sqlite3_column_int64 (st, 0);
  if (df_farm_step (farm, st, err) != 0)
    return false;
  g_autofree char *detail = g_strdup_printf ("{\"generation\":%"
                                             G_GINT64_FORMAT "}", gen);
  if (!audit_insert (farm, "device.reset", name, detail, err))
    return false;
  if (generation)
    *generation = gen;
  return true;
}

bool
df_farm_device_new_generation (DfFarm *farm, const char *name,
                               gint64 *generation, GError **err)
{
  if (!df_validate_name ("device", name, err))
    return false;
  WriteScope ws;
  if (!scope_begin (farm, &ws, err))
    return false;
  return scope_end (&ws, device_generation_locked (farm, name, generation,
                                                   err), err);
}
