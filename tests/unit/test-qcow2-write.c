/* diskfarm: qcow2 writer, whole-disk copies and import.
 * Output is checked by qemu-img (check, compare) when installed. */
#include "config.h"
#include "common.h"
#include "vdisk.h"

#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test-vdisk-util.h"

static bool
need_qemu (void)
{
  if (tu_have ("qemu-img") && tu_have ("qemu-io"))
    return true;
  g_test_skip ("qemu-img/qemu-io not installed");
  return false;
}

static void
compare_images (const char *a, const char *b)
{
  g_autofree char *qa = g_shell_quote (a);
  g_autofree char *qb = g_shell_quote (b);
  g_autofree char *out = tu_sh_out ("qemu-img compare %s %s", qa, qb);
  g_assert_nonnull (strstr (out, "Images are identical"));
}

static uint64_t
allocated_bytes (const char *path)
{
  struct stat st;
  g_assert_cmpint (stat (path, &st), ==, 0);
  return (uint64_t) st.st_blocks * 512;
}

typedef struct {
  uint64_t calls, last;
} Progress;

static void
on_progress (void *opaque, uint64_t done, uint64_t total)
{
  Progress *p = opaque;
  g_assert_cmpuint (done, <=, total);
  g_assert_cmpuint (done, >=, p->last);
  p->calls++;
  p->last = done;
}

/* In dir: v.0.qcow2, 10 MiB of 0x33 written by qemu, and a writer of a
 * v.1.qcow2 over it (caller finishes it; *top: its path, g_free). */
static df_qcow2_writer *
writer_over_base (const char *dir, char **top)
{
  g_autofree char *base = g_build_filename (dir, "v.0.qcow2", NULL);
  g_autoptr (GError) err = NULL;

  tu_sh ("qemu-img create -q -f qcow2 '%s' 10M && qemu-io -f qcow2 -c "
         "'write -P 0x33 0 10M' '%s' >/dev/null", base, base);
  *top = g_build_filename (dir, "v.1.qcow2", NULL);
  df_qcow2_writer *w = df_qcow2_writer_new (*top, 10 << 20, 16, "v.0.qcow2",
                                            &err);
  g_assert_no_error (err);
  return w;
}

/* No name in dir contains what (a writer's temp files are gone). */
static void
assert_no_leftovers (const char *dir, const char *what)
{
  g_autofree char *n = tu_sh_out ("ls '%s' | grep -c %s || true", dir, what);
  g_assert_cmpstr (g_strstrip (n), ==, "0");
}

