/* streamsvc: the accounting layer (a df_blk over another df_blk).
 *
 * One per session: NBD and iSCSI put it over their export's df_blk when the
 * export is negotiated and send every request through it, so both front
 * ends account the same way, in one place: each call counts one op of its
 * kind (pread READ, pwrite WRITE, flush FLUSH, trim TRIM, zero ZERO,
 * extents BLOCK_STATUS) with its bytes, latency and failure in the session
 * (df_session_account), and an ENOSPC / EDQUOT failure counts one quota
 * refusal (df_session_quota_hit).  Requests refused at the edge never reach
 * the block layer and are not accounted.
 *
 * Thread safety: as the inner layer; the counters are atomics.
 */
#pragma once

#include "blk.h"
#include "sessions.h"

/* A new layer (refcount 1) over inner (its own ref), with inner's size,
 * read-only flag and capabilities.  ss is borrowed: it must outlive the
 * layer (unref the layer before df_session_end). */
df_blk *df_account_blk_new (df_blk *inner, DfSession *ss);
