/* diskfarm: the read-only layer (a df_blk over another df_blk).
 *
 * The one statement that an export is read-only (vdisk exports, devices in
 * cache mode hypervisor): it presents inner's size with readonly = true and
 * no trim / zero capability, passes reads, extents and flushes through, and
 * refuses pwrite / trim / zero with EROFS.  Front ends refuse writes at the
 * edge when their df_blk says readonly, with the code they map EROFS to
 * (NBD_EPERM, SCSI DATA PROTECT / WRITE PROTECTED), so a write that gets
 * past an edge is refused here the same way, never asserted on.
 *
 * Thread safety: as inner (the layer has no state of its own).
 */
#pragma once

#include "blk.h"

/* A new layer (refcount 1) over inner (its own ref). */
df_blk *df_readonly_blk_new (df_blk *inner);
/* The layer under a read-only layer b (borrowed). */
df_blk *df_readonly_blk_inner (df_blk *b);
