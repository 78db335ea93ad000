/* diskfarm: offline mode's local snapshot of a PostgreSQL farm DB (see
 * farm.h): every table but the audit log copied row by row, as text (the
 * dialect has INTEGER and TEXT only; SQLite's column affinity gives the
 * integers back), into a new SQLite farm DB that is then published over
 * the old snapshot. */
#include "farm.h"
#include "farm-private.h"
#include "common.h"
#include "store.h"

#include <string.h>
#include <unistd.h>

char *
df_farm_snapshot_path (const char *dir)
{
  return g_build_filename (dir, "run", DF_FARM_SNAPSHOT, NULL);
}

bool
df_farm_error_unreachable (const char *database, const GError *err)
{
  return df_db_target_is_pg (database)
         && g_error_matches (err, DF_ERROR, DF_ERROR_IO);
}

DfFarm *
df_farm_open_or_snapshot (const char *dir, const char *database,
                          const char *who, GError **err)
{
  g_autoptr (GError) local = NULL;
  DfFarm *farm = df_farm_open_db (dir, database, false, who, &local);
  if (farm != NULL || !df_farm_error_unreachable (database, local))
    {
      if (farm == NULL)
        g_propagate_error (err, g_steal_pointer (&local));
      return farm;
    }
  farm = df_farm_open_snapshot (dir, database, who, NULL);
  if (farm == NULL)
    {
      g_propagate_error (err, g_steal_pointer (&local));
      return NULL;
    }
  g_message ("%s; starting from the local snapshot (offline: known devices "
             "are served, changes wait for the DB)", local->message);
  return farm;
}

bool
df_farm_ping (DfFarm *farm, GError **err)
{
  g_autoptr (DfDbStmt) st = df_farm_stmt (farm, "SELECT 1", err);
  return st != NULL && df_db_step (st, err) == 1;
}

/* The snapshot's tables (its own schema, the same migrations): new array. */
static GPtrArray *
snapshot_tables (DfDb *to, GError **err)
{
  g_autoptr (DfDbStmt) st = df_db_prepare (to,
    "SELECT name FROM sqlite_master WHERE type = 'table' "
    "AND name NOT LIKE 'sqlite_%' AND name <> 'audit' ORDER BY name", err);
  if (st == NULL)
    return NULL;
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  int rc;
  while ((rc = df_db_step (st, err)) == 1)
    g_ptr_array_add (names, df_db_col_dup (st, 0));
  return rc == 0 ? g_steal_pointer (&names) : NULL;
}

/* INSERT INTO table (the row's columns) VALUES (?, ...) (new string). */
static char *
insert_sql (const char *table, DfDbStmt *row)
{
  GString *cols = g_string_new (NULL), *qs = g_string_new (NULL);
  for (int i = 0; i < df_db_col_count (row); i++)
    {
      g_string_append_printf (cols, "%s\"%s\"", i ? ", " : "",
                              df_db_col_name (row, i));
      g_string_append (qs, i ? ", ?" : "?");
    }
  char *sql = g_strdup_printf ("INSERT INTO \"%s\" (%s) VALUES (%s)", table,
                               cols->str, qs->str);
  g_string_free (cols, true);
  g_string_free (qs, true);
  return sql;
}

static bool
copy_row (DfDb *to, const char *sql, DfDbStmt *row, GError **err)
{
  g_autoptr (DfDbStmt) ins = df_db_prepare (to, sql, err);
  if (ins == NULL)
    return false;
  for (int i = 0; i < df_db_col_count (row); i++)
    df_db_bind_text (ins, i + 1, df_db_col_text (row, i));
  return df_db_run (ins, err);
}

/* Replace table's rows in to by from's. */
static bool
copy_table (DfDb *from, DfDb *to, const char *table, GError **err)
{
  g_autofree char *del = g_strdup_printf ("DELETE FROM \"%s\"", table);
  g_autofree char *sel = g_strdup_printf ("SELECT * FROM %s", table);
  if (!df_db_exec (to, del, "snapshot: empty a table", err))
    return false;
  g_autoptr (DfDbStmt) st = df_db_prepare (from, sel, err);
  if (st == NULL)
    return false;
  g_autofree char *ins = NULL;
  int rc;
  while ((rc = df_db_step (st, err)) == 1)
    {
      if (ins == NULL)
        ins = insert_sql (table, st);
      if (!copy_row (to, ins, st, err))
        return false;
    }
  return rc == 0;
}

static bool
copy_all (DfDb *from, DfDb *to, GError **err)
{
  g_autoptr (GPtrArray) tables = snapshot_tables (to, err);
  if (tables == NULL || !df_db_begin (from, err))
    return false;
  bool ok = df_db_begin (to, err);
  for (guint i = 0; ok && i < tables->len; i++)
    ok = copy_table (from, to, tables->pdata[i], err);
  df_db_rollback (from); /* a read: nothing to keep */
  if (!ok)
    {
      if (df_db_depth (to) > 0)
        df_db_rollback (to);
      return false;
    }
  return df_db_commit (to, err);
}

static void
remove_sqlite_files (const char *path)
{
  static const char *const ext[] = { "", "-wal", "-shm", "-journal" };
  for (gsize i = 0; i < G_N_ELEMENTS (ext); i++)
    {
      g_autofree char *p = g_strconcat (path, ext[i], NULL);
      unlink (p);
    }
}

bool
df_farm_snapshot_write (DfFarm *farm, GError **err)
{
  g_assert (df_db_dialect (df_farm_db (farm)) == DF_DB_POSTGRESQL);
  g_autofree char *final = df_farm_snapshot_path (df_farm_dir (farm));
  /* one temp file per process: streamsvc and bootstrapsvc of one farm
   * directory both keep the snapshot */
  g_autofree char *tmp = g_strdup_printf ("%s.%d.tmp", final, (int) getpid ());
  remove_sqlite_files (tmp);
  DfFarm *snap = df_farm_open_db (df_farm_dir (farm), tmp, true, "snapshot",
                                  err);
  bool ok = snap != NULL
            && df_db_exec (df_farm_db (snap), "PRAGMA foreign_keys = OFF",
                           "snapshot: foreign keys off", err)
            && copy_all (df_farm_db (farm), df_farm_db (snap), err);
  df_farm_close (snap); /* checkpoints: the whole DB is in tmp now */
  ok = ok && df_store_publish (-1, tmp, final, DF_PUBLISH_REPLACE, err);
  if (!ok)
    remove_sqlite_files (tmp);
  return ok;
}
