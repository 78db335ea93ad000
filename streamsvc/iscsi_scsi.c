/* streamsvc: SBC-3 command set of LUN 1 over a df_blk (see iscsi.h).
 *
 * Every CDB is decoded and range-checked here, once; the block layer only
 * sees valid requests (blk.h contract).  One precise sense per failure:
 *   unknown opcode            ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE
 *   bad CDB field             ILLEGAL REQUEST / INVALID FIELD IN CDB
 *   LBA range past the end    ILLEGAL REQUEST / LBA OUT OF RANGE
 *   write to a read-only LU   DATA PROTECT / WRITE PROTECTED
 *   quota reached (ENOSPC)    DATA PROTECT / SPACE ALLOCATION FAILED WRITE
 *                             PROTECT
 *   I/O error                 MEDIUM ERROR / UNRECOVERED READ ERROR or
 *                             WRITE ERROR
 * Blocks are 512 bytes (BIOS int13 via iPXE); the 4 KiB cache block is the
 * optimal granularity the Block Limits VPD page advertises.
 */
#define G_LOG_DOMAIN "streamsvc-iscsi"

#include "iscsi_int.h"

#include <errno.h>
#include <string.h>

#include "common.h"

#define LBPPBE 3u /* 2^3 blocks per cache block: the optimal granularity */
#define MAX_WS_BLOCKS (1u << 22)       /* WRITE SAME: 2 GiB per command */
#define MAX_UNMAP_BLOCKS (1u << 20)
#define MAX_UNMAP_DESC 64u
#define WS_CHUNK (1024u * 1024)
#define ISCSI_MAX_CAW_BLOCKS 128u      /* VPD B0 byte 5 */

enum {
  KEY_NO_SENSE = 0x00, KEY_NOT_READY = 0x02, KEY_MEDIUM_ERROR = 0x03,
  KEY_ILLEGAL_REQUEST = 0x05, KEY_DATA_PROTECT = 0x07,
  KEY_MISCOMPARE = 0x0e,
};

/* Operation codes (SPC-4, SBC-3): used by the table below only. */
enum {
  OP_TEST_UNIT_READY = 0x00, OP_REQUEST_SENSE = 0x03, OP_READ6 = 0x08,
  OP_WRITE6 = 0x0a, OP_INQUIRY = 0x12, OP_RESERVE6 = 0x16,
  OP_RELEASE6 = 0x17, OP_MODE_SENSE6 = 0x1a, OP_START_STOP_UNIT = 0x1b,
  OP_PREVENT_ALLOW = 0x1e, OP_READ_CAPACITY10 = 0x25, OP_READ10 = 0x28,
  OP_WRITE10 = 0x2a, OP_WRITE_VERIFY10 = 0x2e, OP_VERIFY10 = 0x2f,
  OP_PREFETCH10 = 0x34, OP_SYNC_CACHE10 = 0x35, OP_WRITE_SAME10 = 0x41,
  OP_UNMAP = 0x42, OP_RESERVE10 = 0x56, OP_RELEASE10 = 0x57,
  OP_MODE_SENSE10 = 0x5a, OP_PR_IN = 0x5e, OP_PR_OUT = 0x5f,
  OP_READ16 = 0x88, OP_COMPARE_AND_WRITE = 0x89, OP_WRITE16 = 0x8a,
  OP_ORWRITE16 = 0x8b,
  OP_WRITE_VERIFY16 = 0x8e, OP_VERIFY16 = 0x8f, OP_PREFETCH16 = 0x90,
  OP_SYNC_CACHE16 = 0x91, OP_WRITE_SAME16 = 0x93,
  OP_SERVICE_ACTION_IN16 = 0x9e, OP_REPORT_LUNS = 0xa0,
  OP_MAINTENANCE_IN = 0xa3, OP_READ12 = 0xa8, OP_WRITE12 = 0xaa,
  OP_WRITE_VERIFY12 = 0xae, OP_VERIFY12 = 0xaf,
};

/* ---- helpers ------------------------------------------------------------ */

void
iscsi_scsi_sense (iscsi_scsi_result *r, uint8_t key, uint8_t asc,
                  uint8_t ascq)
{
  memset (r->sense, 0, sizeof r->sense);
  r->sense[0] = 0x70; /* current, fixed format */
  r->sense[2] = key;
  r->sense[7] = SCSI_SENSE_LEN - 8;
  r->sense[12] = asc;
  r->sense[13] = ascq;
  r->sense_len = SCSI_SENSE_LEN;
  r->status = SCSI_CHECK_CONDITION;
  r->data_len = 0;
}

static void
invalid_opcode (iscsi_scsi_result *r)
{
  iscsi_scsi_sense (r, KEY_ILLEGAL_REQUEST, 0x20, 0x00);
}

static void
invalid_field (iscsi_scsi_result *r)
{
  iscsi_scsi_sense (r, KEY_ILLEGAL_REQUEST, 0x24, 0x00);
}

/* INVALID FIELD IN CDB with the sense-key specific field pointer (SPC-4
 * 4.5.2.4.2): the CDB byte and the highest bit of the bad field. */
static void
invalid_field_at (iscsi_scsi_result *r, uint16_t byte, uint8_t bit)
{
  invalid_field (r);
  r->sense[15] = (uint8_t) (0x80 | 0x40 | 0x08 | (bit & 7)); /* SKSV C/D BPV */
  df_put_be16 (r->sense + 16, byte);
}

static void
lba_out_of_range (iscsi_scsi_result *r)
{
  iscsi_scsi_sense (r, KEY_ILLEGAL_REQUEST, 0x21, 0x00);
}

static void
write_protected (iscsi_scsi_result *r)
{
  iscsi_scsi_sense (r, KEY_DATA_PROTECT, 0x27, 0x00);
}

static uint64_t
num_blocks (const iscsi_lu *lu)
{
  return lu->blk->size / ISCSI_BLOCK;
}

/* Block-layer failure -> sense (quota is a DATA PROTECT condition; the
 * accounting layer under lu->blk counted it). */
static void
io_failed (iscsi_lu *lu, iscsi_scsi_result *r, int errnum, bool write)
{
  (void) lu;
  if (errnum == ENOSPC)
    iscsi_scsi_sense (r, KEY_DATA_PROTECT, 0x27, 0x07);
  else if (errnum == EROFS) /* the read-only layer (blk_readonly.h) */
    write_protected (r);
  else if (write)
    iscsi_scsi_sense (r, KEY_MEDIUM_ERROR, 0x0c, 0x00);
  else
    iscsi_scsi_sense (r, KEY_MEDIUM_ERROR, 0x11, 0x00);
}

/* lba + n within the medium (n may be 0: then lba <= end). */
static bool
range_ok (const iscsi_lu *lu, uint64_t lba, uint64_t n)
{
  uint64_t end = num_blocks (lu);

  return lba <= end && n <= end - lba;
}

static void
copy_out (iscsi_scsi_result *r, uint8_t *din, uint32_t din_cap,
          const uint8_t *src, uint32_t len, uint32_t alloc)
{
  uint32_t n = MIN (MIN (len, alloc), din_cap);

  memcpy (din, src, n);
  r->data_len = n;
}

/* ---- the request, decoded at the edge ------------------------------------ */

/* What a handler gets: the CDB, the data buffers and, for CMD_LBA rows,
 * the LBA range, already checked against the medium. */
typedef struct {
  const uint8_t *cdb;
  const uint8_t *dout;
  uint32_t dout_len;
  uint8_t *din;
  uint32_t din_cap;
  uint64_t lba;
  uint32_t blocks;
  bool fua;
  bool defer_flush; /* iscsi_scsi_exec_deferred: a flush is r->flush */
} scsi_req;

