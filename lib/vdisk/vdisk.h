/* diskfarm: vDisk engine public API (images, chains, qcow2 layers, caches).
 * See blk.h for the data-path contract. */
#pragma once

#include <glib.h>
#include "blk.h"

/* ---- image probing and chains (chain.c, qcow2.c, raw.c) ---------------- */

typedef enum { DF_FMT_UNKNOWN = 0, DF_FMT_RAW, DF_FMT_QCOW2 } DfImageFormat;

/* "raw" | "qcow2" | "auto" -> format (auto returns DF_FMT_UNKNOWN). */
bool df_image_format_parse (const char *s, DfImageFormat *out, GError **err);
const char *df_image_format_name (DfImageFormat f);

/* Look at the first bytes: QFI\xfb -> qcow2, else raw. */
bool df_image_probe (const char *path, DfImageFormat *out, GError **err);

/* One file of an opened chain, top (index 0) to base. */
typedef struct {
  char *path;              /* as opened (absolute or relative to cwd) */
  char *backing;           /* backing file name as stored, or NULL */
  DfImageFormat format;
  uint64_t virtual_size;
  uint64_t file_size;      /* st_size */
  uint32_t cluster_size;   /* 0 for raw */
  uint32_t qcow2_version;  /* 2 or 3, 0 for raw */
} DfChainLayer;

/* Open an image and its whole backing chain read-only, every header and
 * table range-checked, and flatten it into an extent map (guest range ->
 * file + offset | zero | compressed) so a read costs the same at any chain
 * depth.  Backing names are resolved relative to the image's directory.
 * format: DF_FMT_UNKNOWN probes the top file; backing files are always
 * probed unless the qcow2 header names a backing format.
 * Refuses encrypted images, external data files, extended L2, loops and
 * chains deeper than 256 with DF_ERROR_UNSUPPORTED / DF_ERROR_CORRUPT.
 * Returns a new read-only df_blk (refcount 1), or NULL + err. */
df_blk *df_chain_open (const char *path, DfImageFormat format, GError **err);

/* Layers of a chain opened by df_chain_open (borrowed; valid while the
 * df_blk lives).  *n_layers receives the count. */
const DfChainLayer *df_chain_layers (df_blk *chain, guint *n_layers);

/* Number of extents in the flattened map (for tests and `vdisk show`). */
gsize df_chain_extent_count (df_blk *chain);

/* ---- qcow2 layer writer (qcow2_write.c) -------------------------------- */

typedef struct df_qcow2_writer df_qcow2_writer;

/* Create a new qcow2 v3 file at path (O_EXCL; caller picks a temp name and
 * renames).  backing: file name stored in the header (relative to the new
 * file's directory), NULL for a standalone image; backing format "qcow2" is
 * recorded when backing is set.  cluster_bits 16 is the usual choice. */
df_qcow2_writer *df_qcow2_writer_new (const char *path, uint64_t virtual_size,
                                      unsigned cluster_bits,
                                      const char *backing, GError **err);
/* Write one whole guest cluster (cluster_size bytes).  Clusters may come in
 * any order but each at most once. */
bool df_qcow2_writer_put (df_qcow2_writer *w, uint64_t cluster_index,
                          const void *data, GError **err);
/* Mark a cluster as reading zero (v3 zero flag; hides the backing file). */
bool df_qcow2_writer_put_zero (df_qcow2_writer *w, uint64_t cluster_index,
                               GError **err);
/* Write L1/L2/refcount tables, header, fsync.  Frees w in every case. */
bool df_qcow2_writer_finish (df_qcow2_writer *w, GError **err);
/* Abandon: close and unlink the file, free w. */
void df_qcow2_writer_abort (df_qcow2_writer *w);

/* Planned writing (front to back, hashed while written; no put()):
 * declare every data cluster with plan_data in increasing index order and
 * the zero clusters with put_zero; start_data then writes the metadata
 * before the data; put_run writes n planned data clusters (n clusters of
 * data, zero-padded) from first on, in the planned order.  finish_sha256
 * (or finish) writes the header last and fsyncs; sha256 (64 lower-case
 * hex + NUL) receives the SHA-256 of the whole file. */
bool df_qcow2_writer_plan_data (df_qcow2_writer *w, uint64_t cluster_index,
                                GError **err);
bool df_qcow2_writer_start_data (df_qcow2_writer *w, GError **err);
/* The buffer to fill for the next put_run (owned by w; blocks while all
 * are still being hashed): up to *max_clusters clusters.  put_run takes
 * only that buffer, hands it to a hashing thread and returns at once. */
