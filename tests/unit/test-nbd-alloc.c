/* The NBD read path allocates nothing once warm: READ requests (4 KiB to
 * 1 MiB, simple and structured replies, copied and sent as file spans)
 * on a vdisk export and on a device export (write cache over the chain),
 * driven as a transport drives the engine, with malloc and friends
 * counted by interposition.  The farm is the fuzz harnesses' (fuzz-farm.h:
 * a 1 MiB qcow2 vdisk "fz" with data and zero clusters, device "d1").
 *
 * Skipped under AddressSanitizer and valgrind, which bring their own
 * malloc. */
#include <glib.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <valgrind/valgrind.h>

#include "byteorder.h"
#include "fuzz-farm.h"
#include "nbd.h"
#include "vdisk.h"

#if defined(__SANITIZE_ADDRESS__)
#define ALLOC_COUNTED 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ALLOC_COUNTED 0
#endif
#endif
#ifndef ALLOC_COUNTED
#define ALLOC_COUNTED 1
#endif

static atomic_bool counting;
static atomic_uint allocations;

#if ALLOC_COUNTED
/* glibc's own entry points, under the interposed names. */
extern void *__libc_malloc (size_t n);
extern void *__libc_calloc (size_t n, size_t m);
extern void *__libc_realloc (void *p, size_t n);
extern void *__libc_memalign (size_t a, size_t n);

/* ALLOC_ABORT=1 in the environment: abort at a counted allocation (run
 * under gdb to see where it comes from). */
static void
count (void)
{
  if (!atomic_load_explicit (&counting, memory_order_relaxed))
    return;
  atomic_fetch_add_explicit (&allocations, 1, memory_order_relaxed);
  if (getenv ("ALLOC_ABORT") != NULL)
    abort ();
}

void *
malloc (size_t n)
{
  count ();
  return __libc_malloc (n);
}

void *
calloc (size_t n, size_t m)
{
  count ();
  return __libc_calloc (n, m);
}

void *
realloc (void *p, size_t n)
{
  count ();
  return __libc_realloc (p, n);
}

int
posix_memalign (void **p, size_t a, size_t n)
{
  count ();
  *p = __libc_memalign (a, n);
  return *p != NULL ? 0 : 12 /* ENOMEM */;
}
#endif

static DfExports *exports;
static DfSessions *sessions;

static void
put32 (GByteArray *b, uint32_t v)
{
  uint8_t p[4];

  df_put_be32 (p, v);
  g_byte_array_append (b, p, 4);
}

static void
put_opt (GByteArray *b, uint32_t opt, const void *data, uint32_t len)
{
  g_byte_array_append (b, (const uint8_t *) "IHAVEOPT", 8);
  put32 (b, opt);
  put32 (b, len);
  g_byte_array_append (b, data, len);
}

/* Client flags, STRUCTURED_REPLY when asked, GO on export. */
static void
put_handshake (GByteArray *b, const char *export, bool structured)
{
  g_autoptr (GByteArray) body = g_byte_array_new ();

  put32 (b, 3); /* fixed newstyle, no zeroes */
  if (structured)
    put_opt (b, 8, NULL, 0);
  put32 (body, strlen (export));
  g_byte_array_append (body, (const uint8_t *) export, strlen (export));
  g_byte_array_append (body, (const uint8_t *) "\0\0", 2);
  put_opt (b, 7, body->data, body->len);
}

static void
put_read (GByteArray *b, uint64_t cookie, uint64_t off, uint32_t len)
{
  uint8_t p[28];

  df_put_be32 (p, 0x25609513);
  df_put_be16 (p + 4, 0);
  df_put_be16 (p + 6, 0); /* READ */
  df_put_be64 (p + 8, cookie);
  df_put_be64 (p + 16, off);
  df_put_be32 (p + 24, len);
  g_byte_array_append (b, p, sizeof p);
}

/* A transport's sinks that take everything: bytes and spans (counted). */
typedef struct {
  guint64 bytes, span_bytes;
} Sink;

