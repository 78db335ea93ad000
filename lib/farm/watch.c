/* diskfarm: the change watch thread (see watch.h). */
#include "watch.h"
#include "db.h"
#include "farm.h"
#include "farm-private.h"
#include "common.h"

#include <errno.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct DfFarmWatch {
  char *dir;            /* the farm directory: its snapshot */
  char *db;             /* the target; may hold a password: never shown */
  DfChangeFn fn;
  gpointer data;        /* borrowed */
  int stopfd;           /* eventfd: written once by df_farm_watch_stop */
  gint live;            /* atomic */
  GThread *thread;
  /* The snapshot writer: its own thread and connection, so a snapshot
   * being written never delays the next notice. */
  GThread *snap_thread;
  GMutex snap_lock;
  GCond snap_cond;
  bool snap_due;        /* under snap_lock */
  bool snap_stop;       /* under snap_lock */
};

/* Wait up to ms for fd (-1: none) or the stop.  1 = fd readable, 0 =
 * timeout, -1 = stopping. */
static int
wait_fd (DfFarmWatch *w, int fd, int ms)
{
  struct pollfd p[2] = { { .fd = w->stopfd, .events = POLLIN },
                         { .fd = fd, .events = POLLIN } };
  int r = poll (p, fd >= 0 ? 2 : 1, ms);
  if (r < 0 && errno == EINTR)
    return 0;
  if (r < 0 || (p[0].revents & POLLIN))
    return -1;
  return r > 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR)) ? 1 : 0;
}

static void
set_live (DfFarmWatch *w, bool live)
{
  g_atomic_int_set (&w->live, live);
  if (w->fn != NULL)
    w->fn (w->data);
}

/* Connected and listening: NULL + a logged warning (once per outage) when
 * the DB cannot be reached. */
static DfFarm *
connect_listen (DfFarmWatch *w, bool *warned)
{
  g_autoptr (GError) err = NULL;
  g_autoptr (DfFarm) farm = df_farm_open_db (w->dir, w->db, false,
                                             "farm-watch", &err);
  if (farm != NULL && df_db_listen (df_farm_db (farm), DF_FARM_CHANNEL, &err))
    {
      g_message ("farm watch: listening for changes on %s",
                 df_farm_db_name (farm));
      *warned = false;
      return g_steal_pointer (&farm);
    }
  if (!*warned)
    g_warning ("farm watch: %s (polling until it is back)", err->message);
  *warned = true;
  return NULL;
}

/* Ask the snapshot writer for a new snapshot (coalesced). */
static void
snapshot_due (DfFarmWatch *w)
{
  g_mutex_lock (&w->snap_lock);
  w->snap_due = true;
  g_cond_signal (&w->snap_cond);
  g_mutex_unlock (&w->snap_lock);
}

/* Record the boot generations given while the DB was unreachable
 * (farm.h), before the snapshot that then holds them. */
static void
replay_offline (DfFarm *farm)
{
  g_autoptr (GError) err = NULL;
  if (!df_farm_offline_replay (farm, &err))
    g_message ("farm watch: offline boot generations not recorded yet: %s",
               err->message);
}

/* Write one snapshot (offline mode, farm.h); a failure is logged once per
 * run of failures and the old snapshot stays. */
static void
snapshot_write (DfFarmWatch *w, DfFarm **farm, bool *failing)
{
  g_autoptr (GError) err = NULL;
  if (*farm == NULL)
    *farm = df_farm_open_db (w->dir, w->db, false, "farm-snapshot", &err);
  if (*farm != NULL)
    replay_offline (*farm);
  bool ok = *farm != NULL && df_farm_snapshot_write (*farm, &err);
  /* A notice, not a warning: a daemon that may not write the farm's run/
   * (bootstrapsvc run as nobody reads boot/ only) serves as before, only
   * without offline mode. */
  if (!ok && !*failing)
    g_message ("farm watch: local snapshot not updated (offline mode needs "
               "it): %s", err->message);
  *failing = !ok;
}

