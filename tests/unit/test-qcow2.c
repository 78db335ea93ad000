/* diskfarm: qcow2 reader unit tests.
 *
 * Malformed images: a small valid image is built with our writer, then one
 * field per table row is corrupted and df_chain_open must fail with the
 * precise error.  Images made by qemu-img/qemu-io (v2, v3, compressed, zero
 * clusters) are read back and compared with `qemu-img convert -O raw`. */
#include "config.h"
#include "common.h"
#include "vdisk.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "test-vdisk-util.h"

/* ---- the base image for corruption rows ------------------------------- */

#define CB 10                       /* 1 KiB clusters: tiny files */
#define CS (1u << CB)
#define VSIZE (1024u * 1024)

static void
fill_cluster (uint8_t *buf, uint8_t v)
{
  memset (buf, v, CS);
}

/* Writes base.qcow2 in dir: clusters 0,1,100 data, 5 zero. */
static char *
make_base (const char *dir)
{
  g_autoptr (GError) err = NULL;
  char *path = g_build_filename (dir, "base.qcow2", NULL);
  uint8_t buf[CS];
  df_qcow2_writer *w = df_qcow2_writer_new (path, VSIZE, CB, NULL, &err);

  g_assert_no_error (err);
  fill_cluster (buf, 0x11);
  g_assert_true (df_qcow2_writer_put (w, 0, buf, &err));
  fill_cluster (buf, 0x22);
  g_assert_true (df_qcow2_writer_put (w, 1, buf, &err));
  fill_cluster (buf, 0x33);
  g_assert_true (df_qcow2_writer_put (w, 100, buf, &err));
  g_assert_true (df_qcow2_writer_put_zero (w, 5, &err));
  g_assert_true (df_qcow2_writer_finish (w, &err));
  g_assert_no_error (err);
  return path;
}

static void
test_base_valid (void)
{
  g_autofree char *dir = tu_tmpdir ();
  g_autofree char *path = make_base (dir);
  g_autoptr (GError) err = NULL;
  g_autoptr (df_blk) b = df_chain_open (path, DF_FMT_UNKNOWN, &err);
  uint8_t buf[4 * CS];
  int e = 0;

  g_assert_no_error (err);
  g_assert_cmpuint (b->size, ==, VSIZE);
  g_assert_cmpint (df_blk_pread (b, buf, sizeof buf, 0, &e), ==, 0);
  g_assert_cmpuint (buf[0], ==, 0x11);
  g_assert_cmpuint (buf[CS], ==, 0x22);
  g_assert_cmpuint (buf[2 * CS], ==, 0);
  g_assert_cmpint (df_blk_pread (b, buf, CS, 100 * CS, &e), ==, 0);
  g_assert_cmpuint (buf[CS - 1], ==, 0x33);
  /* data 0-1, unalloc 2-4, zero 5, unalloc 6-99, data 100, unalloc */
  g_assert_cmpuint (df_chain_extent_count (b), ==, 6);
  tu_qemu_check (path);
  tu_rmrf (dir);
}

/* ---- corruption table ------------------------------------------------- */

typedef enum { AT_NONE = 0, AT_HDR, AT_L1, AT_L2 } Where;
typedef enum { REL_ABS = 0, REL_EOF, REL_L1 } Rel;

typedef struct {
  Where where;     /* header byte offset, or L1 / L2 (of L1[0]) entry index */
  uint32_t at;
  uint8_t width;   /* 1, 4 or 8 bytes, big-endian */
  Rel rel;         /* value is absolute, or added to EOF / l1_offset */
  uint64_t value;
} Patch;

typedef struct {
  const char *name;
  Patch p[2];
  DfErrorCode code;
  const char *msg;   /* substring of the error message */
} CorruptRow;

#define H(at, w, v) { AT_HDR, at, w, REL_ABS, v }
#define L1(i, rel, v) { AT_L1, i, 8, rel, v }
#define L2(i, rel, v) { AT_L2, i, 8, rel, v }
#define COPIED (1ULL << 63)
#define COMPR (1ULL << 62)

