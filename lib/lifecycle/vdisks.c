/* diskfarm: import and removal of a vDisk (lifecycle.h). */
#include "lifecycle.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "privilege.h"
#include "store.h"

/* The source of an import must be a readable regular file or block device. */
static bool
check_source (const char *path, GError **err)
{
  GStatBuf st;
  if (g_stat (path, &st) != 0)
    {
      df_set_error_errno (err, errno, "cannot read '%s'", path);
      return false;
    }
  if (!S_ISREG (st.st_mode) && !S_ISBLK (st.st_mode))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "'%s' is not a regular file or block device", path);
      return false;
    }
  if (g_access (path, R_OK) != 0)
    {
      df_set_error_errno (err, errno, "cannot read '%s'", path);
      return false;
    }
  return true;
}

/* Remove a private temporary directory and the files in it (flat). */
static void
remove_tmpdir (const char *dir)
{
  g_autoptr(GDir) d = g_dir_open (dir, 0, NULL);
  if (d != NULL)
    for (const char *f; (f = g_dir_read_name (d)) != NULL;)
      {
        g_autofree char *p = g_build_filename (dir, f, NULL);
        g_unlink (p);
      }
  g_rmdir (dir);
}

/* ---- import ----------------------------------------------------------- */

typedef struct {
  char *store_dir;     /* store/<name> */
  char *final_path;    /* store/<name>/<name>.0.qcow2 */
  char *tmp_dir;       /* store/<name>/.import-<pid>-XXXXXX, or NULL */
  bool created_store;  /* store/<name> made by this import */
  bool placed;         /* final_path is ours */
  uint64_t virtual_size;
  uint64_t file_size;
  char sha256[65];
} ImportJob;

/* Undo what a failed import made, and free the job's strings. */
static void
import_job_clear (ImportJob *j, bool failed)
{
  if (failed && j->placed)
    g_unlink (j->final_path);
  if (j->tmp_dir != NULL)
    {
      df_temp_unregister (j->tmp_dir);
      remove_tmpdir (j->tmp_dir);
    }
  if (j->created_store)
    df_temp_unregister (j->store_dir);
  if (failed && j->created_store)
    g_rmdir (j->store_dir);
  g_free (j->store_dir);
  g_free (j->final_path);
  g_free (j->tmp_dir);
}

/* Remove ".import-<pid>-*" directories left in dir by an import that was
 * killed (its pid no longer runs). */
static void
remove_stale_imports (const char *dir)
{
  g_autoptr(GDir) d = g_dir_open (dir, 0, NULL);
  if (d == NULL)
    return;
  for (const char *f; (f = g_dir_read_name (d)) != NULL;)
    {
      char *end = NULL;
      if (!g_str_has_prefix (f, ".import-"))
        continue;
      guint64 pid = g_ascii_strtoull (f + strlen (".import-"), &end, 10);
      if (end == NULL || *end != '-' || pid == 0 || pid > G_MAXINT
          || (kill ((pid_t) pid, 0) != 0 && errno == ESRCH))
        {
          g_autofree char *p = g_build_filename (dir, f, NULL);
          g_debug ("removing stale import directory %s", p);
          remove_tmpdir (p);
        }
    }
}

/* Sweep the killed imports of every vdisk: each store/<vdisk>/ is looked
 * at (cheap: one directory listing each); only .import-<dead pid>-* go. */
static void
remove_stale_imports_everywhere (const char *store_dir)
{
  g_autofree char *root = g_path_get_dirname (store_dir);
  g_autoptr(GDir) d = g_dir_open (root, 0, NULL);
  if (d == NULL)
    return;
  for (const char *f; (f = g_dir_read_name (d)) != NULL;)
    {
      g_autofree char *sub = g_build_filename (root, f, NULL);
      if (g_file_test (sub, G_FILE_TEST_IS_DIR))
        remove_stale_imports (sub);
    }
}

/* Make store/<name>/ and a private temporary directory inside it. */
static bool
import_prepare (ImportJob *j, GError **err)
{
  if (g_mkdir (j->store_dir, 0755) == 0)
    {
      j->created_store = true;
      df_temp_register (j->store_dir);
      if (!df_adopt_owner (-1, j->store_dir, err))
        return false;
    }
  else if (errno != EEXIST)
    {
      df_set_error_errno (err, errno, "cannot create %s", j->store_dir);
      return false;
    }
  GStatBuf st;
  if (g_lstat (j->final_path, &st) == 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_EXISTS,
                   "%s already exists (not in the farm DB); move it away "
                   "first", j->final_path);
      return false;
    }
  remove_stale_imports_everywhere (j->store_dir);
  g_autofree char *base = g_strdup_printf (".import-%d-XXXXXX", (int) getpid ());
  g_autofree char *tmpl = g_build_filename (j->store_dir, base, NULL);
  if (g_mkdtemp (tmpl) == NULL)
    {
      df_set_error_errno (err, errno, "cannot create a directory in %s",
                          j->store_dir);
      return false;
    }
  j->tmp_dir = g_steal_pointer (&tmpl);
  df_temp_register (j->tmp_dir);
  if (!df_adopt_owner (-1, j->tmp_dir, err))   /* and so what it holds */
    return false;
  return true;
}

/* Convert src into the temp dir, hash it, then publish it into place
 * (never replacing a file). */
