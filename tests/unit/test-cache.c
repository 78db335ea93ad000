/* diskfarm: unit tests of the write caches (lib/vdisk/cache*.c).
 * The base is an in-test read-only df_blk over a memory buffer, so these
 * tests do not depend on the qcow2 chain. */
#include "common.h"
#include "vdisk.h"
#include "blk_lease.h"
#include "test-util.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define KiB 1024u
#define MiB (1024u * 1024)
#define BS  4096u
#define BASE_CHUNK (64 * KiB)  /* extent granularity of the memory base */

/* ---- a read-only memory base -------------------------------------------- */

typedef struct {
  df_blk blk;
  uint8_t *data;              /* owned */
} mem_base;

static int
mem_pread (df_blk *b, void *buf, uint32_t count, uint64_t offset, int *err)
{
  memcpy (buf, ((mem_base *) b)->data + offset, count);
  return 0;
}

static bool
mem_chunk_zero (mem_base *m, uint64_t chunk)
{
  uint64_t off = chunk * BASE_CHUNK;
  uint64_t len = MIN ((uint64_t) BASE_CHUNK, m->blk.size - off);

  for (uint64_t i = 0; i < len; i++)
    if (m->data[off + i] != 0)
      return false;
  return true;
}

/* Reports all-zero 64 KiB chunks as holes, like a sparse qcow2. */
static int
mem_extents (df_blk *b, uint32_t count, uint64_t offset, df_extent_cb cb,
             void *opaque, int *err)
{
  mem_base *m = (mem_base *) b;
  uint64_t end = offset + count;

  for (uint64_t pos = offset; pos < end;)
    {
      uint64_t chunk = pos / BASE_CHUNK;
      uint64_t stop = MIN ((chunk + 1) * BASE_CHUNK, end);
      uint32_t flags = mem_chunk_zero (m, chunk)
                         ? DF_EXTENT_HOLE | DF_EXTENT_ZERO : 0;
      if (cb (opaque, pos, stop - pos, flags) == -1)
        return 0;
      pos = stop;
    }
  return 0;
}

static void
mem_destroy (df_blk *b)
{
  g_free (((mem_base *) b)->data);
  g_free (b);
}

static const df_blk_ops mem_ops = {
  .name = "test-mem",
  .pread = mem_pread,
  .extents = mem_extents,
  .destroy = mem_destroy,
};

/* Deterministic content: every third 64 KiB chunk is zero. */
static df_blk *
mem_base_new (uint64_t size, guint32 seed)
{
  mem_base *m = g_new0 (mem_base, 1);
  GRand *r = g_rand_new_with_seed (seed);

  df_blk_init (&m->blk, &mem_ops, size, true);
  m->data = g_malloc0 (size);
  for (uint64_t i = 0; i < size; i++)
    if ((i / BASE_CHUNK) % 3 != 1)
      m->data[i] = (uint8_t) g_rand_int (r);
  g_rand_free (r);
  return &m->blk;
}

static const uint8_t *
mem_data (df_blk *b)
{
  return ((mem_base *) b)->data;
}

/* ---- helpers ------------------------------------------------------------- */

static int
count_files (const char *dir)
{
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  int n = 0;

  while (d != NULL && g_dir_read_name (d) != NULL)
    n++;
  return n;
}

static df_blk *
open_cache (df_blk *base, const char *dir, const char *mode_str,
            uint64_t quota)
{
  g_autoptr (GError) err = NULL;
  DfCacheMode mode;
  df_blk *c;

  g_auto (DfCachePin) pin = { 0 };

  g_assert_true (df_cache_mode_parse (mode_str, &mode, &err));
  if (df_cache_mode_desc (&mode)->pins_base
      && !df_cache_pin_read (dir, &pin, NULL))
    g_assert_true (df_cache_pin_write (
        dir, &(DfCachePin) { .vdisk = "test", .version = 1 }, &err));
  c = df_cache_open (base, dir, &mode, quota, &err);
  g_assert_no_error (err);
  g_assert_nonnull (c);
  g_assert_false (c->readonly);
  g_assert_true (c->can_trim && c->can_zero && c->can_flush);
  return c;
}

static bool
mode_is_persistent (const char *mode_str)
{
  DfCacheMode mode;

  g_assert_true (df_cache_mode_parse (mode_str, &mode, NULL));
  return df_cache_mode_is_persistent (&mode);
}

static void
check_read (df_blk *c, const uint8_t *ref, uint64_t off, uint32_t len)
{
  g_autofree uint8_t *buf = g_malloc (len);
  int err = 0;

  g_assert_cmpint (df_blk_pread (c, buf, len, off, &err), ==, 0);
  if (memcmp (buf, ref + off, len) != 0)
    {
      uint32_t i = 0;
      while (buf[i] == ref[off + i])
        i++;
      g_error ("read %u at %" G_GUINT64_FORMAT ": first difference at %"
               G_GUINT64_FORMAT " (got %u, want %u)", len, off, off + i,
               buf[i], ref[off + i]);
    }
}

static void
check_all (df_blk *c, const uint8_t *ref)
{
  for (uint64_t off = 0; off < c->size; off += MiB)
    check_read (c, ref, off, (uint32_t) MIN ((uint64_t) MiB, c->size - off));
}

static void
do_write (df_blk *c, const void *buf, uint32_t len, uint64_t off)
{
  int err = 0;

  g_assert_cmpint (df_blk_pwrite (c, buf, len, off, 0, &err), ==, 0);
}

static void
fill_pattern (uint8_t *buf, size_t len, uint32_t seed)
{
  for (size_t i = 0; i < len; i++)
    buf[i] = (uint8_t) ((seed * 2654435761u + i * 31 + (i >> 9)) | 1);
}

/* ---- mode parsing --------------------------------------------------------- */

static void
test_mode_parse (void)
{
  static const struct {
    const char *s;
    DfCacheKind kind;
    uint64_t ram;
    const char *canon;
  } good[] = {
    { "server", DF_CACHE_SERVER, 0, "server" },
    { "server-persistent", DF_CACHE_PERSISTENT, 0, "server-persistent" },
    { "ram:1", DF_CACHE_RAM, 1 * MiB, "ram:1" },
    { "ram:512", DF_CACHE_RAM, 512ull * MiB, "ram:512" },
    { "ram:1048576", DF_CACHE_RAM, 1048576ull * MiB, "ram:1048576" },
    { "ram:007", DF_CACHE_RAM, 7ull * MiB, "ram:7" },
    { "hypervisor", DF_CACHE_HYPERVISOR, 0, "hypervisor" },
    { "private", DF_CACHE_PRIVATE, 0, "private" },
  };
  static const char *const bad[] = {
    "", "ram", "ram:", "ram:0", "ram:-1", "ram:abc", "ram:12abc", "ram: 12",
    "ram:+12", "ram:1.5", "ram:0x10", "ram:1048577",
    "ram:18446744073709551615", "ram:99999999999999999999999",
    "server-persistentx", "Server", "server ", " server", "serverx",
    "Private", "private:1", "privatex", "private ", "RAM:12", "Hypervisor", "hypervisor ", "hypervisor:1",
    "hypervisorx", "hyper",
  };

  for (gsize i = 0; i < G_N_ELEMENTS (good); i++)
    {
      g_autoptr (GError) err = NULL;
      g_autofree char *canon = NULL;
      DfCacheMode m;

      g_assert_true (df_cache_mode_parse (good[i].s, &m, &err));
      g_assert_no_error (err);
      canon = df_cache_mode_to_string (&m);
      g_assert_cmpint (m.kind, ==, good[i].kind);
      g_assert_cmpuint (m.ram_limit, ==, good[i].ram);
      g_assert_cmpstr (canon, ==, good[i].canon);
      g_assert_cmpint (df_cache_mode_is_persistent (&m), ==,
                       good[i].kind == DF_CACHE_PERSISTENT
                       || good[i].kind == DF_CACHE_PRIVATE);
    }
  for (gsize i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_autoptr (GError) err = NULL;
      DfCacheMode m = { .kind = DF_CACHE_SERVER, .ram_limit = 42 };

      g_assert_false (df_cache_mode_parse (bad[i], &m, &err));
      g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
      g_test_message ("mode \"%s\" -> %s", bad[i], err->message);
      g_assert_cmpuint (m.ram_limit, ==, 42); /* untouched */
    }
  g_assert_false (df_cache_mode_parse (NULL, &(DfCacheMode) { 0 }, NULL));
}

