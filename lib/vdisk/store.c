/* diskfarm: the version store of one vDisk: lock, paths, publish, sweep,
 * maintenance caches and the crash test hook (see store.h). */
#include "config.h"
#include "store.h"

#include "cache_int.h"
#include "common.h"
#include "privilege.h"
#include "vdisk.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

struct DfStore {
  char *dir;      /* owned */
  char *vdisk;    /* owned */
  int lock_fd;    /* owned, flock()ed, or -1 */
};

DfStore *
df_store_new (const char *dir, const char *vdisk)
{
  DfStore *s = g_new0 (DfStore, 1);
  s->dir = g_strdup (dir);
  s->vdisk = g_strdup (vdisk);
  s->lock_fd = -1;
  return s;
}

void
df_store_free (DfStore *s)
{
  if (s == NULL)
    return;
  df_store_unlock (s);
  g_free (s->dir);
  g_free (s->vdisk);
  g_free (s);
}

const char *
df_store_dir (const DfStore *s)
{
  return s->dir;
}

/* ---- lock ---------------------------------------------------------------- */

bool
df_store_lock (DfStore *s, GError **err)
{
  g_assert (s->lock_fd < 0);
  g_autofree char *path = g_build_filename (s->dir, DF_STORE_LOCK_FILE, NULL);
  if (g_mkdir_with_parents (s->dir, 0755) != 0)
    {
      df_set_error_errno (err, errno, "create %s", s->dir);
      return false;
    }
  s->lock_fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (s->lock_fd < 0)
    {
      df_set_error_errno (err, errno, "open %s", path);
      return false;
    }
  if (!df_adopt_owner (-1, s->dir, err)
      || !df_adopt_owner (s->lock_fd, path, err))
    {
      df_store_unlock (s);
      return false;
    }
  if (flock (s->lock_fd, LOCK_EX | LOCK_NB) == 0)
    return true;
  df_store_unlock (s);
  g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
               "another diskfarm command is changing the versions of vdisk "
               "'%s'; try again when it has finished", s->vdisk);
  return false;
}

void
df_store_unlock (DfStore *s)
{
  if (s->lock_fd >= 0)
    close (s->lock_fd);   /* drops the flock */
  s->lock_fd = -1;
}

/* ---- paths --------------------------------------------------------------- */

char *
df_store_layer_name (const char *vdisk, int number)
{
  return g_strdup_printf ("%s.%d.qcow2", vdisk, number);
}

char *
df_store_layer_path (const DfStore *s, int number)
{
  g_autofree char *name = df_store_layer_name (s->vdisk, number);
  return g_build_filename (s->dir, name, NULL);
}

char *
df_store_part_path (const DfStore *s, const char *file)
{
  g_autofree char *name = g_strdup_printf (".%s.part", file);
  return g_build_filename (s->dir, name, NULL);
}

char *
df_store_tmp_path (const DfStore *s, int number)
{
  g_autofree char *name = g_strdup_printf (".%s.%d.qcow2.tmp", s->vdisk,
                                           number);
  return g_build_filename (s->dir, name, NULL);
}

char *
df_store_maint_path (const char *dir, const char *vdisk, int number)
{
  g_autofree char *name = g_strdup_printf ("%s.%d.maint", vdisk, number);
  return g_build_filename (dir, name, NULL);
}

/* ---- publish ------------------------------------------------------------- */

static bool
sync_file (int fd, const char *path, GError **err)
{
  int own = fd < 0 ? open (path, O_RDONLY | O_CLOEXEC) : -1;
  int use = fd < 0 ? own : fd;
  bool ok = use >= 0 && fsync (use) == 0;
  if (!ok)
    df_set_error_errno (err, errno, "sync %s", path);
  if (own >= 0)
    close (own);
  return ok;
}

/* rename(2), or without replacing: renameat2 NOREPLACE, link + unlink where
 * the file system has no renameat2. */
static int
rename_file (const char *tmp, const char *final, DfPublishFlags flags)
{
  if (!(flags & DF_PUBLISH_NOREPLACE))
    return rename (tmp, final);
  int r = renameat2 (AT_FDCWD, tmp, AT_FDCWD, final, RENAME_NOREPLACE);
  if (r < 0 && (errno == EINVAL || errno == ENOSYS))
    {
      r = link (tmp, final);
      if (r == 0)
        unlink (tmp);
    }
  return r;
}