typedef void (*scsi_exec_fn) (iscsi_lu *lu, const scsi_req *q,
                              iscsi_scsi_result *r);
typedef uint32_t (*scsi_plan_fn) (const uint8_t *cdb, const scsi_req *q);

/* Row flags. */
enum {
  CMD_LBA = 1 << 0,      /* LBA + transfer length where the CDB length
                            puts them; range checked before exec */
  CMD_PROTECT = 1 << 1,  /* RD/WR/VRPROTECT in cdb[1] 7:5 must be 0 */
  CMD_WRITES = 1 << 2,   /* changes the medium: refused on read-only LUs,
                            run under the LU's io lock */
  CMD_XFER = 1 << 3,     /* transfer length x block <= ISCSI_MAX_XFER */
  CMD_SA = 1 << 4,       /* one row per service action (cdb[1] 4:0) */
  CMD_SPC2_OK = 1 << 5,  /* allowed under another nexus's RESERVE(6) */
  CMD_NLB13 = 1 << 6,    /* COMPARE AND WRITE: blocks in cdb[13] only */
};

/* One row per supported command: the only place an opcode appears. */
typedef struct {
  uint8_t opcode;
  uint8_t sa;            /* CMD_SA rows */
  const char *name;
  uint8_t cdb_len;
  scsi_dir dir;
  uint8_t len_off, len_size; /* allocation / parameter list length field */
  scsi_plan_fn plan;     /* data length when not len_* nor CMD_LBA blocks */
  scsi_exec_fn exec;
  unsigned flags;
  uint8_t access;        /* ISCSI_PR_ALLOWED / READ / WRITE */
} scsi_cmd;

static void
decode_lba (const scsi_cmd *d, const uint8_t *cdb, scsi_req *q)
{
  switch (d->cdb_len)
    {
    case 6: /* 21-bit LBA, 0 blocks = 256 */
      q->lba = (uint64_t) (cdb[1] & 0x1f) << 16 | df_get_be16 (cdb + 2);
      q->blocks = cdb[4] ? cdb[4] : 256;
      return;
    case 10:
      q->lba = df_get_be32 (cdb + 2);
      q->blocks = df_get_be16 (cdb + 7);
      break;
    case 12:
      q->lba = df_get_be32 (cdb + 2);
      q->blocks = df_get_be32 (cdb + 6);
      break;
    default:
      q->lba = df_get_be64 (cdb + 2);
      q->blocks = (d->flags & CMD_NLB13) ? cdb[13] : df_get_be32 (cdb + 10);
      break;
    }
  q->fua = (cdb[1] & 0x08) != 0;
}

static uint32_t
block_bytes (uint64_t blocks)
{
  return (uint32_t) MIN (blocks * ISCSI_BLOCK, (uint64_t) UINT32_MAX);
}

/* VERIFY: data-out only with BYTCHK (01b: the blocks, 11b: one block). */
static uint32_t
plan_verify (const uint8_t *cdb, const scsi_req *q)
{
  int bytchk = (cdb[1] >> 1) & 3;

  return bytchk == 1 ? block_bytes (q->blocks)
         : bytchk == 3 ? ISCSI_BLOCK : 0;
}

/* WRITE SAME: one block, none with NDOB (16 only). */
static uint32_t
plan_write_same (const uint8_t *cdb, const scsi_req *q)
{
  (void) q;
  return cdb[0] == OP_WRITE_SAME16 && (cdb[1] & 1) ? 0 : ISCSI_BLOCK;
}

/* COMPARE AND WRITE: the verify blocks then the write blocks. */
static uint32_t
plan_compare_and_write (const uint8_t *cdb, const scsi_req *q)
{
  (void) cdb;
  return block_bytes (2u * q->blocks);
}

static uint32_t
plan_capacity10 (const uint8_t *cdb, const scsi_req *q)
{
  (void) cdb;
  (void) q;
  return 8;
}

/* ---- reads and writes --------------------------------------------------- */

static void
cmd_read (iscsi_lu *lu, const scsi_req *q, iscsi_scsi_result *r)
{
  uint32_t bytes = q->blocks * ISCSI_BLOCK;
  int errnum = 0;

  if (bytes == 0)
    return;
  g_assert (bytes <= q->din_cap);
  if (df_blk_pread (lu->blk, q->din, bytes, q->lba * ISCSI_BLOCK, &errnum)
      < 0)
    return io_failed (lu, r, errnum, false);
  r->data_len = bytes;
}

/* Write the whole blocks of data that came (EDTL shorter than the
 * transfer: the overflow residual tells the initiator). */
static bool
write_blocks (iscsi_lu *lu, const scsi_req *q, iscsi_scsi_result *r)
{
  uint32_t bytes = MIN (q->blocks, q->dout_len / ISCSI_BLOCK) * ISCSI_BLOCK;
  int errnum = 0;

  if (bytes == 0)
    return true;
  /* Deferred, FUA is the write then a flush of the LU: the same promise
   * (stable before GOOD), the flush run by the caller off its loop. */
  bool defer = q->fua && q->defer_flush && lu->blk->can_flush;
  if (df_blk_pwrite (lu->blk, q->dout, bytes, q->lba * ISCSI_BLOCK,
                     q->fua && !defer ? DF_BLK_FUA : 0, &errnum) < 0)
    {
      io_failed (lu, r, errnum, true);
      return false;
    }
  r->flush = defer;
  return true;
}

static void
cmd_write (iscsi_lu *lu, const scsi_req *q, iscsi_scsi_result *r)
{
  write_blocks (lu, q, r);
}

/* WRITE AND VERIFY: what was written reads back (the block layer
 * returns only once the write is done), so BYTCHK has nothing more to
 * compare; the write is made stable as a verification against the
 * medium implies. */
static void
cmd_write_verify (iscsi_lu *lu, const scsi_req *q, iscsi_scsi_result *r)
{
  scsi_req w = *q;

  w.fua = true;
  write_blocks (lu, &w, r);
}

/* MISCOMPARE DURING VERIFY OPERATION, the INFORMATION field holding the
 * offset in the data-out of the first byte that differs. */
static void
miscompare (iscsi_scsi_result *r, uint32_t offset)
{
  iscsi_scsi_sense (r, KEY_MISCOMPARE, 0x1d, 0x00);
  r->sense[0] |= 0x80; /* VALID */
  df_put_be32 (r->sense + 3, offset);
}

static uint32_t
first_difference (const uint8_t *a, const uint8_t *b, uint32_t n)
{
  uint32_t i = 0;

  while (i < n && a[i] == b[i])
    i++;
  return i;
}

/* Compare blocks at lba with want (blocks x 512 bytes, or one block
 * repeated when one_block), in 64 KiB steps.  false + sense in r when
 * they differ or the read fails. */
static bool
compare_medium (iscsi_lu *lu, uint64_t lba, uint32_t blocks,
                const uint8_t *want, bool one_block, iscsi_scsi_result *r)
{
  g_autofree uint8_t *buf = g_malloc (64 * 1024);
  uint64_t off = lba * ISCSI_BLOCK;
  uint32_t total = blocks * ISCSI_BLOCK, done = 0;

  while (done < total)
    {
      uint32_t n = MIN (64u * 1024, total - done);
      int errnum = 0;

      if (df_blk_pread (lu->blk, buf, n, off + done, &errnum) < 0)
        {
          io_failed (lu, r, errnum, false);
          return false;
        }
      for (uint32_t i = 0; i < n; i += ISCSI_BLOCK)
        {
          const uint8_t *w = one_block ? want : want + done + i;
          uint32_t d = first_difference (buf + i, w, ISCSI_BLOCK);
          if (d < ISCSI_BLOCK)
            {
              miscompare (r, (one_block ? 0 : done + i) + d);
              return false;
            }
        }
      done += n;
    }
  return true;
}