void *df_qcow2_writer_run_buffer (df_qcow2_writer *w, uint32_t *max_clusters);
bool df_qcow2_writer_put_run (df_qcow2_writer *w, uint64_t first, uint32_t n,
                              const void *data, GError **err);
bool df_qcow2_writer_finish_sha256 (df_qcow2_writer *w, char sha256[65],
                                    GError **err);

/* Progress callback for long work: done/total bytes.  May be NULL.
 * Every long copy below (import, export, seal, merge) polls
 * df_interrupt_check between chunks: after SIGINT/SIGTERM/SIGHUP (inside
 * df_interrupt_begin/end) it fails with DF_ERROR_INTERRUPTED and removes
 * its partial output, and its temp files are registered for the second-
 * signal handler. */
typedef void (*df_progress_cb) (void *opaque, uint64_t done, uint64_t total);

/* Copy any readable df_blk into a new standalone sparse qcow2 v3 file
 * (all-zero clusters stay unallocated).  Writes to path.tmp.<pid>.XXXXXX,
 * fsyncs, renames to path (never overwrites an existing path:
 * DF_ERROR_EXISTS).  Temp files of earlier writes of path whose process
 * is gone (kill -9) are removed first. */
bool df_qcow2_write_from_blk (df_blk *src, const char *path,
                              df_progress_cb progress, void *opaque,
                              GError **err);

/* Copy a df_blk into a sparse raw file (zero runs left as holes), same
 * temp + rename rule. */
bool df_raw_write_from_blk (df_blk *src, const char *path,
                            df_progress_cb progress, void *opaque,
                            GError **err);

/* ---- version layers (merge.c) ------------------------------------------ */

/* Seal: write the blocks of the server-persistent cache in maint_dir (the
 * maintenance session's writes over base, the parent version's chain) as
 * a new qcow2 v3 layer at path (O_EXCL, 64 KiB clusters, fsynced; the
 * caller renames it).  Partially written clusters are completed from base.
 * backing: name stored in the header.  DF_ERROR_BUSY while a session holds
 * the cache.  *written (nullable): bytes of clusters written. */
bool df_vdisk_seal_layer (df_blk *base, const char *maint_dir,
                          const char *path, const char *backing,
                          df_progress_cb progress, void *opaque,
                          uint64_t *written, GError **err);
/* Merge: a new layer at path equal to the top n_layers files of
 * top_path's chain stacked on the rest: every cluster those files allocate,
 * read through the whole chain.  backing: the name of the file below them,
 * or NULL with n_layers = the whole chain (a new standalone base). */
bool df_vdisk_merge_layers (const char *top_path, guint n_layers,
                            const char *path, const char *backing,
                            df_progress_cb progress, void *opaque,
                            GError **err);
/* The same, and sha256 (64 lower-case hex + NUL) receives the SHA-256 of
 * the file written, hashed in file order as it was written (no second
 * read of the file). */
bool df_vdisk_merge_layers_sha256 (const char *top_path, guint n_layers,
                                   const char *path, const char *backing,
                                   df_progress_cb progress, void *opaque,
                                   char sha256[65], GError **err);

/* ---- write caches (cache_*.c) ------------------------------------------ */

/* Granularity of every write cache: the smallest quota that can hold
 * anything (lib/farm refuses smaller ones). */
#define DF_CACHE_BLOCK_SHIFT 12
#define DF_CACHE_BLOCK_SIZE  (1u << DF_CACHE_BLOCK_SHIFT)

/* The cache modes: the row ids of the one table (cache_modes.c) that
 * says everything about a mode (spelling, argument, open, persistence,
 * reset, files).  A new mode is one file + one row + one id here. */
typedef enum {
  DF_CACHE_SERVER = 0,      /* sparse file on the server, reset each boot */
  DF_CACHE_RAM,             /* RAM up to ram_limit, overflow to disk */
  DF_CACHE_PERSISTENT,      /* server disk, durable on FLUSH/FUA */
  DF_CACHE_HYPERVISOR,      /* no server-side cache: the hypervisor's qcow2
                             * overlay takes the writes; the device export
                             * is the version's chain, read-only. */
  DF_CACHE_PRIVATE,         /* private image: a permanent layer over the
                             * version it was made over (cache_private.c) */
  DF_CACHE_N_KINDS
} DfCacheKind;

