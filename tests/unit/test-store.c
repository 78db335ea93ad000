/* diskfarm: unit tests of lib/vdisk/store.c (DfStore): publish leaves no
 * temp file behind on failure, sweep removes the leftovers of interrupted
 * commands and nothing else, the lock excludes a second changer, the
 * maintenance claim takes the cache's own lock, the crash hook kills. */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "store.h"
#include "test-vdisk-util.h"

static void
put (const char *dir, const char *name, const char *text)
{
  g_autofree char *p = g_build_filename (dir, name, NULL);
  g_autoptr (GError) err = NULL;
  g_assert_true (g_file_set_contents (p, text, -1, &err));
}

static bool
exists (const char *dir, const char *name)
{
  g_autofree char *p = g_build_filename (dir, name, NULL);
  return g_file_test (p, G_FILE_TEST_EXISTS);
}

/* The file dir/name holds want. */
static void
assert_contents (const char *dir, const char *name, const char *want)
{
  g_autofree char *p = g_build_filename (dir, name, NULL);
  g_autofree char *text = NULL;
  g_assert_true (g_file_get_contents (p, &text, NULL, NULL));
  g_assert_cmpstr (text, ==, want);
}

/* A new directory (tu_rmrf) holding .f.tmp ("new") and f ("old"); *tmp
 * and *final are their paths (g_free). */
static char *
publish_dir (char **tmp, char **final)
{
  char *d = tu_tmpdir ();
  *tmp = g_build_filename (d, ".f.tmp", NULL);
  *final = g_build_filename (d, "f", NULL);
  put (d, ".f.tmp", "new");
  put (d, "f", "old");
  return d;
}

/* ---- paths ----------------------------------------------------------------- */

static void
test_paths (void)
{
  g_autoptr (DfStore) s = df_store_new ("/farm/store/win10", "win10");
  g_autofree char *name = df_store_layer_name ("win10", 3);
  g_autofree char *layer = df_store_layer_path (s, 3);
  g_autofree char *tmp = df_store_tmp_path (s, 3);
  g_autofree char *maint = df_store_maint_path (df_store_dir (s), "win10", 4);
  g_assert_cmpstr (name, ==, "win10.3.qcow2");
  g_assert_cmpstr (layer, ==, "/farm/store/win10/win10.3.qcow2");
  g_assert_cmpstr (tmp, ==, "/farm/store/win10/.win10.3.qcow2.tmp");
  g_assert_cmpstr (maint, ==, "/farm/store/win10/win10.4.maint");
}

/* ---- publish --------------------------------------------------------------- */

static void
test_publish_ok (void)
{
  g_autofree char *tmp = NULL, *final = NULL;
  g_autofree char *d = publish_dir (&tmp, &final);
  g_autoptr (GError) err = NULL;
  g_assert_true (df_store_publish (-1, tmp, final, DF_PUBLISH_REPLACE, &err));
  g_assert_no_error (err);
  g_assert_false (exists (d, ".f.tmp"));
  assert_contents (d, "f", "new");

  /* through the writer's descriptor, which stays open */
  put (d, ".g.tmp", "data");
  g_autofree char *gtmp = g_build_filename (d, ".g.tmp", NULL);
  g_autofree char *gfinal = g_build_filename (d, "g", NULL);
  int fd = open (gtmp, O_RDWR | O_CLOEXEC);
  g_assert_cmpint (fd, >=, 0);
  g_assert_true (df_store_publish (fd, gtmp, gfinal, DF_PUBLISH_NOREPLACE,
                                   &err));
  g_assert_no_error (err);
  g_assert_cmpint (fcntl (fd, F_GETFD), >=, 0);
  close (fd);
  assert_contents (d, "g", "data");
  g_assert_false (exists (d, ".g.tmp"));
  tu_rmrf (d);
}

