/* streamsvc: this server in the farm's registry (lib/farm registry.c).
 *
 * When streamsvc has a server name (--server-name, [streamsvc]
 * server-name) it registers under it at start, heartbeats every interval
 * (lib/farm heartbeat.h: its own thread and DfFarm, so a slow DB never
 * stalls the data path or the admin API), and verifies the SHA-256 of every sealed
 * version file of its store once at start, in the background, recording
 * each result as its store state.  Without a name it does none of this,
 * as a one-server farm did before the registry.
 *
 * Ownership: df_registry_start copies what it is given but borrows
 * sessions, which must outlive df_registry_stop. */
#pragma once

#include <glib.h>
#include <stdbool.h>

#include "farm.h"
#include "sessions.h"

typedef struct DfRegistry DfRegistry;

typedef struct {
  const char *farm_dir;
  const char *db;          /* --db / [farm] database; NULL: farm.db */
  const DfServer *self;    /* name, address, ports, power, kind, timeout */
  guint interval_ms;       /* between heartbeats */
  bool verify;             /* verify the store at start */
} DfRegistryConf;

/* Start the heartbeat thread (registration is its first step: a DB that
 * is not reachable now is retried every interval) and, when c->verify,
 * the verifier thread.  Never fails. */
DfRegistry *df_registry_start (const DfRegistryConf *c, DfSessions *sessions);
/* Stop both threads (a verification in progress finishes its file first)
 * and free.  NULL is fine. */
void df_registry_stop (DfRegistry *r);
