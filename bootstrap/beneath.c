/* diskfarm bootstrap: open below a root.  See beneath.h. */
#include "beneath.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Open path below root_fd without following any symlink; -1 + errno. */
int
df_open_beneath (int root_fd, const char *path)
{
  struct open_how how = {
    .flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY,
    .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
  };
  long fd = syscall (SYS_openat2, root_fd, path, &how, sizeof how);
  if (fd >= 0 || errno != ENOSYS)
    return (int) fd;
  /* Kernel without openat2: walk the components, none may be a symlink
   * (the path was cleaned: no "..", no absolute part). */
  g_auto (GStrv) parts = g_strsplit (path, "/", -1);
  int dir = dup (root_fd);
  for (guint i = 0; dir >= 0 && parts[i + 1]; i++)
    {
      int sub = openat (dir, parts[i], O_PATH | O_DIRECTORY | O_NOFOLLOW
                                       | O_CLOEXEC);
      int e = errno;
      close (dir);
      errno = e;
      dir = sub;
    }
  if (dir < 0)
    return -1;
  int f = openat (dir, parts[g_strv_length (parts) - 1],
                  O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
  int e = errno;
  close (dir);
  errno = e;
  return f;
}