static const CorruptRow corrupt_rows[] = {
  { "magic", { H (0, 4, 0x514649fa) }, DF_ERROR_CORRUPT, "bad magic" },
  { "version-1", { H (4, 4, 1) }, DF_ERROR_UNSUPPORTED, "version 1" },
  { "version-4", { H (4, 4, 4) }, DF_ERROR_UNSUPPORTED, "version 4" },
  { "cluster-bits-8", { H (20, 4, 8) }, DF_ERROR_CORRUPT, "cluster_bits 8" },
  { "cluster-bits-22", { H (20, 4, 22) }, DF_ERROR_CORRUPT,
    "cluster_bits 22" },
  { "cluster-bits-huge", { H (20, 4, 0xffffffff) }, DF_ERROR_CORRUPT,
    "cluster_bits" },
  { "encrypted", { H (32, 4, 1) }, DF_ERROR_UNSUPPORTED, "encrypted" },
  { "external-data", { H (72, 8, 1 << 2) }, DF_ERROR_UNSUPPORTED,
    "external data" },
  { "extended-l2", { H (72, 8, 1 << 4) }, DF_ERROR_UNSUPPORTED,
    "extended L2" },
  { "marked-corrupt", { H (72, 8, 1 << 1) }, DF_ERROR_CORRUPT,
    "marked corrupt" },
  { "unknown-incompat", { H (72, 8, 1 << 10) }, DF_ERROR_UNSUPPORTED,
    "unknown incompatible features 0x400" },
  { "zstd", { H (72, 8, 1 << 3), H (100, 4, 112) }, DF_ERROR_UNSUPPORTED,
    NULL /* set below: compression type */ },
  { "refcount-order", { H (96, 4, 7) }, DF_ERROR_CORRUPT, "refcount_order 7" },
  { "header-length-short", { H (100, 4, 96) }, DF_ERROR_CORRUPT,
    "header_length 96" },
  { "header-length-odd", { H (100, 4, 108) }, DF_ERROR_CORRUPT,
    "header_length 108" },
  { "size-huge", { H (24, 8, 1ULL << 62) }, DF_ERROR_CORRUPT, "size" },
  { "size-vs-l1", { H (24, 8, 64ULL << 20) }, DF_ERROR_CORRUPT,
    "l1_size 8 too small" },
  { "l1-size-huge", { H (36, 4, 0x10000000) }, DF_ERROR_CORRUPT,
    "l1_size 268435456 too large" },
  { "l1-size-past-eof", { H (36, 4, 0x100000) }, DF_ERROR_CORRUPT,
    "l1_table_offset" },
  { "l1-offset-unaligned", { H (40, 8, 0x1408) }, DF_ERROR_CORRUPT,
    "l1_table_offset 0x1408 not cluster aligned" },
  { "l1-offset-header", { H (40, 8, 0) }, DF_ERROR_CORRUPT,
    "l1_table_offset 0x0 points into the header" },
  { "l1-offset-eof", { H (40, 8, 0x100000) }, DF_ERROR_CORRUPT,
    "l1_table_offset 0x100000" },
  { "refcount-offset-eof", { H (48, 8, 0x10000000) }, DF_ERROR_CORRUPT,
    "refcount_table_offset" },
  { "refcount-clusters-0", { H (56, 4, 0) }, DF_ERROR_CORRUPT,
    "refcount_table_clusters 0" },
  { "snapshots-too-many", { H (60, 4, 100000) }, DF_ERROR_CORRUPT,
    "nb_snapshots" },
  { "snapshots-offset", { H (60, 4, 1), H (64, 8, 0x1000000) },
    DF_ERROR_CORRUPT, "snapshots_offset" },
  { "backing-name-long", { H (8, 8, 200), H (16, 4, 1024) }, DF_ERROR_CORRUPT,
    "backing_file_size 1024" },
  { "backing-offset-past-cluster", { H (8, 8, 1000), H (16, 4, 100) },
    DF_ERROR_CORRUPT, "backing_file_offset 1000" },
  { "extension-overflow", { H (104, 4, 0x12345678), H (108, 4, 0x7fffffff) },
    DF_ERROR_CORRUPT, "header extension 0x12345678" },
  { "backing-fmt-vmdk", { H (104, 4, 0xe2792aca), H (108, 4, 4) },
    DF_ERROR_CORRUPT, "backing format" },
  { "l1-reserved", { L1 (0, REL_ABS, 0x1000 | 1) }, DF_ERROR_CORRUPT,
    "L1 entry 0 has reserved bits" },
  { "l1-unaligned", { L1 (0, REL_ABS, 0x1200 | COPIED) }, DF_ERROR_CORRUPT,
    "L1 entry 0 (L2 table) 0x1200 not cluster aligned" },
  { "l1-past-eof", { L1 (1, REL_EOF, COPIED) }, DF_ERROR_CORRUPT,
    "L1 entry 1 (L2 table)" },
  { "l2-unaligned", { L2 (0, REL_ABS, 0x600 | COPIED) }, DF_ERROR_CORRUPT,
    "L2 entry for guest offset 0 not cluster aligned" },
  { "l2-past-eof", { L2 (0, REL_EOF, COPIED) }, DF_ERROR_CORRUPT,
    "L2 entry for guest offset 0 points past end of file" },
  { "l2-far-past-eof", { L2 (1, REL_ABS, 0x00fffffffffffc00ULL) },
    DF_ERROR_CORRUPT, "L2 entry for guest offset 1024 points past end" },
  { "l1-shared-l2", { L1 (1, REL_ABS, 0x1000 | COPIED) }, DF_ERROR_CORRUPT,
    "metadata tables overlap at 0x1000" },
  { "l1-l2-is-refcount", { L1 (1, REL_ABS, 0x1800 | COPIED) },
    DF_ERROR_CORRUPT, "metadata tables overlap at 0x1800" },
  { "l2-into-l1", { L2 (0, REL_L1, COPIED) }, DF_ERROR_CORRUPT,
    "points into metadata" },
  { "l2-reserved", { L2 (2, REL_ABS, 0x400 | 0x40) }, DF_ERROR_CORRUPT,
    "L2 entry for guest offset 2048 has reserved bits" },
  { "l2-zero-flag-v2", { H (4, 4, 2), L2 (3, REL_ABS, 1) }, DF_ERROR_CORRUPT,
    "zero flag in a version 2 image" },
  { "compressed-past-eof", { L2 (0, REL_EOF, COMPR) }, DF_ERROR_CORRUPT,
    "compressed L2 entry for guest offset 0 points outside the file" },
  { "compressed-copied", { L2 (0, REL_ABS, COMPR | COPIED | 0x300) },
    DF_ERROR_CORRUPT, "copied flag" },
  { "compressed-into-header", { L2 (0, REL_ABS, COMPR | 0x10) },
    DF_ERROR_CORRUPT, "points outside the file" },
  { "compressed-into-l1", { L2 (0, REL_L1, COMPR) }, DF_ERROR_CORRUPT,
    "points into metadata" },
};