/* hypervisor: no server-side cache; df_cache_open refuses it and creates
 * nothing (streamsvc serves the chain read-only instead). */
static void
test_hypervisor_refused (void)
{
  g_autofree char *top = tu_tmpdir ();
  g_autofree char *dir = g_build_filename (top, "dev", NULL);
  g_autoptr (df_blk) base = mem_base_new (1 * MiB, 3);
  g_autoptr (GError) err = NULL;
  DfCacheMode mode;

  g_assert_true (df_cache_mode_parse ("hypervisor", &mode, &err));
  g_assert_false (df_cache_mode_is_persistent (&mode));
  g_assert_null (df_cache_open (base, dir, &mode, 0, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_assert_nonnull (strstr (err->message, "hypervisor"));
  g_assert_false (g_file_test (dir, G_FILE_TEST_EXISTS));
  g_assert_cmpint (g_rmdir (top), ==, 0);
}

/* ---- the mode table ------------------------------------------------------- */

/* A spelling of row d that must parse to it. */
static const char *
row_sample (const DfCacheModeDesc *d)
{
  return d->parse_arg != NULL ? "ram:64" : d->name;
}

/* Every row: indexed by its kind, a unique name, parses and prints back,
 * named in the unknown-mode message; the flags hold together. */
static void
test_mode_table (void)
{
  guint n = 0;
  const DfCacheModeDesc *rows = df_cache_modes (&n);
  g_autoptr (GError) err = NULL;

  g_assert_cmpuint (n, ==, DF_CACHE_N_KINDS);
  g_assert_false (df_cache_mode_parse ("no-such-mode", &(DfCacheMode) { 0 },
                                       &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_assert_nonnull (strstr (err->message, "unknown cache mode"));
  for (guint i = 0; i < n; i++)
    {
      const DfCacheModeDesc *d = &rows[i];
      g_autofree char *canon = NULL;
      DfCacheMode m;

      g_assert_cmpint (d->kind, ==, (DfCacheKind) i);
      for (guint j = 0; j < i; j++)
        g_assert_cmpstr (rows[j].name, !=, d->name);
      g_assert_true (df_cache_mode_parse (row_sample (d), &m, NULL));
      g_assert_true (df_cache_mode_desc (&m) == d);
      canon = df_cache_mode_to_string (&m);
      g_assert_cmpstr (canon, ==, row_sample (d));
      g_assert_nonnull (strstr (err->message, d->syntax));
      g_assert_nonnull (strstr (df_cache_modes_expected (), d->syntax));
      g_assert_true ((d->parse_arg == NULL) == (d->format_arg == NULL));
      /* Durable data lives in named files that discard can find. */
      g_assert_true (!d->persistent || d->files != NULL);
      g_assert_true ((d->files != NULL) == (d->label != NULL));
      g_assert_true (!d->persistent || d->open_store != NULL);
      g_assert_true (!d->pins_base || d->persistent);
      g_assert_true (!d->survives_reset || d->persistent);
    }
  g_assert_true (rows[DF_CACHE_PRIVATE].pins_base);
  g_assert_true (rows[DF_CACHE_PRIVATE].survives_reset);
  g_assert_null (rows[DF_CACHE_HYPERVISOR].open_store);
}

/* A mode without a server-side cache is served its base, read-only. */
static void
test_mode_open_readonly (void)
{
  g_autofree char *top = tu_tmpdir ();
  g_autofree char *dir = g_build_filename (top, "dev", NULL);
  g_autoptr (df_blk) base = mem_base_new (1 * MiB, 3);
  g_autoptr (df_blk) served = NULL;
  g_autoptr (df_blk) cache = NULL;
  DfCacheMode mode;

  g_assert_true (df_cache_mode_parse ("hypervisor", &mode, NULL));
  served = df_cache_mode_open (base, dir, &mode, 0, NULL);
  g_assert_true (served == base);
  g_assert_true (served->readonly);
  g_assert_false (df_cache_is_cache (served));
  g_assert_false (g_file_test (dir, G_FILE_TEST_EXISTS));
  g_assert_true (df_cache_mode_parse ("server", &mode, NULL));
  cache = df_cache_mode_open (base, dir, &mode, 0, NULL);
  g_assert_nonnull (cache);
  g_assert_false (cache->readonly);
  g_assert_true (df_cache_is_cache (cache));
  g_clear_pointer (&cache, df_blk_unref);
  tu_rmrf (top);
}

/* ---- private images --------------------------------------------------------- */

static df_blk *
open_private (df_blk *base, const char *dir, GError **err)
{
  DfCacheMode mode = { .kind = DF_CACHE_PRIVATE };

  return df_cache_open (base, dir, &mode, 0, err);
}

/* The pin: needed before any data, read back, never replaced. */
static void
test_private_pin (void)
{
  g_autofree char *top = tu_tmpdir ();
  g_autofree char *dir = g_build_filename (top, "pc01", NULL);
  g_autofree char *pinfile = g_build_filename (dir, "private.base", NULL);
  g_autoptr (df_blk) base = mem_base_new (1 * MiB, 4);
  g_auto (DfCachePin) pin = { 0 };
  g_autoptr (GError) err = NULL;

  g_assert_false (df_cache_pin_read (dir, &pin, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
  g_clear_error (&err);
  /* No pin: the store refuses to make a layer over an unknown base. */
  g_assert_null (open_private (base, dir, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_clear_error (&err);
  g_assert_cmpint (count_files (dir), ==, 0);

  g_assert_true (df_cache_pin_write (
      dir, &(DfCachePin) { .vdisk = "win10", .version = 3 }, &err));
  g_assert_no_error (err);
  g_assert_true (df_cache_pin_read (dir, &pin, &err));
  g_assert_cmpstr (pin.vdisk, ==, "win10");
  g_assert_cmpint (pin.version, ==, 3);
  g_assert_false (df_cache_pin_write (
      dir, &(DfCachePin) { .vdisk = "win10", .version = 4 }, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_EXISTS);
  g_clear_error (&err);
  df_cache_pin_clear (&pin);
  g_assert_true (df_cache_pin_read (dir, &pin, NULL));
  g_assert_cmpint (pin.version, ==, 3);               /* unchanged */

  /* The version file's SHA-256 goes with it. */
  g_assert_true (df_cache_discard_dir (dir, &err));
  g_assert_true (df_cache_pin_write (
      dir, &(DfCachePin) { .vdisk = "win10", .version = 3,
                           .sha256 = (char *) "0123456789abcdef0123456789abcdef"
                                              "0123456789abcdef0123456789abcdef" },
      &err));
  df_cache_pin_clear (&pin);
  g_assert_true (df_cache_pin_read (dir, &pin, &err));
  g_assert_cmpuint (strlen (pin.sha256), ==, 64);
  g_assert_cmpstr (pin.sha256 + 60, ==, "cdef");

  /* A damaged pin is refused, not guessed. */
  g_assert_true (g_file_set_contents (pinfile, "[private]\nvdisk=../x\n"
                                      "version=3\n", -1, NULL));
  df_cache_pin_clear (&pin);
  g_assert_false (df_cache_pin_read (dir, &pin, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_CORRUPT);
  g_clear_error (&err);
  g_assert_true (g_file_set_contents (pinfile, "[private]\nvdisk=win10\n"
                                      "version=-1\n", -1, NULL));
  g_assert_false (df_cache_pin_read (dir, &pin, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_CORRUPT);
  g_clear_error (&err);
  g_assert_true (g_file_set_contents (pinfile, "[private]\nvdisk=win10\n"
                                      "version=1\nsha256=XYZ\n", -1, NULL));
  g_assert_false (df_cache_pin_read (dir, &pin, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_CORRUPT);
  g_clear_error (&err);

  /* discard_dir (device reset --discard, device remove) takes it all. */
  g_assert_true (df_cache_discard_dir (dir, &err));
  g_assert_cmpint (count_files (dir), ==, 0);
  tu_rmrf (top);
}

/* Writes survive close and reopen; a second opener and an export are
 * refused while it is open; the export is base + writes. */
static void
test_private_reopen_export (void)
{
  g_autofree char *dir = tu_tmpdir ();
  g_autofree char *out = g_build_filename (dir, "out.raw", NULL);
  g_autofree char *outq = g_build_filename (dir, "out.qcow2", NULL);
  g_autoptr (df_blk) base = mem_base_new (2 * MiB, 7);
  g_autofree uint8_t *ref = g_memdup2 (mem_data (base), 2 * MiB);
  g_autoptr (GError) err = NULL;
  g_autofree char *got = NULL;
  gsize len = 0;
  df_blk *c;

  g_assert_false (df_cache_private_export (base, dir, out, DF_FMT_RAW, NULL,
                                           NULL, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
  g_clear_error (&err);
  c = open_cache (base, dir, "private", 0);
  fill_pattern (ref + 5000, 100 * KiB, 21);
  do_write (c, ref + 5000, 100 * KiB, 5000);
  g_assert_null (open_private (base, dir, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_BUSY);
  g_clear_error (&err);
  g_assert_false (df_cache_private_export (base, dir, out, DF_FMT_RAW, NULL,
                                           NULL, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_BUSY);
  g_clear_error (&err);
  g_assert_false (g_file_test (out, G_FILE_TEST_EXISTS));
  df_blk_unref (c);                                   /* flushes */

  c = open_cache (base, dir, "private", 0);
  check_all (c, ref);
  df_blk_unref (c);

  g_assert_true (df_cache_private_export (base, dir, out, DF_FMT_RAW, NULL,
                                          NULL, &err));
  g_assert_no_error (err);
  g_assert_true (g_file_get_contents (out, &got, &len, NULL));
  g_assert_cmpuint (len, ==, 2 * MiB);
  g_assert_true (memcmp (got, ref, len) == 0);
  g_assert_true (df_cache_private_export (base, dir, outq, DF_FMT_QCOW2,
                                          NULL, NULL, &err));
  {
    g_autoptr (df_blk) q = df_chain_open (outq, DF_FMT_QCOW2, &err);
    g_assert_no_error (err);
    g_assert_null (df_chain_layers (q, &(guint) { 0 })[0].backing);
    check_all (q, ref);
  }
  /* Never over an existing file. */
  g_assert_false (df_cache_private_export (base, dir, out, DF_FMT_RAW, NULL,
                                           NULL, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_EXISTS);
  tu_rmrf (dir);
}

/* kill -9 after FLUSH: the flushed writes are there at the next open,
 * with no close in between. */
static void
test_private_kill9 (void)
{
  g_autofree char *dir = tu_tmpdir ();
  g_autoptr (df_blk) base = mem_base_new (4 * MiB, 8);
  g_autofree uint8_t *ref = g_memdup2 (mem_data (base), 4 * MiB);
  int fds[2], status;
  char ok = 0;
  pid_t pid;
  df_blk *c;

  g_assert_true (df_cache_pin_write (
      dir, &(DfCachePin) { .vdisk = "test", .version = 1 }, NULL));
  fill_pattern (ref + 3 * MiB + 77, 200 * KiB, 31);
  g_assert_cmpint (pipe (fds), ==, 0);
  pid = fork ();
  g_assert_cmpint (pid, >=, 0);
  if (pid == 0)
    {
      int e = 0;
      df_blk *cc = open_private (base, dir, NULL);
      if (cc == NULL
          || df_blk_pwrite (cc, ref + 3 * MiB + 77, 200 * KiB, 3 * MiB + 77,
                            0, &e) < 0
          || df_blk_flush (cc, &e) < 0 || write (fds[1], "y", 1) != 1)
        _exit (2);
      pause ();                                       /* until killed */
      _exit (0);
    }
  close (fds[1]);
  g_assert_cmpint (read (fds[0], &ok, 1), ==, 1);
  close (fds[0]);
  kill (pid, SIGKILL);
  g_assert_cmpint (waitpid (pid, &status, 0), ==, pid);
  g_assert_true (WIFSIGNALED (status));
  c = open_cache (base, dir, "private", 0);
  check_all (c, ref);
  df_blk_unref (c);
  tu_rmrf (dir);
}

/* ---- random operations against a reference buffer ------------------------- */

#define RAND_SIZE (4 * MiB + 1536)   /* unaligned end on purpose */

/* Reference model of TRIM: only whole blocks (or the tail block when the
 * range reaches the end of the disk) become zero. */
static void
ref_trim (uint8_t *ref, uint64_t size, uint64_t off, uint32_t len)
{
  uint64_t end = off + len;
  uint64_t b0 = (off + BS - 1) / BS;
  uint64_t b1 = end == size ? (size + BS - 1) / BS : end / BS;

  for (uint64_t b = b0; b < b1; b++)
    memset (ref + b * BS, 0, MIN ((uint64_t) BS, size - b * BS));
}

static void
random_range (GRand *r, uint64_t size, uint64_t *off, uint32_t *len)
{
  bool aligned = g_rand_int_range (r, 0, 3) == 0;
  uint32_t max = g_rand_int_range (r, 0, 4) == 0 ? 256 * KiB : 20 * KiB;

  *off = (uint64_t) g_rand_double_range (r, 0, (double) size);
  *len = (uint32_t) g_rand_int_range (r, 1, (gint32) max);
  if (aligned)
    {
      *off &= ~(uint64_t) (BS - 1);
      *len = MAX (BS, *len & ~(BS - 1));
    }
  if (*off >= size)
    *off = size - 1;
  *len = (uint32_t) MIN ((uint64_t) *len, size - *off);
}

static void
random_op (df_blk *c, GRand *r, uint8_t *ref, uint8_t *buf, uint64_t size)
{
  uint64_t off;
  uint32_t len;
  int op = g_rand_int_range (r, 0, 100), err = 0;

  random_range (r, size, &off, &len);
  if (op < 50)
    {
      if (g_rand_int_range (r, 0, 8) == 0)
        memset (buf, 0, len);
      else
        fill_pattern (buf, len, g_rand_int (r));
      do_write (c, buf, len, off);
      memcpy (ref + off, buf, len);
    }
  else if (op < 75)
    check_read (c, ref, off, len);
  else if (op < 85)
    {
      g_assert_cmpint (df_blk_trim (c, len, off, 0, &err), ==, 0);
      ref_trim (ref, size, off, len);
    }
  else if (op < 96)
    {
      uint32_t fl = g_rand_boolean (r) ? DF_BLK_FAST_ZERO : DF_BLK_MAY_TRIM;
      g_assert_cmpint (df_blk_zero (c, len, off, fl, &err), ==, 0);
      memset (ref + off, 0, len);
    }
  else
    g_assert_cmpint (df_blk_flush (c, &err), ==, 0);
}

static void
test_random_ops (gconstpointer data)
{
  const char *mode = data;
  g_autofree char *dir = tu_tmpdir ();
  g_autoptr (df_blk) base = mem_base_new (RAND_SIZE, 1);
  g_autofree uint8_t *ref = g_memdup2 (mem_data (base), RAND_SIZE);
  g_autofree uint8_t *buf = g_malloc (256 * KiB);
  df_blk *c = open_cache (base, dir, mode, 0);
  GRand *r = g_rand_new_with_seed (20261105);
  DfCacheStats st;

  check_all (c, ref);
  for (int i = 0; i < 4000; i++)
    random_op (c, r, ref, buf, RAND_SIZE);
  check_all (c, ref);
  df_cache_get_stats (c, &st);
  g_test_message ("%s: cached %" G_GUINT64_FORMAT " ram %" G_GUINT64_FORMAT,
                  mode, st.cached_bytes, st.ram_bytes);
  g_assert_cmpuint (st.cached_bytes, >, 0);
  g_assert_cmpuint (st.cached_bytes, <=, RAND_SIZE + BS);
  g_assert_cmpuint (st.ram_bytes, <=, st.cached_bytes);
  if (g_str_has_prefix (mode, "ram:"))
    {
      /* RAM filled up to the limit; the rest overflowed to the file (trims
       * may have freed some RAM since). */
      g_assert_cmpuint (st.ram_bytes, <=, 1 * MiB);
      g_assert_cmpuint (st.ram_bytes, >, 0);
      g_assert_cmpuint (st.cached_bytes, >, 1 * MiB);
    }
  df_blk_unref (c);

  if (mode_is_persistent (mode))
    {
      DfCacheStats st2;
      c = open_cache (base, dir, mode, 0);
      check_all (c, ref);
      df_cache_get_stats (c, &st2);
      g_assert_cmpuint (st2.cached_bytes, ==, st.cached_bytes);
      df_blk_unref (c);
    }
  else
    g_assert_cmpint (count_files (dir), ==, 0); /* nothing left behind */
  g_rand_free (r);
  tu_rmrf (dir);
}

/* ---- RAM overflow ------------------------------------------------------- */

static void
test_ram_overflow (void)
{
  g_autofree char *dir = tu_tmpdir ();
  g_autoptr (df_blk) base = mem_base_new (8 * MiB, 2);
  g_autofree uint8_t *ref = g_memdup2 (mem_data (base), 8 * MiB);
  df_blk *c = open_cache (base, dir, "ram:1", 0);
  DfCacheStats st;
  int err = 0;

  /* 3 MiB of data: 1 MiB lands in RAM, 2 MiB in the overflow file. */
  fill_pattern (ref + 1 * MiB, 3 * MiB, 7);
  do_write (c, ref + 1 * MiB, 3 * MiB, 1 * MiB);
  df_cache_get_stats (c, &st);
  g_assert_cmpuint (st.ram_bytes, ==, 1 * MiB);
  g_assert_cmpuint (st.cached_bytes, ==, 3 * MiB);
  check_all (c, ref);

  /* Freeing RAM blocks makes room for new ones. */
  g_assert_cmpint (df_blk_trim (c, 512 * KiB, 1 * MiB, 0, &err), ==, 0);
  memset (ref + 1 * MiB, 0, 512 * KiB);
  df_cache_get_stats (c, &st);
  g_assert_cmpuint (st.ram_bytes, ==, 512 * KiB);
  g_assert_cmpuint (st.cached_bytes, ==, 2 * MiB + 512 * KiB);
  fill_pattern (ref + 6 * MiB, 1 * MiB, 9);
  do_write (c, ref + 6 * MiB, 1 * MiB, 6 * MiB);
  df_cache_get_stats (c, &st);
  g_assert_cmpuint (st.ram_bytes, ==, 1 * MiB);
  g_assert_cmpuint (st.cached_bytes, ==, 3 * MiB + 512 * KiB);
  check_all (c, ref);

  /* Zeroing everything frees RAM and disk alike. */
  g_assert_cmpint (df_blk_zero (c, 8 * MiB, 0, 0, &err), ==, 0);
  df_cache_get_stats (c, &st);
  g_assert_cmpuint (st.ram_bytes, ==, 0);
  g_assert_cmpuint (st.cached_bytes, ==, 0);
  memset (ref, 0, 8 * MiB);
  check_all (c, ref);
  df_blk_unref (c);
  g_assert_cmpint (count_files (dir), ==, 0);
  tu_rmrf (dir);
}

/* ---- trim / zero ----------------------------------------------------------- */

static void
test_trim_zero (gconstpointer data)
{
  const char *mode = data;
  g_autofree char *dir = tu_tmpdir ();
  g_autoptr (df_blk) base = mem_base_new (1 * MiB, 3);
  g_autofree uint8_t *ref = g_memdup2 (mem_data (base), 1 * MiB);
  df_blk *c = open_cache (base, dir, mode, 0);
  DfCacheStats st;
  int err = 0;

  fill_pattern (ref, 64 * KiB, 11);
  do_write (c, ref, 64 * KiB, 0);
  df_cache_get_stats (c, &st);
  g_assert_cmpuint (st.cached_bytes, ==, 64 * KiB);

  /* Trim [1000, 64 KiB): block 0 is partial and stays, 15 blocks go. */
  g_assert_cmpint (df_blk_trim (c, 64 * KiB - 1000, 1000, 0, &err), ==, 0);
  memset (ref + BS, 0, 60 * KiB);
  check_all (c, ref);
  df_cache_get_stats (c, &st);
  g_assert_cmpuint (st.cached_bytes, ==, BS);

  /* Zero inside block 0 (RMW); still cached since the rest is data. */
  g_assert_cmpint (df_blk_zero (c, 100, 100, 0, &err), ==, 0);
  memset (ref + 100, 0, 100);
  check_all (c, ref);
  /* Zeroing the rest of block 0 turns it into a ZERO block. */
  g_assert_cmpint (df_blk_zero (c, BS - 200, 200, DF_BLK_FAST_ZERO, &err),
                   ==, 0);
  g_assert_cmpint (df_blk_zero (c, 100, 0, DF_BLK_FAST_ZERO, &err), ==, 0);
  memset (ref, 0, BS);
  df_cache_get_stats (c, &st);
  g_assert_cmpuint (st.cached_bytes, ==, 0);

  /* Zero of base blocks (partial at both ends) hides the base. */
  g_assert_cmpint (df_blk_zero (c, 3 * BS, 512 * KiB + 10, 0, &err), ==, 0);
  memset (ref + 512 * KiB + 10, 0, 3 * BS);
  df_cache_get_stats (c, &st);
  g_assert_cmpuint (st.cached_bytes, ==, 2 * BS); /* the two RMW ends */
  /* Trim of base blocks: whole blocks read zero afterwards. */
  g_assert_cmpint (df_blk_trim (c, 2 * BS, 768 * KiB, 0, &err), ==, 0);
  memset (ref + 768 * KiB, 0, 2 * BS);
  check_all (c, ref);
  /* An all-zero whole-block write holds no space. */
  memset (ref + 900 * KiB, 0, 8 * BS);
  do_write (c, ref + 900 * KiB, 8 * BS, 900 * KiB);
  df_cache_get_stats (c, &st);
  g_assert_cmpuint (st.cached_bytes, ==, 2 * BS);
  check_all (c, ref);
  df_blk_unref (c);
  tu_rmrf (dir);
}

/* ---- quota ------------------------------------------------------------------ */

/* Quota warnings are expected: counted and swallowed by test_log_writer. */
static gint quota_warnings;
static gint lease_warnings;

static GLogWriterOutput
test_log_writer (GLogLevelFlags level, const GLogField *fields,
                 gsize n_fields, gpointer user_data)
{
  for (gsize i = 0; i < n_fields; i++)
    if ((level & G_LOG_LEVEL_WARNING) && strcmp (fields[i].key, "MESSAGE") == 0
        && fields[i].length < 0 && strstr (fields[i].value, "quota of"))
      {
        g_atomic_int_inc (&quota_warnings);
        return G_LOG_WRITER_HANDLED;
      }
    else if ((level & G_LOG_LEVEL_WARNING)
             && strcmp (fields[i].key, "MESSAGE") == 0
             && fields[i].length < 0
             && (strstr (fields[i].value, "lease epoch")
                 || strstr (fields[i].value, "may no longer write")))
      {
        g_atomic_int_inc (&lease_warnings);
        return G_LOG_WRITER_HANDLED;
      }
  return g_log_writer_default (level, fields, n_fields, user_data);
}

static void
expect_enospc (int r, const int *err)
{
  g_assert_cmpint (r, ==, -1);
  g_assert_cmpint (*err, ==, ENOSPC);
}

static void
test_quota (gconstpointer data)
{
  const char *mode = data;
  g_autofree char *dir = tu_tmpdir ();
  g_autoptr (df_blk) base = mem_base_new (4 * MiB, 4);
  g_autofree uint8_t *ref = g_memdup2 (mem_data (base), 4 * MiB);
  g_autofree uint8_t *buf = g_malloc (64 * KiB);
  df_blk *c = open_cache (base, dir, mode, 64 * KiB);
  DfCacheStats st;
  int err = 0;

  fill_pattern (ref, 64 * KiB, 5);
  do_write (c, ref, 64 * KiB, 0);                       /* exactly full */
  fill_pattern (buf, 8 * KiB, 6);
  g_atomic_int_set (&quota_warnings, 0);
  expect_enospc (df_blk_pwrite (c, buf, BS, 1 * MiB, 0, &err), &err);
  /* Straddling one cached and one new block: refused as a whole. */
  expect_enospc (df_blk_pwrite (c, buf, 8 * KiB, 60 * KiB, 0, &err), &err);
  /* Sub-block write into a base block costs a block: refused. */
  expect_enospc (df_blk_pwrite (c, buf, 10, 2 * MiB + 3, 0, &err), &err);
  expect_enospc (df_blk_zero (c, 10, 2 * MiB + 3, 0, &err), &err);
  check_all (c, ref);                                   /* nothing applied */
  df_cache_get_stats (c, &st);
  g_assert_cmpuint (st.quota_hits, ==, 4);
  g_assert_cmpint (g_atomic_int_get (&quota_warnings), ==, 1); /* once/min */
  g_assert_cmpuint (st.quota_bytes, ==, 64 * KiB);
  g_assert_cmpuint (st.cached_bytes, ==, 64 * KiB);

  /* Overwriting cached blocks and writing zero blocks cost nothing. */
  fill_pattern (ref + 4 * KiB, 20 * KiB, 8);
  do_write (c, ref + 4 * KiB, 20 * KiB, 4 * KiB);
  memset (ref + 3 * MiB, 0, 16 * KiB);
  do_write (c, ref + 3 * MiB, 16 * KiB, 3 * MiB);
  /* Trim frees quota. */
  g_assert_cmpint (df_blk_trim (c, BS, 0, 0, &err), ==, 0);
  memset (ref, 0, BS);
  memcpy (ref + 1 * MiB, buf, BS);
  do_write (c, buf, BS, 1 * MiB);
  check_all (c, ref);
  df_cache_get_stats (c, &st);
  g_assert_cmpuint (st.quota_hits, ==, 4);
  g_assert_cmpuint (st.cached_bytes, ==, 64 * KiB);
  df_blk_unref (c);
  tu_rmrf (dir);
}

/* ---- persistent reopen ------------------------------------------------------ */

static void
test_persistent_reopen (void)
{
  g_autofree char *dir = tu_tmpdir ();
  g_autofree char *map = g_build_filename (dir, "persistent.map", NULL);
  g_autoptr (df_blk) base = mem_base_new (2 * MiB + 512, 5);
  g_autoptr (df_blk) other = mem_base_new (4 * MiB, 5);
  g_autofree uint8_t *ref = g_memdup2 (mem_data (base), 2 * MiB + 512);
  g_autoptr (GError) gerr = NULL;
  DfCacheMode mode = { .kind = DF_CACHE_PERSISTENT };
  df_blk *c = open_cache (base, dir, "server-persistent", 0);
  DfCacheStats st;
  int err = 0;

  fill_pattern (ref + 1000, 300 * KiB, 12);
  do_write (c, ref + 1000, 300 * KiB, 1000);
  fill_pattern (ref + 2 * MiB - 100, 612, 13);          /* the tail block */
  g_assert_cmpint (df_blk_pwrite (c, ref + 2 * MiB - 100, 612, 2 * MiB - 100,
                                  DF_BLK_FUA, &err), ==, 0);
  g_assert_cmpint (df_blk_zero (c, 64 * KiB, 1 * MiB, 0, &err), ==, 0);
  memset (ref + 1 * MiB, 0, 64 * KiB);

  /* A second opener is refused while the cache is open. */
  g_assert_null (df_cache_open (base, dir, &mode, 0, &gerr));
  g_assert_error (gerr, DF_ERROR, DF_ERROR_BUSY);
  g_clear_error (&gerr);
  df_blk_unref (c);                                     /* flushes */

  c = open_cache (base, dir, "server-persistent", 0);
  check_all (c, ref);
  df_cache_get_stats (c, &st);
  /* [1000, 1000+300K) -> blocks 0..75; the tail write -> blocks 511, 512 */
  g_assert_cmpuint (st.cached_bytes, ==, 78 * BS);
  df_blk_unref (c);

  /* A disk of another size: refused with a clear message. */
  g_assert_null (df_cache_open (other, dir, &mode, 0, &gerr));
  g_assert_error (gerr, DF_ERROR, DF_ERROR_CORRUPT);
  g_test_message ("size mismatch: %s", gerr->message);
  g_assert_nonnull (strstr (gerr->message, "bytes"));
  g_clear_error (&gerr);

  /* A damaged header is refused, not trusted. */
  {
    int fd = open (map, O_WRONLY);
    g_assert_cmpint (fd, >=, 0);
    g_assert_cmpint (pwrite (fd, "X", 1, 0), ==, 1);
    close (fd);
  }
  g_assert_null (df_cache_open (base, dir, &mode, 0, &gerr));
  g_assert_error (gerr, DF_ERROR, DF_ERROR_CORRUPT);
  g_clear_error (&gerr);

  /* discard_dir removes it; the next open starts from the base. */
  g_assert_true (df_cache_discard_dir (dir, &gerr));
  g_assert_no_error (gerr);
  g_assert_cmpint (count_files (dir), ==, 0);
  g_assert_true (df_cache_discard_dir (dir, &gerr));    /* idempotent */
  c = open_cache (base, dir, "server-persistent", 0);
  check_all (c, mem_data (base));
  df_blk_unref (c);
  tu_rmrf (dir);
}

/* ---- kill -9 durability ------------------------------------------------------ */

#define K9_SIZE     (32 * MiB)
#define K9_REGION   (128 * KiB)
#define K9_ROUNDS   (K9_SIZE / K9_REGION)

/* What region r holds once round r has completed. */
static void
k9_expected (const uint8_t *basedata, uint32_t r, uint8_t *out)
{
  memcpy (out, basedata + (uint64_t) r * K9_REGION, K9_REGION);
  fill_pattern (out + 3, K9_REGION - 4000, r + 100);
  memset (out + 5000, 0, 20 * KiB);                     /* a zeroed hole */
}

/* Child: round r writes region r with unaligned writes + a zero, flushes,
 * reports r on fd.  Runs until killed. */
static G_NORETURN void
k9_child (df_blk *base, const char *dir, int fd)
{
  g_autoptr (GError) gerr = NULL;
  DfCacheMode mode = { .kind = DF_CACHE_PERSISTENT };
  df_blk *c = df_cache_open (base, dir, &mode, 0, &gerr);
  g_autofree uint8_t *exp = g_malloc (K9_REGION);
  int err = 0;

  if (c == NULL)
    _exit (2);
  for (uint32_t r = 0; r < K9_ROUNDS; r++)
    {
      uint64_t off = (uint64_t) r * K9_REGION;
      k9_expected (mem_data (base), r, exp);
      for (uint32_t p = 0; p < K9_REGION;)
        {
          uint32_t len = MIN (1000 + (p * 7) % 9000, K9_REGION - p);
          if (df_blk_pwrite (c, exp + p, len, off + p, 0, &err) < 0)
            _exit (3);
          p += len;
        }
      if (df_blk_zero (c, 20 * KiB, off + 5000, 0, &err) < 0
          || df_blk_flush (c, &err) < 0
          || write (fd, &r, sizeof r) != sizeof r)
        _exit (4);
    }
  _exit (0);
}

static void
test_kill9 (void)
{
  g_autofree char *dir = tu_tmpdir ();
  g_autoptr (df_blk) base = mem_base_new (K9_SIZE, 6);
  g_autofree uint8_t *exp = g_malloc (K9_REGION);
  g_autofree uint8_t *got = g_malloc (K9_REGION);
  int fds[2], status, err = 0;
  uint32_t r, flushed = 0;
  pid_t pid;
  df_blk *c;

  g_assert_cmpint (pipe (fds), ==, 0);
  pid = fork ();
  g_assert_cmpint (pid, >=, 0);
  if (pid == 0)
    {
      close (fds[0]);
      k9_child (base, dir, fds[1]);
    }
  close (fds[1]);
  /* Let 40 rounds be acknowledged, then kill the child mid-round. */
  while (flushed < 40 && read (fds[0], &r, sizeof r) == sizeof r)
    flushed = r + 1;
  kill (pid, SIGKILL);
  g_assert_cmpint (waitpid (pid, &status, 0), ==, pid);
  g_assert_true (WIFSIGNALED (status) && WTERMSIG (status) == SIGKILL);
  while (read (fds[0], &r, sizeof r) == sizeof r)     /* reports in flight */
    flushed = r + 1;
  close (fds[0]);
  g_test_message ("child killed after %u flushed rounds", flushed);
  g_assert_cmpuint (flushed, >=, 40);

  c = open_cache (base, dir, "server-persistent", 0);
  for (r = 0; r < flushed; r++)
    {
      k9_expected (mem_data (base), r, exp);
      g_assert_cmpint (df_blk_pread (c, got, K9_REGION,
                                     (uint64_t) r * K9_REGION, &err), ==, 0);
      if (memcmp (got, exp, K9_REGION) != 0)
        g_error ("round %u was flushed but is not intact after kill -9", r);
    }
  /* Regions never touched still read the base. */
  g_assert_cmpint (df_blk_pread (c, got, K9_REGION, K9_SIZE - K9_REGION,
                                 &err), ==, 0);
  if (flushed + 1 < K9_ROUNDS)
    g_assert_true (memcmp (got, mem_data (base) + K9_SIZE - K9_REGION,
                           K9_REGION) == 0);
  df_blk_unref (c);
  tu_rmrf (dir);
}

/* ---- extents ---------------------------------------------------------------- */

typedef struct {
  uint64_t next;              /* expected next offset */
  GArray *list;               /* of extent_rec */
  int stop_after;             /* 0 = never */
} extent_log;

typedef struct {
  uint64_t off, len;
  uint32_t flags;
} extent_rec;

static int
log_extent (void *opaque, uint64_t off, uint64_t len, uint32_t flags)
{
  extent_log *l = opaque;
  extent_rec e = { off, len, flags };

  g_assert_cmpuint (off, ==, l->next);                  /* contiguous */
  g_assert_cmpuint (len, >, 0);
  l->next = off + len;
  g_array_append_val (l->list, e);
  return l->stop_after && (int) l->list->len >= l->stop_after ? -1 : 0;
}

static uint32_t
flags_at (GArray *list, uint64_t off)
{
  for (guint i = 0; i < list->len; i++)
    {
      extent_rec *e = &g_array_index (list, extent_rec, i);
      if (off >= e->off && off < e->off + e->len)
        return e->flags;
    }
  g_assert_not_reached ();
}

static void
test_extents (void)
{
  g_autofree char *dir = tu_tmpdir ();
  g_autoptr (df_blk) base = mem_base_new (1 * MiB, 7);
  g_autoptr (GArray) list = g_array_new (FALSE, FALSE, sizeof (extent_rec));
  g_autofree uint8_t *buf = g_malloc (64 * KiB);
  const uint32_t HZ = DF_EXTENT_HOLE | DF_EXTENT_ZERO;
  df_blk *c = open_cache (base, dir, "server", 0);
  extent_log l = { 0, list, 0 };
  int err = 0;

  /* Base: chunks 1, 4, 7, 10, 13 (64 KiB each) are holes. */
  fill_pattern (buf, 2 * BS, 1);
  do_write (c, buf, 2 * BS, 64 * KiB + 8 * KiB);          /* data in a hole */
  g_assert_cmpint (df_blk_trim (c, 64 * KiB, 0, 0, &err), ==, 0);  /* chunk 0 */
  g_assert_cmpint (df_blk_zero (c, 8 * KiB, 200 * KiB, 0, &err), ==, 0);

  g_assert_cmpint (df_blk_extents (c, 1 * MiB, 0, log_extent, &l, &err), ==,
                   0);
  g_assert_cmpuint (l.next, ==, 1 * MiB);
  for (guint i = 0; i < list->len; i++)
    {
      extent_rec *e = &g_array_index (list, extent_rec, i);
      g_test_message ("extent %" G_GUINT64_FORMAT "+%" G_GUINT64_FORMAT
                      " flags %u", e->off, e->len, e->flags);
      if (i > 0)  /* adjacent extents with equal flags were merged */
        g_assert_cmpuint (e->flags, !=,
                          g_array_index (list, extent_rec, i - 1).flags);
    }
  g_assert_cmpuint (flags_at (list, 0), ==, HZ);          /* trimmed */
  g_assert_cmpuint (flags_at (list, 64 * KiB), ==, HZ);   /* base hole */
  g_assert_cmpuint (flags_at (list, 72 * KiB), ==, 0);    /* cached */
  g_assert_cmpuint (flags_at (list, 80 * KiB), ==, HZ);   /* base hole */
  g_assert_cmpuint (flags_at (list, 128 * KiB), ==, 0);   /* base data */
  g_assert_cmpuint (flags_at (list, 204 * KiB), ==, HZ);  /* zeroed */
  g_assert_cmpuint (flags_at (list, 256 * KiB), ==, HZ);  /* base hole */
  g_assert_cmpuint (flags_at (list, 1 * MiB - 1), ==, 0);

  /* Unaligned sub-range: still exact bounds. */
  g_array_set_size (list, 0);
  l.next = 70 * KiB + 3;
  g_assert_cmpint (df_blk_extents (c, 20 * KiB, 70 * KiB + 3, log_extent, &l,
                                   &err), ==, 0);
  g_assert_cmpuint (l.next, ==, 90 * KiB + 3);
  g_assert_cmpuint (list->len, ==, 3);

  /* The callback may stop early. */
  g_array_set_size (list, 0);
  l.next = 0;
  l.stop_after = 2;
  g_assert_cmpint (df_blk_extents (c, 1 * MiB, 0, log_extent, &l, &err), ==,
                   0);
  g_assert_cmpuint (list->len, ==, 2);
  df_blk_unref (c);
  tu_rmrf (dir);
}

/* ---- concurrency ------------------------------------------------------------ */

#define TH_N       4
#define TH_SPAN    (1 * MiB)
#define TH_SECTORS (TH_SPAN / 512)

typedef struct {
  df_blk *c;
  guint t;
  uint8_t *ref;               /* shared; each thread touches its sectors */
  gint failures;
} thread_job;

/* Thread t owns the 512-byte sectors s with s % 4 == t: all four threads
 * write into the same 4 KiB blocks, which exercises the RMW locking. */
static gpointer
thread_main (gpointer data)
{
  thread_job *j = data;
  GRand *r = g_rand_new_with_seed (j->t + 77);
  uint8_t buf[1024];
  int err = 0;

  for (int i = 0; i < 3000; i++)
    {
      uint64_t s = (uint64_t) g_rand_int_range (r, 0, TH_SECTORS / TH_N)
                   * TH_N + j->t;
      uint64_t off = s * 512;
      if (g_rand_int_range (r, 0, 3) != 0)
        {
          fill_pattern (buf, 512, g_rand_int (r));
          if (df_blk_pwrite (j->c, buf, 512, off, 0, &err) < 0)
            g_atomic_int_inc (&j->failures);
          memcpy (j->ref + off, buf, 512);
        }
      else if (df_blk_pread (j->c, buf, 512, off, &err) < 0
               || memcmp (buf, j->ref + off, 512) != 0)
        g_atomic_int_inc (&j->failures);
    }
  g_rand_free (r);
  return NULL;
}

static void
test_threads (gconstpointer data)
{
  const char *mode = data;
  g_autofree char *dir = tu_tmpdir ();
  g_autoptr (df_blk) base = mem_base_new (2 * MiB, 8);
  g_autofree uint8_t *ref = g_memdup2 (mem_data (base), 2 * MiB);
  df_blk *c = open_cache (base, dir, mode, 0);
  thread_job jobs[TH_N];
  GThread *th[TH_N];

  for (guint t = 0; t < TH_N; t++)
    {
      jobs[t] = (thread_job) { c, t, ref, 0 };
      th[t] = g_thread_new ("cache-test", thread_main, &jobs[t]);
    }
  for (guint t = 0; t < TH_N; t++)
    {
      g_thread_join (th[t]);
      g_assert_cmpint (jobs[t].failures, ==, 0);
    }
  check_all (c, ref);
  df_blk_unref (c);
  tu_rmrf (dir);
}

/* ---- timing ----------------------------------------------------------------- */

#define PERF_SIZE (256 * MiB)
#define PERF_OPS  20000

static double
perf_run (df_blk *c, GRand *r, bool write, int flush_every)
{
  uint8_t buf[BS];
  gint64 t0 = g_get_monotonic_time ();
  int err = 0;

  fill_pattern (buf, BS, 3);
  for (int i = 0; i < PERF_OPS; i++)
    {
      uint64_t off = (uint64_t) g_rand_int_range (r, 0, PERF_SIZE / BS) * BS;
      buf[0] = (uint8_t) (i | 1);
      int ret = write ? df_blk_pwrite (c, buf, BS, off, 0, &err)
                      : df_blk_pread (c, buf, BS, off, &err);
      g_assert_cmpint (ret, ==, 0);
      if (flush_every && i % flush_every == flush_every - 1)
        g_assert_cmpint (df_blk_flush (c, &err), ==, 0);
    }
  return PERF_OPS / ((g_get_monotonic_time () - t0) / 1e6);
}

static void
test_perf (void)
{
  static const struct { const char *mode; int flush_every; } runs[] = {
    { "server", 0 }, { "ram:1024", 0 }, { "ram:16", 0 },
    { "server-persistent", 0 }, { "server-persistent", 256 },
  };
  g_autoptr (df_blk) base = mem_base_new (PERF_SIZE, 9);

  for (gsize i = 0; i < G_N_ELEMENTS (runs); i++)
    {
      g_autofree char *dir = tu_tmpdir ();
      df_blk *c = open_cache (base, dir, runs[i].mode, 0);
      GRand *r = g_rand_new_with_seed (5);
      double w = perf_run (c, r, true, runs[i].flush_every), rd;
      /* Same seed: read back exactly the blocks written (cache hits). */
      g_rand_set_seed (r, 5);
      rd = perf_run (c, r, false, 0);
      g_test_message ("perf %-17s flush/%-3d: 4 KiB random write %.0f IOPS "
                      "(%.0f MiB/s), read %.0f IOPS (%.0f MiB/s)",
                      runs[i].mode, runs[i].flush_every, w, w * BS / MiB, rd,
                      rd * BS / MiB);
      g_rand_free (r);
      df_blk_unref (c);
      tu_rmrf (dir);
    }
}

/* ---- the lease layer (blk_lease.c) -------------------------------------- */

static df_blk *
open_leased (df_blk *base, const char *dir)
{
  g_autoptr (GError) err = NULL;
  DfCacheMode mode = { .kind = DF_CACHE_PERSISTENT, .leased = true };
  df_blk *c = df_cache_open (base, dir, &mode, 0, &err);

  g_assert_no_error (err);
  return c;
}

static DfLease *
new_lease (gint64 epoch, const char *dir, DfFence *f, GError **err)
{
  return df_lease_new ("ss1", epoch, g_get_monotonic_time () + G_USEC_PER_SEC
                       * 60, dir, f, err);
}

/* Valid: writes and flushes go through and the token holds the epoch;
 * lapsed (the monotonic clock passed its end): refused with EIO, the
 * fence trips, and the cache is closed without a final flush. */
static void
test_lease_layer (void)
{
  g_autofree char *dir = tu_tmpdir ();
  g_autoptr (df_blk) base = mem_base_new (4 * MiB, 7);
  g_autoptr (DfFence) f = df_fence_new ("test", NULL, NULL, NULL);
  g_autoptr (GError) err = NULL;
  g_autofree char *tok = NULL;
  g_autofree char *tok_path = g_build_filename (dir, DF_LEASE_TOKEN_FILE, NULL);
  uint8_t buf[BS], got[BS];
  int e = 0;

  DfLease *l = new_lease (4, dir, f, &err);
  g_assert_no_error (err);
  g_assert_true (g_file_get_contents (tok_path, &tok, NULL, NULL));
  g_assert_cmpint (g_ascii_strtoll (tok, NULL, 10), ==, 4);
  df_blk *cache = open_leased (base, dir);
  df_blk *b = df_lease_blk_new (l, cache);
  df_blk_unref (cache);
  memset (buf, 0xa1, BS);
  g_assert_cmpint (df_blk_pwrite (b, buf, BS, 0, 0, &e), ==, 0);
  g_assert_cmpint (df_blk_flush (b, &e), ==, 0);
  memset (buf, 0xa2, BS);
  g_assert_cmpint (df_blk_pwrite (b, buf, BS, BS, 0, &e), ==, 0);
  /* lapsed: every write path refused, the fence trips */
  df_lease_extend (l, g_get_monotonic_time () - 1);
  g_assert_cmpint (df_blk_pwrite (b, buf, BS, 2 * BS, 0, &e), ==, -1);
  g_assert_cmpint (e, ==, EIO);
  g_assert_cmpint (df_blk_flush (b, &e), ==, -1);
  g_assert_cmpint (df_blk_zero (b, BS, 0, 0, &e), ==, -1);
  g_assert_true (df_lease_lost (l));
  g_assert_true (df_fence_tripped (f));
  g_assert_true (df_fence_moved (f)); /* the device carries on elsewhere */
  /* a lost lease is never extended again */
  df_lease_extend (l, g_get_monotonic_time () + G_USEC_PER_SEC);
  g_assert_false (df_lease_valid (l));
  g_assert_cmpint (df_blk_pread (b, got, BS, 0, &e), ==, 0); /* reads pass */
  df_blk_unref (b);
  df_lease_unref (l);
  /* reopened: the flushed block is there, the unflushed one was not
   * flushed at close */
  cache = open_leased (base, dir);
  g_assert_cmpint (df_blk_pread (cache, got, BS, 0, &e), ==, 0);
  g_assert_true (got[0] == 0xa1 && got[BS - 1] == 0xa1);
  g_assert_cmpint (df_blk_pread (cache, got, BS, BS, &e), ==, 0);
  g_assert_cmpmem (got, BS, mem_data (base) + BS, BS);
  df_blk_unref (cache);
  tu_rmrf (dir);
}

/* A survivor's newer epoch in the token file: the old holder's next
 * FLUSH is refused, and an older epoch cannot stamp over a newer one. */
static void
test_lease_token (void)
{
  g_autofree char *dir = tu_tmpdir ();
  g_autoptr (df_blk) base = mem_base_new (4 * MiB, 8);
  g_autoptr (DfFence) f = df_fence_new ("test", NULL, NULL, NULL);
  g_autoptr (DfFence) f2 = df_fence_new ("test2", NULL, NULL, NULL);
  g_autoptr (GError) err = NULL;
  uint8_t buf[BS];
  int e = 0;

  DfLease *l = new_lease (2, dir, f, &err);
  g_assert_no_error (err);
  df_blk *cache = open_leased (base, dir);
  df_blk *b = df_lease_blk_new (l, cache);
  df_blk_unref (cache);
  memset (buf, 0xb1, BS);
  g_assert_cmpint (df_blk_pwrite (b, buf, BS, 0, 0, &e), ==, 0);
  DfLease *l2 = new_lease (3, dir, f2, &err); /* the survivor stamps 3 */
  g_assert_no_error (err);
  g_assert_cmpint (df_blk_flush (b, &e), ==, -1);
  g_assert_cmpint (e, ==, EIO);
  g_assert_true (df_lease_lost (l));
  g_assert_true (df_fence_tripped (f));
  g_assert_false (df_fence_tripped (f2));
  g_assert_null (new_lease (2, dir, f, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_DENIED);
  df_blk_unref (b);
  df_lease_unref (l);
  df_lease_unref (l2);
  tu_rmrf (dir);
}

/* A lost local cache: every request fails, reads included. */
static void
test_lost_cache (void)
{
  g_autoptr (df_blk) b = df_lost_blk_new (1 * MiB);
  uint8_t buf[BS] = { 0 };
  int e = 0;

  g_assert_cmpint (b->size, ==, 1 * MiB);
  g_assert_cmpint (df_blk_pread (b, buf, BS, 0, &e), ==, -1);
  g_assert_cmpint (e, ==, EIO);
  e = 0;
  g_assert_cmpint (df_blk_pwrite (b, buf, BS, 0, 0, &e), ==, -1);
  g_assert_cmpint (e, ==, EIO);
  e = 0;
  g_assert_cmpint (df_blk_flush (b, &e), ==, -1);
  g_assert_cmpint (e, ==, EIO);
}

int
main (int argc, char **argv)
{
  static const char *const modes[] = { "server", "ram:1",
                                       "server-persistent", "private" };

  g_log_set_writer_func (test_log_writer, NULL, NULL);
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/cache/mode-parse", test_mode_parse);
  g_test_add_func ("/cache/hypervisor-refused", test_hypervisor_refused);
  g_test_add_func ("/cache/mode-table", test_mode_table);
  g_test_add_func ("/cache/mode-open-readonly", test_mode_open_readonly);
  g_test_add_func ("/cache/private-pin", test_private_pin);
  g_test_add_func ("/cache/private-reopen-export",
                   test_private_reopen_export);
  g_test_add_func ("/cache/private-kill9", test_private_kill9);
  for (gsize i = 0; i < G_N_ELEMENTS (modes); i++)
    {
      g_autofree char *p1 = g_strdup_printf ("/cache/random-ops/%s", modes[i]);
      g_autofree char *p2 = g_strdup_printf ("/cache/trim-zero/%s", modes[i]);
      g_autofree char *p3 = g_strdup_printf ("/cache/quota/%s", modes[i]);
      g_autofree char *p4 = g_strdup_printf ("/cache/threads/%s", modes[i]);
      /* private is the server-persistent store under other names: its
       * random-ops run would add 15 s under valgrind for no new code. */
      if (strcmp (modes[i], "private") != 0)
        g_test_add_data_func (p1, modes[i], test_random_ops);
      g_test_add_data_func (p2, modes[i], test_trim_zero);
      g_test_add_data_func (p3, modes[i], test_quota);
      g_test_add_data_func (p4, modes[i], test_threads);
    }
  g_test_add_func ("/cache/ram-overflow", test_ram_overflow);
  g_test_add_func ("/cache/persistent-reopen", test_persistent_reopen);
  g_test_add_func ("/cache/kill9", test_kill9);
  g_test_add_func ("/cache/lease-layer", test_lease_layer);
  g_test_add_func ("/cache/lease-token", test_lease_token);
  g_test_add_func ("/cache/lost-cache", test_lost_cache);
  g_test_add_func ("/cache/extents", test_extents);
  g_test_add_func ("/cache/perf", test_perf);
  return g_test_run ();
}
