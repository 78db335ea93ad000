/* diskfarm: helpers shared by the unit tests of every layer: temporary
 * directories and shell commands.  Header-only: static inline, so each
 * test program takes what it uses. */
#pragma once

#include <glib.h>
#include <glib/gstdio.h>
#include <stdarg.h>
#include <stdbool.h>

/* New temporary directory (free with g_free, remove with tu_rmrf). */
static inline char *
tu_tmpdir (void)
{
  g_autoptr (GError) err = NULL;
  char *d = g_dir_make_tmp ("df-test-XXXXXX", &err);
  g_assert_no_error (err);
  return d;
}

/* Remove path: a file, or a directory and everything below it. */
static inline void
tu_rmrf (const char *path)
{
  GDir *d = g_dir_open (path, 0, NULL);
  if (d)
    {
      const char *n;
      while ((n = g_dir_read_name (d)))
        {
          g_autofree char *p = g_build_filename (path, n, NULL);
          tu_rmrf (p);
        }
      g_dir_close (d);
      g_rmdir (path);
    }
  else
    g_unlink (path);
}

static inline bool
tu_have (const char *prog)
{
  g_autofree char *p = g_find_program_in_path (prog);
  return p != NULL;
}

/* Run a shell command; the test fails when it does not exit 0.  Returns
 * its stdout (newly allocated). */
static inline char * G_GNUC_PRINTF (1, 2)
tu_sh_out (const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  g_autofree char *cmd = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  const char *argv[] = { "/bin/sh", "-c", cmd, NULL };
  g_autoptr (GError) err = NULL;
  char *out = NULL;
  g_autofree char *errout = NULL;
  gint status = 0;

  g_assert_true (g_spawn_sync (NULL, (char **) argv, NULL, 0, NULL, NULL,
                               &out, &errout, &status, &err));
  if (!g_spawn_check_wait_status (status, NULL))
    g_error ("command failed: %s\n%s%s", cmd, out, errout);
  return out;
}

#define tu_sh(...) g_free (tu_sh_out (__VA_ARGS__))

/* One test of a program: its GTest path and its function. */
typedef struct
{
  const char *path;
  GTestFunc fn;
} TuTest;

/* Add the tests[0..n) to GTest, in order. */
static inline void
tu_add_tests (const TuTest *tests, gsize n)
{
  for (gsize i = 0; i < n; i++)
    g_test_add_func (tests[i].path, tests[i].fn);
}

/* The main of a test program whose tests are the rows of a table: setup
 * (when not NULL) runs first and may skip the program with exit 77; then
 * GTest parses argv, every row is added and the tests run. */
static inline int
tu_main (int argc, char **argv, void (*setup) (void), const TuTest *tests,
         gsize n)
{
  if (setup)
    setup ();
  g_test_init (&argc, &argv, NULL);
  tu_add_tests (tests, n);
  return g_test_run ();
}

/* Define main () for the table tests[] (an array, not a pointer). */
#define TU_MAIN(tests) TU_MAIN_SETUP (NULL, tests)
#define TU_MAIN_SETUP(setup, tests)                                          \
  int main (int argc, char **argv)                                           \
  {                                                                          \
    return tu_main (argc, argv, setup, tests, G_N_ELEMENTS (tests));         \
  }
