/* diskfarm tests: the farm DB backend a unit test runs against.
 *
 * DISKFARM_TEST_DB=pg (the "-pg" variants in tests/unit/meson.build) runs
 * the test against a private PostgreSQL started by tests/lib/pg.sh (one
 * server per test program, shared with its subprocesses through
 * DISKFARM_TEST_PG, stopped at exit), one fresh database per farm
 * directory.  Unset or "sqlite": the farm directory's farm.db. */
#pragma once

#include "farm.h"

#include <glib.h>
#include <stdbool.h>

/* First thing in main(), before g_test_init's subprocess re-runs need it.
 * Exits 77 (skip) when pg is asked for but PostgreSQL is not installed. */
void test_db_init (void);
bool test_db_is_pg (void);
/* The DB of the farm at dir (new string): NULL for SQLite (farm.db), a
 * conninfo of its own database for PostgreSQL, created when create. */
char *test_db_target (const char *dir, bool create);
/* test_db_target (dir, false), kept for the run (borrowed). */
const char *test_db_for (const char *dir);
/* df_farm_open_db on dir's DB. */
DfFarm *test_farm_open (const char *dir, bool create, const char *who,
                        GError **err);

/* A farm of one test's own: <tmp>/farm on the test's backend, holding
 * vDisk "base" (1 MiB, base.0.qcow2, TEST_FARM_SHA).  setup and
 * teardown have GTest's fixture signature; teardown closes the farm and
 * removes tmp. */
#define TEST_FARM_SHA                                                        \
  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
typedef struct {
  char *tmp;    /* the temporary directory (owned) */
  char *dir;    /* tmp/farm (owned) */
  DfFarm *farm; /* owned */
} TestFarm;
void test_farm_setup (TestFarm *fx, gconstpointer data);
void test_farm_teardown (TestFarm *fx, gconstpointer data);

/* One test over a TestFarm: its GTest path and its function. */
typedef void (*TestFarmFn) (TestFarm *fx, gconstpointer data);
typedef struct {
  const char *path;
  TestFarmFn fn;
} TestFarmCase;

/* The main of a program whose tests are cases[0..n), each on a TestFarm
 * of its own made by setup (NULL: test_farm_setup; another must call
 * it first): the backend starts (test_db_init), GTest parses argv, the
 * cases run. */
int test_farm_main (int argc, char **argv, TestFarmFn setup,
                    const TestFarmCase *cases, gsize n);

/* Raw access to dir's PostgreSQL database, around lib/farm (tampering,
 * dumps of every table's rows in order, as text). */
void test_db_pg_exec (const char *dir, const char *sql);
char *test_db_pg_text (const char *dir, const char *sql);
char *test_db_pg_dump (const char *dir);
