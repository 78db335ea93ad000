/* diskfarm: a daemon's registration and heartbeats in the farm's
 * registry (registry.c), from a thread of its own with its own DfFarm, so
 * a slow or unreachable DB never stalls the daemon's main loop or data
 * path.  streamsvc and bootstrapsvc use it.
 *
 * The thread registers self (retried every interval while the DB is
 * unreachable, and again when the admin removed the row), then
 * heartbeats every interval with the load the daemon's callback fills.
 *
 * Ownership: df_heartbeat_start copies self, farm_dir and db; data is
 * borrowed and must outlive df_heartbeat_stop.  load is called on the
 * heartbeat thread. */
#pragma once

#include <glib.h>
#include <stdbool.h>

#include "farm.h"

typedef struct DfHeartbeat DfHeartbeat;
/* Fill *load (zeroed before the call); on the heartbeat thread. */
typedef void (*DfLoadFn) (gpointer data, DfServerLoad *load);

/* Start beating (first beat now, on the thread).  load may be NULL (no
 * load but CPU and free space of farm_dir's store).  db is the farm DB
 * (--db / [farm] database; NULL: farm_dir's farm.db). */
DfHeartbeat *df_heartbeat_start (const char *farm_dir, const char *db,
                                 const DfServer *self,
                                 guint interval_ms, DfLoadFn load,
                                 gpointer data);
/* Stop the thread and free; NULL is fine.  The row goes unhealthy by
 * timeout (a server killed -9 does the same). */
void df_heartbeat_stop (DfHeartbeat *hb);
/* Ask the thread to stop without waiting (df_heartbeat_wait_stop returns
 * true from now on); df_heartbeat_stop still joins and frees. */
void df_heartbeat_request_stop (DfHeartbeat *hb);
/* The registration has succeeded at least once (any thread). */
bool df_heartbeat_registered (DfHeartbeat *hb);
/* Sleep up to ms or until df_heartbeat_stop; true when stopping (for
 * threads that work alongside, such as streamsvc's store verifier). */
bool df_heartbeat_wait_stop (DfHeartbeat *hb, guint ms);
