/* diskfarm: least privilege (see privilege.h). */
#include "privilege.h"
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ---- capabilities ------------------------------------------------------ */

static int
cap_get (struct __user_cap_data_struct data[2])
{
  struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
  return (int)syscall (SYS_capget, &hdr, data);
}

static bool
holds_capabilities (void)
{
  struct __user_cap_data_struct now[2];
  if (cap_get (now) < 0)
    return true;
  for (int i = 0; i < 2; i++)
    if (now[i].effective || now[i].permitted || now[i].inheritable)
      return true;
  return false;
}

/* Clear the ambient set, then effective, permitted and inheritable.  A
 * process that holds none makes no capset call (a unit's system call
 * filter may refuse it). */
static bool
drop_all_capabilities (GError **err)
{
  struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
  struct __user_cap_data_struct none[2] = { { 0 } };
  if (prctl (PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0
      && errno != EINVAL) /* EINVAL: kernel < 4.3 */
    {
      df_set_error_errno (err, errno, "clear ambient capabilities");
      return false;
    }
  if (!holds_capabilities ())
    return true;
  if (syscall (SYS_capset, &hdr, none) < 0)
    {
      df_set_error_errno (err, errno, "drop capabilities");
      return false;
    }
  if (holds_capabilities ())
    {
      g_set_error (err, DF_ERROR, DF_ERROR_IO,
                   "capabilities are still held after dropping them");
      return false;
    }
  return true;
}

/* ---- users ------------------------------------------------------------- */

/* The user a NULL --user means: diskfarm, else nobody. */
static const char *
default_user (void)
{
  return getpwnam (DF_SERVICE_USER) ? DF_SERVICE_USER : "nobody";
}

/* Switch from root to pw, with the farm's group as a supplementary one. */
static bool
become_user (const struct passwd *pw, gid_t extra_gid, GError **err)
{
  gid_t groups[1] = { extra_gid };
  size_t ngroups = extra_gid != 0 && extra_gid != pw->pw_gid;
  if (setgroups (ngroups, groups) < 0 || setgid (pw->pw_gid) < 0
      || setuid (pw->pw_uid) < 0)
    {
      df_set_error_errno (err, errno, "drop privileges to %s", pw->pw_name);
      return false;
    }
  if (setuid (0) == 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_IO,
                   "privileges could not be dropped (setuid 0 still works)");
      return false;
    }
  return true;
}

/* Become (or already be) pw; NULL pw: stay who we are. */
static bool
switch_user (const struct passwd *pw, const char *asked, gid_t extra_gid,
             GError **err)
{
  if (geteuid () == 0)
    return become_user (pw, extra_gid, err);
  if (pw->pw_uid == geteuid () || asked == NULL)
    return true; /* systemd User=, or a developer's own run */
  g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
               "cannot become user '%s': running as uid %u, not root",
               pw->pw_name, (unsigned)geteuid ());
  return false;
}

static bool
check_needs (const char *name, const DfAccessNeed *needs, gsize n,
             GError **err)
{
  for (gsize i = 0; i < n; i++)
    if (faccessat (needs[i].dirfd, needs[i].path, needs[i].mode, 0) < 0)
      {
        const char *what = (needs[i].mode & W_OK)   ? "write"
                           : (needs[i].mode & R_OK) ? "read"
                                                    : "search";
        df_set_error_errno (err, errno,
                            "running as %s, cannot %s %s (the farm must "
                            "belong to the " DF_SERVICE_USER " user: run "
                            "'diskfarm init' as root, or use --user)",
                            name, what, needs[i].shown);
        return false;
      }
  return true;
}

bool
df_drop_privileges (const char *user, gid_t extra_gid,
                    const DfAccessNeed *needs, gsize n_needs, GError **err)
{
  const char *name = user ? user : default_user ();
  if (g_str_equal (name, "root") && geteuid () == 0)
    {
      g_warning ("--user root: keeping root privileges");
      return true;
    }
  struct passwd *pw = getpwnam (name);
  if (pw == NULL)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND, "no user '%s'", name);
      return false;
    }
  uid_t before = geteuid (), target = pw->pw_uid;
  if (!switch_user (pw, user, extra_gid, err) || !drop_all_capabilities (err))
    return false;
  g_autofree char *me = NULL;
  if (geteuid () == target)
    me = g_strdup (name);
  else
    me = g_strdup_printf ("uid %u", (unsigned)geteuid ());
  if (!check_needs (me, needs, n_needs, err))
    return false;
  g_message ("running as %s (uid %u)%s, no capabilities", me,
             (unsigned)geteuid (), before == 0 ? ", dropped from root" : "");
  return true;
}

/* ---- the service user -------------------------------------------------- */

static bool
run_tool (const char *const *argv, GError **err)
{
  g_autofree char *out = NULL;
  gint status = 0;
  if (!g_spawn_sync (NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL,
                     NULL, NULL, &out, &status, err))
    return false;
  if (!g_spawn_check_wait_status (status, NULL))
    {
      g_strstrip (out);
      g_set_error (err, DF_ERROR, DF_ERROR_IO, "%s failed: %s", argv[0],
                   out && *out ? out : "no message");
      return false;
    }
  return true;
}

bool
df_ensure_service_user (const char *home, GError **err)
{
  g_return_val_if_fail (home != NULL, false);
  if (getgrnam (DF_SERVICE_USER) == NULL)
    {
      const char *argv[] = { "groupadd", "--system", DF_SERVICE_USER, NULL };
      if (!run_tool (argv, err))
        return false;
      g_message ("created the %s system group", DF_SERVICE_USER);
    }
  if (getpwnam (DF_SERVICE_USER) == NULL)
    {
      const char *argv[] = { "useradd",
                             "--system",
                             "--gid",
                             DF_SERVICE_USER,
                             "--home-dir",
                             home,
                             "--no-create-home",
                             "--shell",
                             "/usr/sbin/nologin",
                             "--comment",
                             "diskfarm services",
                             DF_SERVICE_USER,
                             NULL };
      if (!run_tool (argv, err))
        return false;
      g_message ("created the %s system user", DF_SERVICE_USER);
    }
  return true;
}

bool
df_adopt_owner (int fd, const char *path, GError **err)
{
  if (geteuid () != 0)
    return true;
  g_autofree char *dir = g_path_get_dirname (path);
  struct stat st;
  if (stat (dir, &st) < 0)
    {
      df_set_error_errno (err, errno, "%s", dir);
      return false;
    }
  if (st.st_uid == 0)
    return true;
  int r = fd >= 0 ? fchown (fd, st.st_uid, st.st_gid)
                  : lchown (path, st.st_uid, st.st_gid);
  if (r < 0)
    {
      df_set_error_errno (err, errno, "give %s to uid %u", path,
                          (unsigned)st.st_uid);
      return false;
    }
  return true;
}
