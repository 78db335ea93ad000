/* diskfarm: df_blk refcounting and dispatchers (see blk.h). */
#include "blk.h"

/* The head as df_blk_init makes it, without its checks of ops. */
static void
head_init (df_blk *b, const df_blk_ops *ops, uint64_t size, bool readonly)
{
  b->ops = ops;
  b->refcount = 1;
  b->next = NULL;
  b->size = size;
  b->readonly = readonly;
  b->can_flush = ops->flush != NULL;
  b->can_trim = !readonly && ops->trim != NULL;
  b->can_zero = !readonly && ops->zero != NULL;
  b->can_fast_zero = false;
}

/* lower's capabilities. */
static void
take_caps (df_blk *b, const df_blk *lower)
{
  b->can_trim = lower->can_trim;
  b->can_zero = lower->can_zero;
  b->can_fast_zero = lower->can_fast_zero;
  b->can_flush = lower->can_flush;
}

void
df_blk_init (df_blk *b, const df_blk_ops *ops, uint64_t size, bool readonly)
{
  g_assert (ops != NULL && ops->pread != NULL && ops->destroy != NULL);
  head_init (b, ops, size, readonly);
}

void
df_blk_init_over (df_blk *b, const df_blk_ops *ops, const df_blk *lower)
{
  df_blk_init (b, ops, lower->size, lower->readonly);
  take_caps (b, lower);
}

void
df_blk_filter_init (df_blk *b, const df_blk_ops *ops, df_blk *next)
{
  g_assert (ops != NULL && next != NULL);
  head_init (b, ops, next->size, next->readonly);
  take_caps (b, next);
  b->next = df_blk_ref (next);
}

df_blk *
df_blk_ref (df_blk *b)
{
  g_atomic_int_inc (&b->refcount);
  return b;
}

void
df_blk_unref (df_blk *b)
{
  if (b == NULL || !g_atomic_int_dec_and_test (&b->refcount))
    return;
  if (b->ops->destroy != NULL)
    b->ops->destroy (b);
  else
    {
      df_blk_unref (b->next);
      g_free (b);
    }
}

static inline void
assert_range (df_blk *b, uint32_t count, uint64_t offset)
{
  g_assert (count > 0 && count <= DF_BLK_MAX_REQUEST);
  g_assert (offset <= b->size && count <= b->size - offset);
}

int
df_blk_pread (df_blk *b, void *buf, uint32_t count, uint64_t offset, int *err)
{
  assert_range (b, count, offset);
  if (b->ops->pread == NULL)
    return df_blk_pread (b->next, buf, count, offset, err);
  return b->ops->pread (b, buf, count, offset, err);
}

int
df_blk_pwrite (df_blk *b, const void *buf, uint32_t count, uint64_t offset,
               uint32_t flags, int *err)
{
  assert_range (b, count, offset);
  if (b->ops->pwrite == NULL && b->next != NULL)
    return df_blk_pwrite (b->next, buf, count, offset, flags, err);
  g_assert (b->ops->pwrite != NULL); /* read-only: blk_readonly.h */
  return b->ops->pwrite (b, buf, count, offset, flags, err);
}

int
df_blk_flush (df_blk *b, int *err)
{
  if (b->ops->flush == NULL)
    return b->next != NULL ? df_blk_flush (b->next, err) : 0;
  return b->ops->flush (b, err);
}

int
df_blk_trim (df_blk *b, uint32_t count, uint64_t offset, uint32_t flags,
             int *err)
{
  assert_range (b, count, offset);
  if (b->ops->trim == NULL && b->next != NULL)
    return df_blk_trim (b->next, count, offset, flags, err);
  g_assert (b->can_trim || (b->readonly && b->ops->trim != NULL));
  return b->ops->trim (b, count, offset, flags, err);
}

int
df_blk_zero (df_blk *b, uint32_t count, uint64_t offset, uint32_t flags,
             int *err)
{
  assert_range (b, count, offset);
  if (b->ops->zero == NULL && b->next != NULL)
    return df_blk_zero (b->next, count, offset, flags, err);
  g_assert (b->can_zero || (b->readonly && b->ops->zero != NULL));
  return b->ops->zero (b, count, offset, flags, err);
}

int
df_blk_extents (df_blk *b, uint32_t count, uint64_t offset, df_extent_cb cb,
                void *opaque, int *err)
{
  assert_range (b, count, offset);
  if (b->ops->extents == NULL && b->next != NULL)
    return df_blk_extents (b->next, count, offset, cb, opaque, err);
  if (b->ops->extents == NULL)
    {
      cb (opaque, offset, count, 0);
      return 0;
    }
  return b->ops->extents (b, count, offset, cb, opaque, err);
}

int
df_blk_span_of (df_blk *b, uint32_t count, uint64_t offset, df_blk_span *span,
                int *err)
{
  assert_range (b, count, offset);
  if (b->ops->span == NULL && b->ops->pread == NULL && b->next != NULL)
    return df_blk_span_of (b->next, count, offset, span, err);
  if (b->ops->span == NULL)
    {
      *span = (df_blk_span) { NULL, -1, 0, count };
      return 0;
    }
  if (b->ops->span (b, count, offset, span, err) < 0)
    return -1;
  g_assert (span->length >= 1 && span->length <= count);
  g_assert ((span->fd >= 0) == (span->owner != NULL));
  return 0;
}

void
df_blk_span_release (df_blk_span *span)
{
  g_clear_pointer (&span->owner, df_blk_unref);
  span->fd = -1;
}