static void
cmd_verify (iscsi_lu *lu, const scsi_req *q, iscsi_scsi_result *r)
{
  int bytchk = (q->cdb[1] >> 1) & 3;

  if (bytchk == 2)
    return invalid_field (r);
  if (bytchk == 0 || q->blocks == 0)
    return; /* medium verification: our media always read back */
  if (q->dout_len < (bytchk == 1 ? q->blocks * ISCSI_BLOCK : ISCSI_BLOCK))
    return invalid_field (r);
  compare_medium (lu, q->lba, q->blocks, q->dout, bytchk == 3, r);
}

/* COMPARE AND WRITE (SBC-3 5.2): atomic against every other write of the
 * LU (the dispatcher holds the io lock around the whole command). */
static void
cmd_compare_and_write (iscsi_lu *lu, const scsi_req *q, iscsi_scsi_result *r)
{
  uint32_t bytes = q->blocks * ISCSI_BLOCK;
  scsi_req w = *q;

  if (q->blocks > ISCSI_MAX_CAW_BLOCKS)
    return invalid_field (r);
  if (q->dout_len != 2 * bytes)
    return invalid_field (r); /* data-out must be exactly 2 x NLB blocks */
  if (q->blocks == 0)
    return;
  if (!compare_medium (lu, q->lba, q->blocks, q->dout, false, r))
    return;
  w.dout = q->dout + bytes;
  w.dout_len = bytes;
  write_blocks (lu, &w, r);
}

/* ORWRITE(16) (SBC-3 5.11): the medium becomes medium OR data-out, under
 * the io lock like every write, so that it is atomic against the other
 * iSCSI writes of the LU. */
static void
cmd_orwrite (iscsi_lu *lu, const scsi_req *q, iscsi_scsi_result *r)
{
  uint32_t bytes = MIN (q->blocks, q->dout_len / ISCSI_BLOCK) * ISCSI_BLOCK;
  g_autofree uint8_t *buf = NULL;
  scsi_req w = *q;
  int errnum = 0;

  if (bytes == 0)
    return;
  buf = g_malloc (bytes);
  if (df_blk_pread (lu->blk, buf, bytes, q->lba * ISCSI_BLOCK, &errnum) < 0)
    return io_failed (lu, r, errnum, false);
  for (uint32_t i = 0; i < bytes; i++)
    buf[i] |= q->dout[i];
  w.dout = buf;
  w.dout_len = bytes;
  write_blocks (lu, &w, r);
}

/* PRE-FETCH: the range was checked; our layers have no read-ahead to
 * start, so there is nothing more to do (GOOD, not CONDITION MET). */
static void
cmd_prefetch (iscsi_lu *lu, const scsi_req *q, iscsi_scsi_result *r)
{
  (void) lu;
  (void) q;
  (void) r;
}

static void
cmd_sync (iscsi_lu *lu, const scsi_req *q, iscsi_scsi_result *r)
{
  int errnum = 0;

  /* IMMED or not, return only once data is stable (BAD-INPUTS.md). */
  if (lu->readonly || !lu->blk->can_flush)
    return;
  if (q->defer_flush)
    r->flush = true;
  else if (df_blk_flush (lu->blk, &errnum) < 0)
    io_failed (lu, r, errnum, true);
}

/* Make lba..+n read back zero, in requests of at most DF_BLK_MAX_REQUEST
 * bytes: without dealloc zeroes (the device must can_zero); with dealloc
 * deallocates (zero that may trim where the device can zero, else trim).
 * n > 0, range checked.  On a failed request sets r (io_failed) and
 * returns false. */
static bool
clear_range (iscsi_lu *lu, uint64_t lba, uint64_t n, bool dealloc,
             iscsi_scsi_result *r)
{
  uint64_t off = lba * ISCSI_BLOCK, left = n * ISCSI_BLOCK;

  while (left > 0)
    {
      uint32_t chunk = (uint32_t) MIN (left, (uint64_t) DF_BLK_MAX_REQUEST);
      int errnum = 0;
      int rc = !dealloc
                   ? df_blk_zero (lu->blk, chunk, off, 0, &errnum)
                 : lu->blk->can_zero
                   ? df_blk_zero (lu->blk, chunk, off, DF_BLK_MAY_TRIM,
                                  &errnum)
                   : df_blk_trim (lu->blk, chunk, off, 0, &errnum);

      if (rc < 0)
        {
          io_failed (lu, r, errnum, true);
          return false;
        }
      off += chunk;
      left -= chunk;
    }
  return true;
}

/* Deallocate (reads back zero) lba..+n; n > 0, range checked. */
static bool
unmap_range (iscsi_lu *lu, uint64_t lba, uint64_t n, iscsi_scsi_result *r)
{
  return clear_range (lu, lba, n, true, r);
}

static void
cmd_unmap (iscsi_lu *lu, const scsi_req *q, iscsi_scsi_result *r)
{
  const uint8_t *p = q->dout;
  uint32_t len = q->dout_len;
  uint32_t plen = df_get_be16 (q->cdb + 7);
  uint32_t dlen;

  if (q->cdb[1] & 0x01) /* ANCHOR */
    return invalid_field (r);
  if (plen == 0)
    return;
  if (plen < 8 || len < plen)
    return iscsi_scsi_sense (r, KEY_ILLEGAL_REQUEST, 0x1a, 0x00);
  dlen = df_get_be16 (p + 2);
  if (dlen % 16 != 0 || 8 + dlen > plen)
    return iscsi_scsi_sense (r, KEY_ILLEGAL_REQUEST, 0x26, 0x00);
  if (dlen / 16 > MAX_UNMAP_DESC)
    return iscsi_scsi_sense (r, KEY_ILLEGAL_REQUEST, 0x26, 0x00);
  /* Validate every descriptor before changing anything. */
  for (uint32_t o = 8; o < 8 + dlen; o += 16)
    {
      uint64_t lba = df_get_be64 (p + o);
      uint32_t n = df_get_be32 (p + o + 8);
      if (!range_ok (lu, lba, n))
        return lba_out_of_range (r);
      if (n > MAX_UNMAP_BLOCKS)
        return iscsi_scsi_sense (r, KEY_ILLEGAL_REQUEST, 0x26, 0x00);
    }
  for (uint32_t o = 8; o < 8 + dlen; o += 16)
    {
      uint32_t n = df_get_be32 (p + o + 8);
      if (n > 0 && !unmap_range (lu, df_get_be64 (p + o), n, r))
        return;
    }
}

static bool
all_zero (const uint8_t *p, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (p[i])
      return false;
  return true;
}

/* Write the one-block pattern over lba..+n. */
static bool
write_pattern (iscsi_lu *lu, const uint8_t *pat, uint64_t lba, uint64_t n,
               iscsi_scsi_result *r)
{
  uint32_t chunk_blocks = WS_CHUNK / ISCSI_BLOCK;
  g_autofree uint8_t *buf = g_malloc (WS_CHUNK);

  for (uint32_t i = 0; i < chunk_blocks; i++)
    memcpy (buf + (size_t) i * ISCSI_BLOCK, pat, ISCSI_BLOCK);
  while (n > 0)
    {
      uint32_t nb = (uint32_t) MIN (n, (uint64_t) chunk_blocks);
      int errnum = 0;
      int rc = df_blk_pwrite (lu->blk, buf, nb * ISCSI_BLOCK,
                              lba * ISCSI_BLOCK, 0, &errnum);

      if (rc < 0)
        {
          io_failed (lu, r, errnum, true);
          return false;
        }
      lba += nb;
      n -= nb;
    }
  return true;
}

