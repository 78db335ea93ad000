/* diskfarm: least privilege, shared by the daemons and the console.
 *
 * A farm belongs to the diskfarm user and group (setgid directories,
 * 0750/0640).  The daemons bind their sockets as root, then run as that
 * user with no capability left; the console, run as root, gives whatever
 * it creates in the farm to the farm's owner so the daemons can use it. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <sys/types.h>

/* The system user and group that own a farm and run its daemons. */
#define DF_SERVICE_USER "diskfarm"

/* Umask of every diskfarm program: nothing for others, no group write. */
#define DF_UMASK 0027

/* Something the dropped process must still be able to do, checked right
 * after the drop so a farm the user cannot use fails at start with one
 * precise message.  path is relative to dirfd (AT_FDCWD for a plain
 * path; an fd opened before the drop works even when the path's parents
 * are closed to the user). */
typedef struct
{
  int dirfd; /* borrowed */
  const char *path;
  int mode;          /* R_OK | W_OK | X_OK */
  const char *shown; /* the path as messages name it */
} DfAccessNeed;

/* Become user for good: NULL means diskfarm (nobody if there is no
 * diskfarm user), "root" keeps root with a warning.  Started as root:
 * setgroups (plus extra_gid, the farm's group, when it is not root's),
 * setgid, setuid.  Already running as that user (systemd User=) is fine;
 * running as another non-root user is an error when user was named, and
 * accepted as is otherwise.  In every case but "root" the process then
 * holds no capability (effective, permitted, inheritable, ambient), and
 * each need is checked.  Call before starting threads. */
bool df_drop_privileges (const char *user, gid_t extra_gid,
                         const DfAccessNeed *needs, gsize n_needs,
                         GError **err);

/* Create the diskfarm system group and user if missing (groupadd and
 * useradd --system, home home, no login shell).  Needs root. */
bool df_ensure_service_user (const char *home, GError **err);

/* Right after creating path (file or directory; fd open on it, or -1):
 * when running as root and the directory holding path belongs to another
 * user, give path to that directory's owner and group.  Files the
 * console makes as root in a farm owned by diskfarm stay writable by
 * the daemons.  A no-op when not root. */
bool df_adopt_owner (int fd, const char *path, GError **err);
