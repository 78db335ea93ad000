/* diskfarm: private interface between the image parsers (raw.c, qcow2.c)
 * and the chain flattener (chain.c).
 *
 * Every layer of a chain is described as a sorted, gap-free array of runs
 * covering [0, virtual_size).  chain.c overlays the layers top to base into
 * one map of the same shape. */
#pragma once

#include <glib.h>
#include <stdint.h>

#include "vdisk.h"

#define DF_QCOW2_MAGIC 0x514649fbu          /* "QFI\xfb" */
#define DF_QCOW2_MAX_BACKING_NAME 1023
#define DF_QCOW2_MAX_L1_BYTES (32u * 1024 * 1024)
#define DF_QCOW2_MAX_VIRTUAL_SIZE (1ULL << 55)  /* 32 PiB */

/* header extension types (docs/interop/qcow2.txt) */
#define DF_QCOW2_EXT_END          0x00000000u
#define DF_QCOW2_EXT_BACKING_FMT  0xe2792acau
#define DF_QCOW2_EXT_FEATURES     0x6803f857u
#define DF_QCOW2_EXT_CRYPTO       0x0537be77u
#define DF_QCOW2_EXT_DATA_FILE    0x44415441u

/* incompatible feature bits */
#define DF_QCOW2_INCOMPAT_DIRTY       (1ULL << 0)
#define DF_QCOW2_INCOMPAT_CORRUPT     (1ULL << 1)
#define DF_QCOW2_INCOMPAT_DATA_FILE   (1ULL << 2)
#define DF_QCOW2_INCOMPAT_COMPRESSION (1ULL << 3)
#define DF_QCOW2_INCOMPAT_EXTL2       (1ULL << 4)

/* L1/L2 entry bits */
#define DF_QCOW2_OFLAG_COPIED     (1ULL << 63)
#define DF_QCOW2_OFLAG_COMPRESSED (1ULL << 62)
#define DF_QCOW2_OFLAG_ZERO       (1ULL << 0)
#define DF_QCOW2_OFFSET_MASK      0x00fffffffffffe00ULL
#define DF_QCOW2_L1_RESERVED      0x7f000000000001ffULL
#define DF_QCOW2_L2_RESERVED      0x3f000000000001feULL

typedef enum {
  DF_RUN_UNALLOC = 0,   /* not allocated here: look further down / zeros */
  DF_RUN_ZERO,          /* reads as zeros, hides lower layers */
  DF_RUN_DATA,          /* file[file] at host + (guest - run.guest) */
  DF_RUN_COMPRESSED,    /* one deflated cluster at host, csize bytes */
} DfRunKind;

typedef struct {
  uint64_t guest;       /* first guest byte */
  uint64_t length;      /* bytes */
  uint64_t host;        /* DATA / COMPRESSED: byte offset in the file */
  uint32_t csize;       /* COMPRESSED: bytes of deflate data at host */
  uint32_t cluster;     /* COMPRESSED: inflated cluster size */
  uint32_t coff;        /* COMPRESSED: offset of guest in that cluster */
  uint16_t file;        /* index of the layer's file (0 = top) */
  uint8_t kind;         /* DfRunKind */
} DfRun;

/* Append r to runs (GArray of DfRun), merged into the last run when it
 * continues it (same kind, same file, contiguous host offsets). */
void df_runs_append (GArray *runs, const DfRun *r);

/* Parse a qcow2 image read from fd (borrowed) and describe it: fills
 * layer->{backing,virtual_size,cluster_size,qcow2_version} (backing newly
 * allocated), *backing_fmt (newly allocated or NULL) and appends the
 * layer's runs, tagged with file, to runs.  layer->path and file_size must
 * be set by the caller.  Every field is range-checked. */
bool df_qcow2_map (int fd, DfChainLayer *layer, uint16_t file,
                   char **backing_fmt, GArray *runs, GError **err);

/* Describe a raw file: one layer covering the file, holes as ZERO runs. */
bool df_raw_map (int fd, DfChainLayer *layer, uint16_t file, GArray *runs,
                 GError **err);

/* Inflate one qemu-compressed cluster (raw deflate, window bits -12):
 * out must be filled completely.  Returns false on bad data. */
bool df_qcow2_inflate (const void *in, size_t in_len, void *out,
                       size_t out_len);

/* Read up to len bytes at off; bytes past EOF read as zeros.  -1 + errno. */
int df_pread_zfill (int fd, void *buf, size_t len, uint64_t off);
