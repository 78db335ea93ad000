/* Shared start-up of the streamsvc fuzz harnesses: see fuzz-farm.h. */
#include "fuzz-farm.h"

#include <glib/gstdio.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"
#include "vdisk.h"

static const char *harness_name = "fuzz";   /* static string, for fuzz_die */

void
fuzz_die (const char *what, GError *err)
{
  fprintf (stderr, "%s init: %s: %s\n", harness_name, what,
           err ? err->message : "failed");
  exit (1);
}

static GLogWriterOutput
quiet_writer (GLogLevelFlags level, const GLogField *fields, gsize n,
              gpointer data)
{
  (void) level; (void) fields; (void) n; (void) data;
  return G_LOG_WRITER_HANDLED;
}

/* Import image as vdisk "fz" version 0 of farm (in dir). */
static void
add_vdisk (DfFarm *farm, const char *dir, const uint8_t *image)
{
  g_autoptr (GError) err = NULL;
  g_autofree char *raw = g_build_filename (dir, "src.raw", NULL);
  g_autofree char *store = NULL, *dest = NULL, *base = NULL;
  char sha[65];
  uint64_t vsize = 0;
  GStatBuf st;

  if (!g_file_set_contents (raw, (const char *) image, FUZZ_IMAGE_SIZE, &err))
    fuzz_die ("raw", err);
  store = df_farm_store_dir (farm, "fz");
  dest = df_farm_version_path (farm, "fz", 0);
  base = g_path_get_basename (dest);
  g_mkdir_with_parents (store, 0755);
  if (!df_vdisk_import (raw, "raw", dest, NULL, NULL, &vsize, &err)
      || !df_file_sha256 (dest, sha, &err))
    fuzz_die ("import", err);
  g_stat (dest, &st);
  if (!df_farm_vdisk_add (farm, "fz", vsize, base, sha, st.st_size, &err))
    fuzz_die ("vdisk add", err);
}

DfFarm *
fuzz_farm_start (const char *harness, const uint8_t *image, char **dir)
{
  g_autoptr (GError) err = NULL;
  g_autofree char *tmpl = g_strdup_printf ("%s-XXXXXX", harness);
  DfFarm *farm;

  harness_name = harness;
  *dir = g_dir_make_tmp (tmpl, &err);
  if (*dir == NULL)
    fuzz_die ("tmpdir", err);
  g_log_set_writer_func (quiet_writer, NULL, NULL);
  farm = df_farm_open (*dir, true, "fuzz", &err);
  if (farm == NULL)
    fuzz_die ("farm", err);
  add_vdisk (farm, *dir, image);
  return farm;
}

void
fuzz_farm_add_device (DfFarm *farm, const char *name, const char *mac)
{
  g_autoptr (GError) err = NULL;
  DfDevice d = { .name = (char *) name, .mac = (char *) mac,
                 .type = (char *) "production", .vdisk = (char *) "fz",
                 .cache_mode = (char *) "server" };

  if (!df_farm_device_add (farm, &d, &err))
    fuzz_die ("device add", err);
}

void
fuzz_farm_finish (const char *dir, DfExports **exports,
                  DfSessions **sessions)
{
  g_autoptr (GError) err = NULL;

  *exports = df_exports_new (dir, NULL, &err);
  if (*exports == NULL)
    fuzz_die ("exports", err);
  *sessions = df_sessions_new ();
}