static bool
zero_range (iscsi_lu *lu, uint64_t lba, uint64_t n, iscsi_scsi_result *r)
{
  static const uint8_t zeros[ISCSI_BLOCK];

  if (!lu->blk->can_zero)
    return write_pattern (lu, zeros, lba, n, r);
  return clear_range (lu, lba, n, false, r);
}

static void
cmd_write_same (iscsi_lu *lu, const scsi_req *q, iscsi_scsi_result *r)
{
  const uint8_t *cdb = q->cdb;
  bool unmap = (cdb[1] & 0x08) != 0;
  bool ndob = cdb[0] == OP_WRITE_SAME16 && (cdb[1] & 0x01);
  static const uint8_t zeros[ISCSI_BLOCK];
  const uint8_t *pat = ndob ? zeros : q->dout;

  if (cdb[1] & 0x10) /* ANCHOR */
    return invalid_field (r);
  if (q->blocks == 0 || q->blocks > MAX_WS_BLOCKS) /* WSNZ=1 in VPD B0 */
    return invalid_field (r);
  if (!ndob && q->dout_len != ISCSI_BLOCK)
    return invalid_field (r); /* the data-out is exactly one block */
  if (all_zero (pat, ISCSI_BLOCK))
    {
      if (unmap)
        unmap_range (lu, q->lba, q->blocks, r);
      else
        zero_range (lu, q->lba, q->blocks, r);
      return;
    }
  write_pattern (lu, pat, q->lba, q->blocks, r);
}

/* ---- INQUIRY -------------------------------------------------------------- */

static void
inquiry_standard (iscsi_lu *lu, uint8_t *b)
{
  static const uint16_t versions[] = { 0x00a0 /* SAM-5 */, 0x0960 /* iSCSI */,
                                       0x0460 /* SPC-4 */,
                                       0x04c0 /* SBC-3 */ };

  memset (b, 0, 96);
  b[0] = 0x00;          /* direct access block device */
  b[2] = 0x06;          /* SPC-4 */
  b[3] = 0x12;          /* HISUP, response data format 2 */
  b[4] = 96 - 5;
  b[7] = 0x02;          /* CMDQUE */
  memcpy (b + 8, "DISKFARM", 8);
  memcpy (b + 16, lu->readonly ? "vDisk (ro)      " : "device cache    ",
          16);
  memcpy (b + 32, "0001", 4);
  for (guint i = 0; i < G_N_ELEMENTS (versions); i++)
    df_put_be16 (b + 58 + 2 * i, versions[i]);
}

static uint32_t
vpd_supported (uint8_t *b)
{
  static const uint8_t pages[] = { 0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2 };

  b[1] = 0x00;
  df_put_be16 (b + 2, sizeof pages);
  memcpy (b + 4, pages, sizeof pages);
  return 4 + sizeof pages;
}

static uint32_t
vpd_serial (const iscsi_lu *lu, uint8_t *b)
{
  size_t n = MIN (strlen (lu->serial), 200u);

  b[1] = 0x80;
  df_put_be16 (b + 2, (uint16_t) n);
  memcpy (b + 4, lu->serial, n);
  return (uint32_t) (4 + n);
}

/* Designator header: code set, association/type, payload. */
static uint32_t
designator (uint8_t *d, uint8_t codeset, uint8_t piv_assoc_type,
            const void *payload, uint32_t len)
{
  d[0] = codeset;
  d[1] = piv_assoc_type;
  d[2] = 0;
  d[3] = (uint8_t) len;
  memcpy (d + 4, payload, len);
  return 4 + len;
}

static uint32_t
vpd_device_id (const iscsi_lu *lu, uint8_t *b)
{
  g_autofree char *vid = g_strdup_printf ("DISKFARM%.200s", lu->serial);
  g_autofree char *name = NULL;
  uint8_t naa[16];
  uint8_t rtpi[4] = { 0, 0, 0, 1 };
  g_autoptr (GChecksum) ck = g_checksum_new (G_CHECKSUM_SHA256);
  uint8_t digest[32];
  gsize dlen = sizeof digest;
  uint32_t o = 4;
  size_t nlen;

  g_checksum_update (ck, (const guchar *) lu->target, -1);
  g_checksum_get_digest (ck, digest, &dlen);
  /* NAA 6 (IEEE registered extended), locally derived from the IQN. */
  memcpy (naa, digest, sizeof naa);
  naa[0] = 0x60 | (naa[0] & 0x0f);
  /* SCSI name string: NUL-terminated, padded to a multiple of 4. */
  nlen = MIN (strlen (lu->target), 220u);
  name = g_malloc0 ((nlen + 4) & ~3u);
  memcpy (name, lu->target, nlen);
  b[1] = 0x83;
  o += designator (b + o, 0x02, 0x01, vid, (uint32_t) strlen (vid));
  o += designator (b + o, 0x01, 0x03, naa, sizeof naa);
  o += designator (b + o, 0x53, 0x94, rtpi, sizeof rtpi); /* iSCSI, port */
  o += designator (b + o, 0x53, 0xa8, name, (uint32_t) ((nlen + 4) & ~3u));
  df_put_be16 (b + 2, (uint16_t) (o - 4));
  return o;
}

static uint32_t
vpd_block_limits (const iscsi_lu *lu, uint8_t *b)
{
  b[1] = 0xb0;
  df_put_be16 (b + 2, 0x3c);
  b[4] = 0x01;                                   /* WSNZ */
  b[5] = ISCSI_MAX_CAW_BLOCKS;  /* maximum COMPARE AND WRITE length */
  df_put_be16 (b + 6, 1u << LBPPBE);             /* opt. granularity */
  df_put_be32 (b + 8, ISCSI_MAX_XFER / ISCSI_BLOCK);
  df_put_be32 (b + 12, 128 * 1024 / ISCSI_BLOCK); /* optimal transfer */
  if (!lu->readonly) /* no UNMAP (LBPU=0): counts must be 0 */
    {
      df_put_be32 (b + 20, MAX_UNMAP_BLOCKS);
      df_put_be32 (b + 24, MAX_UNMAP_DESC);
      df_put_be32 (b + 28, 1u << LBPPBE);        /* unmap granularity */
      df_put_be64 (b + 36, MAX_WS_BLOCKS);
    }
  return 4 + 0x3c;
}

static uint32_t
vpd_characteristics (uint8_t *b)
{
  b[1] = 0xb1;
  df_put_be16 (b + 2, 0x3c);
  df_put_be16 (b + 4, 1); /* non-rotating medium */
  return 4 + 0x3c;
}

static uint32_t
vpd_provisioning (const iscsi_lu *lu, uint8_t *b)
{
  b[1] = 0xb2;
  df_put_be16 (b + 2, 4);
  if (!lu->readonly)
    {
      b[5] = 0x80 | 0x40 | 0x20 | 0x04; /* LBPU LBPWS LBPWS10 LBPRZ */
      b[6] = 0x02;                      /* thin provisioned */
    }
  return 8;
}

static void
cmd_inquiry (iscsi_lu *lu, const scsi_req *q, iscsi_scsi_result *r)
{
  const uint8_t *cdb = q->cdb;
  uint8_t *din = q->din;
  uint32_t din_cap = q->din_cap;
  uint8_t b[512] = { 0 };
  uint32_t alloc = df_get_be16 (cdb + 3), len;

  if (!(cdb[1] & 0x01))
    {
      if (cdb[2] != 0)
        return invalid_field (r);
      inquiry_standard (lu, b);
      return copy_out (r, din, din_cap, b, 96, alloc);
    }
  switch (cdb[2])
    {
    case 0x00: len = vpd_supported (b); break;
    case 0x80: len = vpd_serial (lu, b); break;
    case 0x83: len = vpd_device_id (lu, b); break;
    case 0xb0: len = vpd_block_limits (lu, b); break;
    case 0xb1: len = vpd_characteristics (b); break;
    case 0xb2: len = vpd_provisioning (lu, b); break;
    default: return invalid_field (r);
    }
  copy_out (r, din, din_cap, b, len, alloc);
}