static gssize
sink_bytes (void *opaque, const uint8_t *buf, size_t len)
{
  (void) buf;
  ((Sink *) opaque)->bytes += len;
  return (gssize) len;
}

static gssize
sink_span (void *opaque, const DfEngineSpan *span)
{
  ((Sink *) opaque)->span_bytes += span->length;
  return (gssize) span->length;
}

/* Feed in in pieces as server.c does (input_space, process, pump). */
static void
feed (DfEngineConn *e, const GByteArray *in, Sink *sink)
{
  for (guint done = 0; done < in->len;)
    {
      size_t room;
      uint8_t *dst = df_engine_input_space (e, &room);
      size_t n = MIN (room, in->len - done);

      memcpy (dst, in->data + done, n);
      df_engine_input_commit (e, n);
      done += n;
      df_engine_process (e);
      g_assert_true (df_engine_pump_spans (e, sink_bytes, sink_span, sink));
    }
  g_assert_false (df_engine_should_close (e));
}

/* Rounds of READs of every size at spread offsets. */
static GByteArray *
reads (guint rounds)
{
  static const uint32_t sizes[] = { 4096, 65536, 200000, 1 << 20 };
  GByteArray *b = g_byte_array_new ();
  uint64_t cookie = 1;

  for (guint r = 0; r < rounds; r++)
    for (guint i = 0; i < G_N_ELEMENTS (sizes); i++)
      {
        uint64_t off = ((r * 7919 + i * 131) * 4096) % FUZZ_IMAGE_SIZE;
        put_read (b, cookie++, MIN (off, FUZZ_IMAGE_SIZE - sizes[i]),
                  sizes[i]);
      }
  return b;
}

typedef struct {
  const char *export;
  bool structured, splice;
} Case;

static void
test_reads_allocate_nothing (gconstpointer data)
{
  const Case *k = data;
  nbd_conn *c = nbd_conn_new (exports, sessions, "test");
  DfEngineConn *e = nbd_conn_engine (c);
  g_autoptr (GByteArray) hs = g_byte_array_new ();
  g_autoptr (GByteArray) warm = reads (100); /* the buffers grow to size */
  g_autoptr (GByteArray) steady = reads (100);
  Sink sink = { 0 };
  guint n;

  if (!ALLOC_COUNTED || RUNNING_ON_VALGRIND)
    {
      g_test_skip ("malloc is not ours to count here");
      df_engine_free (e);
      return;
    }
  nbd_conn_set_splice (c, k->splice);
  put_handshake (hs, k->export, k->structured);
  feed (e, hs, &sink);
  g_assert_cmpint (nbd_conn_state (c), ==, NBD_STATE_TRANSMISSION);
  feed (e, warm, &sink);
  sink = (Sink) { 0 };
  atomic_store (&allocations, 0);
  atomic_store (&counting, true);
  feed (e, steady, &sink);
  atomic_store (&counting, false);
  n = atomic_load (&allocations);
  g_test_message ("%s: %" G_GUINT64_FORMAT " bytes copied, %" G_GUINT64_FORMAT
                  " sent as spans, %u allocations", k->export, sink.bytes,
                  sink.span_bytes, n);
  /* every READ was answered: at least its data went out */
  g_assert_cmpuint (sink.bytes + sink.span_bytes, >=,
                    100u * (4096 + 65536 + 200000 + (1 << 20)) / 2);
  if (k->splice)
    g_assert_cmpuint (sink.span_bytes, >, 0);
  else
    g_assert_cmpuint (sink.span_bytes, ==, 0);
  g_assert_cmpuint (n, ==, 0);
  df_engine_free (e);
}

/* The chain's read of compressed clusters (lib/vdisk/chain.c): every read
 * a miss of its one-cluster cache, after a warm-up. */