static bool
import_write (ImportJob *j, const char *src, const char *format,
              const DfLifecycleProgress *progress, GError **err)
{
  g_autofree char *base = g_path_get_basename (j->final_path);
  g_autofree char *tmp = g_build_filename (j->tmp_dir, base, NULL);
  if (progress && progress->begin)
    progress->begin (progress->opaque, "importing");
  bool ok = df_vdisk_import (src, format, tmp,
                             progress ? progress->update : NULL,
                             progress ? progress->opaque : NULL,
                             &j->virtual_size, err);
  if (progress && progress->end)
    progress->end (progress->opaque);
  df_temp_register (tmp);
  ok = ok && df_file_sha256 (tmp, j->sha256, err)
       && df_interrupt_check (err);
  df_temp_unregister (tmp);
  if (!ok)
    return false;
  GStatBuf st;
  if (g_stat (tmp, &st) != 0)
    {
      df_set_error_errno (err, errno, "stat %s", tmp);
      return false;
    }
  j->file_size = (uint64_t) st.st_size;
  if (!df_store_publish (-1, tmp, j->final_path, DF_PUBLISH_NOREPLACE, err))
    return false;
  j->placed = true;
  return true;
}

/* One DB call: the vdisk row, its version 0 and the audit entry. */
/* One transaction: the vdisk, its base version and its description. */
static bool
register_vdisk (DfFarm *farm, const char *name, const ImportJob *j,
                const char *base, const char *description, GError **err)
{
  if (!df_farm_begin (farm, err))
    return false;
  if (!df_farm_vdisk_add (farm, name, j->virtual_size, base, j->sha256,
                          j->file_size, err)
      || (description != NULL
          && !df_farm_vdisk_set_description (farm, name, description, err)))
    {
      df_farm_rollback (farm);
      return false;
    }
  return df_farm_commit (farm, err);
}

/* The store directory and version files of vdisk name, as the farm
 * records them (taken before the rows go): new array of paths, the
 * directory last. */
static GPtrArray *
store_paths (DfFarm *farm, const char *name, GPtrArray *versions)
{
  GPtrArray *paths = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; i < versions->len; i++)
    g_ptr_array_add (paths, df_farm_version_path (
                              farm, name,
                              ((DfVersion *) versions->pdata[i])->number));
  g_ptr_array_add (paths, df_farm_store_dir (farm, name));
  return paths;
}

/* Delete the store files of removed versions, then the store directory if
 * it is empty.  The first failure is reported; the DB rows are gone. */
static bool
remove_store_files (const char *name, GPtrArray *paths, GError **err)
{
  bool ok = true;
  for (guint i = 0; i + 1 < paths->len; i++)
    {
      const char *p = paths->pdata[i];
      if (g_unlink (p) != 0 && errno != ENOENT && ok)
        {
          df_set_error_errno (err, errno, "vdisk '%s' removed from the farm "
                              "but %s could not be deleted", name, p);
          ok = false;
        }
    }
  const char *dir = paths->pdata[paths->len - 1];
  g_autofree char *lock = g_build_filename (dir, DF_STORE_LOCK_FILE, NULL);
  g_unlink (lock);
  g_rmdir (dir);
  return ok;
}


/* ---- the verbs ---------------------------------------------------------- */

/* name must be new to the farm. */
static bool
check_new_vdisk (DfFarm *farm, const char *name, GError **err)
{
  g_autoptr (GError) lookup_err = NULL;
  g_autoptr (DfVdisk) existing = df_farm_vdisk_get (farm, name, &lookup_err);
  if (existing != NULL)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_EXISTS,
                   "vdisk '%s' already exists", name);
      return false;
    }
  if (!g_error_matches (lookup_err, DF_ERROR, DF_ERROR_NOT_FOUND))
    {
      g_propagate_error (err, g_steal_pointer (&lookup_err));
      return false;
    }
  return true;
}

bool
df_lifecycle_import (DfFarm *farm, const char *name, const char *src,
                     const char *format, const char *description,
                     const DfLifecycleProgress *progress,
                     DfImportResult *out, GError **err)
{
  if (!df_validate_name ("vdisk", name, err) || !check_source (src, err)
      || !check_new_vdisk (farm, name, err))
    return false;
  ImportJob j = { 0 };
  j.store_dir = df_farm_store_dir (farm, name);
  j.final_path = df_farm_version_path (farm, name, 0);
  g_autofree char *base = g_path_get_basename (j.final_path);
  df_interrupt_begin ();   /* Ctrl-C: nothing is left in the store */
  bool ok = import_prepare (&j, err)
    && import_write (&j, src, format ? format : "auto", progress, err)
    && register_vdisk (farm, name, &j, base, description, err);
  df_interrupt_end ();
  if (ok)
    {
      out->file = g_steal_pointer (&base);
      out->virtual_size = j.virtual_size;
      out->file_size = j.file_size;
      memcpy (out->sha256, j.sha256, sizeof out->sha256);
    }
  import_job_clear (&j, !ok);
  return ok;
}

void
df_import_result_clear (DfImportResult *r)
{
  g_clear_pointer (&r->file, g_free);
}

bool
df_lifecycle_remove (DfFarm *farm, const char *name, guint *n_versions,
                     GError **err)
{
  g_autoptr (DfVdisk) v = df_farm_vdisk_get (farm, name, err);
  if (v == NULL)
    return false;
  g_autoptr (GPtrArray) versions = df_farm_version_list (farm, v->name, err);
  if (versions == NULL)
    return false;
  g_autoptr (GPtrArray) paths = store_paths (farm, v->name, versions);
  if (!df_farm_vdisk_remove (farm, v->name, err)
      || !remove_store_files (v->name, paths, err))
    return false;
  *n_versions = versions->len;
  return true;
}
