/* diskfarm: the fence layer (see blk_fence.h).
 *
 * Locks, never nested in the other order:
 *   f->layers_lock  the list of layers (add/remove, drain);
 *     l->lock       per layer: readers = requests in flight, writer = drain
 *   f->watch_lock   reason, tripped flag transitions, watchers and kicks.
 * A request takes only its own l->lock (as reader) and, after releasing
 * it, may run the check, which may trip (watch_lock).  Drain holds
 * layers_lock and takes each l->lock as writer; it never needs watch_lock,
 * so a request waiting in the check cannot block it.
 */
#define G_LOG_DOMAIN "diskfarm-fence"

#include "blk_fence.h"

#include <errno.h>

struct DfFence
{
  gint refcount;
  gint tripped; /* atomic; set once, under watch_lock */
  char *label;
  char *reason; /* written once before tripped is set */
  gint moved;   /* atomic; written once before tripped is set */
  DfFenceCheck check;
  void *opaque;
  GDestroyNotify opaque_free;
  GMutex watch_lock;
  GArray *watchers; /* Watcher, under watch_lock */
  guint next_watch_id;
  GMutex layers_lock;
  GPtrArray *layers; /* FenceLayer* (not owned), under layers_lock */
};

typedef struct
{
  guint id;
  DfFenceKick kick;
  void *data;
} Watcher;

typedef struct
{
  df_blk blk;
  DfFence *fence; /* owned ref */
  GRWLock lock;   /* readers: requests in flight; writer: drain */
  df_blk *inner;  /* owned ref; NULL once drained */
} FenceLayer;

/* ---- the fence ---------------------------------------------------------- */

DfFence *
df_fence_new (const char *label, DfFenceCheck check, void *opaque,
              GDestroyNotify opaque_free)
{
  DfFence *f = g_new0 (DfFence, 1);

  f->refcount = 1;
  f->label = g_strdup (label);
  f->check = check;
  f->opaque = opaque;
  f->opaque_free = opaque_free;
  g_mutex_init (&f->watch_lock);
  g_mutex_init (&f->layers_lock);
  f->watchers = g_array_new (FALSE, FALSE, sizeof (Watcher));
  f->layers = g_ptr_array_new ();
  f->next_watch_id = 1;
  return f;
}

DfFence *
df_fence_ref (DfFence *f)
{
  g_atomic_int_inc (&f->refcount);
  return f;
}

void
df_fence_unref (DfFence *f)
{
  if (f == NULL || !g_atomic_int_dec_and_test (&f->refcount))
    return;
  g_assert (f->layers->len == 0); /* every layer holds a ref */
  if (f->opaque_free != NULL)
    f->opaque_free (f->opaque);
  g_array_unref (f->watchers);
  g_ptr_array_unref (f->layers);
  g_mutex_clear (&f->watch_lock);
  g_mutex_clear (&f->layers_lock);
  g_free (f->label);
  g_free (f->reason);
  g_free (f);
}

bool
df_fence_tripped (DfFence *f)
{
  return g_atomic_int_get (&f->tripped) != 0;
}

const char *
df_fence_reason (DfFence *f)
{
  return df_fence_tripped (f) ? f->reason : NULL;
}

bool
df_fence_moved (DfFence *f)
{
  return df_fence_tripped (f) && g_atomic_int_get (&f->moved) != 0;
}

static bool
trip (DfFence *f, const char *reason, bool moved, bool quiet)
{
  g_mutex_lock (&f->watch_lock);
  if (df_fence_tripped (f))
    {
      g_mutex_unlock (&f->watch_lock);
      return false;
    }
  f->reason = g_strdup (reason);
  g_atomic_int_set (&f->moved, moved);
  g_atomic_int_set (&f->tripped, 1);
  if (!quiet)
    g_message ("%s: sessions fenced: %s", f->label, reason);
  for (guint i = 0; i < f->watchers->len; i++)
    {
      Watcher *w = &g_array_index (f->watchers, Watcher, i);
      w->kick (w->data);
    }
  g_mutex_unlock (&f->watch_lock);
  return true;
}

bool
df_fence_trip (DfFence *f, const char *reason)
{
  return trip (f, reason, false, false);
}

bool
df_fence_trip_unused (DfFence *f, const char *reason)
{
  return trip (f, reason, false, true);
}

bool
df_fence_trip_moved (DfFence *f, const char *reason)
{
  return trip (f, reason, true, false);
}

bool
df_fence_check (DfFence *f)
{
  g_autofree char *reason = NULL;

  if (df_fence_tripped (f))
    return false;
  if (f->check == NULL || f->check (f->opaque, &reason))
    return true;
  df_fence_trip (f, reason != NULL ? reason : "binding is stale");
  return false;
}

guint
df_fence_watch (DfFence *f, DfFenceKick kick, void *data)
{
  Watcher w = { 0, kick, data };

  g_mutex_lock (&f->watch_lock);
  w.id = f->next_watch_id++;
  g_array_append_val (f->watchers, w);
  if (df_fence_tripped (f))
    kick (data);
  g_mutex_unlock (&f->watch_lock);
  return w.id;
}

void
df_fence_unwatch (DfFence *f, guint id)
{
  g_mutex_lock (&f->watch_lock);
  for (guint i = 0; i < f->watchers->len; i++)
    if (g_array_index (f->watchers, Watcher, i).id == id)
      {
        g_array_remove_index_fast (f->watchers, i);
        break;
      }
  g_mutex_unlock (&f->watch_lock);
}

