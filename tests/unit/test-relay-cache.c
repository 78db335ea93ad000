/* Unit tests: the relay's shared read cache (streamsvc/relay_cache.c):
 * reads are the fetched bytes, each chunk is fetched once, hashes never
 * share chunks, the budget evicts least recently used chunks, a failed
 * fetch is retried by the next reader, concurrent readers of one chunk
 * wait for one fetch. */
#include <errno.h>
#include <string.h>

#include "relay_cache.h"

#define KEY_A "aaaa"
#define KEY_B "bbbb"
#define SIZE (1024u * 1024 + 1000) /* a short last chunk */

typedef struct
{
  char fill;          /* byte = fill ^ (offset & 0xff) */
  gint fetches;       /* chunk fetches made (atomic) */
  gint fail_next;     /* fail that many fetches with EIO */
  guint delay_us;     /* slow fetches (concurrency test) */
} Source;

static int
fetch (void *opaque, void *buf, uint32_t count, uint64_t offset, int *err)
{
  Source *s = opaque;
  uint8_t *p = buf;

  g_assert_cmpuint (offset % DF_RELAY_CHUNK, ==, 0);
  g_assert_true (count == DF_RELAY_CHUNK || offset + count == SIZE);
  if (g_atomic_int_get (&s->fail_next) > 0)
    {
      g_atomic_int_add (&s->fail_next, -1);
      *err = EIO;
      return -1;
    }
  g_atomic_int_inc (&s->fetches);
  if (s->delay_us)
    g_usleep (s->delay_us);
  for (uint32_t i = 0; i < count; i++)
    p[i] = (uint8_t) (s->fill ^ ((offset + i) & 0xff));
  return 0;
}

static void
check_bytes (const uint8_t *buf, uint32_t count, uint64_t offset, char fill)
{
  for (uint32_t i = 0; i < count; i++)
    g_assert_cmpuint (buf[i], ==, (uint8_t) (fill ^ ((offset + i) & 0xff)));
}

static void
read_ok (DfRelayCache *c, const char *key, Source *s, uint32_t count,
         uint64_t offset)
{
  g_autofree uint8_t *buf = g_malloc (count);
  int err = 0;

  g_assert_cmpint (df_relay_cache_read (c, key, SIZE, buf, count, offset,
                                        fetch, s, &err), ==, 0);
  check_bytes (buf, count, offset, s->fill);
}

/* Table: reads across chunk edges, the short tail, each chunk once. */
static void
test_reads (void)
{
  static const struct { uint32_t count; uint64_t offset; gint fetches; } t[] = {
    { 512, 0, 1 },                        /* chunk 0 */
    { 4096, 100, 1 },                     /* chunk 0 again: no fetch */
    { DF_RELAY_CHUNK, 1000, 2 },          /* 0 and 1 */
    { 3 * DF_RELAY_CHUNK, 0, 3 },         /* 0 1 2 */
    { 1000, SIZE - 1000, 4 },             /* the short tail */
    { 2000, SIZE - 2000, 5 },             /* the tail and the one before */
  };
  DfRelayCache *c = df_relay_cache_new (64 * DF_RELAY_CHUNK);
  Source s = { .fill = 0x5a };
  DfRelayCacheStats st;

  for (size_t i = 0; i < G_N_ELEMENTS (t); i++)
    {
      read_ok (c, KEY_A, &s, t[i].count, t[i].offset);
      g_assert_cmpint (s.fetches, ==, t[i].fetches);
    }
  df_relay_cache_stats (c, &st);
  g_assert_cmpuint (st.fetch_bytes, ==, 4 * DF_RELAY_CHUNK + (SIZE % DF_RELAY_CHUNK));
  g_assert_cmpuint (st.cached_bytes, ==, st.fetch_bytes);
  g_assert_cmpuint (st.hit_bytes, >, 0);
  df_relay_cache_free (c);
}

