/* diskfarm: what a backend of the farm DB seam (db.h) fills in.  Only
 * db.c (the dispatcher) and the backends (db_sqlite.c, db_pg.c) include
 * it.  A backend's DfDb embeds struct DfDb first and its DfDbStmt embeds
 * struct DfDbStmt first, so db.c reaches the ops from either. */
#pragma once

#include "db.h"

typedef struct DfDbOps DfDbOps;

struct DfDb {
  const DfDbOps *ops;
  guint depth;          /* open df_db_begin levels (the backend keeps it) */
};

struct DfDbStmt {
  DfDb *db;
};

/* One function per db.h call that differs between engines; the db.h
 * comments say what each does. */
struct DfDbOps {
  DfDbDialect dialect;
  void (*close) (DfDb *db);
  const char *(*name) (DfDb *db);
  bool (*exec) (DfDb *db, const char *sql, const char *what, GError **err);
  DfDbStmt *(*prepare) (DfDb *db, const char *sql, GError **err);
  void (*release) (DfDbStmt *st);
  void (*bind_text) (DfDbStmt *st, int i, const char *s);
  void (*bind_int64) (DfDbStmt *st, int i, gint64 v);
  int (*step) (DfDbStmt *st, GError **err);
  gint64 (*changes) (DfDb *db);
  bool (*col_is_null) (DfDbStmt *st, int i);
  gint64 (*col_int64) (DfDbStmt *st, int i);
  const char *(*col_text) (DfDbStmt *st, int i);
  int (*col_count) (DfDbStmt *st);
  const char *(*col_name) (DfDbStmt *st, int i);
  bool (*begin) (DfDb *db, GError **err);
  bool (*commit) (DfDb *db, GError **err);
  void (*rollback) (DfDb *db);
  bool (*schema_get) (DfDb *db, guint32 app_id, int *version, GError **err);
  bool (*schema_set) (DfDb *db, guint32 app_id, int version, GError **err);
  /* NULL when a busy outermost transaction is not worth re-running
   * (SQLite: BEGIN IMMEDIATE already waited for the lock). */
  bool (*failed_busy) (DfDb *db);
  /* NULL when the engine's write lock already serializes migrators. */
  bool (*schema_lock) (DfDb *db, guint32 app_id, bool lock, GError **err);
  /* All NULL when the engine has no notifications (SQLite). */
  bool (*notify) (DfDb *db, const char *channel, const char *payload,
                  GError **err);
  bool (*listen) (DfDb *db, const char *channel, GError **err);
  int (*notify_fd) (DfDb *db);
  int (*notices) (DfDb *db, GError **err);
};

/* The backends' openers (target: a file path; a PostgreSQL URI or
 * conninfo). */
DfDb *df_db_sqlite_open (const char *path, bool create, GError **err);
DfDb *df_db_pg_open (const char *conninfo, bool create, GError **err);
/* conninfo's parameters without any password (new string). */
char *df_db_pg_redact (const char *conninfo);

/* For the backends' schema bookkeeping: run sql, which returns one row of
 * one integer, into *out; no row is DF_ERROR_IO "farm DB: <sql>: no row". */
bool df_db_read_int64 (DfDb *db, const char *sql, gint64 *out, GError **err);