typedef struct {
  DfCacheKind kind;
  uint64_t ram_limit;       /* bytes, DF_CACHE_RAM only */
  bool leased;              /* not grammar: the caller holds a cache lease
                             * (blk_lease.h), which replaces the durable
                             * store's flock (shared storage) */
} DfCacheMode;

/* A server-side write cache (cache_int.h). */
typedef struct df_cache df_cache;

/* One row of the cache-mode table.  Static, never freed. */
typedef struct {
  DfCacheKind kind;         /* == its index in the table */
  const char *name;         /* canonical spelling, or the part before ':' */
  const char *syntax;       /* "server", "ram:<size>" (messages, help) */
  const char *summary;      /* one line for --help and errors */
  /* The part after "name:" (NULL: the mode takes no argument).  whole is
   * the full string for messages.  Fills the mode's fields. */
  bool (*parse_arg) (const char *arg, const char *whole, DfCacheMode *m,
                     GError **err);
  /* The canonical argument (new string); with parse_arg. */
  char *(*format_arg) (const DfCacheMode *m);
  /* Fill c's store (cache_int.h).  NULL: no server-side cache; the device
   * is served its version's chain, read-only (df_cache_mode_open). */
  bool (*open_store) (df_cache *c, GError **err);
  /* Files the mode keeps in the device's cache directory (NULL-ended),
   * its data first; df_cache_discard_dir removes them.  NULL: none. */
  const char *const *files;
  const char *label;        /* how messages name those files' data
                             * ("server-persistent cache"); with files */
  bool persistent;          /* writes outlive the process: durable on
                             * FLUSH/FUA, flushed before release */
  bool survives_reset;      /* `device reset` (no --discard) keeps them */
  bool pins_base;           /* bound to the version it was first opened
                             * over (df_cache_pin_*), not the newest */
} DfCacheModeDesc;

/* The row of m (never NULL for a mode df_cache_mode_parse filled). */
const DfCacheModeDesc *df_cache_mode_desc (const DfCacheMode *m);
/* The canonical spelling of the mode a device gets when none is given
 * (static). */
const char *df_cache_mode_default (void);
/* The rows, table order; *n receives the count. */
const DfCacheModeDesc *df_cache_modes (guint *n);
/* "server, ram:<size>, server-persistent, hypervisor or private": the
 * expected spellings for messages (static). */
const char *df_cache_modes_expected (void);

/* The one grammar of cache modes (the farm DB stores only what this
 * accepts, in df_cache_mode_to_string's canonical spelling): a row's name,
 * or "ram:<SIZE>", SIZE a plain number of MiB ("ram:512", as before) or a
 * size with a unit in df_parse_size syntax ("ram:1.5G", "ram:1536M"),
 * 1 MiB to 1 TiB. */
bool df_cache_mode_parse (const char *s, DfCacheMode *out, GError **err);
char *df_cache_mode_to_string (const DfCacheMode *m);
bool df_cache_mode_is_persistent (const DfCacheMode *m);

typedef struct {
  uint64_t cached_bytes;    /* bytes held by the cache (RAM + disk) */
  uint64_t ram_bytes;       /* of which in RAM */
  uint64_t quota_bytes;     /* 0 = unlimited */
  uint64_t quota_hits;      /* writes refused with ENOSPC */
} DfCacheStats;

/* Open a write cache over base (takes its own ref on base).  dir is the
 * device's cache directory (<farm>/cache/<device>/), created if missing.
 * Non-persistent modes keep their data in an unlinked temporary file in dir
 * (nothing survives a restart, nothing is left behind by kill -9);
 * server-persistent keeps "persistent.data" + "persistent.map" in dir and
 * reopens them, private "private.data" + "private.map" (after its pin,
 * df_cache_pin_write).  Granularity 4 KiB; smaller writes read-modify-write.
 * quota: bytes, 0 = none; a write that would pass it fails with ENOSPC.
 * A mode without a server-side cache (hypervisor) is refused
 * (DF_ERROR_INVALID), nothing created.
 * Returns a new writable df_blk (refcount 1) or NULL + err. */
df_blk *df_cache_open (df_blk *base, const char *dir, const DfCacheMode *mode,
                       uint64_t quota, GError **err);
/* What a device in mode m is served over base: df_cache_open for a
 * server-side mode; a new ref on base itself, read-only, for a mode
 * without one (hypervisor: the pinned chain; base must be read-only).
 * The caller learns which from the returned blk's readonly flag. */
