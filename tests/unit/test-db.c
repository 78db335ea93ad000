/* diskfarm tests: the farm DB backend a unit test runs against (see
 * test-db.h). */
#include "test-db.h"
#include "test-util.h"

#include <glib/gstdio.h>
#include <libpq-fe.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *pg_dir;      /* the server's directory, when this process owns it */
static pid_t pg_owner;

static char *
pg_script (void)
{
  const char *src = g_getenv ("G_TEST_SRCDIR");
  return g_build_filename (src ? src : ".", "..", "lib", "pg.sh", NULL);
}

static void
pg_stop (void)
{
  if (!pg_dir || getpid () != pg_owner)
    return;
  g_autofree char *script = pg_script ();
  const char *argv[] = { script, "stop", pg_dir, NULL };
  g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_DEFAULT, NULL, NULL,
                NULL, NULL, NULL, NULL);
  g_autofree char *cmd = g_strdup_printf ("rm -rf '%s'", pg_dir);
  if (system (cmd) != 0)
    g_printerr ("test-db: could not remove %s\n", pg_dir);
  g_clear_pointer (&pg_dir, g_free);
}

static void
pg_start (void)
{
  g_autoptr (GError) err = NULL;
  g_autofree char *dir = g_dir_make_tmp ("df-pg-XXXXXX", &err);
  g_assert_no_error (err);
  g_chmod (dir, 0711);
  g_autofree char *script = pg_script ();
  g_autofree char *srv = g_build_filename (dir, "srv", NULL);
  const char *argv[] = { script, "start", srv, NULL };
  g_autofree char *out = NULL;
  int status = 0;
  g_assert_true (g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_DEFAULT,
                               NULL, NULL, &out, NULL, &status, &err));
  if (g_spawn_check_wait_status (status, NULL) == false)
    {
      if (WIFEXITED (status) && WEXITSTATUS (status) == 77)
        {
          g_print ("1..0 # SKIP PostgreSQL is not installed\n");
          exit (77);
        }
      g_error ("test-db: tests/lib/pg.sh start failed (status %d)", status);
    }
  pg_dir = g_steal_pointer (&dir);
  pg_owner = getpid ();
  atexit (pg_stop);
  g_setenv ("DISKFARM_TEST_PG", g_strstrip (out), true);
}

void
test_db_init (void)
{
  if (test_db_is_pg () && !g_getenv ("DISKFARM_TEST_PG"))
    pg_start ();
}

bool
test_db_is_pg (void)
{
  return g_strcmp0 (g_getenv ("DISKFARM_TEST_DB"), "pg") == 0;
}

/* CREATE DATABASE name unless it exists (then nothing). */
static void
create_database (const char *base, const char *name)
{
  PGconn *c = PQconnectdb (base);
  g_assert_cmpint (PQstatus (c), ==, CONNECTION_OK);
  g_autofree char *sql = g_strdup_printf ("CREATE DATABASE %s", name);
  PGresult *r = PQexec (c, sql);
  const char *state = PQresultErrorField (r, PG_DIAG_SQLSTATE);
  if (PQresultStatus (r) != PGRES_COMMAND_OK
      && g_strcmp0 (state, "42P04") != 0)
    g_error ("test-db: %s: %s", sql, PQresultErrorMessage (r));
  PQclear (r);
  PQfinish (c);
}

char *
test_db_target (const char *dir, bool create)
{
  g_autofree char *stripped = g_strstrip (g_strdup (dir ? dir : ""));
  if (!test_db_is_pg () || !*stripped)
    return NULL;     /* (an empty dir is df_farm_open's error to report) */
  const char *base = g_getenv ("DISKFARM_TEST_PG");
  g_assert_nonnull (base);
  g_autofree char *abs = g_canonicalize_filename (dir, NULL);
  g_autofree char *sum = g_compute_checksum_for_string (G_CHECKSUM_SHA1,
                                                        abs, -1);
  g_autofree char *name = g_strdup_printf ("t_%.24s", sum);
  if (create)
    create_database (base, name);
  /* a later dbname overrides the one in base */
  return g_strdup_printf ("%s dbname=%s", base, name);
}

const char *
test_db_for (const char *dir)
{
  static GHashTable *kept;   /* dir -> target, for the whole run */
  if (!test_db_is_pg ())
    return NULL;
  if (!kept)
    kept = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  char *t = g_hash_table_lookup (kept, dir);
  if (!t)
    {
      t = test_db_target (dir, false);
      g_hash_table_insert (kept, g_strdup (dir), t);
    }
  return t;
}

