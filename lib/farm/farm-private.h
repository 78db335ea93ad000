/* diskfarm: lib/farm internals shared by its entity files (vdisks.c,
 * versions.c, collections.c, devices.c, servers.c, chap.c, settings.c,
 * audit.c), farm.c, migrations.c and the unit test.  Not installed, not
 * for other layers.  SQL reaches the engine only through db.h. */
#pragma once

#include "db.h"
#include "farm.h"

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct DfFarm DfFarm;

/* ---- the DfFarm (farm.c) ---------------------------------------------- */

/* The farm's DB connection (borrowed; same thread rules as the DfFarm). */
DfDb *df_farm_db (DfFarm *farm);
/* The actor recorded in audit rows (borrowed). */
const char *df_farm_who (DfFarm *farm);

/* Write scope of one mutator: a level of df_db_begin (the transaction, or
 * a savepoint inside the caller's).  end keeps the work when ok and undoes
 * it otherwise; it returns the final success (a failed commit is rolled
 * back and reported).  Mutators reach them through df_farm_try (below),
 * after their checks (no DB access). */
bool df_farm_scope_begin (DfFarm *farm, GError **err);
bool df_farm_scope_end (DfFarm *farm, bool ok, GError **err);

/* A mutator's write scope, re-run when it loses a race.  On PostgreSQL a
 * serializable transaction can fail at any statement or at COMMIT when
 * another host wrote what it read (40001: two generation bumps, two
 * auto-adds of one MAC); when that happens at the outermost level the
 * whole body is run again in a new transaction, up to DF_FARM_TRY_MAX
 * times with a random back-off (1 ms up to 2^attempt ms, at most 128 ms).
 * Inside a caller's transaction the failure goes up: the caller's own
 * outermost scope re-runs it all.  Every mutator:
 *   DfFarmTry t = { 0 };
 *   while (df_farm_try (farm, &t, err))
 *     t.ok = locked_work (...);
 *   return t.ok;
 * where locked_work writes its rows and exactly one audit row, and sets
 * its out-parameters only on success (a re-run sets them again). */
typedef struct {
  bool ok;              /* the body's result, then the scope's */
  bool running;         /* the body is running (the scope is open) */
  guint attempt;
} DfFarmTry;
#define DF_FARM_TRY_MAX 10
/* Opens the scope and returns true to run the body; after the body closes
 * it (commit when t->ok) and returns true again only to re-run it. */
bool df_farm_try (DfFarm *farm, DfFarmTry *t, GError **err);

/* The body of a mutator of one named row, run inside its write scope. */
typedef bool (*DfNamedFn) (DfFarm *farm, const char *name, GError **err);
/* The whole mutator: name must be a valid <what> name (df_validate_name),
 * then fn runs in df_farm_try's loop.  For mutators whose only input is
 * the name (the removes). */
bool df_farm_mutate_named (DfFarm *farm, const char *what, const char *name,
                           DfNamedFn fn, GError **err);

/* ---- statements and rows (farm-sql.c) ---------------------------------- */

/* df_db_prepare on the farm's DB (g_autoptr (DfDbStmt) releases it). */
DfDbStmt *df_farm_stmt (DfFarm *farm, const char *sql, GError **err);
/* One parameter of df_farm_exec: text (NULL binds SQL NULL) or integer. */
typedef struct {
  bool is_text;
  const char *text;     /* borrowed (the backend copies it) */
  gint64 num;
} DfParam;
#define DF_TEXT(s) ((DfParam) { true, (s), 0 })
#define DF_INT(v) ((DfParam) { false, NULL, (gint64) (v) })
#define DF_NULL DF_TEXT (NULL)
/* sql prepared (df_farm_stmt) with params[i] bound to parameter i + 1,
 * ready to step (caller releases); NULL + err when sql is wrong. */
DfDbStmt *df_farm_query (DfFarm *farm, const char *sql,
                         const DfParam *params, gsize n, GError **err);
/* Run sql, a statement that returns no row, with params[i] bound to
 * parameter i + 1: the one statement of most writes, so no write binds by
 * number by hand.  False + err when it fails (df_db_changes tells what it
 * changed). */
bool df_farm_exec (DfFarm *farm, const char *sql, const DfParam *params,
                   gsize n, GError **err);
/* Table-driven rows: field i of a struct is read from column i of the
 * SELECT that goes with the table, so the column list, the struct and its
 * free function cannot disagree. */