/* ---- capacity, LUNs, mode pages, sense ------------------------------------ */

static void
cmd_read_capacity10 (iscsi_lu *lu, const scsi_req *q, iscsi_scsi_result *r)
{
  const uint8_t *cdb = q->cdb;
  uint8_t b[8];
  uint64_t last = num_blocks (lu) - 1;

  if (!(cdb[8] & 0x01) && df_get_be32 (cdb + 2) != 0)
    return invalid_field (r); /* LBA without PMI */
  df_put_be32 (b, last > 0xffffffffu ? 0xffffffffu : (uint32_t) last);
  df_put_be32 (b + 4, ISCSI_BLOCK);
  copy_out (r, q->din, q->din_cap, b, 8, 8);
}

static void
cmd_read_capacity16 (iscsi_lu *lu, const scsi_req *q, iscsi_scsi_result *r)
{
  uint8_t b[32] = { 0 };

  df_put_be64 (b, num_blocks (lu) - 1);
  df_put_be32 (b + 8, ISCSI_BLOCK);
  /* LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT 0: every 512-byte block
   * can be unmapped and reported on its own (GET LBA STATUS, UNMAP);
   * the 4 KiB cache block is advertised as the optimal granularities of
   * the Block Limits VPD page, which is what Linux takes for io_min. */
  b[13] = 0;
  if (!lu->readonly)
    b[14] = 0x80 | 0x40; /* LBPME, LBPRZ */
  copy_out (r, q->din, q->din_cap, b, sizeof b, df_get_be32 (q->cdb + 10));
}

static void
cmd_report_luns (iscsi_lu *lu, const scsi_req *q, iscsi_scsi_result *r)
{
  const uint8_t *cdb = q->cdb;
  uint8_t b[16] = { 0 };
  uint32_t alloc = df_get_be32 (cdb + 6);

  (void) lu;
  if (cdb[2] > 0x02 && cdb[2] != 0x10 && cdb[2] != 0x11 && cdb[2] != 0x12)
    return invalid_field (r);
  if (alloc < 16)
    return invalid_field (r); /* SPC-4: allocation length below 16 */
  df_put_be32 (b, 8);
  b[9] = ISCSI_LUN; /* peripheral addressing, LUN 1 */
  copy_out (r, q->din, q->din_cap, b, sizeof b, alloc);
}

/* Append one mode page (current or changeable values) at b+o. */
static uint32_t
mode_page (const iscsi_lu *lu, uint8_t page, bool changeable, uint8_t *b)
{
  switch (page)
    {
    case 0x08: /* caching: WCE (our caches may be volatile) */
      b[0] = 0x08;
      b[1] = 0x12;
      if (!changeable && !lu->readonly)
        b[2] = 0x04;
      return 20;
    case 0x0a: /* control: fixed-format sense, no SWP */
      b[0] = 0x0a;
      b[1] = 0x0a;
      if (!changeable)
        df_put_be16 (b + 10, 0xffff); /* busy timeout: unlimited */
      return 12;
    case 0x1c: /* informational exceptions: none reported */
      b[0] = 0x1c;
      b[1] = 0x0a;
      return 12;
    default:
      return 0;
    }
}

static void
cmd_mode_sense (iscsi_lu *lu, const scsi_req *q, iscsi_scsi_result *r)
{
  const uint8_t *cdb = q->cdb;
  bool ms10 = cdb[0] == 0x5a;
  bool dbd = (cdb[1] & 0x08) != 0;
  uint8_t pc = cdb[2] >> 6, page = cdb[2] & 0x3f, sub = cdb[3];
  uint32_t alloc = ms10 ? df_get_be16 (cdb + 7) : cdb[4];
  uint32_t hdr = ms10 ? 8 : 4, o;
  uint8_t b[256] = { 0 };
  uint64_t nb = num_blocks (lu);

  if (pc == 3)
    return iscsi_scsi_sense (r, KEY_ILLEGAL_REQUEST, 0x39, 0x00);
  if (sub != 0 && !(page == 0x3f && sub == 0xff))
    return invalid_field (r);
  o = hdr;
  if (!dbd)
    {
      df_put_be32 (b + o, nb > 0xffffff ? 0xffffff : (uint32_t) nb);
      b[o] = 0;
      df_put_be32 (b + o + 4, ISCSI_BLOCK);
      o += 8;
    }
  if (page == 0x3f)
    {
      o += mode_page (lu, 0x08, pc == 1, b + o);
      o += mode_page (lu, 0x0a, pc == 1, b + o);
      o += mode_page (lu, 0x1c, pc == 1, b + o);
    }
  else
    {
      uint32_t n = mode_page (lu, page, pc == 1, b + o);
      if (n == 0)
        return invalid_field (r);
      o += n;
    }
  if (ms10)
    {
      df_put_be16 (b, (uint16_t) (o - 2));
      b[3] = (lu->readonly ? 0x80 : 0) | 0x10; /* WP, DPOFUA */
      b[7] = dbd ? 0 : 8;
    }
  else
    {
      b[0] = (uint8_t) (o - 1);
      b[2] = (lu->readonly ? 0x80 : 0) | 0x10;
      b[3] = dbd ? 0 : 8;
    }
  copy_out (r, q->din, q->din_cap, b, o, alloc);
}

static void
cmd_request_sense (iscsi_lu *lu, const scsi_req *q, iscsi_scsi_result *r)
{
  const uint8_t *cdb = q->cdb;
  uint8_t b[SCSI_SENSE_LEN] = { 0x70, 0, KEY_NO_SENSE, 0, 0, 0, 0,
                                SCSI_SENSE_LEN - 8 };

  if (cdb[1] & 0x01) /* DESC: descriptor format not supported */
    return invalid_field (r);
  if (lu->have_sense)
    memcpy (b, lu->last_sense, sizeof b);
  lu->have_sense = false;
  copy_out (r, q->din, q->din_cap, b, sizeof b, cdb[4]);
}

/* ---- GET LBA STATUS ------------------------------------------------------- */

#define LBA_STATUS_MAX_DESC 64u

typedef struct {
  uint8_t *b;           /* descriptors start here */
  uint32_t n, max;      /* descriptors written / room */
} lba_status;

/* One extent -> a descriptor, merged with the previous one when the
 * provisioning status is the same (SBC-3 5.7: mapped 0, deallocated 1). */
static int
lba_status_extent (void *opaque, uint64_t offset, uint64_t length,
                   uint32_t flags)
{
  lba_status *st = opaque;
  uint8_t status = (flags & DF_EXTENT_HOLE) ? 1 : 0;
  uint64_t lba = offset / ISCSI_BLOCK;
  uint64_t end = (offset + length + ISCSI_BLOCK - 1) / ISCSI_BLOCK;
  uint8_t *last = st->n ? st->b + 16 * (st->n - 1) : NULL;

  if (last != NULL && last[12] == status
      && df_get_be64 (last) + df_get_be32 (last + 8) == lba)
    {
      df_put_be32 (last + 8, (uint32_t) (end - df_get_be64 (last)));
      return 0;
    }
  if (last != NULL && df_get_be64 (last) + df_get_be32 (last + 8) > lba)
    lba = df_get_be64 (last) + df_get_be32 (last + 8); /* sub-block extent */
  if (end <= lba)
    return 0;
  if (st->n == st->max)
    return -1;
  last = st->b + 16 * st->n++;
  memset (last, 0, 16);
  df_put_be64 (last, lba);
  df_put_be32 (last + 8, (uint32_t) (end - lba));
  last[12] = status;
  return 0;
}