void
df_fence_drain (DfFence *f)
{
  g_assert (df_fence_tripped (f));
  g_mutex_lock (&f->layers_lock);
  for (guint i = 0; i < f->layers->len; i++)
    {
      FenceLayer *l = f->layers->pdata[i];
      df_blk *inner;

      g_rw_lock_writer_lock (&l->lock);
      inner = g_steal_pointer (&l->inner);
      g_rw_lock_writer_unlock (&l->lock);
      df_blk_unref (inner);
    }
  g_mutex_unlock (&f->layers_lock);
}

/* ---- the layer ---------------------------------------------------------- */

/* Start a request on fence layer b: the inner layer (reader lock held)
 * or NULL with *err = ESHUTDOWN when fenced. */
static df_blk *
enter (df_blk *b, int *err)
{
  FenceLayer *l = (FenceLayer *)b;

  if (G_UNLIKELY (df_fence_tripped (l->fence)))
    {
      *err = ESHUTDOWN;
      return NULL;
    }
  g_rw_lock_reader_lock (&l->lock);
  if (G_UNLIKELY (l->inner == NULL || df_fence_tripped (l->fence)))
    {
      g_rw_lock_reader_unlock (&l->lock);
      *err = ESHUTDOWN;
      return NULL;
    }
  return l->inner;
}

/* End a request that returned r.  A successful FLUSH or FUA request is
 * acknowledged only if the binding is still current. */
static int
leave (df_blk *b, int r, bool durable, int *err)
{
  FenceLayer *l = (FenceLayer *)b;

  g_rw_lock_reader_unlock (&l->lock);
  if (r == 0 && durable && !df_fence_check (l->fence))
    {
      *err = ESHUTDOWN;
      return -1;
    }
  return r;
}

static int
fence_pread (df_blk *b, void *buf, uint32_t count, uint64_t offset, int *err)
{
  df_blk *in = enter (b, err);

  if (in == NULL)
    return -1;
  return leave (b, df_blk_pread (in, buf, count, offset, err), false, err);
}

static int
fence_pwrite (df_blk *b, const void *buf, uint32_t count, uint64_t offset,
              uint32_t flags, int *err)
{
  df_blk *in = enter (b, err);

  if (in == NULL)
    return -1;
  return leave (b, df_blk_pwrite (in, buf, count, offset, flags, err),
                flags & DF_BLK_FUA, err);
}

static int
fence_flush (df_blk *b, int *err)
{
  df_blk *in = enter (b, err);

  if (in == NULL)
    return -1;
  return leave (b, df_blk_flush (in, err), true, err);
}

/* The dispatcher of a trim or zero (df_blk_trim, df_blk_zero). */
typedef int (*RangeOp) (df_blk *b, uint32_t count, uint64_t offset,
                        uint32_t flags, int *err);

static int
fence_range (df_blk *b, RangeOp op, uint32_t count, uint64_t offset,
             uint32_t flags, int *err)
{
  df_blk *in = enter (b, err);

  if (in == NULL)
    return -1;
  return leave (b, op (in, count, offset, flags, err), flags & DF_BLK_FUA,
                err);
}

static int
fence_trim (df_blk *b, uint32_t count, uint64_t offset, uint32_t flags,
            int *err)
{
  return fence_range (b, df_blk_trim, count, offset, flags, err);
}

static int
fence_zero (df_blk *b, uint32_t count, uint64_t offset, uint32_t flags,
            int *err)
{
  return fence_range (b, df_blk_zero, count, offset, flags, err);
}

static int
fence_extents (df_blk *b, uint32_t count, uint64_t offset, df_extent_cb cb,
               void *opaque, int *err)
{
  df_blk *in = enter (b, err);

  if (in == NULL)
    return -1;
  return leave (b, df_blk_extents (in, count, offset, cb, opaque, err), false,
                err);
}

static int
fence_span (df_blk *b, uint32_t count, uint64_t offset, df_blk_span *span,
            int *err)
{
  df_blk *in = enter (b, err);

  if (in == NULL)
    return -1;
  return leave (b, df_blk_span_of (in, count, offset, span, err), false, err);
}

static void
fence_destroy (df_blk *b)
{
  FenceLayer *l = (FenceLayer *)b;

  g_mutex_lock (&l->fence->layers_lock);
  g_ptr_array_remove_fast (l->fence->layers, l);
  g_mutex_unlock (&l->fence->layers_lock);
  df_blk_unref (l->inner);
  g_rw_lock_clear (&l->lock);
  df_fence_unref (l->fence);
  g_free (l);
}

static const df_blk_ops fence_ops = {
  .name = "fence",
  .pread = fence_pread,
  .pwrite = fence_pwrite,
  .flush = fence_flush,
  .trim = fence_trim,
  .zero = fence_zero,
  .extents = fence_extents,
  .span = fence_span,
  .destroy = fence_destroy,
};

df_blk *
df_fence_blk_new (DfFence *f, df_blk *inner)
{
  FenceLayer *l = g_new0 (FenceLayer, 1);

  df_blk_init_over (&l->blk, &fence_ops, inner);
  l->fence = df_fence_ref (f);
  l->inner = df_blk_ref (inner);
  g_rw_lock_init (&l->lock);
  g_mutex_lock (&f->layers_lock);
  g_ptr_array_add (f->layers, l);
  g_mutex_unlock (&f->layers_lock);
  return &l->blk;
}

df_blk *
df_fence_blk_inner (df_blk *b)
{
  FenceLayer *l = (FenceLayer *)b;
  df_blk *inner;

  g_assert (b->ops == &fence_ops);
  g_rw_lock_reader_lock (&l->lock);
  inner = l->inner;
  g_rw_lock_reader_unlock (&l->lock);
  return inner;
}