/* A layer with backing written by the writer: zero clusters hide the base. */
static void
test_writer_layer (void)
{
  if (!need_qemu ())
    return;
  g_autofree char *dir = tu_tmpdir ();
  g_autofree char *top = NULL;
  g_autoptr (GError) err = NULL;
  uint8_t buf[65536];

  df_qcow2_writer *w = writer_over_base (dir, &top);
  memset (buf, 0x44, sizeof buf);
  g_assert_true (df_qcow2_writer_put (w, 150, buf, &err));   /* past 8M L2 */
  g_assert_true (df_qcow2_writer_put (w, 3, buf, &err));
  g_assert_true (df_qcow2_writer_put_zero (w, 4, &err));
  g_assert_false (df_qcow2_writer_put (w, 3, buf, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_clear_error (&err);
  g_assert_true (df_qcow2_writer_finish (w, &err));
  g_assert_no_error (err);
  tu_qemu_check (top);

  g_autofree char *info = tu_sh_out ("qemu-img info '%s'", top);
  g_assert_nonnull (strstr (info, "backing file: v.0.qcow2"));
  g_assert_nonnull (strstr (info, "backing file format: qcow2"));
  g_autoptr (df_blk) b = df_chain_open (top, DF_FMT_UNKNOWN, &err);
  g_assert_no_error (err);
  int e = 0;
  g_assert_cmpint (df_blk_pread (b, buf, 4, 4 << 16, &e), ==, 0);
  g_assert_true (tu_is_zero (buf, 4));
  g_assert_cmpint (df_blk_pread (b, buf, 4, 5 << 16, &e), ==, 0);
  g_assert_cmpuint (buf[0], ==, 0x33);
  tu_compare_with_qemu (b, top, dir);
  tu_rmrf (dir);
}

/* Flatten a qemu chain with compressed and zero clusters into a standalone
 * sparse image; qemu-img agrees with the result. */
static void
test_write_from_chain (void)
{
  if (!need_qemu ())
    return;
  g_autofree char *dir = tu_tmpdir ();
  g_free (tu_make_pattern_raw (dir, "p.raw", 6 << 20));
  g_autoptr (GError) err = NULL;

  tu_sh ("cd '%s' && qemu-img convert -q -c -f raw -O qcow2 p.raw c.qcow2 && "
         "qemu-img create -q -f qcow2 -b c.qcow2 -F qcow2 top.qcow2 9M && "
         "qemu-io -f qcow2 -c 'write -z 0 256k' -c 'write -P 9 7M 100k' "
         "top.qcow2 >/dev/null", dir);
  g_autofree char *top = g_build_filename (dir, "top.qcow2", NULL);
  g_autofree char *out = g_build_filename (dir, "flat.qcow2", NULL);
  g_autoptr (df_blk) b = df_chain_open (top, DF_FMT_UNKNOWN, &err);
  g_assert_no_error (err);
  Progress p = { 0 };
  g_assert_true (df_qcow2_write_from_blk (b, out, on_progress, &p, &err));
  g_assert_no_error (err);
  g_assert_cmpuint (p.last, ==, b->size);
  g_assert_cmpuint (p.calls, >=, 2);
  tu_qemu_check (out);
  compare_images (top, out);
  g_autofree char *info = tu_sh_out ("qemu-img info '%s'", out);
  g_assert_null (strstr (info, "backing file"));

  /* never overwrites */
  g_assert_false (df_qcow2_write_from_blk (b, out, NULL, NULL, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_EXISTS);
  g_clear_error (&err);

  g_autofree char *rawout = g_build_filename (dir, "flat.raw", NULL);
  g_assert_true (df_raw_write_from_blk (b, rawout, NULL, NULL, &err));
  g_assert_no_error (err);
  tu_sh ("qemu-img compare -q -f qcow2 -F raw '%s' '%s'", top, rawout);
  assert_no_leftovers (dir, "tmp");
  tu_rmrf (dir);
}

/* Import a sparse raw: zero regions stay unallocated. */
static void
test_import_raw_sparse (void)
{
  g_autofree char *dir = tu_tmpdir ();
  g_autofree char *src = g_build_filename (dir, "disk.raw", NULL);
  g_autofree char *dest = g_build_filename (dir, "v.0.qcow2", NULL);
  g_autoptr (GError) err = NULL;
  uint8_t buf[8192];
  uint64_t vsize = 0;

  FILE *f = fopen (src, "w");
  g_assert_nonnull (f);
  g_assert_cmpint (ftruncate (fileno (f), 256 << 20), ==, 0);
  memset (buf, 0xa5, sizeof buf);
  g_assert_cmpint (pwrite (fileno (f), buf, sizeof buf, 1 << 20), ==,
                   sizeof buf);
  memset (buf, 0, sizeof buf);   /* explicit zeros: must not be stored */
  g_assert_cmpint (pwrite (fileno (f), buf, sizeof buf, 100 << 20), ==,
                   sizeof buf);
  buf[10] = 1;
  g_assert_cmpint (pwrite (fileno (f), buf, sizeof buf, (256 << 20) - 8192),
                   ==, sizeof buf);
  fclose (f);

  g_assert_true (df_vdisk_import (src, "auto", dest, NULL, NULL, &vsize,
                                  &err));
  g_assert_no_error (err);
  g_assert_cmpuint (vsize, ==, 256 << 20);
  g_assert_cmpuint (allocated_bytes (dest), <, 1 << 20);
  g_autoptr (df_blk) b = df_chain_open (dest, DF_FMT_QCOW2, &err);
  g_assert_no_error (err);
  tu_compare_with_file (b, src);
  g_assert_true (tu_extent_is_zero (b, 100 << 20, 1 << 20));
  g_assert_false (tu_extent_is_zero (b, 1 << 20, 4096));
  if (tu_have ("qemu-img"))
    {
      tu_qemu_check (dest);
      tu_sh ("qemu-img compare -q -f raw -F qcow2 '%s' '%s'", src, dest);
    }
  tu_rmrf (dir);
}

static void
test_import_errors (void)
{
  g_autofree char *dir = tu_tmpdir ();
  g_autofree char *missing = g_build_filename (dir, "nope.raw", NULL);
  g_autofree char *dest = g_build_filename (dir, "out.qcow2", NULL);
  g_autoptr (GError) err = NULL;

  g_assert_false (df_vdisk_import (missing, NULL, dest, NULL, NULL, NULL,
                                   &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
  g_autofree char *want = g_strdup_printf ("no such file: %s", missing);
  g_assert_cmpstr (err->message, ==, want);
  g_clear_error (&err);

  g_assert_true (g_file_set_contents (missing, "x", 1, NULL));
  g_assert_false (df_vdisk_import (missing, "floppy", dest, NULL, NULL, NULL,
                                   &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_assert_false (g_file_test (dest, G_FILE_TEST_EXISTS));
  g_clear_error (&err);

  /* a disk is whole sectors: 6 bytes, 513 bytes and 0 bytes are refused
   * and leave nothing in the directory */
  static const gsize sizes[] = { 6, 513, 1023, 0 };
  for (gsize i = 0; i < G_N_ELEMENTS (sizes); i++)
    {
      g_autofree char *data = g_malloc0 (sizes[i] + 1);
      g_assert_true (g_file_set_contents (missing, data, sizes[i], NULL));
      g_assert_false (df_vdisk_import (missing, "raw", dest, NULL, NULL,
                                       NULL, &err));
      g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
      g_assert_nonnull (strstr (err->message, sizes[i] ? "not a multiple of 512"
                                                       : "is empty"));
      g_clear_error (&err);
      g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
      g_assert_cmpstr (g_dir_read_name (d), ==, "nope.raw");
      g_assert_null (g_dir_read_name (d));
    }
  tu_rmrf (dir);
}

/* qcow2 with a chain imports as one standalone base; vmdk/vhdx/vpc/vdi go
 * through qemu-img convert (probed by magic). */
static void
test_import_formats (void)
{
  if (!need_qemu ())
    return;
  g_autofree char *dir = tu_tmpdir ();
  g_autofree char *raw = tu_make_pattern_raw (dir, "p.raw", 3 << 20);
  g_autoptr (GError) err = NULL;
  static const char *const fmts[] = { "qcow2", "vmdk", "vhdx", "vpc", "vdi" };

  for (gsize i = 0; i < G_N_ELEMENTS (fmts); i++)
    {
      g_autofree char *src = g_strdup_printf ("%s/src.%s", dir, fmts[i]);
      g_autofree char *dest = g_strdup_printf ("%s/imp-%s.qcow2", dir,
                                               fmts[i]);
      uint64_t vsize = 0;
      tu_sh ("qemu-img convert -q -f raw -O %s '%s' '%s'", fmts[i], raw, src);
      g_assert_true (df_vdisk_import (src, "auto", dest, NULL, NULL, &vsize,
                                      &err));
      g_assert_no_error (err);
      g_assert_cmpuint (vsize, >=, 3 << 20);
      tu_qemu_check (dest);
      tu_sh ("qemu-img compare -q '%s' '%s'", src, dest);
      g_test_message ("imported %s", fmts[i]);
    }
  assert_no_leftovers (dir, "import");
  tu_rmrf (dir);
}

/* SHA-256 of a file, as recorded for a published version. */
static void
assert_file_sha256 (const char *path, const char *want)
{
  g_autoptr (GError) err = NULL;
  char sha[65];

  g_assert_true (df_file_sha256 (path, sha, &err));
  g_assert_no_error (err);
  g_assert_cmpstr (sha, ==, want);
}

/* Fill the next run buffer with byte v and put clusters [first, first+n). */
static bool
put_pattern_run (df_qcow2_writer *w, uint64_t first, uint32_t n, int v,
                 GError **err)
{
  uint32_t max = 0;
  uint8_t *buf = df_qcow2_writer_run_buffer (w, &max);
  g_assert_cmpuint (n, <=, max);
  memset (buf, v, (size_t) n << 16);
  return df_qcow2_writer_put_run (w, first, n, buf, err);
}

/* Planned writer: layout front to back, zero clusters hide the backing
 * file, the returned SHA-256 is that of the file, order is enforced. */
static void
test_writer_planned (void)
{
  if (!need_qemu ())
    return;
  g_autofree char *dir = tu_tmpdir ();
  g_autofree char *top = NULL;
  g_autoptr (GError) err = NULL;
  uint8_t buf[4];
  char sha[65];

  df_qcow2_writer *w = writer_over_base (dir, &top);
  g_assert_true (df_qcow2_writer_plan_data (w, 3, &err));
  g_assert_true (df_qcow2_writer_put_zero (w, 4, &err));
  g_assert_true (df_qcow2_writer_plan_data (w, 150, &err));  /* 2nd L2 */
  g_assert_true (df_qcow2_writer_plan_data (w, 151, &err));
  g_assert_false (df_qcow2_writer_plan_data (w, 100, &err)); /* backwards */
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_clear_error (&err);
  g_assert_false (df_qcow2_writer_plan_data (w, 160, &err)); /* too far */
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_clear_error (&err);
  g_assert_true (df_qcow2_writer_start_data (w, &err));
  g_assert_no_error (err);
  g_assert_false (put_pattern_run (w, 150, 1, 0x55, &err));  /* skips 3 */
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_clear_error (&err);
  g_assert_true (put_pattern_run (w, 3, 1, 0x44, &err));
  g_assert_false (put_pattern_run (w, 150, 3, 0x55, &err));  /* 152 unplanned */
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_clear_error (&err);
  g_assert_true (put_pattern_run (w, 150, 2, 0x55, &err));
  g_assert_true (df_qcow2_writer_finish_sha256 (w, sha, &err));
  g_assert_no_error (err);
  assert_file_sha256 (top, sha);
  tu_qemu_check (top);

  g_autoptr (df_blk) b = df_chain_open (top, DF_FMT_UNKNOWN, &err);
  g_assert_no_error (err);
  int e = 0;
  static const struct { uint64_t off; uint8_t v; } want[] = {
    { 3 << 16, 0x44 }, { 4 << 16, 0 }, { 5 << 16, 0x33 },
    { 150 << 16, 0x55 }, { (152 << 16) - 1, 0x55 }, { 152 << 16, 0x33 },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (want); i++)
    {
      g_assert_cmpint (df_blk_pread (b, buf, 1, want[i].off, &e), ==, 0);
      g_assert_cmpuint (buf[0], ==, want[i].v);
    }
  tu_compare_with_qemu (b, top, dir);

  /* finishing before every planned cluster is written fails */
  g_autofree char *part = g_build_filename (dir, "part.qcow2", NULL);
  w = df_qcow2_writer_new (part, 1 << 20, 16, NULL, &err);
  g_assert_true (df_qcow2_writer_plan_data (w, 0, &err));
  g_assert_true (df_qcow2_writer_plan_data (w, 1, &err));
  g_assert_true (df_qcow2_writer_start_data (w, &err));
  g_assert_true (put_pattern_run (w, 0, 1, 1, &err));
  g_assert_false (df_qcow2_writer_finish_sha256 (w, sha, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_clear_error (&err);
  g_assert_cmpint (unlink (part), ==, 0);

  /* abort while the hasher holds buffers: file removed, nothing leaks */
  w = df_qcow2_writer_new (part, 1 << 20, 16, NULL, &err);
  for (uint64_t c = 0; c < 16; c++)
    g_assert_true (df_qcow2_writer_plan_data (w, c, &err));
  g_assert_true (df_qcow2_writer_start_data (w, &err));
  for (uint64_t c = 0; c < 8; c++)
    g_assert_true (put_pattern_run (w, c, 1, (int) c + 1, &err));
  df_qcow2_writer_abort (w);
  g_assert_false (g_file_test (part, G_FILE_TEST_EXISTS));
  tu_rmrf (dir);
}

/* Merge the top layers of a qemu-made chain (data, zero clusters hiding
 * the base, compressed clusters, unaligned writes, a short last cluster):
 * the updates layer equals the chain, the base equals qemu-img convert,
 * the SHA-256 is the file's. */
static void
test_merge_layers (void)
{
  if (!need_qemu ())
    return;
  g_autofree char *dir = tu_tmpdir ();
  g_autoptr (GError) err = NULL;
  char sha[65];

  g_free (tu_make_pattern_raw (dir, "p.raw", (9 << 20) + 4096));
  tu_sh ("cd '%s' && qemu-img convert -q -c -f raw -O qcow2 p.raw v.0.qcow2 "
         "&& qemu-img create -q -f qcow2 -b v.0.qcow2 -F qcow2 v.1.qcow2 && "
         "qemu-io -f qcow2 -c 'write -P 1 1M 3M' -c 'write -z 6M 1M' "
         "-c 'write -P 7 9M 4k' v.1.qcow2 >/dev/null && "
         "qemu-img create -q -f qcow2 -b v.1.qcow2 -F qcow2 v.2.qcow2 && "
         "qemu-io -f qcow2 -c 'write -P 2 1052672 4k' -c 'write -z 2M 64k' "
         "-c 'write -P 3 8M 100k' v.2.qcow2 >/dev/null", dir);
  g_autofree char *top = g_build_filename (dir, "v.2.qcow2", NULL);
  g_autofree char *upd = g_build_filename (dir, "v.3.qcow2", NULL);
  g_autofree char *flat = g_build_filename (dir, "v.4.qcow2", NULL);

  Progress p = { 0 };
  g_assert_true (df_vdisk_merge_layers_sha256 (top, 2, upd, "v.0.qcow2",
                                               on_progress, &p, sha, &err));
  g_assert_no_error (err);
  g_assert_cmpuint (p.calls, >=, 2);
  assert_file_sha256 (upd, sha);
  tu_qemu_check (upd);
  compare_images (top, upd);
  g_autofree char *info = tu_sh_out ("qemu-img info '%s'", upd);
  g_assert_nonnull (strstr (info, "backing file: v.0.qcow2"));
  /* only what layers 1..2 allocate: about 4.2 MiB of data + 1 MiB zero */
  g_assert_cmpuint (allocated_bytes (upd), <, 6 << 20);

  g_assert_true (df_vdisk_merge_layers_sha256 (top, 3, flat, NULL, NULL, NULL,
                                               sha, &err));
  g_assert_no_error (err);
  assert_file_sha256 (flat, sha);
  tu_qemu_check (flat);
  compare_images (top, flat);
  info = (g_free (info), tu_sh_out ("qemu-img info '%s'", flat));
  g_assert_null (strstr (info, "backing file"));

  /* the plain variant writes the same file */
  g_autofree char *again = g_build_filename (dir, "v.5.qcow2", NULL);
  g_assert_true (df_vdisk_merge_layers (top, 3, again, NULL, NULL, NULL,
                                        &err));
  assert_file_sha256 (again, sha);

  /* refusals: layer count against the backing, existing output */
  g_assert_false (df_vdisk_merge_layers_sha256 (top, 3, upd, "v.0.qcow2",
                                                NULL, NULL, sha, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_clear_error (&err);
  g_assert_false (df_vdisk_merge_layers_sha256 (top, 2, upd, "v.0.qcow2",
                                                NULL, NULL, sha, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_EXISTS);
  g_clear_error (&err);
  tu_rmrf (dir);
}

static const TuTest tests[] = {
  { "/qcow2-write/layer", test_writer_layer },
  { "/qcow2-write/from-chain", test_write_from_chain },
  { "/qcow2-write/planned", test_writer_planned },
  { "/merge/layers", test_merge_layers },
  { "/import/raw-sparse", test_import_raw_sparse },
  { "/import/errors", test_import_errors },
  { "/import/formats", test_import_formats },
};

TU_MAIN (tests)
