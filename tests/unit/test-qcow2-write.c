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

/* A layer with backing written by the writer: zero clusters hide the base. */
static void
test_writer_layer (void)
{
  if (!need_qemu ())
    return;
  g_autofree char *dir = tu_tmpdir ();
  g_autofree char *base = g_build_filename (dir, "v.0.qcow2", NULL);
  g_autofree char *top = g_build_filename (dir, "v.1.qcow2", NULL);
  g_autoptr (GError) err = NULL;
  uint8_t buf[65536];

  tu_sh ("qemu-img create -q -f qcow2 '%s' 10M && qemu-io -f qcow2 -c "
         "'write -P 0x33 0 10M' '%s' >/dev/null", base, base);
  df_qcow2_writer *w = df_qcow2_writer_new (top, 10 << 20, 16, "v.0.qcow2",
                                            &err);
  g_assert_no_error (err);
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
  g_autofree char *leftovers = tu_sh_out ("ls '%s' | grep -c tmp || true",
                                          dir);
  g_assert_cmpstr (g_strstrip (leftovers), ==, "0");
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
  g_autofree char *leftovers = tu_sh_out ("ls '%s' | grep -c import || true",
                                          dir);
  g_assert_cmpstr (g_strstrip (leftovers), ==, "0");
  tu_rmrf (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/qcow2-write/layer", test_writer_layer);
  g_test_add_func ("/qcow2-write/from-chain", test_write_from_chain);
  g_test_add_func ("/import/raw-sparse", test_import_raw_sparse);
  g_test_add_func ("/import/errors", test_import_errors);
  g_test_add_func ("/import/formats", test_import_formats);
  return g_test_run ();
}
