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
 * Logical blocks are 512 bytes (BIOS int13 via iPXE), physical 4 KiB.
 */
#define G_LOG_DOMAIN "streamsvc-iscsi"

#include "iscsi.h"

#include <errno.h>
#include <string.h>

#include "common.h"

#define LBPPBE 3u                      /* 2^3 logical blocks per physical */
#define MAX_WS_BLOCKS (1u << 22)       /* WRITE SAME: 2 GiB per command */
#define MAX_UNMAP_BLOCKS (1u << 20)
#define MAX_UNMAP_DESC 64u
#define WS_CHUNK (1024u * 1024)

enum {
  KEY_NO_SENSE = 0x00, KEY_NOT_READY = 0x02, KEY_MEDIUM_ERROR = 0x03,
  KEY_ILLEGAL_REQUEST = 0x05, KEY_DATA_PROTECT = 0x07,
  KEY_MISCOMPARE = 0x0e,
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

/* Block-layer failure -> sense (quota is a DATA PROTECT condition). */
static void
io_failed (iscsi_lu *lu, iscsi_scsi_result *r, int errnum, bool write)
{
  if (errnum == ENOSPC)
    {
      df_session_quota_hit (lu->sess);
      iscsi_scsi_sense (r, KEY_DATA_PROTECT, 0x27, 0x07);
    }
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

static uint64_t
now_ns (void)
{
  return (uint64_t) g_get_monotonic_time () * 1000u;
}

/* ---- CDB decoding ------------------------------------------------------- */

typedef struct {
  uint64_t lba;
  uint32_t blocks;
  bool fua;
  uint8_t protect;  /* RDPROTECT / WRPROTECT / VRPROTECT */
} rw_args;

static bool
decode_rw (const uint8_t *cdb, rw_args *a)
{
  memset (a, 0, sizeof *a);
  switch (cdb[0])
    {
    case 0x08: case 0x0a: /* 6-byte: 21-bit LBA, 0 blocks = 256 */
      a->lba = (uint64_t) (cdb[1] & 0x1f) << 16 | iscsi_get16 (cdb + 2);
      a->blocks = cdb[4] ? cdb[4] : 256;
      return true;
    case 0x28: case 0x2a: case 0x2f: case 0x35:
      a->lba = iscsi_get32 (cdb + 2);
      a->blocks = iscsi_get16 (cdb + 7);
      break;
    case 0x88: case 0x8a: case 0x8f: case 0x91:
      a->lba = iscsi_get64 (cdb + 2);
      a->blocks = iscsi_get32 (cdb + 10);
      break;
    default:
      return false;
    }
  a->fua = (cdb[1] & 0x08) != 0;
  a->protect = cdb[1] >> 5;
  return true;
}

void
iscsi_scsi_plan (const iscsi_lu *lu, const uint8_t cdb[16], scsi_dir *dir,
                 uint32_t *len)
{
  rw_args a;

  (void) lu;
  *dir = SCSI_DIR_NONE;
  *len = 0;
  switch (cdb[0])
    {
    case 0x08: case 0x28: case 0x88:
      decode_rw (cdb, &a);
      *dir = SCSI_DIR_READ;
      *len = (uint32_t) MIN ((uint64_t) a.blocks * ISCSI_BLOCK,
                             (uint64_t) UINT32_MAX);
      break;
    case 0x0a: case 0x2a: case 0x8a:
      decode_rw (cdb, &a);
      *dir = SCSI_DIR_WRITE;
      *len = (uint32_t) MIN ((uint64_t) a.blocks * ISCSI_BLOCK,
                             (uint64_t) UINT32_MAX);
      break;
    case 0x2f: case 0x8f: /* VERIFY: data-out only with BYTCHK */
      decode_rw (cdb, &a);
      if (((cdb[1] >> 1) & 3) == 1)
        *len = (uint32_t) MIN ((uint64_t) a.blocks * ISCSI_BLOCK,
                               (uint64_t) UINT32_MAX);
      else if (((cdb[1] >> 1) & 3) == 3)
        *len = ISCSI_BLOCK;
      *dir = *len ? SCSI_DIR_WRITE : SCSI_DIR_NONE;
      break;
    case 0x41: case 0x93: /* WRITE SAME: one block unless NDOB */
      *dir = (cdb[0] == 0x93 && (cdb[1] & 1)) ? SCSI_DIR_NONE : SCSI_DIR_WRITE;
      *len = *dir == SCSI_DIR_WRITE ? ISCSI_BLOCK : 0;
      break;
    case 0x42: /* UNMAP */
      *dir = SCSI_DIR_WRITE;
      *len = iscsi_get16 (cdb + 7);
      break;
    case 0x03: case 0x12: case 0x1a:
      *dir = SCSI_DIR_READ;
      *len = cdb[0] == 0x12 ? iscsi_get16 (cdb + 3) : cdb[4];
      break;
    case 0x5a:
      *dir = SCSI_DIR_READ;
      *len = iscsi_get16 (cdb + 7);
      break;
    case 0x25:
      *dir = SCSI_DIR_READ;
      *len = 8;
      break;
    case 0x9e:
      *dir = SCSI_DIR_READ;
      *len = iscsi_get32 (cdb + 10);
      break;
    case 0xa0:
      *dir = SCSI_DIR_READ;
      *len = iscsi_get32 (cdb + 6);
      break;
    default:
      break;
    }
}

/* ---- reads and writes --------------------------------------------------- */

static void
cmd_read (iscsi_lu *lu, const uint8_t *cdb, uint8_t *din, uint32_t din_cap,
          iscsi_scsi_result *r)
{
  rw_args a;
  uint64_t t0 = now_ns ();
  uint32_t bytes;
  int errnum = 0;

  decode_rw (cdb, &a);
  if (a.protect != 0)
    return invalid_field (r);
  if (!range_ok (lu, a.lba, a.blocks))
    return lba_out_of_range (r);
  if ((uint64_t) a.blocks * ISCSI_BLOCK > ISCSI_MAX_XFER)
    return invalid_field (r);
  bytes = a.blocks * ISCSI_BLOCK;
  if (bytes == 0)
    return;
  g_assert (bytes <= din_cap);
  if (df_blk_pread (lu->blk, din, bytes, a.lba * ISCSI_BLOCK, &errnum) < 0)
    {
      df_session_account (lu->sess, DF_OP_READ, 0, now_ns () - t0, true);
      return io_failed (lu, r, errnum, false);
    }
  r->data_len = bytes;
  df_session_account (lu->sess, DF_OP_READ, bytes, now_ns () - t0, false);
}

static void
cmd_write (iscsi_lu *lu, const uint8_t *cdb, const uint8_t *dout,
           uint32_t dout_len, iscsi_scsi_result *r)
{
  rw_args a;
  uint64_t t0 = now_ns ();
  uint32_t bytes;
  int errnum = 0;

  decode_rw (cdb, &a);
  if (a.protect != 0)
    return invalid_field (r);
  if (lu->readonly)
    return write_protected (r);
  if (!range_ok (lu, a.lba, a.blocks))
    return lba_out_of_range (r);
  if ((uint64_t) a.blocks * ISCSI_BLOCK > ISCSI_MAX_XFER)
    return invalid_field (r);
  /* EDTL shorter than the transfer: write what came, whole blocks only
   * (the overflow residual tells the initiator). */
  bytes = MIN (a.blocks, dout_len / ISCSI_BLOCK) * ISCSI_BLOCK;
  if (bytes == 0)
    return;
  if (df_blk_pwrite (lu->blk, dout, bytes, a.lba * ISCSI_BLOCK,
                     a.fua ? DF_BLK_FUA : 0, &errnum) < 0)
    {
      df_session_account (lu->sess, DF_OP_WRITE, 0, now_ns () - t0, true);
      return io_failed (lu, r, errnum, true);
    }
  df_session_account (lu->sess, DF_OP_WRITE, bytes, now_ns () - t0, false);
}

/* Compare dout against the medium in 64 KiB steps. */
static void
verify_compare (iscsi_lu *lu, const rw_args *a, int bytchk,
                const uint8_t *dout, uint32_t dout_len, iscsi_scsi_result *r)
{
  g_autofree uint8_t *buf = g_malloc (64 * 1024);
  uint64_t off = a->lba * ISCSI_BLOCK;
  uint32_t total = a->blocks * ISCSI_BLOCK, done = 0;

  if (dout_len < (bytchk == 1 ? total : ISCSI_BLOCK))
    return invalid_field (r);
  while (done < total)
    {
      uint32_t n = MIN (64u * 1024, total - done);
      int errnum = 0;

      if (df_blk_pread (lu->blk, buf, n, off + done, &errnum) < 0)
        return io_failed (lu, r, errnum, false);
      for (uint32_t i = 0; i < n; i += ISCSI_BLOCK)
        {
          const uint8_t *want = bytchk == 1 ? dout + done + i : dout;
          if (memcmp (buf + i, want, ISCSI_BLOCK) != 0)
            return iscsi_scsi_sense (r, KEY_MISCOMPARE, 0x1d, 0x00);
        }
      done += n;
    }
}

static void
cmd_verify (iscsi_lu *lu, const uint8_t *cdb, const uint8_t *dout,
            uint32_t dout_len, iscsi_scsi_result *r)
{
  rw_args a;
  int bytchk = (cdb[1] >> 1) & 3;

  decode_rw (cdb, &a);
  if (a.protect != 0 || bytchk == 2)
    return invalid_field (r);
  if (!range_ok (lu, a.lba, a.blocks))
    return lba_out_of_range (r);
  if ((uint64_t) a.blocks * ISCSI_BLOCK > ISCSI_MAX_XFER)
    return invalid_field (r);
  if (bytchk == 0 || a.blocks == 0)
    return; /* medium verification: our media always read back */
  verify_compare (lu, &a, bytchk, dout, dout_len, r);
}

static void
cmd_sync (iscsi_lu *lu, const uint8_t *cdb, iscsi_scsi_result *r)
{
  rw_args a;
  uint64_t t0 = now_ns ();
  int errnum = 0;

  decode_rw (cdb, &a);
  if (!range_ok (lu, a.lba, a.blocks))
    return lba_out_of_range (r);
  /* IMMED or not, return only once data is stable (BAD-INPUTS.md). */
  if (!lu->readonly && lu->blk->can_flush
      && df_blk_flush (lu->blk, &errnum) < 0)
    {
      df_session_account (lu->sess, DF_OP_FLUSH, 0, now_ns () - t0, true);
      return io_failed (lu, r, errnum, true);
    }
  df_session_account (lu->sess, DF_OP_FLUSH, 0, now_ns () - t0, false);
}

/* Make lba..+n read back zero, in requests of at most DF_BLK_MAX_REQUEST
 * bytes, each accounted as op: DF_OP_ZERO zeroes (the device must
 * can_zero); DF_OP_TRIM deallocates (zero that may trim where the device
 * can zero, else trim).  n > 0, range checked.  On a failed request sets r
 * (io_failed) and returns false. */
static bool
clear_range (iscsi_lu *lu, uint64_t lba, uint64_t n, DfOp op,
             iscsi_scsi_result *r)
{
  uint64_t off = lba * ISCSI_BLOCK, left = n * ISCSI_BLOCK;

  while (left > 0)
    {
      uint32_t chunk = (uint32_t) MIN (left, (uint64_t) DF_BLK_MAX_REQUEST);
      uint64_t t0 = now_ns ();
      int errnum = 0;
      int rc = op == DF_OP_ZERO
                   ? df_blk_zero (lu->blk, chunk, off, 0, &errnum)
                 : lu->blk->can_zero
                   ? df_blk_zero (lu->blk, chunk, off, DF_BLK_MAY_TRIM,
                                  &errnum)
                   : df_blk_trim (lu->blk, chunk, off, 0, &errnum);

      df_session_account (lu->sess, op, chunk, now_ns () - t0, rc < 0);
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
  return clear_range (lu, lba, n, DF_OP_TRIM, r);
}

static void
cmd_unmap (iscsi_lu *lu, const uint8_t *cdb, const uint8_t *p,
           uint32_t len, iscsi_scsi_result *r)
{
  uint32_t plen = iscsi_get16 (cdb + 7);
  uint32_t dlen;

  if (cdb[1] & 0x01) /* ANCHOR */
    return invalid_field (r);
  if (lu->readonly)
    return write_protected (r);
  if (plen == 0)
    return;
  if (plen < 8 || len < plen)
    return iscsi_scsi_sense (r, KEY_ILLEGAL_REQUEST, 0x1a, 0x00);
  dlen = iscsi_get16 (p + 2);
  if (dlen % 16 != 0 || 8 + dlen > plen)
    return iscsi_scsi_sense (r, KEY_ILLEGAL_REQUEST, 0x26, 0x00);
  if (dlen / 16 > MAX_UNMAP_DESC)
    return iscsi_scsi_sense (r, KEY_ILLEGAL_REQUEST, 0x26, 0x00);
  /* Validate every descriptor before changing anything. */
  for (uint32_t o = 8; o < 8 + dlen; o += 16)
    {
      uint64_t lba = iscsi_get64 (p + o);
      uint32_t n = iscsi_get32 (p + o + 8);
      if (!range_ok (lu, lba, n))
        return lba_out_of_range (r);
      if (n > MAX_UNMAP_BLOCKS)
        return iscsi_scsi_sense (r, KEY_ILLEGAL_REQUEST, 0x26, 0x00);
    }
  for (uint32_t o = 8; o < 8 + dlen; o += 16)
    {
      uint32_t n = iscsi_get32 (p + o + 8);
      if (n > 0 && !unmap_range (lu, iscsi_get64 (p + o), n, r))
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
      uint64_t t0 = now_ns ();
      int errnum = 0;
      int rc = df_blk_pwrite (lu->blk, buf, nb * ISCSI_BLOCK,
                              lba * ISCSI_BLOCK, 0, &errnum);

      df_session_account (lu->sess, DF_OP_WRITE, (uint64_t) nb * ISCSI_BLOCK,
                          now_ns () - t0, rc < 0);
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
  return clear_range (lu, lba, n, DF_OP_ZERO, r);
}

static void
cmd_write_same (iscsi_lu *lu, const uint8_t *cdb, const uint8_t *dout,
                uint32_t dout_len, iscsi_scsi_result *r)
{
  bool ws16 = cdb[0] == 0x93;
  bool unmap = (cdb[1] & 0x08) != 0;
  bool ndob = ws16 && (cdb[1] & 0x01);
  uint64_t lba = ws16 ? iscsi_get64 (cdb + 2) : iscsi_get32 (cdb + 2);
  uint32_t n = ws16 ? iscsi_get32 (cdb + 10) : iscsi_get16 (cdb + 7);
  static const uint8_t zeros[ISCSI_BLOCK];
  const uint8_t *pat = ndob ? zeros : dout;

  if ((cdb[1] >> 5) != 0 || (cdb[1] & 0x10)) /* WRPROTECT, ANCHOR */
    return invalid_field (r);
  if (lu->readonly)
    return write_protected (r);
  if (!range_ok (lu, lba, n))
    return lba_out_of_range (r);
  if (n == 0 || n > MAX_WS_BLOCKS) /* WSNZ=1 in VPD B0 */
    return invalid_field (r);
  if (!ndob && dout_len != ISCSI_BLOCK)
    return invalid_field (r); /* the data-out is exactly one block */
  if (all_zero (pat, ISCSI_BLOCK))
    {
      if (unmap)
        unmap_range (lu, lba, n, r);
      else
        zero_range (lu, lba, n, r);
      return;
    }
  write_pattern (lu, pat, lba, n, r);
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
    iscsi_put16 (b + 58 + 2 * i, versions[i]);
}

static uint32_t
vpd_supported (uint8_t *b)
{
  static const uint8_t pages[] = { 0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2 };

  b[1] = 0x00;
  iscsi_put16 (b + 2, sizeof pages);
  memcpy (b + 4, pages, sizeof pages);
  return 4 + sizeof pages;
}

static uint32_t
vpd_serial (const iscsi_lu *lu, uint8_t *b)
{
  size_t n = MIN (strlen (lu->serial), 200u);

  b[1] = 0x80;
  iscsi_put16 (b + 2, (uint16_t) n);
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
  iscsi_put16 (b + 2, (uint16_t) (o - 4));
  return o;
}

static uint32_t
vpd_block_limits (const iscsi_lu *lu, uint8_t *b)
{
  b[1] = 0xb0;
  iscsi_put16 (b + 2, 0x3c);
  b[4] = 0x01;                                   /* WSNZ */
  iscsi_put16 (b + 6, 1u << LBPPBE);             /* opt. granularity */
  iscsi_put32 (b + 8, ISCSI_MAX_XFER / ISCSI_BLOCK);
  iscsi_put32 (b + 12, 128 * 1024 / ISCSI_BLOCK); /* optimal transfer */
  if (!lu->readonly) /* no UNMAP (LBPU=0): counts must be 0 */
    {
      iscsi_put32 (b + 20, MAX_UNMAP_BLOCKS);
      iscsi_put32 (b + 24, MAX_UNMAP_DESC);
      iscsi_put32 (b + 28, 1u << LBPPBE);        /* unmap granularity */
      iscsi_put64 (b + 36, MAX_WS_BLOCKS);
    }
  return 4 + 0x3c;
}

static uint32_t
vpd_characteristics (uint8_t *b)
{
  b[1] = 0xb1;
  iscsi_put16 (b + 2, 0x3c);
  iscsi_put16 (b + 4, 1); /* non-rotating medium */
  return 4 + 0x3c;
}

static uint32_t
vpd_provisioning (const iscsi_lu *lu, uint8_t *b)
{
  b[1] = 0xb2;
  iscsi_put16 (b + 2, 4);
  if (!lu->readonly)
    {
      b[5] = 0x80 | 0x40 | 0x20 | 0x04; /* LBPU LBPWS LBPWS10 LBPRZ */
      b[6] = 0x02;                      /* thin provisioned */
    }
  return 8;
}

static void
cmd_inquiry (iscsi_lu *lu, const uint8_t *cdb, uint8_t *din,
             uint32_t din_cap, iscsi_scsi_result *r)
{
  uint8_t b[512] = { 0 };
  uint32_t alloc = iscsi_get16 (cdb + 3), len;

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
cmd_read_capacity10 (iscsi_lu *lu, const uint8_t *cdb, uint8_t *din,
                     uint32_t din_cap, iscsi_scsi_result *r)
{
  uint8_t b[8];
  uint64_t last = num_blocks (lu) - 1;

  if (!(cdb[8] & 0x01) && iscsi_get32 (cdb + 2) != 0)
    return invalid_field (r); /* LBA without PMI */
  iscsi_put32 (b, last > 0xffffffffu ? 0xffffffffu : (uint32_t) last);
  iscsi_put32 (b + 4, ISCSI_BLOCK);
  copy_out (r, din, din_cap, b, 8, 8);
}

static void
cmd_service_action_in (iscsi_lu *lu, const uint8_t *cdb, uint8_t *din,
                       uint32_t din_cap, iscsi_scsi_result *r)
{
  uint8_t b[32] = { 0 };

  if ((cdb[1] & 0x1f) != 0x10) /* only READ CAPACITY (16) */
    return invalid_opcode (r);
  iscsi_put64 (b, num_blocks (lu) - 1);
  iscsi_put32 (b + 8, ISCSI_BLOCK);
  b[13] = LBPPBE;
  if (!lu->readonly)
    b[14] = 0x80 | 0x40; /* LBPME, LBPRZ */
  copy_out (r, din, din_cap, b, sizeof b, iscsi_get32 (cdb + 10));
}

static void
cmd_report_luns (const uint8_t *cdb, uint8_t *din, uint32_t din_cap,
                 iscsi_scsi_result *r)
{
  uint8_t b[16] = { 0 };
  uint32_t alloc = iscsi_get32 (cdb + 6);

  if (cdb[2] > 0x02 && cdb[2] != 0x10 && cdb[2] != 0x11 && cdb[2] != 0x12)
    return invalid_field (r);
  if (alloc < 16)
    return invalid_field (r); /* SPC-4: allocation length below 16 */
  iscsi_put32 (b, 8);
  b[9] = ISCSI_LUN; /* peripheral addressing, LUN 1 */
  copy_out (r, din, din_cap, b, sizeof b, alloc);
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
        iscsi_put16 (b + 10, 0xffff); /* busy timeout: unlimited */
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
cmd_mode_sense (iscsi_lu *lu, const uint8_t *cdb, uint8_t *din,
                uint32_t din_cap, iscsi_scsi_result *r)
{
  bool ms10 = cdb[0] == 0x5a;
  bool dbd = (cdb[1] & 0x08) != 0;
  uint8_t pc = cdb[2] >> 6, page = cdb[2] & 0x3f, sub = cdb[3];
  uint32_t alloc = ms10 ? iscsi_get16 (cdb + 7) : cdb[4];
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
      iscsi_put32 (b + o, nb > 0xffffff ? 0xffffff : (uint32_t) nb);
      b[o] = 0;
      iscsi_put32 (b + o + 4, ISCSI_BLOCK);
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
      iscsi_put16 (b, (uint16_t) (o - 2));
      b[3] = (lu->readonly ? 0x80 : 0) | 0x10; /* WP, DPOFUA */
      b[7] = dbd ? 0 : 8;
    }
  else
    {
      b[0] = (uint8_t) (o - 1);
      b[2] = (lu->readonly ? 0x80 : 0) | 0x10;
      b[3] = dbd ? 0 : 8;
    }
  copy_out (r, din, din_cap, b, o, alloc);
}

static void
cmd_request_sense (iscsi_lu *lu, const uint8_t *cdb, uint8_t *din,
                   uint32_t din_cap, iscsi_scsi_result *r)
{
  uint8_t b[SCSI_SENSE_LEN] = { 0x70, 0, KEY_NO_SENSE, 0, 0, 0, 0,
                                SCSI_SENSE_LEN - 8 };

  if (cdb[1] & 0x01) /* DESC: descriptor format not supported */
    return invalid_field (r);
  if (lu->have_sense)
    memcpy (b, lu->last_sense, sizeof b);
  lu->have_sense = false;
  copy_out (r, din, din_cap, b, sizeof b, cdb[4]);
}

/* ---- dispatch ------------------------------------------------------------- */

void
iscsi_scsi_exec (iscsi_lu *lu, const uint8_t cdb[16], const uint8_t *dout,
                 uint32_t dout_len, uint8_t *din, uint32_t din_cap,
                 iscsi_scsi_result *r)
{
  memset (r, 0, sizeof *r);
  switch (cdb[0])
    {
    case 0x00: break;                                  /* TEST UNIT READY */
    case 0x03: cmd_request_sense (lu, cdb, din, din_cap, r); break;
    case 0x08: case 0x28: case 0x88: cmd_read (lu, cdb, din, din_cap, r);
      break;
    case 0x0a: case 0x2a: case 0x8a:
      cmd_write (lu, cdb, dout, dout_len, r);
      break;
    case 0x12: cmd_inquiry (lu, cdb, din, din_cap, r); break;
    case 0x1a: case 0x5a: cmd_mode_sense (lu, cdb, din, din_cap, r); break;
    case 0x1b: break;                                  /* START STOP UNIT */
    case 0x1e:                                         /* PREVENT ALLOW */
      if ((cdb[4] & 0x03) > 1)
        invalid_field (r);
      break;
    case 0x25: cmd_read_capacity10 (lu, cdb, din, din_cap, r); break;
    case 0x2f: case 0x8f: cmd_verify (lu, cdb, dout, dout_len, r); break;
    case 0x35: case 0x91: cmd_sync (lu, cdb, r); break;
    case 0x41: case 0x93: cmd_write_same (lu, cdb, dout, dout_len, r); break;
    case 0x42: cmd_unmap (lu, cdb, dout, dout_len, r); break;
    case 0x9e: cmd_service_action_in (lu, cdb, din, din_cap, r); break;
    case 0xa0: cmd_report_luns (cdb, din, din_cap, r); break;
    default: invalid_opcode (r); break;
    }
  if (r->status == SCSI_CHECK_CONDITION && cdb[0] != 0x03)
    {
      memcpy (lu->last_sense, r->sense, sizeof lu->last_sense);
      lu->have_sense = true;
    }
}
