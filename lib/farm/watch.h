/* diskfarm: a daemon learns of farm changes at once (PostgreSQL
 * LISTEN/NOTIFY) instead of only by polling.
 *
 * Every change to the farm writes an audit row, and that row posts a
 * notice in the same transaction (audit.c), so the notice is sent exactly
 * when the change commits.  df_farm_watch_start runs a thread with its
 * own connection that listens, and calls the daemon's callback once per
 * burst of notices.  It also calls it when the connection is lost and
 * when it is back (the daemon then re-reads, and polls again at its short
 * interval while the watch is not live: df_farm_watch_live).  The thread
 * connects again every DF_FARM_WATCH_RETRY_MS while the DB is down.
 *
 * A second thread with a connection of its own keeps offline mode's
 * local snapshot (farm.h, df_farm_snapshot_write) of dir: written when
 * the watch connects and after each burst of notices (coalesced), so a
 * snapshot being written never delays a notice.
 *
 * SQLite has no notifications: df_farm_watch_start returns NULL there and
 * the daemon keeps polling.
 *
 * Ownership: dir and db are copied; data is borrowed and must outlive
 * df_farm_watch_stop.  fn runs on the watch thread. */
#pragma once

#include <glib.h>
#include <stdbool.h>

#define DF_FARM_WATCH_RETRY_MS 1000

typedef struct DfFarmWatch DfFarmWatch;
typedef void (*DfChangeFn) (gpointer data);

/* NULL when db is not a PostgreSQL target (df_db_target_is_pg).  fn may
 * be NULL (a daemon that only wants the snapshot). */
DfFarmWatch *df_farm_watch_start (const char *dir, const char *db,
                                  DfChangeFn fn, gpointer data);
/* Listening now: a change reaches fn within milliseconds.  False for
 * NULL (SQLite). */
bool df_farm_watch_live (DfFarmWatch *w);
/* Stop the thread and free; NULL is fine. */
void df_farm_watch_stop (DfFarmWatch *w);