bool
df_store_publish (int fd, const char *tmp, const char *final,
                  DfPublishFlags flags, GError **err)
{
  if (!sync_file (fd, tmp, err))
    {
      unlink (tmp);
      return false;
    }
  if (rename_file (tmp, final, flags) < 0)
    {
      if (errno == EEXIST && (flags & DF_PUBLISH_NOREPLACE))
        g_set_error (err, DF_ERROR, DF_ERROR_EXISTS, "%s already exists",
                     final);
      else
        df_set_error_errno (err, errno, "rename %s to %s", tmp, final);
      unlink (tmp);
      return false;
    }
  return df_fsync_dir_of (final, err);
}

bool
df_store_publish_layer (const char *step, const char *tmp, const char *final,
                        bool hashed, char sha[65], uint64_t *size,
                        GError **err)
{
  g_autofree char *written = g_strdup_printf ("%s-written", step);
  g_autofree char *renamed = g_strdup_printf ("%s-renamed", step);
  GStatBuf st;
  df_store_crash_point (written);
  if (!df_store_publish (-1, tmp, final, DF_PUBLISH_REPLACE, err)
      || (!hashed && !df_file_sha256 (final, sha, err)))
    return false;
  df_store_crash_point (renamed);
  if (g_stat (final, &st) != 0)
    {
      df_set_error_errno (err, errno, "stat %s", final);
      return false;
    }
  *size = (uint64_t) st.st_size;
  return true;
}

/* ---- sweep ----------------------------------------------------------------- */

/* "<vdisk>.<K><suffix>" -> K, or -1. */
static int
store_number (const char *vdisk, const char *name, const char *suffix)
{
  gsize vl = strlen (vdisk), sl = strlen (suffix), nl = strlen (name);
  if (nl <= vl + 1 + sl || strncmp (name, vdisk, vl) != 0 || name[vl] != '.'
      || !g_str_has_suffix (name, suffix))
    return -1;
  g_autofree char *num = g_strndup (name + vl + 1, nl - vl - 1 - sl);
  guint64 n = 0;
  return g_ascii_string_to_unsigned (num, 10, 0, G_MAXINT, &n, NULL)
         ? (int) n : -1;
}

static bool
has_number (const int *numbers, guint n, int k)
{
  for (guint i = 0; i < n; i++)
    if (numbers[i] == k)
      return true;
  return false;
}

bool
df_store_remove_maint (const char *maint_dir, GError **err)
{
  g_autoptr (GDir) d = g_dir_open (maint_dir, 0, NULL);
  if (d)
    for (const char *f; (f = g_dir_read_name (d)) != NULL;)
      {
        g_autofree char *p = g_build_filename (maint_dir, f, NULL);
        if (g_unlink (p) != 0 && errno != ENOENT)
          {
            df_set_error_errno (err, errno, "remove %s", p);
            return false;
          }
      }
  if (g_rmdir (maint_dir) != 0 && errno != ENOENT)
    {
      df_set_error_errno (err, errno, "remove %s", maint_dir);
      return false;
    }
  return df_fsync_dir_of (maint_dir, err);
}

bool
df_store_sweep (DfStore *s, const int *numbers, guint n, int maint,
                GError **err)
{
  g_autoptr (GDir) d = g_dir_open (s->dir, 0, NULL);
  if (!d)
    return true;
  for (const char *f; (f = g_dir_read_name (d)) != NULL;)
    {
      g_autofree char *p = g_build_filename (s->dir, f, NULL);
      int k;
      if (f[0] == '.' && g_str_has_suffix (f, ".qcow2.tmp"))
        g_unlink (p);
      else if ((k = store_number (s->vdisk, f, ".qcow2")) >= 0
               && !has_number (numbers, n, k))
        {
          g_info ("removing %s: no version row names it", p);
          g_unlink (p);
        }
      else if ((k = store_number (s->vdisk, f, ".maint")) >= 0 && k != maint
               && !df_store_remove_maint (p, err))
        return false;
    }
  return df_fsync_dir_of (s->dir, err);
}

/* ---- maintenance caches ---------------------------------------------------- */

bool
df_store_maint_claim (const char *maint_dir, const char *what, int *fd,
                      GError **err)
{
  g_autofree char *map = g_build_filename (
    maint_dir, DF_CACHE_PERSISTENT_PREFIX DF_CACHE_MAP_SUFFIX, NULL);
  *fd = open (map, O_RDONLY | O_CLOEXEC);
  if (*fd < 0 || df_cache_persistent_lock (*fd, map, what, NULL))
    return true;
  close (*fd);
  *fd = -1;
  g_set_error (err, DF_ERROR, DF_ERROR_BUSY, "%s is in use by a session",
               what);
  return false;
}

/* ---- test hook ------------------------------------------------------------- */

void
df_store_crash_point (const char *step)
{
  const char *at = g_getenv ("DISKFARM_TEST_CRASH_AT");
  if (at && strcmp (at, step) == 0)
    {
      fflush (NULL);
      raise (SIGKILL);
    }
}