/* Another hash never reads the first one's chunks. */
static void
test_keys (void)
{
  DfRelayCache *c = df_relay_cache_new (64 * DF_RELAY_CHUNK);
  Source a = { .fill = 0x11 }, b = { .fill = 0x22 };

  read_ok (c, KEY_A, &a, 4096, 0);
  read_ok (c, KEY_B, &b, 4096, 0);
  read_ok (c, KEY_A, &a, 4096, 0);
  g_assert_cmpint (a.fetches, ==, 1);
  g_assert_cmpint (b.fetches, ==, 1);
  df_relay_cache_free (c);
}

/* Budget of 2 chunks: the least recently used one goes. */
static void
test_budget (void)
{
  DfRelayCache *c = df_relay_cache_new (2 * DF_RELAY_CHUNK);
  Source s = { .fill = 0x33 };
  DfRelayCacheStats st;

  read_ok (c, KEY_A, &s, 1, 0);                   /* 0 */
  read_ok (c, KEY_A, &s, 1, DF_RELAY_CHUNK);      /* 1 */
  read_ok (c, KEY_A, &s, 1, 0);                   /* 0 used again */
  read_ok (c, KEY_A, &s, 1, 2 * DF_RELAY_CHUNK);  /* 2 evicts 1 */
  g_assert_cmpint (s.fetches, ==, 3);
  read_ok (c, KEY_A, &s, 1, 0);                   /* still there */
  g_assert_cmpint (s.fetches, ==, 3);
  read_ok (c, KEY_A, &s, 1, DF_RELAY_CHUNK);      /* gone: fetched again */
  g_assert_cmpint (s.fetches, ==, 4);
  df_relay_cache_stats (c, &st);
  g_assert_cmpuint (st.cached_bytes, <=, 2 * DF_RELAY_CHUNK);
  g_assert_cmpuint (st.evicted, ==, 2);
  df_relay_cache_free (c);
}

/* A failed fetch is an error for its reader and nothing is cached. */
static void
test_fetch_error (void)
{
  DfRelayCache *c = df_relay_cache_new (4 * DF_RELAY_CHUNK);
  Source s = { .fill = 0x44, .fail_next = 1 };
  uint8_t buf[16];
  int err = 0;

  g_assert_cmpint (df_relay_cache_read (c, KEY_A, SIZE, buf, sizeof buf, 0,
                                        fetch, &s, &err), ==, -1);
  g_assert_cmpint (err, ==, EIO);
  read_ok (c, KEY_A, &s, sizeof buf, 0);
  g_assert_cmpint (s.fetches, ==, 1);
  df_relay_cache_free (c);
}

typedef struct
{
  DfRelayCache *c;
  Source *s;
} Reader;

static gpointer
reader (gpointer p)
{
  Reader *r = p;

  read_ok (r->c, KEY_A, r->s, 4 * DF_RELAY_CHUNK, 0);
  return NULL;
}

/* 8 readers at once: each chunk fetched once. */
static void
test_concurrent (void)
{
  DfRelayCache *c = df_relay_cache_new (64 * DF_RELAY_CHUNK);
  Source s = { .fill = 0x55, .delay_us = 20000 };
  Reader r = { c, &s };
  GThread *t[8];

  for (size_t i = 0; i < G_N_ELEMENTS (t); i++)
    t[i] = g_thread_new ("reader", reader, &r);
  for (size_t i = 0; i < G_N_ELEMENTS (t); i++)
    g_thread_join (t[i]);
  g_assert_cmpint (s.fetches, ==, 4);
  df_relay_cache_free (c);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/relay-cache/reads", test_reads);
  g_test_add_func ("/relay-cache/keys", test_keys);
  g_test_add_func ("/relay-cache/budget", test_budget);
  g_test_add_func ("/relay-cache/fetch-error", test_fetch_error);
  g_test_add_func ("/relay-cache/concurrent", test_concurrent);
  return g_test_run ();
}
