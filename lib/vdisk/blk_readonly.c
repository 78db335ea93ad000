/* diskfarm: the read-only layer (see blk_readonly.h). */
#include "blk_readonly.h"

#include <errno.h>

/* A filter (blk.h) with no state of its own: reads, flushes and extents
 * pass to the lower layer. */

static int
ro_pwrite (df_blk *b, const void *buf, uint32_t count, uint64_t offset,
           uint32_t flags, int *err)
{
  (void) b; (void) buf; (void) count; (void) offset; (void) flags;
  *err = EROFS;
  return -1;
}

static int
ro_refuse (df_blk *b, uint32_t count, uint64_t offset, uint32_t flags,
           int *err)
{
  (void) b; (void) count; (void) offset; (void) flags;
  *err = EROFS;
  return -1;
}

static const df_blk_ops readonly_ops = {
  .name = "readonly",
  .pwrite = ro_pwrite,
  .trim = ro_refuse,
  .zero = ro_refuse,
};

df_blk *
df_readonly_blk_new (df_blk *inner)
{
  df_blk *b = g_new0 (df_blk, 1);

  df_blk_filter_init (b, &readonly_ops, inner);
  b->readonly = true;
  b->can_trim = b->can_zero = b->can_fast_zero = false;
  return b;
}

df_blk *
df_readonly_blk_inner (df_blk *b)
{
  g_assert (b->ops == &readonly_ops);
  return b->next;
}
