/* diskfarm: the version store of one vDisk, <farm>/store/<dir>/ (store.c).
 *
 * Layout: <vdisk>.<N>.qcow2 is version N's layer (its backing file is the
 * parent's layer, a relative name); <vdisk>.<N>.maint/ is the
 * server-persistent cache that holds the writes of unsealed maintenance
 * version N; .version.lock is the lock of the commands that change the
 * store.  The directory is fixed when the vDisk is created (lib/farm's
 * df_farm_store_dir); <vdisk> is the name the files were created with.
 *
 * Crash-safety protocol, for every front end (console, streamsvc, ...):
 *  1. df_store_lock: one changer per store (exclusive flock, never waits);
 *  2. df_store_sweep: remove what an interrupted changer left behind
 *     (temporary files, layers no version row names, .maint directories of
 *     versions that are no longer maintenance versions);
 *  3. write new files under df_store_tmp_path, then df_store_publish
 *     (fsync, rename, fsync of the directory), and only then record them
 *     in one DB transaction; remove files only after the transaction that
 *     stops using them.
 * A command killed at any point can therefore simply be run again.
 *
 * Test hook: DISKFARM_TEST_CRASH_AT=<step> makes the process SIGKILL
 * itself when it reaches df_store_crash_point (step); the steps are listed
 * in diskfarm(1) and exercised by tests/interop/version-crash.sh. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

/* The lock file in a store directory (vdisk remove deletes it with the
 * directory). */
#define DF_STORE_LOCK_FILE ".version.lock"

typedef struct DfStore DfStore;

/* A store handle for dir (the vDisk's store directory) holding the files
 * of vdisk.  Copies both strings; nothing is touched on disk.  Free with
 * df_store_free (which drops the lock). */
DfStore *df_store_new (const char *dir, const char *vdisk);
void df_store_free (DfStore *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfStore, df_store_free)

/* The directory (borrowed). */
const char *df_store_dir (const DfStore *s);

/* Create the directory if needed and take the store's exclusive lock
 * without waiting: false + DF_ERROR_BUSY while another process holds it.
 * Held until df_store_unlock or df_store_free. */
bool df_store_lock (DfStore *s, GError **err);
void df_store_unlock (DfStore *s);

/* ---- paths (new strings) ---------------------------------------------- */

/* "<vdisk>.<N>.qcow2": the layer file name a version row records. */
char *df_store_layer_name (const char *vdisk, int number);
/* <dir>/<vdisk>.<N>.qcow2 */
char *df_store_layer_path (const DfStore *s, int number);
/* <dir>/.<vdisk>.<N>.qcow2.tmp: where version N's layer is written. */
char *df_store_tmp_path (const DfStore *s, int number);
/* <dir>/.<file>.part: a copy of the version file <file> being fetched
 * from a peer (diskfarm store sync).  The sweep keeps it, so a sync run
 * again resumes from its length. */
char *df_store_part_path (const DfStore *s, const char *file);
/* <dir>/<vdisk>.<N>.maint: the one place this name is built (streamsvc
 * opens the cache there, the console seals and deletes it). */
char *df_store_maint_path (const char *dir, const char *vdisk, int number);

/* ---- publish: the one rule for making a finished file visible ---------- */

typedef enum {
  DF_PUBLISH_REPLACE = 0,         /* rename over an existing final */
  DF_PUBLISH_NOREPLACE = 1 << 0,  /* final exists: DF_ERROR_EXISTS */
} DfPublishFlags;

/* fsync tmp (through fd when fd >= 0, else by opening it; fd stays the
 * caller's), rename it to final, fsync final's directory.  On any failure
 * before the rename tmp is removed, so a failed publish leaves nothing
 * behind.  Both paths must be on one file system. */
bool df_store_publish (int fd, const char *tmp, const char *final,
                       DfPublishFlags flags, GError **err);

/* The last steps of writing a version layer (seal and merge): crash point
 * "<step>-written", publish tmp as final (replacing), hash final into sha
 * (64 hex + NUL) unless the writer already did (hashed), crash point
 * "<step>-renamed", then final's size into *size. */
bool df_store_publish_layer (const char *step, const char *tmp,
                             const char *final, bool hashed, char sha[65],
                             uint64_t *size, GError **err);

/* ---- sweep and the maintenance caches ---------------------------------- */

/* Under the lock: remove the leftovers of interrupted changers.  numbers
 * (n of them) are the versions that have a row; maint is the number of the
 * maintenance version, or -1.  Removes ".*.qcow2.tmp", "<vdisk>.<K>.qcow2"
 * with no row and "<vdisk>.<K>.maint/" unless K == maint; nothing else.
 * A missing directory is fine. */
bool df_store_sweep (DfStore *s, const int *numbers, guint n, int maint,
                     GError **err);

/* Remove a .maint cache directory (flat) and fsync its parent. */
bool df_store_remove_maint (const char *maint_dir, GError **err);

/* Claim the maintenance cache in maint_dir against sessions: *fd receives
 * the open map holding the cache's own lock (df_cache_persistent_lock;
 * the caller closes it to release) or -1 when the cache has no map yet.
 * false + DF_ERROR_BUSY "<what> is in use by a session" while a session
 * (streamsvc) has the cache open. */
bool df_store_maint_claim (const char *maint_dir, const char *what, int *fd,
                           GError **err);

/* ---- test hook ---------------------------------------------------------- */

/* SIGKILL this process when $DISKFARM_TEST_CRASH_AT equals step (see the
 * top of this file). */
void df_store_crash_point (const char *step);
