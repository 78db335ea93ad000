/* diskfarm: unit tests of lib/lifecycle without the console: import and
 * remove, the version verbs (new, seal, promote, revert, merge, delete),
 * the sweep of an interrupted verb's leftovers at open, and the live hook
 * refusing `new` while a maintenance device is live. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "test-db.h"
#include "farm.h"
#include "lifecycle.h"
#include "store.h"
#include "test-vdisk-util.h"

typedef struct {
  char *dir;
  char *image;        /* 1 MiB raw source */
  DfFarm *farm;
} Fx;

static void
fx_setup (Fx *f, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  (void) data;
  f->dir = tu_tmpdir ();
  f->image = g_build_filename (f->dir, "src.raw", NULL);
  g_autofree char *bytes = g_malloc (1 << 20);
  memset (bytes, 0x5a, 1 << 20);
  g_assert_true (g_file_set_contents (f->image, bytes, 1 << 20, &err));
  g_autofree char *farm = g_build_filename (f->dir, "farm", NULL);
  f->farm = test_farm_open (farm, true, "test", &err);
  g_assert_no_error (err);
}

static void
fx_teardown (Fx *f, gconstpointer data)
{
  (void) data;
  df_farm_close (f->farm);
  tu_rmrf (f->dir);
  g_free (f->image);
  g_free (f->dir);
}

static void
import_vd (Fx *f, const char *name)
{
  g_autoptr (GError) err = NULL;
  g_auto (DfImportResult) r = { 0 };
  g_assert_true (df_lifecycle_import (f->farm, name, f->image, "raw", NULL,
                                      NULL, &r, &err));
  g_assert_no_error (err);
}

static char *
store_file (Fx *f, const char *vdisk, const char *name)
{
  g_autofree char *store = df_farm_store_dir (f->farm, vdisk);
  return g_build_filename (store, name, NULL);
}

/* ---- import / remove -------------------------------------------------------- */

