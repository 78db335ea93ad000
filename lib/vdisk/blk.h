/* diskfarm: the block layer interface.
 *
 * Every piece of the data path is a df_blk: a raw file, a flattened qcow2
 * chain, a write cache over a chain.  A layer fills one df_blk_ops and, when
 * it stacks on another layer, holds a reference to it (df_blk_ref).
 *
 * Contract (validated once at the edge, by the protocol front end):
 *   - offset + count <= size, count > 0 (count <= DF_BLK_MAX_REQUEST);
 *   - write/trim/zero reach a read-only df_blk only through layers that
 *     have the op, ending in the read-only layer (blk_readonly.h), which
 *     refuses them with EROFS; front ends refuse them at the edge first.
 * Inner layers only g_assert these.  Data-path functions return 0 on success
 * or -1 with *err set to a positive errno (EIO, ENOSPC, EINVAL, ...); they log
 * once where the failure is decided, never the caller.
 *
 * Thread safety: all ops may be called concurrently from several worker
 * threads on the same df_blk; each layer does its own locking.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#define DF_BLK_MAX_REQUEST (32u * 1024 * 1024)

/* flags for pwrite / zero / trim */
#define DF_BLK_FUA        (1u << 0)  /* stable on return */
#define DF_BLK_MAY_TRIM   (1u << 1)  /* zero: may deallocate */
#define DF_BLK_FAST_ZERO  (1u << 2)  /* zero: fail with ENOTSUP if slow */

/* extent flags: same values as NBD base:allocation */
#define DF_EXTENT_HOLE    (1u << 0)  /* not allocated in this export */
#define DF_EXTENT_ZERO    (1u << 1)  /* reads as zeroes */

typedef struct df_blk df_blk;

/* Called in increasing, contiguous offset order; return 0 to go on, -1 to
 * stop early (not an error). */
typedef int (*df_extent_cb) (void *opaque, uint64_t offset, uint64_t length,
                             uint32_t flags);

/* Where the first span->length bytes (1..count) of a range lie, for a
 * transport that sends them from the file (sendfile) instead of copying
 * (df_blk_span):
 *   fd >= 0  they are span->length bytes of fd at span->offset, in a file
 *            nobody writes while owner lives (a version file of a chain:
 *            immutable), so sending them later still sends what the range
 *            held at the time of the call;
 *   fd < 0   they must be read (df_blk_pread): cached, zero, compressed.
 * owner is a reference (the caller unrefs it once the bytes are sent)
 * keeping fd open, NULL when fd < 0. */
typedef struct {
  df_blk *owner;
  int fd;
  uint64_t offset;
  uint32_t length;
} df_blk_span;

typedef struct {
  const char *name;                      /* "qcow2-chain", "cache-server" */
  int (*pread) (df_blk *b, void *buf, uint32_t count, uint64_t offset,
                int *err);
  int (*pwrite) (df_blk *b, const void *buf, uint32_t count, uint64_t offset,
                 uint32_t flags, int *err);
  int (*flush) (df_blk *b, int *err);
  int (*trim) (df_blk *b, uint32_t count, uint64_t offset, uint32_t flags,
               int *err);
  int (*zero) (df_blk *b, uint32_t count, uint64_t offset, uint32_t flags,
               int *err);
  int (*extents) (df_blk *b, uint32_t count, uint64_t offset,
                  df_extent_cb cb, void *opaque, int *err);
  /* Optional (df_blk_span); a filter that leaves both pread and span NULL
   * passes it to next, any other layer without it reads by copying. */
  int (*span) (df_blk *b, uint32_t count, uint64_t offset, df_blk_span *span,
               int *err);
  void (*destroy) (df_blk *b);           /* free layer state; unref below */
} df_blk_ops;

/* The common head of every layer.  Layers embed it first:
 *   struct cache { df_blk blk; ... };  */
struct df_blk {
  const df_blk_ops *ops;
  gint refcount;
  df_blk *next;           /* a filter's lower layer (owned ref), else NULL */
  uint64_t size;          /* virtual size in bytes */
  bool readonly;
  bool can_trim;
  bool can_zero;
  bool can_fast_zero;
  bool can_flush;
};

/* Initialise the head of a new layer (refcount 1). */
void df_blk_init (df_blk *b, const df_blk_ops *ops, uint64_t size,
                  bool readonly);
/* Initialise the head of a new layer that presents lower's size, read-only
 * flag and capabilities (no reference taken). */
void df_blk_init_over (df_blk *b, const df_blk_ops *ops, const df_blk *lower);
/* Initialise a filter over next (nbdkit's filters): as df_blk_init_over,
 * holding a reference on next.  A filter's ops may leave any data op NULL
 * to pass it to next unchanged, and destroy NULL when it has no state of
 * its own (then unref next and g_free the layer). */
void df_blk_filter_init (df_blk *b, const df_blk_ops *ops, df_blk *next);
df_blk *df_blk_ref (df_blk *b);
void df_blk_unref (df_blk *b);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (df_blk, df_blk_unref)

/* Thin dispatchers (assert the contract, then call the layer). */
int df_blk_pread (df_blk *b, void *buf, uint32_t count, uint64_t offset,
                  int *err);
int df_blk_pwrite (df_blk *b, const void *buf, uint32_t count,
                   uint64_t offset, uint32_t flags, int *err);
int df_blk_flush (df_blk *b, int *err);
int df_blk_trim (df_blk *b, uint32_t count, uint64_t offset, uint32_t flags,
                 int *err);
int df_blk_zero (df_blk *b, uint32_t count, uint64_t offset, uint32_t flags,
                 int *err);
/* Layers without an extents op report the range as one allocated extent. */
int df_blk_extents (df_blk *b, uint32_t count, uint64_t offset,
                    df_extent_cb cb, void *opaque, int *err);
/* Where the first bytes of [offset, offset+count) lie (df_blk_span above).
 * Returns 0 with *span filled (length >= 1), or -1 with *err. */
int df_blk_span_of (df_blk *b, uint32_t count, uint64_t offset,
                    df_blk_span *span, int *err);
/* Release span's owner (span may be a copy span: nothing to release). */
void df_blk_span_release (df_blk_span *span);