static void
test_compressed_reads (void)
{
  g_autofree char *dir = g_dir_make_tmp ("test-nbd-alloc-z-XXXXXX", NULL);
  g_autofree char *raw = g_build_filename (dir, "z.raw", NULL);
  g_autofree char *qcow = g_build_filename (dir, "z.qcow2", NULL);
  g_autofree char *cmd = g_strdup_printf ("qemu-img convert -q -c -f raw "
                                          "-O qcow2 %s %s", raw, qcow);
  g_autofree char *rm = g_strdup_printf ("rm -rf %s", dir);
  g_autofree uint8_t *img = g_malloc (FUZZ_IMAGE_SIZE);
  g_autofree uint8_t *buf = g_malloc (65536);
  g_autoptr (GError) err = NULL;
  g_autoptr (df_blk) chain = NULL;
  gint status = 1;
  guint n;

  if (!ALLOC_COUNTED || RUNNING_ON_VALGRIND)
    {
      g_test_skip ("malloc is not ours to count here");
      g_spawn_command_line_sync (rm, NULL, NULL, NULL, NULL);
      return;
    }
  for (guint i = 0; i < FUZZ_IMAGE_SIZE; i++) /* compressible, not zero */
    img[i] = (uint8_t) ((i / 512) * 7 + (i % 13));
  g_assert_true (g_file_set_contents (raw, (const char *) img,
                                      FUZZ_IMAGE_SIZE, NULL));
  if (!g_spawn_command_line_sync (cmd, NULL, NULL, &status, NULL)
      || !g_spawn_check_wait_status (status, NULL))
    {
      g_test_skip ("qemu-img convert -c failed (not installed?)");
      g_spawn_command_line_sync (rm, NULL, NULL, NULL, NULL);
      return;
    }
  chain = df_chain_open (qcow, DF_FMT_QCOW2, &err);
  g_assert_no_error (err);
  for (int round = 0; round < 2; round++)
    {
      if (round == 1)
        {
          atomic_store (&allocations, 0);
          atomic_store (&counting, true);
        }
      for (uint64_t off = 0; off < FUZZ_IMAGE_SIZE; off += 65536)
        {
          int e = 0;
          /* two clusters in turn: each read inflates one */
          uint64_t at = round == 0 ? off : (FUZZ_IMAGE_SIZE - 65536 - off);
          g_assert_cmpint (df_blk_pread (chain, buf, 65536, at, &e), ==, 0);
          g_assert_true (memcmp (buf, img + at, 65536) == 0);
        }
    }
  atomic_store (&counting, false);
  n = atomic_load (&allocations);
  g_test_message ("16 compressed cluster reads: %u allocations", n);
  g_assert_cmpuint (n, ==, 0);
  g_spawn_command_line_sync (rm, NULL, NULL, NULL, NULL);
}

int
main (int argc, char **argv)
{
  static const Case cases[] = {
    { "vdisk/fz", true, true },   { "vdisk/fz", true, false },
    { "vdisk/fz", false, true },  { "device/d1", true, true },
    { "device/d1", false, false },
  };
  g_autofree uint8_t *image = g_malloc0 (FUZZ_IMAGE_SIZE);
  g_autofree char *dir = NULL;
  g_autofree char *rm = NULL;
  DfFarm *farm;
  int rc;

  g_test_init (&argc, &argv, NULL);
  for (int i = 0; i < 64; i++) /* data and zero clusters */
    memset (image + i * 16384, i % 3 ? 0 : 'A' + i, 16384);
  farm = fuzz_farm_start ("test-nbd-alloc", image, &dir);
  fuzz_farm_add_device (farm, "d1", "52:54:00:00:00:01");
  df_farm_close (farm);
  fuzz_farm_finish (dir, &exports, &sessions);
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *path = g_strdup_printf (
          "/nbd-alloc/%s/%s/%s", cases[i].export,
          cases[i].structured ? "structured" : "simple",
          cases[i].splice ? "spans" : "copy");
      g_test_add_data_func (path, &cases[i], test_reads_allocate_nothing);
    }
  g_test_add_func ("/nbd-alloc/chain/compressed", test_compressed_reads);
  rc = g_test_run ();
  df_exports_free (exports);
  df_sessions_free (sessions);
  rm = g_strdup_printf ("rm -rf %s", dir);
  if (!g_spawn_command_line_sync (rm, NULL, NULL, NULL, NULL))
    g_printerr ("test-nbd-alloc: could not remove %s\n", dir);
  return rc;
}