df_blk *df_cache_mode_open (df_blk *base, const char *dir,
                            const DfCacheMode *mode, uint64_t quota,
                            GError **err);
/* The writer of cache lost the right to write it (a cache lease): its
 * close must not flush.  Nothing for a b that is not a cache. */
void df_cache_abandon (df_blk *b);
/* Who may write a durable cache's files (a cache lease, blk_lease.h):
 * may_write runs right before each write to them (data, map entries,
 * holes) and false refuses it (EIO, the cache then fails); wrote runs
 * after it with the CLOCK_REALTIME ns it started at (nullable).  data is
 * freed with free_data (nullable) when the cache goes.  Set once, before
 * any request; nothing for a b that is not a durable cache. */
typedef struct {
  bool (*may_write) (void *data);
  void (*wrote) (void *data, const char *op, gint64 start_ns);
} DfCacheWriter;
void df_cache_set_writer (df_blk *b, const DfCacheWriter *w, void *data,
                          GDestroyNotify free_data);
/* True when b is a server-side cache made by df_cache_open. */
bool df_cache_is_cache (df_blk *b);
void df_cache_get_stats (df_blk *cache, DfCacheStats *out);
/* The row whose data (files[0]) is in dir, or NULL: what
 * df_cache_discard_dir would delete (the device's own mode, or one it had
 * before). */
const DfCacheModeDesc *df_cache_dir_holds (const char *dir);
/* Remove the files every mode keeps in a device's cache directory (device
 * reset --discard, device remove).  Missing files are not an error. */
bool df_cache_discard_dir (const char *dir, GError **err);
/* The lock a durable cache holds on its open map (fd, a descriptor of
 * path): exclusive, never waits; false + DF_ERROR_BUSY "<what> <path> is
 * in use by another process" while another process holds it.  Dropped
 * when fd is closed. */
bool df_cache_persistent_lock (int fd, const char *path, const char *what,
                               GError **err);

/* ---- private images (cache_private.c) ---------------------------------- */

/* The version a pins_base cache (private) was first opened over, recorded
 * in its directory ("private.base"), so later versions never move it. */
typedef struct {
  char *vdisk;              /* owned: the vdisk's name when pinned */
  int version;
  char *sha256;             /* owned: the version file's SHA-256 (64 hex),
                             * its identity across vdisk renames; NULL
                             * when it had none */
} DfCachePin;

void df_cache_pin_clear (DfCachePin *pin);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (DfCachePin, df_cache_pin_clear)
/* Read dir's pin.  False + DF_ERROR_NOT_FOUND when there is none yet
 * (a private image not made yet), DF_ERROR_CORRUPT when unreadable. */
bool df_cache_pin_read (const char *dir, DfCachePin *out, GError **err);
/* Record the pin (temp file, fsync, rename, fsync dir; dir created).
 * Refuses to replace an existing pin (DF_ERROR_EXISTS). */
bool df_cache_pin_write (const char *dir, const DfCachePin *pin,
                         GError **err);
/* Write the private image in dir over base (its pinned version's chain)
 * as one standalone file at path, fmt raw or qcow2: base + the device's
 * writes flattened (temp file, fsync, rename; never overwrites path).
 * DF_ERROR_BUSY while a stream service holds the image (its flock),
 * DF_ERROR_NOT_FOUND when dir holds no private image. */
bool df_cache_private_export (df_blk *base, const char *dir, const char *path,
                              DfImageFormat fmt, df_progress_cb progress,
                              void *opaque, GError **err);

/* ---- import (import.c) ------------------------------------------------- */

/* A vDisk is whole sectors: df_vdisk_import refuses other sizes. */
#define DF_SECTOR_SIZE 512u

/* Import src_path (format or auto) as a new standalone sparse qcow2 base at
 * dest_path.  Raw and qcow2 are read natively; any other format ("vhdx",
 * "vmdk", "vpc", "vdi") goes through `qemu-img convert` into a temporary
 * raw/qcow2 first (DF_ERROR_UNSUPPORTED when qemu-img is missing).
 * An empty disk or one whose size is not a multiple of DF_SECTOR_SIZE is
 * refused (DF_ERROR_INVALID) before anything is written.
 * On success *virtual_size receives the disk size. */
bool df_vdisk_import (const char *src_path, const char *format,
                      const char *dest_path, df_progress_cb progress,
                      void *opaque, uint64_t *virtual_size, GError **err);
