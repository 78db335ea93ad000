/* diskfarm: `diskfarm store sync`: fetch the version files this server's
 * store lacks from a peer streamsvc (GET /v1/store/VDISK/N of its admin
 * API, through admin-client.h), on the farm directory's store.
 *
 * For each sealed version (of one vDisk, or of all): a file whose store
 * state here is verified is left alone; a file there but not verified is
 * hashed first; a missing or corrupt one is fetched into
 * df_store_part_path (a Range request resumes a partial one), its SHA-256
 * checked against the version's (and the peer's record), published with
 * df_store_publish (fsync, rename, fsync of the directory), and recorded
 * verified for this server.  The source is the peer given, else the
 * healthy streamsvc holding the version verified with the least load
 * (sessions / power).  Each vDisk's store is locked (df_store_lock) while
 * its files are fetched. */
#pragma once

#include <glib.h>
#include <stdbool.h>

#include "admin-client.h"
#include "farm.h"

typedef struct {
  const char *server;        /* this server's registry name */
  const char *from;          /* the peer, or NULL: the best holder */
  const char *vdisk;         /* NULL: every vDisk */
  guint64 bwlimit;           /* bytes/s, 0: none */
  const char *token;         /* bearer token for the peers' admin API;
                              * NULL: the farm's (df_farm_admin_token) */
  DfAdminProgress progress;  /* nullable */
  gpointer progress_data;
} DfSyncOptions;

typedef enum {
  DF_SYNC_PRESENT = 0,   /* verified here already */
  DF_SYNC_COPIED,
  DF_SYNC_NO_SOURCE,     /* no healthy peer holds it verified */
  DF_SYNC_FAILED,
} DfSyncOutcome;
const char *df_sync_outcome_name (DfSyncOutcome o);

typedef struct {
  char *vdisk;
  int number;
  DfSyncOutcome outcome;
  char *from;            /* peer copied from, or NULL */
  gint64 bytes;          /* bytes transferred this run */
  gint64 resumed_at;     /* bytes already there when it started */
  gint64 size;           /* file size */
  double seconds;        /* transfer time */
  char *error;           /* why FAILED / NO_SOURCE, or NULL */
} DfSyncItem;
void df_sync_item_free (DfSyncItem *it);

/* One item per sealed version considered (new array of DfSyncItem), or
 * NULL + err when the sync cannot start (unknown server, vDisk or peer,
 * DB error).  A version that fails does not stop the others. */
GPtrArray *df_store_sync (DfFarm *farm, const DfSyncOptions *o, GError **err);
