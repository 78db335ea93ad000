/* diskfarm: the farm DB seam's dispatcher: df_db_open picks the backend
 * from the target's form (df_db_target_is_pg), every other call goes to
 * the ops of the DfDb it is given. */
#include "db-backend.h"
#include "common.h"

#include <string.h>

bool
df_db_target_is_pg (const char *target)
{
  return target != NULL
         && (g_str_has_prefix (target, "postgresql://")
             || g_str_has_prefix (target, "postgres://")
             || strchr (target, '=') != NULL);
}

char *
df_db_target_redacted (const char *target)
{
  return df_db_target_is_pg (target) ? df_db_pg_redact (target)
                                     : g_strdup (target);
}

DfDb *
df_db_open (const char *target, bool create, GError **err)
{
  if (df_db_target_is_pg (target))
    return df_db_pg_open (target, create, err);
  return df_db_sqlite_open (target, create, err);
}

void
df_db_close (DfDb *db)
{
  if (db)
    db->ops->close (db);
}

DfDbDialect
df_db_dialect (DfDb *db)
{
  return db->ops->dialect;
}

const char *
df_db_name (DfDb *db)
{
  return db->ops->name (db);
}

bool
df_db_exec (DfDb *db, const char *sql, const char *what, GError **err)
{
  return db->ops->exec (db, sql, what, err);
}

DfDbStmt *
df_db_prepare (DfDb *db, const char *sql, GError **err)
{
  return db->ops->prepare (db, sql, err);
}

void
df_db_stmt_release (DfDbStmt *st)
{
  if (st)
    st->db->ops->release (st);
}

void
df_db_bind_text (DfDbStmt *st, int i, const char *s)
{
  st->db->ops->bind_text (st, i, s);
}

void
df_db_bind_int64 (DfDbStmt *st, int i, gint64 v)
{
  st->db->ops->bind_int64 (st, i, v);
}

void
df_db_bind_null (DfDbStmt *st, int i)
{
  st->db->ops->bind_text (st, i, NULL);
}

int
df_db_step (DfDbStmt *st, GError **err)
{
  return st->db->ops->step (st, err);
}

bool
df_db_run (DfDbStmt *st, GError **err)
{
  return df_db_step (st, err) == 0;
}

gint64
df_db_changes (DfDb *db)
{
  return db->ops->changes (db);
}

bool
df_db_col_is_null (DfDbStmt *st, int i)
{
  return st->db->ops->col_is_null (st, i);
}

gint64
df_db_col_int64 (DfDbStmt *st, int i)
{
  return st->db->ops->col_int64 (st, i);
}

int
df_db_col_int (DfDbStmt *st, int i)
{
  return (int) df_db_col_int64 (st, i);
}

const char *
df_db_col_text (DfDbStmt *st, int i)
{
  return st->db->ops->col_text (st, i);
}

char *
df_db_col_dup (DfDbStmt *st, int i)
{
  return g_strdup (df_db_col_text (st, i));
}

bool
df_db_begin (DfDb *db, GError **err)
{
  return db->ops->begin (db, err);
}

bool
df_db_commit (DfDb *db, GError **err)
{
  g_return_val_if_fail (db->depth > 0, false);
  return db->ops->commit (db, err);
}

void
df_db_rollback (DfDb *db)
{
  g_return_if_fail (db->depth > 0);
  db->ops->rollback (db);
}

guint
df_db_depth (DfDb *db)
{
  return db->depth;
}

bool
df_db_read_int64 (DfDb *db, const char *sql, gint64 *out, GError **err)
{
  g_autoptr (DfDbStmt) st = df_db_prepare (db, sql, err);
  if (!st)
    return false;
  int r = df_db_step (st, err);
  if (r == 0)
    g_set_error (err, DF_ERROR, DF_ERROR_IO, "farm DB: %s: no row", sql);
  if (r != 1)
    return false;
  *out = df_db_col_int64 (st, 0);
  return true;
}

bool
df_db_schema_get (DfDb *db, guint32 app_id, int *version, GError **err)
{
  return db->ops->schema_get (db, app_id, version, err);
}

bool
df_db_schema_set (DfDb *db, guint32 app_id, int version, GError **err)
{
  return db->ops->schema_set (db, app_id, version, err);
}

bool
df_db_schema_lock (DfDb *db, guint32 app_id, bool lock, GError **err)
{
  return !db->ops->schema_lock || db->ops->schema_lock (db, app_id, lock, err);
}

bool
df_db_failed_busy (DfDb *db)
{
  return db->ops->failed_busy && db->ops->failed_busy (db);
}

/* ---- change notifications ---------------------------------------------- */

bool
df_db_notify (DfDb *db, const char *channel, const char *payload,
              GError **err)
{
  return db->ops->notify == NULL
         || db->ops->notify (db, channel, payload, err);
}

bool
df_db_listen (DfDb *db, const char *channel, GError **err)
{
  if (db->ops->listen == NULL)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_UNSUPPORTED,
                   "farm DB %s: no change notifications (SQLite)",
                   df_db_name (db));
      return false;
    }
  return db->ops->listen (db, channel, err);
}

int
df_db_notify_fd (DfDb *db)
{
  return db->ops->notify_fd != NULL ? db->ops->notify_fd (db) : -1;
}

int
df_db_notices (DfDb *db, GError **err)
{
  g_return_val_if_fail (db->ops->notices != NULL, -1);
  return db->ops->notices (db, err);
}

int
df_db_col_count (DfDbStmt *st)
{
  return st->db->ops->col_count (st);
}

const char *
df_db_col_name (DfDbStmt *st, int i)
{
  return st->db->ops->col_name (st, i);
}
