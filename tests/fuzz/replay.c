/* A libFuzzer-free driver for the fuzz harnesses: runs
 * LLVMFuzzerTestOneInput once on every file of the directories (or files)
 * given, the way `harness -runs=0 DIR` replays a corpus.  Built with any
 * compiler into every build (tests/fuzz/meson.build), so a harness that no
 * longer compiles against the code it drives fails the ordinary build, and
 * its corpus runs under -Werror, ASan+UBSan and the unit tests' checks
 * long before the clang fuzz build at the end of tests/run-all.
 *
 * Exit status: 0 when every input ran (a harness reports a bug by
 * crashing or aborting, as under libFuzzer); 1 on an unreadable input. */
#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

int LLVMFuzzerInitialize (int *argc, char ***argv) __attribute__ ((weak));
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

/* Run the harness on one file; false (message on stderr) when unreadable. */
static bool
replay_file (const char *path)
{
  g_autofree char *data = NULL;
  gsize len = 0;
  g_autoptr (GError) err = NULL;
  if (!g_file_get_contents (path, &data, &len, &err))
    {
      fprintf (stderr, "replay: %s\n", err->message);
      return false;
    }
  LLVMFuzzerTestOneInput ((const uint8_t *) data, len);
  return true;
}

static gint
path_cmp (gconstpointer a, gconstpointer b)
{
  return g_strcmp0 (*(const char *const *) a, *(const char *const *) b);
}

/* Every regular file of dir, in name order (a stable run). */
static bool
replay_dir (const char *dir, guint *n)
{
  g_autoptr (GError) err = NULL;
  g_autoptr (GDir) d = g_dir_open (dir, 0, &err);
  if (!d)
    {
      fprintf (stderr, "replay: %s\n", err->message);
      return false;
    }
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  for (const char *name; (name = g_dir_read_name (d)) != NULL;)
    g_ptr_array_add (names, g_build_filename (dir, name, NULL));
  g_ptr_array_sort (names, path_cmp);
  bool ok = true;
  for (guint i = 0; i < names->len; i++)
    {
      const char *path = names->pdata[i];
      if (g_file_test (path, G_FILE_TEST_IS_REGULAR))
        {
          ok = replay_file (path) && ok;
          (*n)++;
        }
    }
  return ok;
}

int
main (int argc, char **argv)
{
  if (argc < 2)
    {
      fprintf (stderr, "usage: %s DIR|FILE...\n", argv[0]);
      return 2;
    }
  if (LLVMFuzzerInitialize)
    LLVMFuzzerInitialize (&argc, &argv);
  guint n = 0;
  bool ok = true;
  for (int i = 1; i < argc; i++)
    if (g_file_test (argv[i], G_FILE_TEST_IS_DIR))
      ok = replay_dir (argv[i], &n) && ok;
    else
      {
        ok = replay_file (argv[i]) && ok;
        n++;
      }
  printf ("replayed %u inputs\n", n);
  return ok ? 0 : 1;
}
