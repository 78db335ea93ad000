/* diskfarm: the farm DB backend seam.
 *
 * Every SQL statement of lib/farm goes through these functions; the entity
 * files (vdisks.c, versions.c, collections.c, devices.c, servers.c, chap.c,
 * settings.c, audit.c) never see the engine.  db_sqlite.c is the one
 * implementation today and the only file that includes sqlite3.h; a
 * PostgreSQL backend is one more file (db_pg.c) filling the same
 * functions.  Not installed, not for other layers.
 *
 * Ownership: a DfDb is opened and closed by DfFarm (farm.c).  A DfDbStmt
 * comes from df_db_prepare and is given back with df_db_stmt_release
 * (g_autoptr (DfDbStmt) does it): statements are cached per DfDb by their
 * SQL text, so the release resets a cached one for its next user; a
 * statement prepared while its cached twin is in use (re-entrant call) is
 * private and finalized at release.  Strings bound are copied; strings
 * from df_db_col_text are borrowed until the next step or release.
 *
 * Errors: a failed call sets *err "farm.db: <what>: <engine message>"
 * with a DF_ERROR code chosen by the backend: busy/locked/serialization
 * failure -> DF_ERROR_BUSY, corrupt or not a DB -> DF_ERROR_CORRUPT,
 * unique or primary-key violation -> DF_ERROR_EXISTS, other constraint
 * (CHECK, trigger RAISE, foreign key) -> DF_ERROR_INVALID, disk full ->
 * DF_ERROR_NOSPC, anything else -> DF_ERROR_IO.
 *
 * Transactions: df_db_begin opens the outermost level as a write
 * transaction (SQLite BEGIN IMMEDIATE; PostgreSQL BEGIN ISOLATION LEVEL
 * SERIALIZABLE) and every inner level as a SAVEPOINT; commit and rollback
 * close the innermost level.  So "one mutator = one level = its rows and
 * its one audit row, all or nothing" holds whether or not the caller
 * already holds a transaction.
 *
 * Busy and retry: SQLite waits for the write lock at the outermost begin
 * (busy timeout 5 s) and then fails with DF_ERROR_BUSY; once BEGIN
 * IMMEDIATE holds the lock no later statement of the transaction can meet
 * a busy lock, so there is nothing to re-run.  A serializable PostgreSQL
 * transaction can instead fail at any statement or at commit; that backend
 * reports it as DF_ERROR_BUSY as well, and re-running the whole mutator
 * body on it is the backend's addition (not done here).
 *
 * The SQL dialect the entity files write, which a second backend accepts
 * as is or rewrites in df_db_prepare:
 *  - placeholders are `?` (numbered left to right) or `?N`; PostgreSQL's
 *    are $N (the backend rewrites ?N -> $N, a bare ? -> $<next>);
 *  - a new row's id comes back with INSERT ... RETURNING id (both
 *    engines), never from a last-insert-id call;
 *  - upserts are INSERT ... ON CONFLICT (key) DO UPDATE (both engines);
 *  - values are INTEGER (64-bit) and TEXT only: no BLOB/bytea, booleans
 *    are 0/1 integers or the settings strings "true"/"false";
 *  - device names compare with COLLATE NOCASE (ASCII; PostgreSQL: a
 *    citext column or lower() on both sides: the backend's schema chooses);
 *  - LIMIT -1 means no limit (PostgreSQL: LIMIT NULL / ALL);
 *  - the schema (migrations.c) and its version bookkeeping are the
 *    backend's own: df_db_schema_* below.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>

typedef struct DfDb DfDb;
typedef struct DfDbStmt DfDbStmt;

/* Open (create: make when missing) the DB at path and set it up for the
 * farm (foreign keys, WAL, busy wait).  New DfDb or NULL + err. */
DfDb *df_db_open (const char *path, bool create, GError **err);
/* Roll back what is still open and close.  NULL is fine. */
void df_db_close (DfDb *db);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfDb, df_db_close)

/* Run a script of one or more statements without parameters (schema
 * steps).  what names it in the error. */
bool df_db_exec (DfDb *db, const char *sql, const char *what, GError **err);

/* ---- statements ---- */
/* A statement for sql (borrowed from the cache, or private; see above);
 * give it back with df_db_stmt_release.  NULL + err when sql is wrong. */
DfDbStmt *df_db_prepare (DfDb *db, const char *sql, GError **err);
void df_db_stmt_release (DfDbStmt *st);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfDbStmt, df_db_stmt_release)

/* Parameters are numbered from 1.  text: NULL binds SQL NULL. */
void df_db_bind_text (DfDbStmt *st, int i, const char *s);
void df_db_bind_int64 (DfDbStmt *st, int i, gint64 v);
void df_db_bind_null (DfDbStmt *st, int i);

/* Step once: 1 = a row, 0 = done, -1 = error (*err set). */
int df_db_step (DfDbStmt *st, GError **err);
/* Step a statement that returns no row: true when done. */
bool df_db_run (DfDbStmt *st, GError **err);
/* Rows inserted, changed or deleted by the last statement run on db. */
gint64 df_db_changes (DfDb *db);

/* Columns of the current row, numbered from 0. */
bool df_db_col_is_null (DfDbStmt *st, int i);
gint64 df_db_col_int64 (DfDbStmt *st, int i);
int df_db_col_int (DfDbStmt *st, int i);
/* Borrowed (see above), NULL for SQL NULL. */
const char *df_db_col_text (DfDbStmt *st, int i);
/* New string (caller frees), NULL for SQL NULL. */
char *df_db_col_dup (DfDbStmt *st, int i);

/* ---- transactions ---- */
/* Open a level: the outermost waits for the write lock (busy wait, then
 * DF_ERROR_BUSY); an inner one is a savepoint. */
bool df_db_begin (DfDb *db, GError **err);
/* Close the innermost level keeping its work; on failure it is rolled
 * back and false returned. */
bool df_db_commit (DfDb *db, GError **err);
/* Close the innermost level undoing its work. */
void df_db_rollback (DfDb *db);
/* Open levels (0: none). */
guint df_db_depth (DfDb *db);

/* ---- schema bookkeeping (for migrations.c) ---- */
/* The schema version recorded in the DB (0 for a new DB).  False with
 * DF_ERROR_CORRUPT when the DB is neither a farm DB (app_id) nor empty. */
bool df_db_schema_get (DfDb *db, guint32 app_id, int *version, GError **err);
/* Record version inside the current transaction. */
bool df_db_schema_set (DfDb *db, int version, GError **err);
/* The DB's file or connection name, for messages (borrowed). */
const char *df_db_name (DfDb *db);