static void
cmd_get_lba_status (iscsi_lu *lu, const scsi_req *q, iscsi_scsi_result *r)
{
  uint64_t lba = df_get_be64 (q->cdb + 2), nb = num_blocks (lu);
  uint32_t alloc = df_get_be32 (q->cdb + 10);
  uint8_t b[8 + 16 * LBA_STATUS_MAX_DESC] = { 0 };
  lba_status st = { b + 8, 0, LBA_STATUS_MAX_DESC };
  uint64_t left;
  int errnum = 0;

  if (lba >= nb)
    return lba_out_of_range (r);
  if (alloc < 24) /* SBC-3: room for the header and one descriptor */
    st.max = 1;
  left = MIN ((nb - lba) * ISCSI_BLOCK, (uint64_t) DF_BLK_MAX_REQUEST);
  if (df_blk_extents (lu->blk, (uint32_t) left, lba * ISCSI_BLOCK,
                      lba_status_extent, &st, &errnum) < 0)
    return io_failed (lu, r, errnum, false);
  df_put_be32 (b, 4 + 16 * st.n);
  copy_out (r, q->din, q->din_cap, b, 8 + 16 * st.n, alloc);
}

/* ---- reservations (state in iscsi_pr.c) ------------------------------------ */

static void
cmd_reserve (iscsi_lu *lu, const scsi_req *q, iscsi_scsi_result *r)
{
  /* (10): 3RDPTY, LONGID and a parameter list are not supported */
  if (q->cdb[0] == OP_RESERVE10 && (q->cdb[1] & 0x12))
    return invalid_field (r);
  iscsi_lu_reserve (lu, true, r);
}

static void
cmd_release (iscsi_lu *lu, const scsi_req *q, iscsi_scsi_result *r)
{
  if (q->cdb[0] == OP_RELEASE10 && (q->cdb[1] & 0x12))
    return invalid_field (r);
  iscsi_lu_reserve (lu, false, r);
}

static void
cmd_pr_in (iscsi_lu *lu, const scsi_req *q, iscsi_scsi_result *r)
{
  iscsi_lu_pr_in (lu, q->cdb, q->din, q->din_cap, r);
}

static void
cmd_pr_out (iscsi_lu *lu, const scsi_req *q, iscsi_scsi_result *r)
{
  iscsi_lu_pr_out (lu, q->cdb, q->dout, q->dout_len, r);
}

/* ---- small commands -------------------------------------------------------- */

static void
cmd_nothing (iscsi_lu *lu, const scsi_req *q, iscsi_scsi_result *r)
{
  (void) lu;
  (void) q;
  (void) r;
}

static void
cmd_prevent_allow (iscsi_lu *lu, const scsi_req *q, iscsi_scsi_result *r)
{
  (void) lu;
  if ((q->cdb[4] & 0x03) > 1)
    invalid_field (r);
}

static void cmd_report_opcodes (iscsi_lu *lu, const scsi_req *q,
                                iscsi_scsi_result *r);

/* ---- the command table ----------------------------------------------------- */

#define RD SCSI_DIR_READ
#define WR SCSI_DIR_WRITE
#define NO SCSI_DIR_NONE
#define A_OK ISCSI_PR_ALLOWED
#define A_RD ISCSI_PR_READ
#define A_WR ISCSI_PR_WRITE
#define RW_IN (CMD_LBA | CMD_PROTECT | CMD_XFER)
#define RW_OUT (CMD_LBA | CMD_PROTECT | CMD_XFER | CMD_WRITES)

/* opcode, SA, name, CDB length, data direction, length field (offset,
 * size), plan, exec, flags, access class. */
