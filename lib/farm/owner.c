/* diskfarm: who a farm belongs to (see df_farm_give_to_service_user).
 *
 * A farm made by root belongs to the diskfarm user and group: directories
 * 02750 (setgid, so what is created in them keeps the farm's group),
 * files without group write or any world bit (0640, caches 0600).  The
 * daemons run as that user; privilege.h's df_adopt_owner keeps what the
 * console creates later in line. */
#include "config.h"
#include "farm.h"
#include "common.h"
#include "privilege.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

/* Mode a farm entry gets: setgid 0750 directories, files keep their
 * owner bits, group at most read (and exec), nothing for others. */
static mode_t
farm_mode (const struct stat *st)
{
  if (S_ISDIR (st->st_mode))
    return 02750;
  return st->st_mode & 0750;
}

static bool
own_entry (const char *path, uid_t uid, gid_t gid, GError **err)
{
  struct stat st;
  if (lstat (path, &st) < 0)
    {
      df_set_error_errno (err, errno, "%s", path);
      return false;
    }
  if (lchown (path, uid, gid) < 0)
    {
      df_set_error_errno (err, errno, "chown %s", path);
      return false;
    }
  if ((S_ISDIR (st.st_mode) || S_ISREG (st.st_mode))
      && chmod (path, farm_mode (&st)) < 0)
    {
      df_set_error_errno (err, errno, "chmod %s", path);
      return false;
    }
  return true;
}

/* path and, for a directory, everything below it (symlinks not followed). */
static bool
own_tree (const char *path, uid_t uid, gid_t gid, GError **err)
{
  if (!own_entry (path, uid, gid, err))
    return false;
  if (!g_file_test (path, G_FILE_TEST_IS_DIR)
      || g_file_test (path, G_FILE_TEST_IS_SYMLINK))
    return true;
  g_autoptr (GDir) d = g_dir_open (path, 0, err);
  if (d == NULL)
    return false;
  const char *name;
  while ((name = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *child = g_build_filename (path, name, NULL);
      if (!own_tree (child, uid, gid, err))
        return false;
    }
  return true;
}

bool
df_farm_give_to_service_user (const char *dir, GError **err)
{
  g_return_val_if_fail (dir != NULL, false);
  if (geteuid () != 0)
    return true;
  if (!df_ensure_service_user (DF_DEFAULT_FARM, err))
    return false;
  struct passwd *pw = getpwnam (DF_SERVICE_USER);
  struct group *gr = getgrnam (DF_SERVICE_USER);
  if (pw == NULL || gr == NULL)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
                   "no %s user or group after creating them", DF_SERVICE_USER);
      return false;
    }
  return own_tree (dir, pw->pw_uid, gr->gr_gid, err);
}