static gpointer
snapshot_main (gpointer data)
{
  DfFarmWatch *w = data;
  DfFarm *farm = NULL;
  bool failing = false;
  g_mutex_lock (&w->snap_lock);
  for (;;)
    {
      while (!w->snap_stop && !w->snap_due)
        g_cond_wait (&w->snap_cond, &w->snap_lock);
      if (w->snap_stop)
        break;
      w->snap_due = false;
      g_mutex_unlock (&w->snap_lock);
      snapshot_write (w, &farm, &failing);
      g_mutex_lock (&w->snap_lock);
    }
  g_mutex_unlock (&w->snap_lock);
  df_farm_close (farm);
  return NULL;
}

/* Listen until the connection is lost (false) or the stop (true). */
static bool
listen_loop (DfFarmWatch *w, DfFarm *farm)
{
  DfDb *db = df_farm_db (farm);
  snapshot_due (w);
  for (;;)
    {
      g_autoptr (GError) err = NULL;
      int fd = df_db_notify_fd (db);
      int r = fd >= 0 ? wait_fd (w, fd, -1) : 0;
      if (r < 0)
        return true;
      int n = fd >= 0 ? df_db_notices (db, &err) : -1;
      if (n < 0)
        {
          g_warning ("farm watch: %s", err ? err->message
                                           : "connection lost");
          return false;
        }
      if (n > 0)
        {
          if (w->fn != NULL)
            w->fn (w->data);
          snapshot_due (w);
        }
    }
}

static gpointer
watch_main (gpointer data)
{
  DfFarmWatch *w = data;
  bool warned = false;
  do
    {
      g_autoptr (DfFarm) farm = connect_listen (w, &warned);
      if (farm == NULL)
        continue;
      set_live (w, true);
      bool stop = listen_loop (w, farm);
      set_live (w, false);
      if (stop)
        break;
    }
  while (wait_fd (w, -1, DF_FARM_WATCH_RETRY_MS) == 0);
  return NULL;
}

DfFarmWatch *
df_farm_watch_start (const char *dir, const char *db, DfChangeFn fn,
                     gpointer data)
{
  if (!df_db_target_is_pg (db))
    return NULL;
  int fd = eventfd (0, EFD_CLOEXEC);
  if (fd < 0)
    {
      g_warning ("farm watch: eventfd: %s (polling only)",
                 g_strerror (errno));
      return NULL;
    }
  DfFarmWatch *w = g_new0 (DfFarmWatch, 1);
  w->dir = g_strdup (dir);
  w->db = g_strdup (db);
  w->fn = fn;
  w->data = data;
  w->stopfd = fd;
  g_mutex_init (&w->snap_lock);
  g_cond_init (&w->snap_cond);
  w->snap_thread = g_thread_new ("farm-snapshot", snapshot_main, w);
  w->thread = g_thread_new ("farm-watch", watch_main, w);
  return w;
}

bool
df_farm_watch_live (DfFarmWatch *w)
{
  return w != NULL && g_atomic_int_get (&w->live) != 0;
}

void
df_farm_watch_stop (DfFarmWatch *w)
{
  if (w == NULL)
    return;
  guint64 one = 1;
  if (write (w->stopfd, &one, sizeof one) != sizeof one)
    g_warning ("farm watch: stop: %s", g_strerror (errno));
  g_thread_join (w->thread);
  g_mutex_lock (&w->snap_lock);
  w->snap_stop = true;
  g_cond_signal (&w->snap_cond);
  g_mutex_unlock (&w->snap_lock);
  g_thread_join (w->snap_thread);
  g_mutex_clear (&w->snap_lock);
  g_cond_clear (&w->snap_cond);
  close (w->stopfd);
  g_free (w->dir);
  g_free (w->db);
  g_free (w);
}
