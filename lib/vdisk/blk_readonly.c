/* diskfarm: the read-only layer (see blk_readonly.h). */
#include "blk_readonly.h"

#include <errno.h>

typedef struct {
  df_blk blk;
  df_blk *inner; /* owned ref */
} ReadonlyLayer;

static int
ro_pread (df_blk *b, void *buf, uint32_t count, uint64_t offset, int *err)
{
  return df_blk_pread (((ReadonlyLayer *) b)->inner, buf, count, offset, err);
}

static int
ro_pwrite (df_blk *b, const void *buf, uint32_t count, uint64_t offset,
           uint32_t flags, int *err)
{
  (void) b; (void) buf; (void) count; (void) offset; (void) flags;
  *err = EROFS;
  return -1;
}

static int
ro_flush (df_blk *b, int *err)
{
  return df_blk_flush (((ReadonlyLayer *) b)->inner, err);
}

static int
ro_refuse (df_blk *b, uint32_t count, uint64_t offset, uint32_t flags,
           int *err)
{
  (void) b; (void) count; (void) offset; (void) flags;
  *err = EROFS;
  return -1;
}

static int
ro_extents (df_blk *b, uint32_t count, uint64_t offset, df_extent_cb cb,
            void *opaque, int *err)
{
  return df_blk_extents (((ReadonlyLayer *) b)->inner, count, offset, cb,
                         opaque, err);
}

static void
ro_destroy (df_blk *b)
{
  df_blk_unref (((ReadonlyLayer *) b)->inner);
  g_free (b);
}

static const df_blk_ops readonly_ops = {
  .name = "readonly",
  .pread = ro_pread,
  .pwrite = ro_pwrite,
  .flush = ro_flush,
  .trim = ro_refuse,
  .zero = ro_refuse,
  .extents = ro_extents,
  .destroy = ro_destroy,
};

df_blk *
df_readonly_blk_new (df_blk *inner)
{
  ReadonlyLayer *l = g_new0 (ReadonlyLayer, 1);

  df_blk_init (&l->blk, &readonly_ops, inner->size, true);
  l->blk.can_flush = inner->can_flush;
  l->inner = df_blk_ref (inner);
  return &l->blk;
}

df_blk *
df_readonly_blk_inner (df_blk *b)
{
  g_assert (b->ops == &readonly_ops);
  return ((ReadonlyLayer *) b)->inner;
}