static uint64_t
get_be (const uint8_t *p, unsigned width)
{
  uint64_t v = 0;
  for (unsigned i = 0; i < width; i++)
    v = v << 8 | p[i];
  return v;
}

static void
put_be (uint8_t *p, unsigned width, uint64_t v)
{
  for (unsigned i = 0; i < width; i++)
    p[width - 1 - i] = (uint8_t) (v >> (8 * i));
}

static void
apply_patch (GByteArray *img, const Patch *p)
{
  uint8_t *d = img->data;
  uint64_t v = p->value;
  uint64_t off = 0;

  if (p->where == AT_NONE)
    return;
  /* the base image's layout (rows patch tables before the header) */
  uint64_t l1 = get_be (d + 40, 8);
  g_assert_cmpuint (l1 + 8, <=, img->len);
  uint64_t l2 = get_be (d + l1, 8) & 0x00fffffffffffe00ULL;
  if (p->rel == REL_EOF)
    v += (img->len + CS - 1) / CS * CS + 4 * CS;
  else if (p->rel == REL_L1)
    v += l1;
  switch (p->where)
    {
    case AT_NONE: return;
    case AT_HDR: off = p->at; break;
    case AT_L1: off = l1 + 8 * p->at; break;
    case AT_L2: off = l2 + 8 * p->at; break;
    }
  g_assert_cmpuint (off + p->width, <=, img->len);
  put_be (d + off, p->width, v);
}

static void
test_corrupt_row (gconstpointer data)
{
  const CorruptRow *row = data;
  g_autofree char *dir = tu_tmpdir ();
  g_autofree char *base = make_base (dir);
  g_autoptr (GError) err = NULL;
  g_autofree char *bytes = NULL;
  gsize len = 0;

  g_assert_true (g_file_get_contents (base, &bytes, &len, NULL));
  g_autoptr (GByteArray) img = g_byte_array_new ();
  g_byte_array_append (img, (guint8 *) bytes, (guint) len);
  for (unsigned i = 0; i < G_N_ELEMENTS (row->p); i++)
    apply_patch (img, &row->p[i]);
  if (strcmp (row->name, "zstd") == 0)
    img->data[104] = 1;   /* compression_type zstd */
  g_autofree char *bad = g_build_filename (dir, "bad.qcow2", NULL);
  g_assert_true (g_file_set_contents (bad, (char *) img->data, img->len,
                                      NULL));

  df_blk *b = df_chain_open (bad, DF_FMT_QCOW2, &err);
  g_assert_null (b);
  g_assert_error (err, DF_ERROR, (gint) row->code);
  g_test_message ("%s: %s", row->name, err->message);
  const char *msg = row->msg;
  if (strcmp (row->name, "zstd") == 0)
    msg = "compression type 1";
  if (strstr (err->message, msg) == NULL)
    g_error ("row %s: message '%s' lacks '%s'", row->name, err->message, msg);
  g_assert_nonnull (strstr (err->message, "bad.qcow2"));
  tu_rmrf (dir);
}