/* Every failure removes the temp file and leaves the final one as it was. */
static void
test_publish_fail_removes_temp (void)
{
  g_autofree char *tmp = NULL, *final = NULL;
  g_autofree char *d = publish_dir (&tmp, &final);
  g_autoptr (GError) err = NULL;

  /* the final name exists and must not be replaced */
  g_assert_false (df_store_publish (-1, tmp, final, DF_PUBLISH_NOREPLACE,
                                    &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_EXISTS);
  g_assert_false (exists (d, ".f.tmp"));
  assert_contents (d, "f", "old");
  g_clear_error (&err);

  /* the rename fails (no such directory) */
  put (d, ".f.tmp", "new");
  g_autofree char *nowhere = g_build_filename (d, "missing", "f", NULL);
  g_assert_false (df_store_publish (-1, tmp, nowhere, DF_PUBLISH_REPLACE,
                                    &err));
  g_assert_true (err != NULL && err->domain == DF_ERROR);
  g_assert_nonnull (strstr (err->message, "rename"));
  g_assert_false (exists (d, ".f.tmp"));
  g_clear_error (&err);

  /* the fsync fails (a bad descriptor) */
  put (d, ".f.tmp", "new");
  g_assert_false (df_store_publish (1000, tmp, final, DF_PUBLISH_REPLACE,
                                    &err));
  g_assert_true (err != NULL && err->domain == DF_ERROR);
  g_assert_nonnull (strstr (err->message, "sync"));
  g_assert_false (exists (d, ".f.tmp"));
  assert_contents (d, "f", "old");
  g_clear_error (&err);

  /* no temp file at all */
  g_assert_false (df_store_publish (-1, tmp, final, DF_PUBLISH_REPLACE,
                                    &err));
  g_assert_true (err != NULL && err->domain == DF_ERROR);
  tu_rmrf (d);
}

static void
test_publish_layer (void)
{
  g_autofree char *d = tu_tmpdir ();
  g_autoptr (DfStore) s = df_store_new (d, "vd");
  g_autofree char *tmp = df_store_tmp_path (s, 1);
  g_autofree char *final = df_store_layer_path (s, 1);
  g_autoptr (GError) err = NULL;
  char sha[65];
  uint64_t size = 0;
  put (d, ".vd.1.qcow2.tmp", "abc");
  g_assert_true (df_store_publish_layer ("seal", tmp, final, false, sha,
                                         &size, &err));
  g_assert_no_error (err);
  g_assert_cmpuint (size, ==, 3);
  g_assert_cmpstr (sha, ==, "ba7816bf8f01cfea414140de5dae2223"
                            "b00361a396177a9cb410ff61f20015ad");
  g_assert_false (exists (d, ".vd.1.qcow2.tmp"));
  tu_rmrf (d);
}

/* ---- sweep ----------------------------------------------------------------- */

static void
test_sweep (void)
{
  g_autofree char *d = tu_tmpdir ();
  g_autoptr (DfStore) s = df_store_new (d, "vd");
  g_autoptr (GError) err = NULL;
  static const char *const stale[] = {
    ".vd.3.qcow2.tmp",   /* a write that was killed */
    ".vd.9.qcow2.tmp",
    "vd.2.qcow2",        /* published, never recorded */
  };
  static const char *const kept[] = {
    "vd.0.qcow2", "vd.1.qcow2",     /* their rows exist */
    DF_STORE_LOCK_FILE, "notes.txt", "other.7.qcow2", "vd.x.qcow2",
    "vd.1.qcow2.bak", "vd..qcow2", ".vd.3.qcow2.tmp.1.ABCDEF",
  };
  for (guint i = 0; i < G_N_ELEMENTS (stale); i++)
    put (d, stale[i], "x");
  for (guint i = 0; i < G_N_ELEMENTS (kept); i++)
    put (d, kept[i], "x");
  /* maintenance caches: 4 is the maintenance version, 5 was sealed */
  for (int n = 4; n <= 5; n++)
    {
      g_autofree char *m = df_store_maint_path (d, "vd", n);
      g_assert_cmpint (g_mkdir (m, 0755), ==, 0);
      put (m, "persistent.map", "x");
      put (m, "persistent.data", "x");
    }
  static const int rows[] = { 0, 1, 4 };
  g_assert_true (df_store_sweep (s, rows, G_N_ELEMENTS (rows), 4, &err));
  g_assert_no_error (err);
  for (guint i = 0; i < G_N_ELEMENTS (stale); i++)
    g_assert_false (exists (d, stale[i]));
  for (guint i = 0; i < G_N_ELEMENTS (kept); i++)
    g_assert_true (exists (d, kept[i]));
  g_assert_true (exists (d, "vd.4.maint/persistent.map"));
  g_assert_false (exists (d, "vd.5.maint"));

  /* nothing left to remove: a second sweep changes nothing */
  g_assert_true (df_store_sweep (s, rows, G_N_ELEMENTS (rows), 4, &err));
  g_assert_true (exists (d, "vd.4.maint/persistent.data"));

  /* a store directory that does not exist yet is fine */
  g_autofree char *none = g_build_filename (d, "none", NULL);
  g_autoptr (DfStore) empty = df_store_new (none, "vd");
  g_assert_true (df_store_sweep (empty, NULL, 0, -1, &err));
  g_assert_no_error (err);
  tu_rmrf (d);
}

/* ---- lock ------------------------------------------------------------------ */

static void
test_lock_exclusion (void)
{
  g_autofree char *d = tu_tmpdir ();
  g_autofree char *dir = g_build_filename (d, "store", "vd", NULL);
  g_autoptr (DfStore) a = df_store_new (dir, "vd");
  g_autoptr (DfStore) b = df_store_new (dir, "vd");
  g_autoptr (GError) err = NULL;
  g_assert_true (df_store_lock (a, &err));   /* creates the directory */
  g_assert_no_error (err);
  g_assert_true (exists (dir, DF_STORE_LOCK_FILE));
  g_assert_false (df_store_lock (b, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_BUSY);
  g_assert_nonnull (strstr (err->message, "vdisk 'vd'"));
  g_clear_error (&err);

  /* another process is excluded too (util-linux flock(1): 3 when busy) */
  if (tu_have ("flock"))
    {
      g_autofree char *lock = g_build_filename (dir, DF_STORE_LOCK_FILE,
                                                NULL);
      g_autofree char *q = g_shell_quote (lock);
      g_autofree char *cmd = g_strdup_printf ("flock -n -E 3 %s true", q);
      int status = 0;
      g_assert_true (g_spawn_command_line_sync (cmd, NULL, NULL, &status,
                                                NULL));
      g_assert_true (WIFEXITED (status) && WEXITSTATUS (status) == 3);
    }

  df_store_unlock (a);
  g_assert_true (df_store_lock (b, &err));
  g_assert_no_error (err);
  g_clear_pointer (&b, df_store_free);   /* free drops the lock */
  g_assert_true (df_store_lock (a, &err));
  tu_rmrf (d);
}

/* ---- maintenance claim ----------------------------------------------------- */

static void
test_maint_claim (void)
{
  g_autofree char *d = tu_tmpdir ();
  g_autofree char *maint = df_store_maint_path (d, "vd", 2);
  g_autoptr (GError) err = NULL;
  int fd = 7;

  /* no cache yet: nothing to hold */
  g_assert_true (df_store_maint_claim (maint, "vd@2", &fd, &err));
  g_assert_cmpint (fd, ==, -1);

  tu_sh ("truncate -s 1M %s/base.raw", d);
  g_autofree char *base_path = g_build_filename (d, "base.raw", NULL);
  df_blk *base = df_chain_open (base_path, DF_FMT_RAW, &err);
  g_assert_no_error (err);
  DfCacheMode mode;
  g_assert_true (df_cache_mode_parse ("server-persistent", &mode, &err));
  g_assert_cmpint (g_mkdir (maint, 0755), ==, 0);
  df_blk *cache = df_cache_open (base, maint, &mode, 0, &err);
  g_assert_no_error (err);

  /* a session has the cache open: busy */
  g_assert_false (df_store_maint_claim (maint, "vd@2", &fd, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_BUSY);
  g_assert_cmpstr (err->message, ==, "vd@2 is in use by a session");
  g_assert_cmpint (fd, ==, -1);
  g_clear_error (&err);

  /* closed: the claim holds the cache's lock, so no session opens it */
  df_blk_unref (cache);
  g_assert_true (df_store_maint_claim (maint, "vd@2", &fd, &err));
  g_assert_cmpint (fd, >=, 0);
  g_assert_null (df_cache_open (base, maint, &mode, 0, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_BUSY);
  g_clear_error (&err);
  close (fd);
  cache = df_cache_open (base, maint, &mode, 0, &err);
  g_assert_no_error (err);
  df_blk_unref (cache);
  df_blk_unref (base);

  g_assert_true (df_store_remove_maint (maint, &err));
  g_assert_false (g_file_test (maint, G_FILE_TEST_EXISTS));
  tu_rmrf (d);
}

/* ---- crash hook ------------------------------------------------------------ */

typedef struct {
  const char *at, *step;  /* $DISKFARM_TEST_CRASH_AT (NULL: unset), step */
  bool dies;
} CrashCase;

static const CrashCase crash_cases[] = {
  { "seal-written", "seal-written", true },
  { "seal-written", "seal-renamed", false },
  { NULL, "seal-written", false },
};

/* The child of test_crash_point (g_test_trap_subprocess re-runs this
 * program for one case); a no-op in the normal run. */
static void
crash_child (gconstpointer data)
{
  const CrashCase *c = data;
  if (!g_test_subprocess ())
    return;
  if (c->at)
    g_setenv ("DISKFARM_TEST_CRASH_AT", c->at, TRUE);
  else
    g_unsetenv ("DISKFARM_TEST_CRASH_AT");
  df_store_crash_point (c->step);
}

static void
test_crash_point (void)
{
  for (guint i = 0; i < G_N_ELEMENTS (crash_cases); i++)
    {
      g_autofree char *path = g_strdup_printf ("/store/crash-point/case/%u",
                                               i);
      g_test_trap_subprocess (path, 0, G_TEST_SUBPROCESS_DEFAULT);
      if (crash_cases[i].dies)
        g_test_trap_assert_failed ();
      else
        g_test_trap_assert_passed ();
    }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/store/paths", test_paths);
  g_test_add_func ("/store/publish/ok", test_publish_ok);
  g_test_add_func ("/store/publish/fail-removes-temp",
                   test_publish_fail_removes_temp);
  g_test_add_func ("/store/publish/layer", test_publish_layer);
  g_test_add_func ("/store/sweep", test_sweep);
  g_test_add_func ("/store/lock-exclusion", test_lock_exclusion);
  g_test_add_func ("/store/maint-claim", test_maint_claim);
  g_test_add_func ("/store/crash-point", test_crash_point);
  for (guint i = 0; i < G_N_ELEMENTS (crash_cases); i++)
    {
      g_autofree char *path = g_strdup_printf ("/store/crash-point/case/%u",
                                               i);
      g_test_add_data_func (path, &crash_cases[i], crash_child);
    }
  return g_test_run ();
}
