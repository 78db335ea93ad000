/* diskfarm: the version lifecycle of a vDisk, for every front end.
 *
 * `new`, `seal`, `merge`, `promote`, `revert` and `delete` are business
 * rules over two stores that must agree: the farm DB (lib/farm: the
 * version rows, their states, the audit trail) and the vDisk's store
 * directory (lib/vdisk's DfStore: the layer files and the maintenance
 * cache).  Each verb here follows the store's crash-safety protocol
 * (store.h: lock, sweep, write under a temporary name, publish, then one
 * DB transaction with its audit row, then remove what is no longer used),
 * so a verb killed at any point can be run again.  The crash points of
 * DISKFARM_TEST_CRASH_AT that these verbs pass (diskfarm(1) lists them;
 * tests/interop/version-crash.sh kills each):
 *   merge-written merge-renamed merge-in-tx merge-committed
 *   seal-written seal-renamed seal-in-tx seal-committed
 *   promote-begin promote-in-tx promote-committed delete-committed
 *
 * The console is one front end (console/cmd_version.c parses the options,
 * calls one function here, prints the result); anything that changes
 * versions calls the same functions.
 *
 * Live sessions: a verb whose change would pull a disk from under a
 * running target asks the caller through DfLifecycleLive, only when it
 * needs to (asking the stream servers costs a round trip each).
 *
 * Ownership: a DfVersions borrows its DfFarm (which must outlive it) and
 * owns the rest; the DfVersion pointers it hands out are borrowed until
 * the next call on it. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "farm.h"
#include "live.h"
#include "vdisk.h"

/* Progress of long writes (seal, merge): begin (what: "sealing",
 * "merging updates", "merging base"; static), update, end.  All may be
 * NULL. */
typedef struct {
  void (*begin) (void *opaque, const char *what);
  df_progress_cb update;
  void (*end) (void *opaque);
  void *opaque;
} DfLifecycleProgress;

/* What a verb may ask of the farm's live sessions. */
typedef struct {
  /* May a change go ahead that would pull device d's disk away (d is a
   * maintenance device of the vDisk, `version new`)?  false + err
   * refuses. */
  bool (*allow_device_change) (void *opaque, const DfDevice *d,
                               GError **err);
  /* The farm's live sessions, or NULL when no server could be asked
   * (`version delete` then goes ahead; the callback says so).  Borrowed
   * from opaque. */
  const DfLive *(*sessions) (void *opaque);
  void *opaque;
} DfLifecycleLive;

/* ---- vDisks ------------------------------------------------------------ */

/* What an import made (file: the base layer's name, owned). */
typedef struct {
  char *file;
  uint64_t virtual_size, file_size;
  char sha256[65];
} DfImportResult;
void df_import_result_clear (DfImportResult *r);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (DfImportResult, df_import_result_clear)

/* Import src (a readable regular file or block device; format "auto",
 * "raw", "qcow2", or one qemu-img converts) as version 0 of new vDisk
 * name: written into a private temporary directory of the vDisk's store,
 * hashed, published without replacing anything, then the vDisk, its base
 * version and its description (NULL: none) recorded in one transaction.
 * On any failure, or SIGINT/SIGTERM, nothing is left behind.  Also
 * removes the temporary directories of imports that were killed. */
bool df_lifecycle_import (DfFarm *farm, const char *name, const char *src,
                          const char *format, const char *description,
                          const DfLifecycleProgress *progress,
                          DfImportResult *out, GError **err);

/* Remove vDisk name (refused by the farm while a device uses it), then its
 * version files and store directory.  *n_versions: how many went. */
bool df_lifecycle_remove (DfFarm *farm, const char *name, guint *n_versions,
                          GError **err);

/* ---- versions ------------------------------------------------------------ */

/* One vDisk's versions, opened for a verb: the vDisk row, promotions due
 * by now applied, and for a verb that changes the store (mutate) the
 * store's lock taken and the leftovers of interrupted verbs swept. */
typedef struct DfVersions DfVersions;

/* New DfVersions, or NULL + err (no such vDisk: DF_ERROR_NOT_FOUND; the
 * store locked by another process: DF_ERROR_BUSY). */
DfVersions *df_versions_open (DfFarm *farm, const char *vdisk, bool mutate,
                              GError **err);
void df_versions_free (DfVersions *vs);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfVersions, df_versions_free)

/* The vDisk's name and its version rows, oldest first (borrowed). */
const char *df_versions_vdisk (const DfVersions *vs);
GPtrArray *df_versions_rows (const DfVersions *vs);
/* Version number's row, or NULL (borrowed). */
DfVersion *df_versions_find (const DfVersions *vs, int number);

/* Live sessions per version number of the vDisk (number -> count as
 * GINT_TO_POINTER), from live; NULL when live is NULL or knows no
 * server.  A session counts on the version it is bound to, or for an
 * older server on the version its export or device type selects now. */
GHashTable *df_versions_live_counts (const DfVersions *vs,
                                     const DfLive *live);

/* ---- the verbs (each needs a DfVersions opened with mutate) ---------- */

/* A maintenance version on top of the newest sealed one; refused while the
 * vDisk has one (DF_ERROR_BUSY), has no sealed version, or live refuses a
 * maintenance device of the vDisk.  *number: the new version. */
bool df_versions_new (DfVersions *vs, const DfLifecycleLive *live,
                      int *number, GError **err);

/* Merge versions from..to (from = -1: the whole chain, a new base) into
 * one new layer with to's content; to must be the newest sealed version.
 * state: the new version's ("test", "production"), NULL: that of to.
 * *number: the new version. */
bool df_versions_merge (DfVersions *vs, int from, int to, const char *state,
                        const DfLifecycleProgress *progress, int *number,
                        GError **err);

/* Write the maintenance version's writes as its immutable layer, record
 * it sealed (state test), remove its cache; then, when the chain is deeper
 * than the vDisk's auto-merge depth, merge the updates.  *number: the
 * sealed version; *merged: the merged one, or -1. */
bool df_versions_seal (DfVersions *vs, const DfLifecycleProgress *progress,
                       int *number, int *merged, GError **err);

/* Move sealed version number to target (test or production); with when
 * (ISO 8601, already validated) schedule it instead. */
bool df_versions_promote (DfVersions *vs, int number,
                          DfVersionState target, const char *when,
                          GError **err);

/* Production back to the previous production version: the newest one
 * returns to test.  *number: the version production is now. */
bool df_versions_revert (DfVersions *vs, int *number, GError **err);

/* Delete version number and its file: the maintenance version throws its
 * writes away (refused while a session has its cache open); a sealed one
 * is refused while live sessions use it, and by the farm while devices,
 * pending promotions or stacked versions use it. */
bool df_versions_delete (DfVersions *vs, int number,
                         const DfLifecycleLive *live, GError **err);
