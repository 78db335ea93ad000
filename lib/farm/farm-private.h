/* diskfarm: lib/farm internals shared by farm.c, migrations.c and the unit
 * test.  Not installed, not for other layers. */
#pragma once

#include <glib.h>
#include <sqlite3.h>
#include <stdbool.h>

typedef struct DfFarm DfFarm;

/* Settings keys of auto-add (servers.c owns them; farm.c follows a
 * collection rename or removal). */
#define DF_SETTING_AUTO_ENABLED "auto-add.enabled"
#define DF_SETTING_AUTO_COLLECTION "auto-add.collection"
#define DF_SETTING_AUTO_TEMPLATE "auto-add.template"

/* Settings key of a vdisk's own auto-merge depth, or of the farm's when
 * vdisk is NULL (versions.c; new string). */
char *df_farm_merge_depth_key (const char *vdisk);

/* PRAGMA application_id of a farm DB: "dfrm". */
#define DF_FARM_APPLICATION_ID 0x6466726d

/* One schema step.  version is the user_version the DB has after it;
 * the list is ordered and dense: list[i].version == i + 1. */
typedef struct {
  int version;
  const char *name;
  const char *sql;
} DfMigration;

extern const DfMigration df_farm_migrations[];
extern const guint df_farm_n_migrations;

/* Bring db up to the last migration of list[0..n): each pending step runs
 * in its own BEGIN IMMEDIATE transaction and sets PRAGMA user_version.
 * Refuses (DF_ERROR_UNSUPPORTED) a DB newer than the list and
 * (DF_ERROR_CORRUPT) a DB that is not a farm DB.  *version receives the
 * schema version reached. */
bool df_farm_migrate (sqlite3 *db, const DfMigration *list, guint n,
                      int *version, GError **err);

/* Set *err from the last SQLite error of db: "what: message".  Maps
 * BUSY/LOCKED -> DF_ERROR_BUSY, CORRUPT/NOTADB -> DF_ERROR_CORRUPT,
 * UNIQUE constraints -> DF_ERROR_EXISTS, anything else -> DF_ERROR_IO. */
void df_farm_set_sqlite_error (GError **err, sqlite3 *db, int rc,
                               const char *what);

/* The farm's SQLite connection (borrowed), for accessors kept in other
 * files of lib/farm (servers.c).  Same thread rules as the DfFarm. */
sqlite3 *df_farm_sqlite (DfFarm *farm);

/* ---- SQL helpers shared by the files of lib/farm (farm-sql.c) -------- */

/* A statement the caller owns: g_autoptr (DfFarmStmt) finalizes it.
 * (farm.c's cached statements use their own borrowed FarmStmt type.) */
typedef sqlite3_stmt DfFarmStmt;
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfFarmStmt, sqlite3_finalize)

/* A new prepared statement (caller finalizes), or NULL with *err set
 * ("farm.db: prepare: ..."). */
sqlite3_stmt *df_farm_prepare (DfFarm *farm, const char *sql, GError **err);
/* Step st once: 1 = row, 0 = done, -1 = error (*err "farm.db: ..."). */
int df_farm_step (DfFarm *farm, sqlite3_stmt *st, GError **err);
/* Bind s (copied) at i, or NULL when s is NULL. */
void df_sql_bind_text (sqlite3_stmt *st, int i, const char *s);
/* Column i as a new string (caller frees), or NULL for SQL NULL. */
char *df_sql_col_dup (sqlite3_stmt *st, int i);
/* The current UTC time as "YYYY-MM-DDTHH:MM:SSZ" (caller frees). */
char *df_farm_now (void);
/* Append s to gs as a JSON string literal, or null when s is NULL (audit
 * details are JSON objects). */
void df_farm_json_str (GString *gs, const char *s);