typedef enum {
  DF_FIELD_SKIP,        /* column read by the row type's finish */
  DF_FIELD_INT64,       /* gint64 or uint64_t */
  DF_FIELD_INT,         /* int */
  DF_FIELD_PORT,        /* guint16 */
  DF_FIELD_BOOL,        /* bool, from an integer column (0: false) */
  DF_FIELD_TEXT,        /* char *, owned by the struct; NULL for SQL NULL */
} DfFieldKind;
typedef struct {
  DfFieldKind kind;
  gsize offset;         /* of the field in its struct */
} DfField;
#define DF_FIELD(kind, type, member) \
  { DF_FIELD_##kind, G_STRUCT_OFFSET (type, member) }

/* How the rows of one entity become its struct: the one place each
 * entity file states its row mapping (see DF_ROW_TYPE). */
typedef struct {
  const DfField *fields;
  gsize n_fields;
  gsize size;                    /* of the struct */
  /* Optional: reads the SKIP columns of the current row into obj. */
  void (*finish) (gpointer obj, DfDbStmt *st);
  /* The entity's public free function (it calls df_farm_row_free). */
  GDestroyNotify free;
} DfRowType;
#define DF_ROW_TYPE(type, fields, finish, free_fn) \
  { fields, G_N_ELEMENTS (fields), sizeof (type), finish, \
    (GDestroyNotify) free_fn }

/* A new struct of rt (caller owns; rt->free) read from the current row
 * of st. */
gpointer df_farm_row_read (DfDbStmt *st, const DfRowType *rt);
/* Free the TEXT fields of obj, then obj itself; NULL does nothing. */
void df_farm_row_free (const DfRowType *rt, gpointer obj);
/* Every remaining row of st as structs of rt: a new array (caller owns;
 * it frees its elements), or NULL + err on a step error. */
GPtrArray *df_farm_rows (DfDbStmt *st, const DfRowType *rt, GError **err);
/* Every row sql selects with params (as df_farm_query) as structs of rt,
 * as df_farm_rows. */
GPtrArray *df_farm_select (DfFarm *farm, const char *sql,
                           const DfParam *params, gsize n,
                           const DfRowType *rt, GError **err);
/* The first row sql selects with params, as a new struct of rt (caller
 * owns), or NULL with *err set on a DB error and unset when there is no
 * row. */
gpointer df_farm_select_one (DfFarm *farm, const char *sql,
                             const DfParam *params, gsize n,
                             const DfRowType *rt, GError **err);
/* The first row sql selects for key (bound at 1), as select_one. */
gpointer df_farm_row_find (DfFarm *farm, const char *sql, const char *key,
                           const DfRowType *rt, GError **err);
/* row_find, but a missing row is NOT_FOUND "no <what> named '<name>'". */
gpointer df_farm_row_named (DfFarm *farm, const char *sql, const char *what,
                            const char *name, const DfRowType *rt,
                            GError **err);
/* True when the statement just run changed a row; else false with a
 * NOT_FOUND error of fmt (which names the row nothing matched). */
bool df_farm_changed_row (DfFarm *farm, GError **err, const char *fmt, ...)
  G_GNUC_PRINTF (3, 4);
/* Id (column 0) of the row sql selects for name; NOT_FOUND names it. */
bool df_farm_lookup_id (DfFarm *farm, const char *what, const char *sql,
                        const char *name, gint64 *id, GError **err);
/* Names (column 0) of the rows sql selects for id (bound at 1), joined
 * with ", " into *out (new string, NULL when none). */
bool df_farm_names_using (DfFarm *farm, const char *sql, gint64 id,
                          char **out, GError **err);
/* Run the DELETE sql (id bound at 1) and record action on object with no
 * detail.  Inside the caller's write scope. */
bool df_farm_delete_audited (DfFarm *farm, const char *sql, gint64 id,
                             const char *action, const char *object,
                             GError **err);

/* ---- small helpers (farm-sql.c) ----------------------------------------- */

/* The current UTC time as "YYYY-MM-DDTHH:MM:SSZ" (caller frees). */
char *df_farm_now (void);
/* Append s to gs as a JSON string literal, or null when s is NULL (audit
 * details are JSON objects). */
void df_farm_json_str (GString *gs, const char *s);
/* Append "key":value to the object being built in gs (opened with "{"),
 * with a comma unless it is the first member; close returns its text. */
void df_farm_json_kv (GString *gs, const char *key, const char *val);
void df_farm_json_kv_int (GString *gs, const char *key, gint64 val);
char *df_farm_json_close (GString *gs);
/* v fits in an INTEGER column (and is not 0 unless zero_ok). */
bool df_farm_check_size (const char *what, uint64_t v, bool zero_ok,
                         GError **err);

/* ---- audit (audit.c) ------------------------------------------------- */

/* Insert one audit row as the farm's actor.  Inside a write scope. */
bool df_farm_audit_row (DfFarm *farm, const char *action, const char *object,
                        const char *detail, GError **err);

/* ---- what one entity asks another (each defined in the file named) ----- */

/* vdisks.c: id of vdisk name (NOT_FOUND names it); its store directory
 * name (new string; see df_farm_store_dir). */
bool df_farm_vdisk_id (DfFarm *farm, const char *name, gint64 *id,
                       GError **err);
char *df_farm_store_of (DfFarm *farm, const char *vdisk);
/* collections.c */
bool df_farm_collection_id (DfFarm *farm, const char *name, gint64 *id,
                            GError **err);
/* versions.c: number of vdisk vid's maintenance version, -1 when none, -2
 * on error; insert a version row (no audit); the checks of a version file
 * name (one path component) and sha256 (64 hex; *out lower-case, new). */
int df_farm_maintenance_number (DfFarm *farm, gint64 vid, GError **err);
bool df_farm_version_insert (DfFarm *farm, gint64 vid, int number,
                             int parent, const char *file, const char *sha256,
                             uint64_t virtual_size, uint64_t file_size,
                             DfVersionState state, GError **err);
bool df_farm_check_file_name (const char *file, GError **err);
bool df_farm_check_sha256 (const char *s, bool null_ok, char **out,
                           GError **err);
/* servers.c: the checks of server add; insert a row (no audit); the
 * audit detail of an added or changed server (new string). */
bool df_farm_check_server (const DfServer *s, GError **err);
bool df_farm_server_insert (DfFarm *farm, const DfServer *s, GError **err);
/* Where s is reached (address, iSCSI, NBD and admin ports, power) as five
 * DfParam initializers, in that order: the columns "address, iscsi_port,
 * nbd_port, admin_port, power" of every write of a server row. */
#define DF_SERVER_PLACE(s) \
  DF_TEXT ((s)->address), DF_INT ((s)->iscsi_port), DF_INT ((s)->nbd_port), \
  DF_INT ((s)->admin_port), DF_INT ((s)->power)
char *df_farm_server_audit_detail (const DfServer *s);
/* devices.c: production | test | maintenance. */
bool df_farm_check_device_type (const char *type, GError **err);

/* Settings keys of auto-add (servers.c owns them; collections.c follows a
 * collection rename or removal). */
#define DF_SETTING_AUTO_ENABLED "auto-add.enabled"
#define DF_SETTING_AUTO_COLLECTION "auto-add.collection"
#define DF_SETTING_AUTO_TEMPLATE "auto-add.template"

/* Settings key of a vdisk's own auto-merge depth, or of the farm's when
 * vdisk is NULL (settings.c; new string). */
char *df_farm_merge_depth_key (const char *vdisk);

/* The LISTEN/NOTIFY channel of farm changes: every audit row posts the
 * action on it (audit.c), the change watch listens (watch.c). */
#define DF_FARM_CHANNEL "diskfarm_change"

/* ---- schema (migrations.c) -------------------------------------------- */

/* PRAGMA application_id of a farm DB: "dfrm". */
#define DF_FARM_APPLICATION_ID 0x6466726d

/* One schema step.  version is the schema version the DB has after it;
 * the list is ordered and dense: list[i].version == i + 1.  sql is in the
 * dialect of db.h; pg_sql, when set, replaces it on PostgreSQL (for what
 * only SQLite has: PRAGMA, GLOB, triggers with RAISE). */
typedef struct {
  int version;
  const char *name;
  const char *sql;
  const char *pg_sql;
} DfMigration;

extern const DfMigration df_farm_migrations[];
extern const guint df_farm_n_migrations;

/* Bring db up to the last migration of list[0..n): each pending step runs
 * in its own transaction together with the schema version it records.
 * Refuses (DF_ERROR_UNSUPPORTED) a DB newer than the list and
 * (DF_ERROR_CORRUPT) a DB that is not a farm DB.  *version receives the
 * schema version reached.  db must have no transaction open. */
bool df_farm_migrate (DfDb *db, const DfMigration *list, guint n,
                      int *version, GError **err);

/* ---- offline boot generations (offline.c) ---- */
/* dir's journal (new table device -> gint64 *; NULL, logged, when it
 * cannot be read). */
GHashTable *df_farm_offline_journal_load (const char *dir);
/* A snapshot's journal (borrowed), NULL on a reachable DB. */
GHashTable *df_farm_offline_gens (DfFarm *farm);
/* The larger of generation and device's entry in journal (nullable). */
gint64 df_farm_offline_generation (GHashTable *journal, const char *device,
                                   gint64 generation);
/* device's entry in farm's directory's journal, 0 when none: a new
 * generation goes above it. */
gint64 df_farm_offline_generation_floor (DfFarm *farm, const char *device);
/* On a snapshot: device d boots, its new generation (above the snapshot's
 * and the journal's) is journaled and returned in *generation. */
bool df_farm_offline_generation_next (DfFarm *snapshot, const DfDevice *d,
                                      gint64 *generation, GError **err);