static void
test_import_remove (Fx *f, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  g_auto (DfImportResult) r = { 0 };
  (void) data;
  g_assert_true (df_lifecycle_import (f->farm, "vd", f->image, "raw", "d",
                                      NULL, &r, &err));
  g_assert_cmpstr (r.file, ==, "vd.0.qcow2");
  g_assert_cmpuint (r.virtual_size, ==, 1 << 20);
  g_assert_cmpuint (strlen (r.sha256), ==, 64);
  g_autofree char *layer = store_file (f, "vd", "vd.0.qcow2");
  g_assert_true (g_file_test (layer, G_FILE_TEST_IS_REGULAR));
  /* bad input changes nothing */
  g_auto (DfImportResult) again = { 0 };
  g_assert_false (df_lifecycle_import (f->farm, "vd", f->image, "raw", NULL,
                                       NULL, &again, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_EXISTS);
  g_clear_error (&err);
  g_assert_false (df_lifecycle_import (f->farm, "bad name", f->image, "raw",
                                       NULL, NULL, &again, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_clear_error (&err);
  g_assert_false (df_lifecycle_import (f->farm, "vd2", "/nonexistent", "raw",
                                       NULL, NULL, &again, &err));
  g_assert_nonnull (err);
  g_clear_error (&err);
  g_autofree char *store2 = df_farm_store_dir (f->farm, "vd2");
  g_assert_false (g_file_test (store2, G_FILE_TEST_EXISTS));
  /* remove: rows, file and directory */
  guint n = 0;
  g_autofree char *store = df_farm_store_dir (f->farm, "vd");
  g_assert_true (df_lifecycle_remove (f->farm, "vd", &n, &err));
  g_assert_no_error (err);
  g_assert_cmpuint (n, ==, 1);
  g_assert_false (g_file_test (store, G_FILE_TEST_EXISTS));
  g_assert_false (df_lifecycle_remove (f->farm, "vd", &n, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
}

/* ---- the verbs ---------------------------------------------------------------- */

static DfVersions *
open_vd (Fx *f, bool mutate)
{
  g_autoptr (GError) err = NULL;
  DfVersions *vs = df_versions_open (f->farm, "vd", mutate, &err);
  g_assert_no_error (err);
  return vs;
}

static DfVersionState
state_of (DfVersions *vs, int number)
{
  DfVersion *v = df_versions_find (vs, number);
  g_assert_nonnull (v);
  return v->state;
}

/* new, then seal: version n sealed in test, its cache gone. */
static int
new_and_seal (Fx *f)
{
  g_autoptr (GError) err = NULL;
  g_autoptr (DfVersions) vs = open_vd (f, true);
  int n = -1, sealed = -1, merged = 0;
  g_assert_true (df_versions_new (vs, NULL, &n, &err));
  g_assert_no_error (err);
  g_assert_cmpint (state_of (vs, n), ==, DF_VSTATE_MAINTENANCE);
  g_assert_false (df_versions_new (vs, NULL, &sealed, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_BUSY);
  g_clear_error (&err);
  g_assert_true (df_versions_seal (vs, NULL, &sealed, &merged, &err));
  g_assert_no_error (err);
  g_assert_cmpint (sealed, ==, n);
  g_assert_cmpint (merged, ==, -1);
  g_assert_cmpint (state_of (vs, n), ==, DF_VSTATE_TEST);
  g_autofree char *maint_name = g_strdup_printf ("vd.%d.maint", n);
  g_autofree char *maint = store_file (f, "vd", maint_name);
  g_assert_false (g_file_test (maint, G_FILE_TEST_EXISTS));
  return n;
}

static void
test_verbs (Fx *f, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  (void) data;
  import_vd (f, "vd");
  int v1 = new_and_seal (f), v2 = new_and_seal (f);
  g_autoptr (DfVersions) vs = open_vd (f, true);
  /* promote both; revert sends the newest back to test */
  g_assert_true (df_versions_promote (vs, v1, DF_VSTATE_PRODUCTION, NULL,
                                      &err));
  g_assert_true (df_versions_promote (vs, v2, DF_VSTATE_PRODUCTION, NULL,
                                      &err));
  g_assert_no_error (err);
  int back = -1;
  g_assert_true (df_versions_revert (vs, &back, &err));
  g_assert_cmpint (back, ==, v1);
  g_assert_cmpint (state_of (vs, v2), ==, DF_VSTATE_TEST);
  /* merge v1..v2 into one layer backed by the base */
  int m = -1;
  g_assert_true (df_versions_merge (vs, v1, v2, NULL, NULL, &m, &err));
  g_assert_no_error (err);
  DfVersion *mv = df_versions_find (vs, m);
  g_assert_cmpint (mv->parent, ==, 0);
  g_assert_cmpint (mv->state, ==, DF_VSTATE_TEST);
  g_assert_cmpuint (strlen (mv->sha256), ==, 64);
  /* a merge must end at the newest sealed version */
  g_assert_false (df_versions_merge (vs, v1, v2, NULL, NULL, &m, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_clear_error (&err);
  /* delete: v1 carries v2, the farm refuses; the top one goes, file too */
  g_assert_false (df_versions_delete (vs, v1, NULL, &err));
  g_assert_nonnull (err);
  g_clear_error (&err);
  g_autofree char *top = store_file (f, "vd", mv->file);
  g_assert_true (df_versions_delete (vs, m, NULL, &err));
  g_assert_no_error (err);
  g_assert_null (df_versions_find (vs, m));
  g_assert_false (g_file_test (top, G_FILE_TEST_EXISTS));
  g_assert_false (df_versions_delete (vs, 99, NULL, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
}

/* ---- crash safety and the store lock ------------------------------------------ */

static void
test_sweep_and_lock (Fx *f, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  (void) data;
  import_vd (f, "vd");
  g_autofree char *tmp = store_file (f, "vd", ".vd.5.qcow2.tmp");
  g_autofree char *orphan = store_file (f, "vd", "vd.9.qcow2");
  g_autofree char *base = store_file (f, "vd", "vd.0.qcow2");
  g_assert_true (g_file_set_contents (tmp, "x", 1, NULL));
  g_assert_true (g_file_set_contents (orphan, "x", 1, NULL));
  {
    g_autoptr (DfVersions) ro = open_vd (f, false);   /* sweeps nothing */
    g_assert_true (g_file_test (tmp, G_FILE_TEST_EXISTS));
  }
  g_autoptr (DfVersions) vs = open_vd (f, true);
  g_assert_false (g_file_test (tmp, G_FILE_TEST_EXISTS));
  g_assert_false (g_file_test (orphan, G_FILE_TEST_EXISTS));
  g_assert_true (g_file_test (base, G_FILE_TEST_EXISTS));
  /* one changer per store */
  g_assert_null (df_versions_open (f->farm, "vd", true, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_BUSY);
}

/* ---- the live hook ---------------------------------------------------------------- */

static bool
refuse_live (void *opaque, const DfDevice *d, GError **err)
{
  guint *asked = opaque;
  (*asked)++;
  g_set_error (err, DF_ERROR, DF_ERROR_BUSY, "device %s is live", d->name);
  return false;
}

static void
test_live_refuses_new (Fx *f, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  (void) data;
  import_vd (f, "vd");
  DfDevice d = { .name = "m1", .mac = "52:54:00:00:00:01",
                 .type = "maintenance", .vdisk = "vd",
                 .cache_mode = "server" };
  g_assert_true (df_farm_device_add (f->farm, &d, &err));
  g_assert_no_error (err);
  guint asked = 0;
  DfLifecycleLive live = { refuse_live, NULL, &asked };
  g_autoptr (DfVersions) vs = open_vd (f, true);
  int n = -1;
  g_assert_false (df_versions_new (vs, &live, &n, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_BUSY);
  g_assert_cmpuint (asked, ==, 1);
  g_assert_cmpuint (df_versions_rows (vs)->len, ==, 1);   /* nothing added */
}

int
main (int argc, char **argv)
{
  test_db_init ();
  g_test_init (&argc, &argv, NULL);
  g_setenv ("DISKFARM_TEST_CRASH_AT", "", TRUE);
#define T(path, fn) \
  g_test_add (path, Fx, NULL, fx_setup, fn, fx_teardown)
  T ("/lifecycle/import-remove", test_import_remove);
  T ("/lifecycle/verbs", test_verbs);
  T ("/lifecycle/sweep-and-lock", test_sweep_and_lock);
  T ("/lifecycle/live-refuses-new", test_live_refuses_new);
  return g_test_run ();
}