static void
test_truncated (void)
{
  g_autofree char *dir = tu_tmpdir ();
  g_autofree char *path = g_build_filename (dir, "t.qcow2", NULL);
  g_autoptr (GError) err = NULL;

  g_assert_true (g_file_set_contents (path, "QFI\xfb\0\0\0\3", 8, NULL));
  g_assert_null (df_chain_open (path, DF_FMT_UNKNOWN, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_CORRUPT);
  g_assert_nonnull (strstr (err->message, "file too small"));
  g_clear_error (&err);
  g_autofree char *missing = g_build_filename (dir, "nope.qcow2", NULL);
  g_assert_null (df_chain_open (missing, DF_FMT_UNKNOWN, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
  g_assert_nonnull (strstr (err->message, "no such file"));
  tu_rmrf (dir);
}

/* ---- chains of our own making: loops, depth cap, missing backing ------- */

static void
write_layer (const char *path, const char *backing, uint64_t idx, uint8_t v)
{
  g_autoptr (GError) err = NULL;
  uint8_t buf[CS];
  df_qcow2_writer *w = df_qcow2_writer_new (path, VSIZE, CB, backing, &err);

  g_assert_no_error (err);
  memset (buf, v, sizeof buf);
  g_assert_true (df_qcow2_writer_put (w, idx, buf, &err));
  g_assert_true (df_qcow2_writer_finish (w, &err));
}

static void
test_chain_loop (void)
{
  g_autofree char *dir = tu_tmpdir ();
  g_autofree char *a = g_build_filename (dir, "a.qcow2", NULL);
  g_autofree char *b = g_build_filename (dir, "b.qcow2", NULL);
  g_autofree char *self = g_build_filename (dir, "self.qcow2", NULL);
  g_autoptr (GError) err = NULL;

  write_layer (a, "b.qcow2", 0, 1);
  write_layer (b, "a.qcow2", 1, 2);
  g_assert_null (df_chain_open (a, DF_FMT_UNKNOWN, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_CORRUPT);
  g_assert_nonnull (strstr (err->message, "loop"));
  g_clear_error (&err);
  write_layer (self, "./self.qcow2", 0, 1);
  g_assert_null (df_chain_open (self, DF_FMT_UNKNOWN, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_CORRUPT);
  g_clear_error (&err);

  g_autofree char *orphan = g_build_filename (dir, "orphan.qcow2", NULL);
  write_layer (orphan, "gone.qcow2", 0, 1);
  g_assert_null (df_chain_open (orphan, DF_FMT_UNKNOWN, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
  g_assert_nonnull (strstr (err->message, "gone.qcow2"));
  g_clear_error (&err);

  g_autofree char *proto = g_build_filename (dir, "proto.qcow2", NULL);
  write_layer (proto, "nbd://127.0.0.1/x", 0, 1);
  g_assert_null (df_chain_open (proto, DF_FMT_UNKNOWN, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_UNSUPPORTED);
  tu_rmrf (dir);
}

static void
test_chain_depth_cap (void)
{
  g_autofree char *dir = tu_tmpdir ();
  g_autoptr (GError) err = NULL;
  char name[64], prev[64];

  for (int i = 0; i <= 256; i++)
    {
      g_snprintf (name, sizeof name, "l%03d.qcow2", i);
      g_autofree char *path = g_build_filename (dir, name, NULL);
      write_layer (path, i == 0 ? NULL : prev, (uint64_t) i % 2048,
                   (uint8_t) i);
      memcpy (prev, name, sizeof name);
    }
  g_autofree char *top = g_build_filename (dir, "l256.qcow2", NULL);
  g_assert_null (df_chain_open (top, DF_FMT_UNKNOWN, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_UNSUPPORTED);
  g_assert_nonnull (strstr (err->message, "deeper than 256"));
  g_clear_error (&err);

  /* 256 deep is fine, and every layer's cluster shows through */
  g_autofree char *ok = g_build_filename (dir, "l255.qcow2", NULL);
  g_autoptr (df_blk) b = df_chain_open (ok, DF_FMT_UNKNOWN, &err);
  g_assert_no_error (err);
  guint n = 0;
  df_chain_layers (b, &n);
  g_assert_cmpuint (n, ==, 256);
  uint8_t buf[CS];
  int e = 0;
  for (int i = 0; i < 256; i += 17)
    {
      g_assert_cmpint (df_blk_pread (b, buf, CS, (uint64_t) i * CS, &e), ==, 0);
      g_assert_cmpuint (buf[0], ==, (uint8_t) i);
    }
  tu_rmrf (dir);
}

/* Backing smaller than the top: reads past it are zeros; backing larger
 * than the top is cut at the top's size. */
static void
test_backing_sizes (void)
{
  g_autofree char *dir = tu_tmpdir ();
  g_autofree char *small = g_build_filename (dir, "small.raw", NULL);
  g_autofree char *top = g_build_filename (dir, "top.qcow2", NULL);
  g_autoptr (GError) err = NULL;
  uint8_t data[3 * CS], buf[4 * CS];
  int e = 0;

  memset (data, 0x5a, sizeof data);
  g_assert_true (g_file_set_contents (small, (char *) data, 2 * CS + 100,
                                      NULL));
  df_qcow2_writer *w = df_qcow2_writer_new (top, 8 * CS, CB, "small.raw",
                                            &err);
  g_assert_no_error (err);
  g_assert_true (df_qcow2_writer_finish (w, &err));
  /* our writer names the backing format qcow2, which this raw file is
   * not: the named format is honoured, so the raw file fails as qcow2 */
  df_blk *b = df_chain_open (top, DF_FMT_UNKNOWN, &err);
  g_assert_null (b);
  g_assert_error (err, DF_ERROR, DF_ERROR_CORRUPT);
  g_clear_error (&err);

  /* qemu-img can name a raw backing: use it when present */
  if (!tu_have ("qemu-img"))
    {
      tu_rmrf (dir);
      g_test_skip ("qemu-img not installed");
      return;
    }
  unlink (top);
  tu_sh ("cd '%s' && qemu-img create -q -f qcow2 -b small.raw -F raw "
         "top.qcow2 %u", dir, 8 * CS);
  b = df_chain_open (top, DF_FMT_UNKNOWN, &err);
  g_assert_no_error (err);
  g_assert_cmpint (df_blk_pread (b, buf, sizeof buf, 0, &e), ==, 0);
  g_assert_cmpmem (buf, 2 * CS + 100, data, 2 * CS + 100);
  g_assert_true (tu_is_zero (buf + 2 * CS + 100, 2 * CS - 100));
  g_assert_cmpint (df_blk_pread (b, buf, sizeof buf, 4 * CS, &e), ==, 0);
  g_assert_true (tu_is_zero (buf, sizeof buf));
  tu_compare_with_qemu (b, top, dir);
  df_blk_unref (b);
  tu_rmrf (dir);
}

/* ---- images made by qemu ----------------------------------------------- */

static void
qemu_rw_case (const char *compat)
{
  if (!tu_have ("qemu-img") || !tu_have ("qemu-io"))
    {
      g_test_skip ("qemu-img/qemu-io not installed");
      return;
    }
  g_autofree char *dir = tu_tmpdir ();
  g_autofree char *img = g_build_filename (dir, "q.qcow2", NULL);
  g_autoptr (GError) err = NULL;

  tu_sh ("qemu-img create -q -f qcow2 -o compat=%s '%s' 9M", compat, img);
  tu_sh ("qemu-io -f qcow2 -c 'write -P 0xab 0 1M' -c 'write -P 0xcd 3M 65k' "
         "-c 'write -P 0xef 9215k 1k' -c 'write -P 0x01 5000 3000' '%s' "
         ">/dev/null", img);
  g_autoptr (df_blk) b = df_chain_open (img, DF_FMT_UNKNOWN, &err);
  g_assert_no_error (err);
  guint n = 0;
  const DfChainLayer *l = df_chain_layers (b, &n);
  g_assert_cmpuint (l[0].qcow2_version, ==, strcmp (compat, "0.10") ? 3 : 2);
  tu_compare_with_qemu (b, img, dir);
  tu_rmrf (dir);
}

static void
test_qemu_v2 (void)
{
  qemu_rw_case ("0.10");
}

static void
test_qemu_v3 (void)
{
  qemu_rw_case ("1.1");
}

static void
test_qemu_compressed (void)
{
  if (!tu_have ("qemu-img"))
    {
      g_test_skip ("qemu-img not installed");
      return;
    }
  g_autofree char *dir = tu_tmpdir ();
  g_autofree char *raw = tu_make_pattern_raw (dir, "src.raw", 5 << 20);
  g_autofree char *img = g_build_filename (dir, "c.qcow2", NULL);
  g_autoptr (GError) err = NULL;

  tu_sh ("qemu-img convert -q -c -f raw -O qcow2 '%s' '%s'", raw, img);
  g_autoptr (df_blk) b = df_chain_open (img, DF_FMT_UNKNOWN, &err);
  g_assert_no_error (err);
  tu_compare_with_qemu (b, img, dir);
  tu_compare_with_file (b, raw);
  tu_parallel_compare (b, raw);
  tu_rmrf (dir);
}

static void
test_qemu_zero_clusters (void)
{
  if (!tu_have ("qemu-img") || !tu_have ("qemu-io"))
    {
      g_test_skip ("qemu-img/qemu-io not installed");
      return;
    }
  g_autofree char *dir = tu_tmpdir ();
  g_autofree char *base = g_build_filename (dir, "base.qcow2", NULL);
  g_autofree char *top = g_build_filename (dir, "top.qcow2", NULL);
  g_autoptr (GError) err = NULL;

  tu_sh ("qemu-img create -q -f qcow2 '%s' 4M", base);
  tu_sh ("qemu-io -f qcow2 -c 'write -P 0x77 0 4M' '%s' >/dev/null", base);
  tu_sh ("cd '%s' && qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "
         "top.qcow2", dir);
  tu_sh ("qemu-io -f qcow2 -c 'write -z 64k 128k' -c 'write -z -u 1M 64k' "
         "-c 'write -P 0x12 2M 4k' '%s' >/dev/null", top);
  g_autoptr (df_blk) b = df_chain_open (top, DF_FMT_UNKNOWN, &err);
  g_assert_no_error (err);
  uint8_t buf[4096];
  int e = 0;
  g_assert_cmpint (df_blk_pread (b, buf, sizeof buf, 64 << 10, &e), ==, 0);
  g_assert_true (tu_is_zero (buf, sizeof buf));
  g_assert_true (tu_extent_is_zero (b, 64 << 10, 128 << 10));
  g_assert_false (tu_extent_is_zero (b, 0, 4096));
  tu_compare_with_qemu (b, top, dir);
  tu_rmrf (dir);
}

/* Chain of depth layers over a base made by qemu; returns the top path. */
static char *
make_qemu_chain (const char *dir, int depth)
{
  tu_sh ("cd '%s' && qemu-img create -q -f qcow2 l0.qcow2 64M && "
         "qemu-io -f qcow2 -c 'write -P 0x40 0 16M' -c 'write -P 0x41 32M 1M' "
         "l0.qcow2 >/dev/null", dir);
  for (int i = 1; i <= depth; i++)
    tu_sh ("cd '%s' && qemu-img create -q -f qcow2 -b l%d.qcow2 -F qcow2 "
           "l%d.qcow2 && qemu-io -f qcow2 -c 'write -P %d %d 70000' "
           "-c 'write -z %d 64k' l%d.qcow2 >/dev/null", dir, i - 1, i, i,
           i * 1000003, (i % 7) << 20, i);
  return g_strdup_printf ("%s/l%d.qcow2", dir, depth);
}

static void
chain_case (int depth)
{
  if (!tu_have ("qemu-img") || !tu_have ("qemu-io"))
    {
      g_test_skip ("qemu-img/qemu-io not installed");
      return;
    }
  g_autofree char *dir = tu_tmpdir ();
  g_autofree char *top = make_qemu_chain (dir, depth);
  g_autoptr (GError) err = NULL;
  g_autoptr (df_blk) b = df_chain_open (top, DF_FMT_UNKNOWN, &err);

  g_assert_no_error (err);
  guint n = 0;
  df_chain_layers (b, &n);
  g_assert_cmpuint (n, ==, (guint) depth + 1);
  g_test_message ("depth %d: %zu extents", depth, df_chain_extent_count (b));
  tu_compare_with_qemu (b, top, dir);
  tu_rmrf (dir);
}

static void
test_chain_depth1 (void)
{
  chain_case (1);
}

static void
test_chain_depth20 (void)
{
  chain_case (20);
}

static double
time_random_reads (df_blk *b, int n)
{
  uint8_t buf[4096];
  GRand *r = g_rand_new_with_seed (42);
  int e = 0;
  gint64 t0 = g_get_monotonic_time ();

  for (int i = 0; i < n; i++)
    {
      uint64_t off = (uint64_t) g_rand_int_range (r, 0, (gint32) (b->size >> 12))
                     << 12;
      g_assert_cmpint (df_blk_pread (b, buf, sizeof buf, off, &e), ==, 0);
    }
  g_rand_free (r);
  return (double) (g_get_monotonic_time () - t0) / n;
}

static void
test_timing (void)
{
  if (!tu_have ("qemu-img") || !tu_have ("qemu-io"))
    {
      g_test_skip ("qemu-img/qemu-io not installed");
      return;
    }
  g_autofree char *dir1 = tu_tmpdir ();
  g_autofree char *dir20 = tu_tmpdir ();
  g_autofree char *top1 = make_qemu_chain (dir1, 1);
  g_autofree char *top20 = make_qemu_chain (dir20, 20);
  g_autoptr (df_blk) b1 = df_chain_open (top1, DF_FMT_UNKNOWN, NULL);
  g_autoptr (df_blk) b20 = df_chain_open (top20, DF_FMT_UNKNOWN, NULL);

  time_random_reads (b1, 2000);   /* warm the page cache */
  time_random_reads (b20, 2000);
  double t1 = time_random_reads (b1, 50000);
  double t20 = time_random_reads (b20, 50000);
  g_test_message ("4 KiB random read: depth 1 %.2f us, depth 20 %.2f us "
                  "(ratio %.2f; %zu vs %zu extents)", t1, t20, t20 / t1,
                  df_chain_extent_count (b1), df_chain_extent_count (b20));
  g_assert_cmpfloat (t20, <, t1 * 5 + 5);   /* loose: not a benchmark */
  tu_rmrf (dir1);
  tu_rmrf (dir20);
}

/* 1 TiB sparse image with a few clusters opens fast, small map. */
static void
test_huge_sparse (void)
{
  g_autofree char *dir = tu_tmpdir ();
  g_autofree char *path = g_build_filename (dir, "big.qcow2", NULL);
  g_autoptr (GError) err = NULL;
  uint8_t buf[65536];
  int e = 0;

  memset (buf, 0x99, sizeof buf);
  df_qcow2_writer *w = df_qcow2_writer_new (path, 1ULL << 40, 16, NULL, &err);
  g_assert_no_error (err);
  g_assert_true (df_qcow2_writer_put (w, 7, buf, &err));
  g_assert_true (df_qcow2_writer_put (w, (1ULL << 24) - 1, buf, &err));
  g_assert_true (df_qcow2_writer_finish (w, &err));
  gint64 t0 = g_get_monotonic_time ();
  g_autoptr (df_blk) b = df_chain_open (path, DF_FMT_UNKNOWN, &err);
  gint64 dt = g_get_monotonic_time () - t0;
  g_assert_no_error (err);
  g_test_message ("1 TiB sparse open: %" G_GINT64_FORMAT " us, %zu extents",
                  dt, df_chain_extent_count (b));
  g_assert_cmpuint (df_chain_extent_count (b), <=, 5);
  g_assert_cmpint (df_blk_pread (b, buf, 4096, (1ULL << 40) - 4096, &e), ==, 0);
  g_assert_cmpuint (buf[4095], ==, 0x99);
  g_assert_cmpint (df_blk_pread (b, buf, 4096, 1ULL << 39, &e), ==, 0);
  g_assert_true (tu_is_zero (buf, 4096));
  tu_qemu_check (path);
  tu_rmrf (dir);
}

/* ---- random chains against a model ------------------------------------- */

typedef struct {
  unsigned bits;
  uint64_t vsize;
  uint8_t *state;   /* per cluster: 0 unalloc, 1 zero, else data seed */
} ModelLayer;

static uint8_t
model_byte (const ModelLayer *m, int depth, uint64_t x)
{
  for (int i = 0; i < depth; i++)
    {
      if (x >= m[i].vsize)
        return 0;
      uint8_t st = m[i].state[x >> m[i].bits];
      if (st == 1)
        return 0;
      if (st > 1)
        return (uint8_t) (st + (x & ((1u << m[i].bits) - 1)) % 251);
    }
  return 0;
}

static void
write_model_layer (const char *path, const char *backing, ModelLayer *m,
                   GRand *r)
{
  g_autoptr (GError) err = NULL;
  uint32_t cs = 1u << m->bits;
  uint64_t n = (m->vsize + cs - 1) / cs;
  g_autofree uint8_t *buf = g_malloc (cs);
  df_qcow2_writer *w = df_qcow2_writer_new (path, m->vsize, m->bits, backing,
                                            &err);

  g_assert_no_error (err);
  m->state = g_malloc0 (n);
  for (uint64_t c = 0; c < n; c++)
    {
      int pick = g_rand_int_range (r, 0, 10);
      if (pick < 5)
        continue;
      if (pick < 7)
        {
          m->state[c] = 1;
          g_assert_true (df_qcow2_writer_put_zero (w, c, &err));
          continue;
        }
      m->state[c] = (uint8_t) g_rand_int_range (r, 2, 256);
      for (uint32_t i = 0; i < cs; i++)
        buf[i] = (uint8_t) (m->state[c] + i % 251);
      g_assert_true (df_qcow2_writer_put (w, c, buf, &err));
    }
  g_assert_true (df_qcow2_writer_finish (w, &err));
}

static void
test_random_chains (void)
{
  GRand *r = g_rand_new_with_seed (1234);

  for (int iter = 0; iter < 40; iter++)
    {
      g_autofree char *dir = tu_tmpdir ();
      int depth = g_rand_int_range (r, 1, 7);
      ModelLayer m[7] = { { 0 } };
      char prev[32] = "";
      for (int i = depth - 1; i >= 0; i--)   /* base first */
        {
          char name[32];
          g_snprintf (name, sizeof name, "m%d.qcow2", i);
          g_autofree char *path = g_build_filename (dir, name, NULL);
          m[i].bits = (unsigned) g_rand_int_range (r, 9, 13);
          m[i].vsize = 512 * (uint64_t) g_rand_int_range (r, 1, 192);
          write_model_layer (path, i == depth - 1 ? NULL : prev, &m[i], r);
          memcpy (prev, name, sizeof name);
        }
      g_autofree char *top = g_build_filename (dir, "m0.qcow2", NULL);
      g_autoptr (GError) err = NULL;
      g_autoptr (df_blk) b = df_chain_open (top, DF_FMT_UNKNOWN, &err);
      g_assert_no_error (err);
      g_assert_cmpuint (b->size, ==, m[0].vsize);
      g_autofree uint8_t *buf = g_malloc (b->size);
      int e = 0;
      for (int k = 0; k < 20; k++)
        {
          uint64_t off = (uint64_t) g_rand_int_range (r, 0, (gint32) b->size);
          uint32_t n = (uint32_t) g_rand_int_range (r, 1,
                                                    (gint32) (b->size - off) + 1);
          g_assert_cmpint (df_blk_pread (b, buf, n, off, &e), ==, 0);
          for (uint32_t i = 0; i < n; i++)
            if (buf[i] != model_byte (m, depth, off + i))
              g_error ("iter %d depth %d: byte %" G_GUINT64_FORMAT
                       " is %u, model %u", iter, depth, off + i, buf[i],
                       model_byte (m, depth, off + i));
        }
      if (iter < 3 && tu_have ("qemu-img"))
        tu_compare_with_qemu (b, top, dir);
      for (int i = 0; i < depth; i++)
        g_free (m[i].state);
      tu_rmrf (dir);
    }
  g_rand_free (r);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/qcow2/base-valid", test_base_valid);
  for (gsize i = 0; i < G_N_ELEMENTS (corrupt_rows); i++)
    {
      g_autofree char *name = g_strdup_printf ("/qcow2/corrupt/%s",
                                               corrupt_rows[i].name);
      g_test_add_data_func (name, &corrupt_rows[i], test_corrupt_row);
    }
  g_test_add_func ("/qcow2/truncated", test_truncated);
  g_test_add_func ("/qcow2/chain-loop", test_chain_loop);
  g_test_add_func ("/qcow2/chain-depth-cap", test_chain_depth_cap);
  g_test_add_func ("/qcow2/backing-sizes", test_backing_sizes);
  g_test_add_func ("/qcow2/qemu-v2", test_qemu_v2);
  g_test_add_func ("/qcow2/qemu-v3", test_qemu_v3);
  g_test_add_func ("/qcow2/qemu-compressed", test_qemu_compressed);
  g_test_add_func ("/qcow2/qemu-zero-clusters", test_qemu_zero_clusters);
  g_test_add_func ("/qcow2/chain-depth1", test_chain_depth1);
  g_test_add_func ("/qcow2/chain-depth20", test_chain_depth20);
  g_test_add_func ("/qcow2/timing", test_timing);
  g_test_add_func ("/qcow2/huge-sparse", test_huge_sparse);
  g_test_add_func ("/qcow2/random-chains", test_random_chains);
  return g_test_run ();
}