DfFarm *
test_farm_open (const char *dir, bool create, const char *who, GError **err)
{
  g_autofree char *db = test_db_target (dir, create);
  return df_farm_open_db (dir, db, create, who, err);
}

void
test_farm_setup (TestFarm *fx, gconstpointer data)
{
  g_autoptr (GError) err = NULL;

  fx->tmp = g_dir_make_tmp ("df-farm-XXXXXX", &err);
  g_assert_no_error (err);
  fx->dir = g_build_filename (fx->tmp, "farm", NULL);
  fx->farm = test_farm_open (fx->dir, true, "test:unit", &err);
  g_assert_no_error (err);
  g_assert_true (df_farm_vdisk_add (fx->farm, "base", 1 << 20,
                                    "base.0.qcow2", TEST_FARM_SHA, 4096,
                                    &err));
  g_assert_no_error (err);
}

void
test_farm_teardown (TestFarm *fx, gconstpointer data)
{
  df_farm_close (fx->farm);
  tu_rmrf (fx->tmp);
  g_free (fx->dir);
  g_free (fx->tmp);
}

int
test_farm_main (int argc, char **argv, TestFarmFn setup,
                const TestFarmCase *cases, gsize n)
{
  test_db_init ();
  g_test_init (&argc, &argv, NULL);
  for (gsize i = 0; i < n; i++)
    g_test_add (cases[i].path, TestFarm, NULL,
                setup != NULL ? setup : test_farm_setup, cases[i].fn,
                test_farm_teardown);
  return g_test_run ();
}

/* ---- raw access to a PostgreSQL farm DB (dumps and tampering) ---------- */

static PGconn *
raw_connect (const char *dir)
{
  g_autofree char *target = test_db_target (dir, false);
  PGconn *c = PQconnectdb (target);
  g_assert_cmpint (PQstatus (c), ==, CONNECTION_OK);
  PQclear (PQexec (c, "SET client_min_messages = warning"));
  return c;
}

void
test_db_pg_exec (const char *dir, const char *sql)
{
  PGconn *c = raw_connect (dir);
  PGresult *r = PQexec (c, sql);
  if (PQresultStatus (r) != PGRES_COMMAND_OK
      && PQresultStatus (r) != PGRES_TUPLES_OK)
    g_error ("%s: %s", sql, PQresultErrorMessage (r));
  PQclear (r);
  PQfinish (c);
}

char *
test_db_pg_text (const char *dir, const char *query)
{
  /* SQLite's aggregate has PostgreSQL's name here */
  g_autoptr (GString) sql = g_string_new (query);
  g_string_replace (sql, "group_concat (", "string_agg (", 0);
  PGconn *c = raw_connect (dir);
  PGresult *r = PQexec (c, sql->str);
  if (PQresultStatus (r) != PGRES_TUPLES_OK)
    g_error ("%s: %s", sql->str, PQresultErrorMessage (r));
  char *out = PQntuples (r) > 0 && !PQgetisnull (r, 0, 0)
              ? g_strdup (PQgetvalue (r, 0, 0)) : NULL;
  PQclear (r);
  PQfinish (c);
  return out;
}

char *
test_db_pg_dump (const char *dir)
{
  PGconn *c = raw_connect (dir);
  GString *gs = g_string_new (NULL);
  PGresult *t = PQexec (c, "SELECT tablename FROM pg_tables WHERE "
                        "schemaname = current_schema () ORDER BY tablename");
  g_assert_cmpint (PQresultStatus (t), ==, PGRES_TUPLES_OK);
  for (int i = 0; i < PQntuples (t); i++)
    {
      const char *name = PQgetvalue (t, i, 0);
      g_string_append_printf (gs, "== %s\n", name);
      g_autofree char *q = g_strdup_printf ("SELECT * FROM \"%s\" ORDER BY 1",
                                            name);
      PGresult *r = PQexec (c, q);
      g_assert_cmpint (PQresultStatus (r), ==, PGRES_TUPLES_OK);
      for (int row = 0; row < PQntuples (r); row++)
        {
          for (int col = 0; col < PQnfields (r); col++)
            g_string_append_printf (gs, "%s|", PQgetisnull (r, row, col)
                                    ? "∅" : PQgetvalue (r, row, col));
          g_string_append_c (gs, '\n');
        }
      PQclear (r);
    }
  PQclear (t);
  PQfinish (c);
  return g_string_free (gs, false);
}