static const scsi_cmd scsi_cmds[] = {
  { OP_TEST_UNIT_READY, 0, "TEST UNIT READY", 6, NO, 0, 0, NULL,
    cmd_nothing, 0, A_OK },
  { OP_REQUEST_SENSE, 0, "REQUEST SENSE", 6, RD, 4, 1, NULL,
    cmd_request_sense, CMD_SPC2_OK, A_OK },
  { OP_READ6, 0, "READ(6)", 6, RD, 0, 0, NULL, cmd_read,
    CMD_LBA | CMD_XFER, A_RD },
  { OP_WRITE6, 0, "WRITE(6)", 6, WR, 0, 0, NULL, cmd_write,
    CMD_LBA | CMD_XFER | CMD_WRITES, A_WR },
  { OP_INQUIRY, 0, "INQUIRY", 6, RD, 3, 2, NULL, cmd_inquiry,
    CMD_SPC2_OK, A_OK },
  { OP_RESERVE6, 0, "RESERVE(6)", 6, NO, 0, 0, NULL, cmd_reserve,
    CMD_SPC2_OK, A_OK },
  { OP_RELEASE6, 0, "RELEASE(6)", 6, NO, 0, 0, NULL, cmd_release,
    CMD_SPC2_OK, A_OK },
  { OP_MODE_SENSE6, 0, "MODE SENSE(6)", 6, RD, 4, 1, NULL, cmd_mode_sense,
    0, A_RD },
  { OP_START_STOP_UNIT, 0, "START STOP UNIT", 6, NO, 0, 0, NULL,
    cmd_nothing, 0, A_OK },
  { OP_PREVENT_ALLOW, 0, "PREVENT ALLOW MEDIUM REMOVAL", 6, NO, 0, 0, NULL,
    cmd_prevent_allow, 0, A_OK },
  { OP_READ_CAPACITY10, 0, "READ CAPACITY(10)", 10, RD, 0, 0,
    plan_capacity10, cmd_read_capacity10, 0, A_OK },
  { OP_READ10, 0, "READ(10)", 10, RD, 0, 0, NULL, cmd_read, RW_IN, A_RD },
  { OP_WRITE10, 0, "WRITE(10)", 10, WR, 0, 0, NULL, cmd_write, RW_OUT,
    A_WR },
  { OP_WRITE_VERIFY10, 0, "WRITE AND VERIFY(10)", 10, WR, 0, 0, NULL,
    cmd_write_verify, RW_OUT, A_WR },
  { OP_VERIFY10, 0, "VERIFY(10)", 10, WR, 0, 0, plan_verify, cmd_verify,
    RW_IN, A_RD },
  { OP_PREFETCH10, 0, "PRE-FETCH(10)", 10, NO, 0, 0, NULL, cmd_prefetch,
    CMD_LBA, A_RD },
  { OP_SYNC_CACHE10, 0, "SYNCHRONIZE CACHE(10)", 10, NO, 0, 0, NULL,
    cmd_sync, CMD_LBA, A_WR },
  { OP_WRITE_SAME10, 0, "WRITE SAME(10)", 10, WR, 0, 0, plan_write_same,
    cmd_write_same, CMD_LBA | CMD_PROTECT | CMD_WRITES, A_WR },
  { OP_UNMAP, 0, "UNMAP", 10, WR, 7, 2, NULL, cmd_unmap, CMD_WRITES, A_WR },
  { OP_RESERVE10, 0, "RESERVE(10)", 10, NO, 0, 0, NULL, cmd_reserve,
    CMD_SPC2_OK, A_OK },
  { OP_RELEASE10, 0, "RELEASE(10)", 10, NO, 0, 0, NULL, cmd_release,
    CMD_SPC2_OK, A_OK },
  { OP_MODE_SENSE10, 0, "MODE SENSE(10)", 10, RD, 7, 2, NULL,
    cmd_mode_sense, 0, A_RD },
  { OP_PR_IN, 0x00, "PERSISTENT RESERVE IN / READ KEYS", 10, RD, 7, 2, NULL,
    cmd_pr_in, CMD_SA, A_OK },
  { OP_PR_IN, 0x01, "PERSISTENT RESERVE IN / READ RESERVATION", 10, RD, 7,
    2, NULL, cmd_pr_in, CMD_SA, A_OK },
  { OP_PR_IN, 0x02, "PERSISTENT RESERVE IN / REPORT CAPABILITIES", 10, RD,
    7, 2, NULL, cmd_pr_in, CMD_SA, A_OK },
  { OP_PR_IN, 0x03, "PERSISTENT RESERVE IN / READ FULL STATUS", 10, RD, 7,
    2, NULL, cmd_pr_in, CMD_SA, A_OK },
  { OP_PR_OUT, 0x00, "PERSISTENT RESERVE OUT / REGISTER", 10, WR, 5, 4,
    NULL, cmd_pr_out, CMD_SA, A_OK },
  { OP_PR_OUT, 0x01, "PERSISTENT RESERVE OUT / RESERVE", 10, WR, 5, 4, NULL,
    cmd_pr_out, CMD_SA, A_OK },
  { OP_PR_OUT, 0x02, "PERSISTENT RESERVE OUT / RELEASE", 10, WR, 5, 4, NULL,
    cmd_pr_out, CMD_SA, A_OK },
  { OP_PR_OUT, 0x03, "PERSISTENT RESERVE OUT / CLEAR", 10, WR, 5, 4, NULL,
    cmd_pr_out, CMD_SA, A_OK },
  { OP_PR_OUT, 0x04, "PERSISTENT RESERVE OUT / PREEMPT", 10, WR, 5, 4, NULL,
    cmd_pr_out, CMD_SA, A_OK },
  { OP_PR_OUT, 0x05, "PERSISTENT RESERVE OUT / PREEMPT AND ABORT", 10, WR,
    5, 4, NULL, cmd_pr_out, CMD_SA, A_OK },
  { OP_PR_OUT, 0x06,
    "PERSISTENT RESERVE OUT / REGISTER AND IGNORE EXISTING KEY", 10, WR, 5,
    4, NULL, cmd_pr_out, CMD_SA, A_OK },
  { OP_READ16, 0, "READ(16)", 16, RD, 0, 0, NULL, cmd_read, RW_IN, A_RD },
  { OP_COMPARE_AND_WRITE, 0, "COMPARE AND WRITE", 16, WR, 0, 0,
    plan_compare_and_write, cmd_compare_and_write,
    CMD_LBA | CMD_PROTECT | CMD_WRITES | CMD_NLB13, A_WR },
  { OP_WRITE16, 0, "WRITE(16)", 16, WR, 0, 0, NULL, cmd_write, RW_OUT,
    A_WR },
  { OP_ORWRITE16, 0, "ORWRITE(16)", 16, WR, 0, 0, NULL, cmd_orwrite,
    RW_OUT, A_WR },
  { OP_WRITE_VERIFY16, 0, "WRITE AND VERIFY(16)", 16, WR, 0, 0, NULL,
    cmd_write_verify, RW_OUT, A_WR },
  { OP_VERIFY16, 0, "VERIFY(16)", 16, WR, 0, 0, plan_verify, cmd_verify,
    RW_IN, A_RD },
  { OP_PREFETCH16, 0, "PRE-FETCH(16)", 16, NO, 0, 0, NULL, cmd_prefetch,
    CMD_LBA, A_RD },
  { OP_SYNC_CACHE16, 0, "SYNCHRONIZE CACHE(16)", 16, NO, 0, 0, NULL,
    cmd_sync, CMD_LBA, A_WR },
  { OP_WRITE_SAME16, 0, "WRITE SAME(16)", 16, WR, 0, 0, plan_write_same,
    cmd_write_same, CMD_LBA | CMD_PROTECT | CMD_WRITES, A_WR },
  { OP_SERVICE_ACTION_IN16, 0x10, "READ CAPACITY(16)", 16, RD, 10, 4, NULL,
    cmd_read_capacity16, CMD_SA, A_OK },
  { OP_SERVICE_ACTION_IN16, 0x12, "GET LBA STATUS", 16, RD, 10, 4, NULL,
    cmd_get_lba_status, CMD_SA, A_RD },
  { OP_REPORT_LUNS, 0, "REPORT LUNS", 12, RD, 6, 4, NULL, cmd_report_luns,
    CMD_SPC2_OK, A_OK },
  { OP_MAINTENANCE_IN, 0x0c, "REPORT SUPPORTED OPERATION CODES", 12, RD, 6,
    4, NULL, cmd_report_opcodes, CMD_SA | CMD_SPC2_OK, A_OK },
  { OP_READ12, 0, "READ(12)", 12, RD, 0, 0, NULL, cmd_read, RW_IN, A_RD },
  { OP_WRITE12, 0, "WRITE(12)", 12, WR, 0, 0, NULL, cmd_write, RW_OUT,
    A_WR },
  { OP_WRITE_VERIFY12, 0, "WRITE AND VERIFY(12)", 12, WR, 0, 0, NULL,
    cmd_write_verify, RW_OUT, A_WR },
  { OP_VERIFY12, 0, "VERIFY(12)", 12, WR, 0, 0, plan_verify, cmd_verify,
    RW_IN, A_RD },
};

#undef RD
#undef WR
#undef NO
#undef A_OK
#undef A_RD
#undef A_WR
#undef RW_IN
#undef RW_OUT

static bool
has_service_actions (uint8_t opcode)
{
  for (guint i = 0; i < G_N_ELEMENTS (scsi_cmds); i++)
    if (scsi_cmds[i].opcode == opcode)
      return (scsi_cmds[i].flags & CMD_SA) != 0;
  return false;
}

/* The row for (opcode, service action); *known: the opcode exists (so a
 * NULL answer is an unsupported service action). */
static const scsi_cmd *
find_cmd (uint8_t opcode, uint8_t sa, bool *known)
{
  *known = false;
  for (guint i = 0; i < G_N_ELEMENTS (scsi_cmds); i++)
    {
      const scsi_cmd *d = &scsi_cmds[i];
      if (d->opcode != opcode)
        continue;
      *known = true;
      if (!(d->flags & CMD_SA) || d->sa == sa)
        return d;
    }
  return NULL;
}

static const scsi_cmd *
lookup (const uint8_t *cdb, bool *known)
{
  return find_cmd (cdb[0], cdb[1] & 0x1f, known);
}

/* ---- REPORT SUPPORTED OPERATION CODES (SPC-4 6.35), from the table ----- */

#define RSOC_TIMEOUTS_LEN 12u

static uint32_t
rsoc_timeouts (uint8_t *b)
{
  memset (b, 0, RSOC_TIMEOUTS_LEN);
  df_put_be16 (b, RSOC_TIMEOUTS_LEN - 2); /* no timeouts given (0) */
  return RSOC_TIMEOUTS_LEN;
}

/* CDB usage data: the opcode, the service action (the other bits of its
 * byte are reserved in every SA command we have), and every bit of the
 * other bytes marked as possibly used (a coarse map: the table does not
 * record reserved bits) except the CONTROL byte (no NACA). */
static void
rsoc_usage (const scsi_cmd *d, uint8_t *u)
{
  memset (u, 0xff, d->cdb_len);
  u[0] = d->opcode;
  if (d->flags & CMD_SA)
    u[1] = d->sa;
  u[d->cdb_len - 1] = 0x00;
}

