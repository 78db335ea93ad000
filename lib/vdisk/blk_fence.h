/* diskfarm: the fence layer (a df_blk over another df_blk).
 *
 * A fence is one policy shared by every session bound to the same thing
 * (for streamsvc: one device cache, i.e. one binding of device, boot
 * generation, vdisk, version and cache mode).  Its sessions use a fence
 * layer (df_fence_blk_new) over the shared inner df_blk, one layer shared
 * by all of them or one each; all layers of one DfFence trip together:
 *
 *   - df_fence_trip (reason): from then on every request on every layer
 *     fails with ESHUTDOWN, and every watcher's kick runs once (the front
 *     end closes its connection there);
 *   - df_fence_drain: waits for the requests in flight on every layer and
 *     makes each layer drop its reference to the inner df_blk, so that the
 *     inner layer (a persistent cache holding a flock) can be released while
 *     the fenced sessions still exist;
 *   - the check callback runs after every FLUSH and every FUA write/zero/
 *     trim completed on a layer and before it is acknowledged: when it says
 *     the binding is stale the fence trips and the request fails, so an
 *     acknowledged flush always went to the current binding.
 *
 * Cost on the data path: one atomic load, plus the layer's reader lock
 * (shared only by the sessions of one layer, i.e. of one device) that drain
 * uses to wait for requests in flight.  No farm access.
 *
 * Thread safety: everything may be called from any thread.  The check
 * callback and the kicks run without any fence lock held by the caller's
 * request (kicks run under the watcher lock: keep them short, never call
 * back into the fence).
 */
#pragma once

#include "blk.h"

typedef struct DfFence DfFence;

/* True when the binding is still current; false with *reason (new string,
 * freed by the fence) when it is stale.  A check that cannot decide (farm
 * DB unreachable) returns true: offline mode keeps serving. */
typedef bool (*DfFenceCheck) (void *opaque, char **reason);
typedef void (*DfFenceKick) (void *data);

/* label names what is fenced in the log line ("device pc01 generation 3").
 * check may be NULL (never stale by itself).  opaque is owned by the fence
 * and freed with opaque_free (nullable) when the last ref goes.  Returns a
 * new fence (refcount 1). */
DfFence *df_fence_new (const char *label, DfFenceCheck check, void *opaque,
                       GDestroyNotify opaque_free);
DfFence *df_fence_ref (DfFence *f);
void df_fence_unref (DfFence *f);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfFence, df_fence_unref)

/* Trip the fence (idempotent).  Logs once (notice level) with the label and
 * reason, then runs every watcher's kick.  Returns true for the call that
 * tripped it. */
bool df_fence_trip (DfFence *f, const char *reason);
/* One atomic load. */
bool df_fence_tripped (DfFence *f);
/* The reason given to the call that tripped it; NULL while not tripped.
 * Borrowed, valid as long as the fence. */
const char *df_fence_reason (DfFence *f);
/* df_fence_trip for a device that carries on at another server (this one
 * lost its cache lease, blk_lease.h): the sessions' clients should retry
 * there rather than fail the I/O.  Returns true for the call that tripped
 * it; only that call decides df_fence_moved. */
bool df_fence_trip_moved (DfFence *f, const char *reason);
/* df_fence_trip when no session is left on f (its cache is being let go):
 * no log line, as nothing is fenced. */
bool df_fence_trip_unused (DfFence *f, const char *reason);
/* Tripped by df_fence_trip_moved (set before df_fence_tripped is true). */
bool df_fence_moved (DfFence *f);
/* Run the check now (trips the fence when stale).  Returns true when the
 * fence is (still) not tripped. */
bool df_fence_check (DfFence *f);

/* kick(data) runs once when the fence trips, or right away when it
 * already has.  Returns an id for df_fence_unwatch; after unwatch returns
 * the kick never runs again. */
guint df_fence_watch (DfFence *f, DfFenceKick kick, void *data);
void df_fence_unwatch (DfFence *f, guint id);

/* The fence must be tripped.  Waits for the requests in flight on every
 * layer, then every layer drops its inner reference.  Must not be called
 * from inside a request of one of its layers. */
void df_fence_drain (DfFence *f);

/* A new layer over inner (refcount 1): it takes its own ref
 * of inner and of f.  Same size, read-only flag and capabilities as inner. */
df_blk *df_fence_blk_new (DfFence *f, df_blk *inner);
/* The layer under a fence layer b (borrowed; NULL once drained).  For
 * tests and diagnostics: requests must go through b. */
df_blk *df_fence_blk_inner (df_blk *b);
