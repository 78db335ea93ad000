/* diskfarm: helpers shared by the vdisk unit tests (test-qcow2.c,
 * test-qcow2-write.c).  Header-only: static inline, so each test program
 * takes what it uses. */
#pragma once

#include <glib.h>
#include <glib/gstdio.h>
#include <stdarg.h>
#include <string.h>

#include "test-util.h"
#include "vdisk.h"


static inline bool
tu_is_zero (const void *p, size_t len)
{
  const uint8_t *b = p;
  for (size_t i = 0; i < len; i++)
    if (b[i] != 0)
      return false;
  return true;
}

/* `qemu-img check` says the image is clean (skipped without qemu-img). */
static inline void
tu_qemu_check (const char *path)
{
  if (!tu_have ("qemu-img"))
    return;
  g_autofree char *q = g_shell_quote (path);
  g_autofree char *out = tu_sh_out ("qemu-img check %s", q);
  if (strstr (out, "No errors were found") == NULL)
    g_error ("qemu-img check %s:\n%s", path, out);
}

/* Read the whole df_blk and compare with a raw file. */
static inline void
tu_compare_with_file (df_blk *b, const char *raw)
{
  g_autofree char *want = NULL;
  gsize len = 0;
  const uint32_t chunk = 1u << 20;
  g_autofree uint8_t *buf = g_malloc (chunk);
  int e = 0;

  g_assert_true (g_file_get_contents (raw, &want, &len, NULL));
  g_assert_cmpuint (b->size, ==, len);
  for (uint64_t off = 0; off < len; off += chunk)
    {
      uint32_t n = (uint32_t) MIN ((uint64_t) chunk, len - off);
      g_assert_cmpint (df_blk_pread (b, buf, n, off, &e), ==, 0);
      if (memcmp (buf, want + off, n) != 0)
        g_error ("data differs from %s in [%" G_GUINT64_FORMAT ", +%u)", raw,
                 off, n);
    }
}

/* Convert img with qemu-img to raw in dir and compare. */
static inline void
tu_compare_with_qemu (df_blk *b, const char *img, const char *dir)
{
  g_autofree char *raw = g_build_filename (dir, "qemu-view.raw", NULL);
  g_autofree char *qi = g_shell_quote (img);
  g_autofree char *qr = g_shell_quote (raw);

  tu_sh ("qemu-img convert -q -O raw %s %s", qi, qr);
  tu_compare_with_file (b, raw);
  g_unlink (raw);
}

/* Raw file of size bytes mixing text (compressible), random and zero
 * 64 KiB blocks. */
static inline char *
tu_make_pattern_raw (const char *dir, const char *name, gsize size)
{
  char *path = g_build_filename (dir, name, NULL);
  g_autofree uint8_t *d = g_malloc0 (size);
  GRand *r = g_rand_new_with_seed (7);

  for (gsize off = 0; off < size; off += 65536)
    {
      gsize n = MIN (65536, size - off);
      switch ((off / 65536) % 4)
        {
        case 0:
          for (gsize i = 0; i < n; i++)
            d[off + i] = "diskfarm qcow2 test "[(off / 7 + i) % 20];
          break;
        case 1:
          for (gsize i = 0; i < n; i++)
            d[off + i] = (uint8_t) g_rand_int (r);
          break;
        case 2:
          break;
        case 3:
          memset (d + off, (int) (off >> 16), n / 2);
          break;
        }
    }
  g_rand_free (r);
  g_assert_true (g_file_set_contents (path, (char *) d, (gssize) size, NULL));
  return path;
}

static inline int
tu_note_zero (void *opaque, uint64_t offset, uint64_t length, uint32_t flags)
{
  bool *all_zero = opaque;
  if (!(flags & DF_EXTENT_ZERO))
    *all_zero = false;
  return 0;
}

/* Do the extents of [off, off+len) all say ZERO? */
static inline bool
tu_extent_is_zero (df_blk *b, uint64_t off, uint32_t len)
{
  bool all_zero = true;
  int e = 0;
  g_assert_cmpint (df_blk_extents (b, len, off, tu_note_zero, &all_zero, &e),
                   ==, 0);
  return all_zero;
}

typedef struct {
  df_blk *b;
  const uint8_t *want;
  guint seed;
  int bad;
} TuReader;

static inline gpointer
tu_reader_thread (gpointer data)
{
  TuReader *t = data;
  GRand *r = g_rand_new_with_seed (t->seed);
  uint8_t buf[20000];
  int e = 0;

  for (int i = 0; i < 3000; i++)
    {
      uint32_t n = (uint32_t) g_rand_int_range (r, 1, sizeof buf);
      uint64_t off = (uint64_t) g_rand_int_range (r, 0,
                                                  (gint32) (t->b->size - n));
      if (df_blk_pread (t->b, buf, n, off, &e) < 0
          || memcmp (buf, t->want + off, n) != 0)
        t->bad++;
    }
  g_rand_free (r);
  return NULL;
}

/* Several threads read random unaligned ranges at once and compare. */
static inline void
tu_parallel_compare (df_blk *b, const char *raw)
{
  g_autofree char *want = NULL;
  gsize len = 0;
  TuReader t[4];
  GThread *th[4];

  g_assert_true (g_file_get_contents (raw, &want, &len, NULL));
  for (int i = 0; i < 4; i++)
    {
      t[i] = (TuReader) { .b = b, .want = (uint8_t *) want, .seed = 100 + i };
      th[i] = g_thread_new ("reader", tu_reader_thread, &t[i]);
    }
  for (int i = 0; i < 4; i++)
    {
      g_thread_join (th[i]);
      g_assert_cmpint (t[i].bad, ==, 0);
    }
}