static uint32_t
rsoc_all (bool rctd, GByteArray *b)
{
  uint8_t d[8 + RSOC_TIMEOUTS_LEN];

  g_byte_array_set_size (b, 4);
  for (guint i = 0; i < G_N_ELEMENTS (scsi_cmds); i++)
    {
      const scsi_cmd *c = &scsi_cmds[i];
      uint32_t n = 8;

      memset (d, 0, sizeof d);
      d[0] = c->opcode;
      if (c->flags & CMD_SA)
        df_put_be16 (d + 2, c->sa);
      d[5] = (rctd ? 0x02 : 0) | ((c->flags & CMD_SA) ? 0x01 : 0);
      df_put_be16 (d + 6, c->cdb_len);
      if (rctd)
        n += rsoc_timeouts (d + 8);
      g_byte_array_append (b, d, n);
    }
  df_put_be32 (b->data, b->len - 4);
  return b->len;
}

static void
rsoc_one (const scsi_cmd *d, bool rctd, GByteArray *b)
{
  uint8_t h[4 + 16 + RSOC_TIMEOUTS_LEN] = { 0 };
  uint32_t n = 4;

  if (d == NULL)
    {
      h[1] = 0x01; /* SUPPORT: not supported */
      g_byte_array_append (b, h, 4);
      return;
    }
  h[1] = (rctd ? 0x80 : 0) | 0x03; /* supported as the standard says */
  df_put_be16 (h + 2, d->cdb_len);
  rsoc_usage (d, h + 4);
  n += d->cdb_len;
  if (rctd)
    n += rsoc_timeouts (h + n);
  g_byte_array_append (b, h, n);
}

static void
cmd_report_opcodes (iscsi_lu *lu, const scsi_req *q, iscsi_scsi_result *r)
{
  const uint8_t *cdb = q->cdb;
  bool rctd = (cdb[2] & 0x80) != 0, known;
  uint8_t options = cdb[2] & 0x07, op = cdb[3];
  uint16_t sa = df_get_be16 (cdb + 4);
  g_autoptr (GByteArray) b = g_byte_array_new ();
  bool has_sa = has_service_actions (op);

  (void) lu;
  switch (options)
    {
    case 0: rsoc_all (rctd, b); break;
    case 1: /* opcode without service actions */
      if (has_sa)
        return invalid_field_at (r, 2, 2);
      rsoc_one (find_cmd (op, 0, &known), rctd, b);
      break;
    case 2: /* opcode + service action */
      if (!has_sa)
        return invalid_field_at (r, 2, 2);
      if (sa > 0x1f)
        return invalid_field_at (r, 4, 7);
      rsoc_one (find_cmd (op, (uint8_t) sa, &known), rctd, b);
      break;
    case 3: /* either: the service action counts where the opcode has any */
      rsoc_one (has_sa && sa > 0x1f ? NULL
                : find_cmd (op, has_sa ? (uint8_t) sa : 0, &known),
                rctd, b);
      break;
    default:
      return invalid_field_at (r, 2, 2);
    }
  copy_out (r, q->din, q->din_cap, b->data, b->len, df_get_be32 (cdb + 6));
}

/* ---- planning and dispatch -------------------------------------------------- */

void
iscsi_scsi_plan (const iscsi_lu *lu, const uint8_t cdb[16], scsi_dir *dir,
                 uint32_t *len)
{
  bool known;
  const scsi_cmd *d = lookup (cdb, &known);
  scsi_req q = { .cdb = cdb };

  (void) lu;
  *dir = SCSI_DIR_NONE;
  *len = 0;
  if (d == NULL || d->dir == SCSI_DIR_NONE)
    return;
  if (d->flags & CMD_LBA)
    decode_lba (d, cdb, &q);
  if (d->plan != NULL)
    *len = d->plan (cdb, &q);
  else if (d->len_size == 1)
    *len = cdb[d->len_off];
  else if (d->len_size == 2)
    *len = df_get_be16 (cdb + d->len_off);
  else if (d->len_size == 4)
    *len = df_get_be32 (cdb + d->len_off);
  else
    *len = block_bytes (q.blocks);
  *dir = *len ? d->dir : SCSI_DIR_NONE;
}

/* The checks every row gets, in SBC order.  false: r holds the answer. */
static bool
validate (iscsi_lu *lu, const scsi_cmd *d, scsi_req *q, iscsi_scsi_result *r)
{
  if (iscsi_lu_conflict (lu, d->access, (d->flags & CMD_SPC2_OK) != 0))
    {
      r->status = SCSI_RESERVATION_CONFLICT;
      return false;
    }
  if ((d->flags & CMD_PROTECT) && (q->cdb[1] >> 5) != 0)
    {
      invalid_field (r); /* no protection information */
      return false;
    }
  if ((d->flags & CMD_WRITES) && lu->readonly)
    {
      io_failed (lu, r, EROFS, true); /* as the read-only layer would */
      return false;
    }
  if (!(d->flags & CMD_LBA))
    return true;
  decode_lba (d, q->cdb, q);
  if (!range_ok (lu, q->lba, q->blocks))
    {
      lba_out_of_range (r);
      return false;
    }
  if ((d->flags & CMD_XFER)
      && (uint64_t) q->blocks * ISCSI_BLOCK > ISCSI_MAX_XFER)
    {
      invalid_field (r);
      return false;
    }
  return true;
}

/* The sense of a failed command, for REQUEST SENSE. */
static void
keep_sense (iscsi_lu *lu, const uint8_t cdb[16], const iscsi_scsi_result *r)
{
  if (r->status == SCSI_CHECK_CONDITION && cdb[0] != OP_REQUEST_SENSE)
    {
      memcpy (lu->last_sense, r->sense, sizeof lu->last_sense);
      lu->have_sense = true;
    }
}

static void
exec_cmd (iscsi_lu *lu, const uint8_t cdb[16], const uint8_t *dout,
          uint32_t dout_len, uint8_t *din, uint32_t din_cap, bool defer,
          iscsi_scsi_result *r)
{
  scsi_req q = { cdb, dout, dout_len, din, din_cap, 0, 0, false, defer };
  bool known;
  const scsi_cmd *d = lookup (cdb, &known);

  memset (r, 0, sizeof *r);
  if (d == NULL && known)
    invalid_field_at (r, 1, 4); /* unsupported service action */
  else if (d == NULL)
    invalid_opcode (r);
  else if (validate (lu, d, &q, r))
    {
      if (d->flags & CMD_WRITES)
        iscsi_lu_io_lock (lu);
      d->exec (lu, &q, r);
      if (d->flags & CMD_WRITES)
        iscsi_lu_io_unlock (lu);
    }
  keep_sense (lu, cdb, r);
}

void
iscsi_scsi_exec (iscsi_lu *lu, const uint8_t cdb[16], const uint8_t *dout,
                 uint32_t dout_len, uint8_t *din, uint32_t din_cap,
                 iscsi_scsi_result *r)
{
  exec_cmd (lu, cdb, dout, dout_len, din, din_cap, false, r);
}

void
iscsi_scsi_exec_deferred (iscsi_lu *lu, const uint8_t cdb[16],
                          const uint8_t *dout, uint32_t dout_len,
                          uint8_t *din, uint32_t din_cap,
                          iscsi_scsi_result *r)
{
  exec_cmd (lu, cdb, dout, dout_len, din, din_cap, true, r);
}

void
iscsi_scsi_flushed (iscsi_lu *lu, const uint8_t cdb[16], int ret, int errnum,
                    iscsi_scsi_result *r)
{
  r->flush = false;
  if (ret >= 0)
    return;
  io_failed (lu, r, errnum, true);
  keep_sense (lu, cdb, r);
}
