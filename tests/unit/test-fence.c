/* Unit tests for the fence layer (lib/vdisk/blk_fence.c) over a small
 * in-memory layer that counts its calls and can hold a read in flight. */
#include <errno.h>
#include <string.h>

#include "blk_fence.h"

#define SIZE (1024 * 1024)

typedef struct
{
  df_blk blk;
  uint8_t *data;
  gint reads, writes, flushes, zeroes, trims; /* atomics */
  gint *destroyed;                            /* set to 1 at destroy */
  GMutex gate_lock;
  GCond gate_cond;
  bool gate_closed; /* reads wait while closed */
  bool in_read;     /* a read is waiting at the gate */
} Mem;

static int
mem_pread (df_blk *b, void *buf, uint32_t count, uint64_t offset, int *err)
{
  Mem *m = (Mem *)b;

  g_mutex_lock (&m->gate_lock);
  m->in_read = true;
  g_cond_broadcast (&m->gate_cond);
  while (m->gate_closed)
    g_cond_wait (&m->gate_cond, &m->gate_lock);
  m->in_read = false;
  g_mutex_unlock (&m->gate_lock);
  memcpy (buf, m->data + offset, count);
  g_atomic_int_inc (&m->reads);
  return 0;
}

static int
mem_pwrite (df_blk *b, const void *buf, uint32_t count, uint64_t offset,
            uint32_t flags, int *err)
{
  Mem *m = (Mem *)b;

  memcpy (m->data + offset, buf, count);
  g_atomic_int_inc (&m->writes);
  return 0;
}

static int
mem_flush (df_blk *b, int *err)
{
  g_atomic_int_inc (&((Mem *)b)->flushes);
  return 0;
}

static int
mem_zero (df_blk *b, uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  Mem *m = (Mem *)b;

  memset (m->data + offset, 0, count);
  g_atomic_int_inc (&m->zeroes);
  return 0;
}

static int
mem_trim (df_blk *b, uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  g_atomic_int_inc (&((Mem *)b)->trims);
  return 0;
}

static void
mem_destroy (df_blk *b)
{
  Mem *m = (Mem *)b;

  if (m->destroyed != NULL)
    g_atomic_int_set (m->destroyed, 1);
  g_mutex_clear (&m->gate_lock);
  g_cond_clear (&m->gate_cond);
  g_free (m->data);
  g_free (m);
}

static const df_blk_ops mem_ops = {
  .name = "mem",
  .pread = mem_pread,
  .pwrite = mem_pwrite,
  .flush = mem_flush,
  .trim = mem_trim,
  .zero = mem_zero,
  .destroy = mem_destroy,
};

static Mem *
mem_new (gint *destroyed)
{
  Mem *m = g_new0 (Mem, 1);

  df_blk_init (&m->blk, &mem_ops, SIZE, false);
  m->data = g_malloc0 (SIZE);
  m->destroyed = destroyed;
  g_mutex_init (&m->gate_lock);
  g_cond_init (&m->gate_cond);
  return m;
}

/* A check whose answer the test sets; counts its calls. */
typedef struct
{
  gint calls;
  bool stale;
} Check;

static bool
check_fn (void *opaque, char **reason)
{
  Check *c = opaque;

  g_atomic_int_inc (&c->calls);
  if (!c->stale)
    return true;
  *reason = g_strdup ("device pc01 started boot generation 2");
  return false;
}

static void
count_kick (void *data)
{
  g_atomic_int_inc ((gint *)data);
}

static void
test_passthrough (void)
{
  Mem *m = mem_new (NULL);
  Check ck = { 0, false };
  g_autoptr (DfFence) f = df_fence_new ("test", check_fn, &ck, NULL);
  g_autoptr (df_blk) b = df_fence_blk_new (f, &m->blk);
  uint8_t buf[4096], out[4096];
  int err = 0;

  df_blk_unref (&m->blk); /* the layer holds its own ref */
  g_assert_cmpuint (b->size, ==, SIZE);
  g_assert_false (b->readonly);
  g_assert_true (b->can_trim && b->can_zero && b->can_flush);
  memset (buf, 'a', sizeof buf);
  g_assert_cmpint (df_blk_pwrite (b, buf, sizeof buf, 8192, 0, &err), ==, 0);
  g_assert_cmpint (df_blk_pread (b, out, sizeof out, 8192, &err), ==, 0);
  g_assert_cmpmem (buf, sizeof buf, out, sizeof out);
  g_assert_cmpint (df_blk_zero (b, 512, 8192, 0, &err), ==, 0);
  g_assert_cmpint (df_blk_trim (b, 512, 0, 0, &err), ==, 0);
  g_assert_cmpint (ck.calls, ==, 0); /* no farm look-up on the data path */
  g_assert_cmpint (df_blk_flush (b, &err), ==, 0);
  g_assert_cmpint (ck.calls, ==, 1); /* every FLUSH is checked */
  g_assert_cmpint (df_blk_pwrite (b, buf, 512, 0, DF_BLK_FUA, &err), ==, 0);
  g_assert_cmpint (df_blk_zero (b, 512, 0, DF_BLK_FUA, &err), ==, 0);
  g_assert_cmpint (ck.calls, ==, 3); /* and every FUA request */
  g_assert_cmpint (m->reads, ==, 1);
  g_assert_cmpint (m->writes, ==, 2);
  g_assert_cmpint (m->zeroes, ==, 2);
  g_assert_cmpint (m->trims, ==, 1);
  g_assert_cmpint (m->flushes, ==, 1);
  g_assert_false (df_fence_tripped (f));
  g_assert_null (df_fence_reason (f));
}

/* Once tripped, nothing reaches the inner layer. */
static void
test_trip (void)
{
  Mem *m = mem_new (NULL);
  g_autoptr (DfFence) f = df_fence_new ("device pc01", NULL, NULL, NULL);
  g_autoptr (df_blk) b = df_fence_blk_new (f, &m->blk);
  uint8_t buf[512] = { 0 };
  int err = 0;

  g_assert_true (df_fence_trip (f, "device pc01 was reset"));
  g_assert_false (df_fence_trip (f, "again"));
  g_assert_cmpstr (df_fence_reason (f), ==, "device pc01 was reset");
  g_assert_cmpint (df_blk_pread (b, buf, 512, 0, &err), ==, -1);
  g_assert_cmpint (err, ==, ESHUTDOWN);
  err = 0;
  g_assert_cmpint (df_blk_pwrite (b, buf, 512, 0, 0, &err), ==, -1);
  g_assert_cmpint (err, ==, ESHUTDOWN);
  g_assert_cmpint (df_blk_flush (b, &err), ==, -1);
  g_assert_cmpint (df_blk_zero (b, 512, 0, 0, &err), ==, -1);
  g_assert_cmpint (df_blk_trim (b, 512, 0, 0, &err), ==, -1);
  g_assert_cmpint (m->reads + m->writes + m->flushes + m->zeroes + m->trims,
                   ==, 0);
  df_blk_unref (&m->blk);
}

/* Only the call that trips the fence says whether the device moved to
 * another server (a lost cache lease) or its binding went stale. */
static void
test_trip_moved (void)
{
  g_autoptr (DfFence) f = df_fence_new ("device pc01", NULL, NULL, NULL);
  g_autoptr (DfFence) g = df_fence_new ("device pc02", NULL, NULL, NULL);

  g_assert_false (df_fence_moved (f));
  g_assert_true (df_fence_trip_moved (f, "cache lease epoch 3 lost"));
  g_assert_false (df_fence_trip (f, "device pc01 was reset"));
  g_assert_true (df_fence_moved (f));
  g_assert_cmpstr (df_fence_reason (f), ==, "cache lease epoch 3 lost");
  /* stale first: a later lease loss does not make it a move */
  g_assert_true (df_fence_trip (g, "device pc02 was reset"));
  g_assert_false (df_fence_trip_moved (g, "cache lease epoch 4 lost"));
  g_assert_false (df_fence_moved (g));
}

/* Notices the fence layer logged (fence_writer counts them). */
static gint fence_notices;

static GLogWriterOutput
fence_writer (GLogLevelFlags level, const GLogField *fields, gsize n,
              gpointer data)
{
  for (gsize i = 0; i < n; i++)
    if (strcmp (fields[i].key, "GLIB_DOMAIN") == 0
        && g_strcmp0 (fields[i].value, "diskfarm-fence") == 0
        && (level & G_LOG_LEVEL_MESSAGE))
      g_atomic_int_inc (&fence_notices);
  return g_log_writer_default (level, fields, n, data);
}

/* A fence tripped as its last session left logs nothing (nothing was
 * fenced) but trips as any other: once, with its reason, never a move. */
static void
test_trip_unused (void)
{
  g_autoptr (DfFence) f = df_fence_new ("device pc03", NULL, NULL, NULL);
  g_autoptr (DfFence) g = df_fence_new ("device pc04", NULL, NULL, NULL);
  gint before = g_atomic_int_get (&fence_notices);

  g_assert_true (df_fence_trip_unused (f, "its last session closed"));
  g_assert_false (df_fence_trip (f, "device pc03 was reset"));
  g_assert_cmpint (g_atomic_int_get (&fence_notices), ==, before);
  g_assert_true (df_fence_tripped (f));
  g_assert_false (df_fence_moved (f));
  g_assert_cmpstr (df_fence_reason (f), ==, "its last session closed");
  g_assert_true (df_fence_trip (g, "device pc04 was reset"));
  g_assert_cmpint (g_atomic_int_get (&fence_notices), ==, before + 1);
}

/* A FLUSH (or FUA write) that completes after the binding went stale is
 * not acknowledged: the check trips the fence and the request fails. */
static void
test_stale_flush (void)
{
  Mem *m = mem_new (NULL);
  Check ck = { 0, false };
  g_autoptr (DfFence) f = df_fence_new ("test", check_fn, &ck, NULL);
  g_autoptr (df_blk) b = df_fence_blk_new (f, &m->blk);
  uint8_t buf[512] = { 0 };
  int kicks = 0, err = 0;

  df_fence_watch (f, count_kick, &kicks);
  g_assert_cmpint (df_blk_pwrite (b, buf, 512, 0, 0, &err), ==, 0);
  ck.stale = true;
  g_assert_cmpint (df_blk_pwrite (b, buf, 512, 0, 0, &err), ==,
                   0); /* no check */
  g_assert_false (df_fence_tripped (f));
  g_assert_cmpint (df_blk_pwrite (b, buf, 512, 0, DF_BLK_FUA, &err), ==, -1);
  g_assert_cmpint (err, ==, ESHUTDOWN);
  g_assert_true (df_fence_tripped (f));
  g_assert_cmpstr (df_fence_reason (f), ==,
                   "device pc01 started boot generation 2");
  g_assert_cmpint (kicks, ==, 1);
  err = 0;
  g_assert_cmpint (df_blk_flush (b, &err), ==, -1);
  g_assert_cmpint (err, ==, ESHUTDOWN);
  g_assert_cmpint (ck.calls, ==, 1); /* tripped: no more checks */
  g_assert_cmpint (kicks, ==, 1);    /* kicked once */
  df_blk_unref (&m->blk);
}

static void
test_check_flush_stale (void)
{
  Mem *m = mem_new (NULL);
  Check ck = { 0, true };
  g_autoptr (DfFence) f = df_fence_new ("test", check_fn, &ck, NULL);
  g_autoptr (df_blk) b = df_fence_blk_new (f, &m->blk);
  int err = 0;

  g_assert_cmpint (df_blk_flush (b, &err), ==, -1);
  g_assert_cmpint (err, ==, ESHUTDOWN);
  g_assert_true (df_fence_tripped (f));
  g_assert_false (df_fence_check (f));
  df_blk_unref (&m->blk);
}

static void
test_watch (void)
{
  g_autoptr (DfFence) f = df_fence_new ("test", NULL, NULL, NULL);
  int a = 0, b = 0, c = 0;
  guint ida, idb;

  ida = df_fence_watch (f, count_kick, &a);
  idb = df_fence_watch (f, count_kick, &b);
  df_fence_unwatch (f, idb);
  g_assert_true (df_fence_check (f)); /* no check: never stale by itself */
  df_fence_trip (f, "gone");
  df_fence_trip (f, "gone again");
  g_assert_cmpint (a, ==, 1);
  g_assert_cmpint (b, ==, 0);
  df_fence_watch (f, count_kick, &c); /* already tripped: kicked now */
  g_assert_cmpint (c, ==, 1);
  df_fence_unwatch (f, ida);
}

typedef struct
{
  df_blk *b;
  int rc, err;
  uint8_t buf[512];
} ReadJob;

static gpointer
read_thread (gpointer p)
{
  ReadJob *j = p;

  j->rc = df_blk_pread (j->b, j->buf, sizeof j->buf, 0, &j->err);
  return NULL;
}

static gpointer
drain_thread (gpointer p)
{
  df_fence_drain (p);
  return NULL;
}

/* Drain waits for the request in flight, then the layers let the inner
 * layer go (its destroy runs while the fenced layers still exist). */
static void
test_drain (void)
{
  gint destroyed = 0;
  Mem *m = mem_new (&destroyed);
  g_autoptr (DfFence) f = df_fence_new ("test", NULL, NULL, NULL);
  df_blk *b1 = df_fence_blk_new (f, &m->blk);
  df_blk *b2 = df_fence_blk_new (f, &m->blk);
  ReadJob job = { b1, 0, 0, { 0 } };
  GThread *reader, *drainer;
  uint8_t buf[512];
  int err = 0;

  m->data[0] = 'R';
  memset (m->data, 'R', 512);
  m->gate_closed = true;
  df_blk_unref (&m->blk); /* only the layers hold it now */
  g_assert_true (df_fence_blk_inner (b1) == &m->blk);
  reader = g_thread_new ("reader", read_thread, &job);
  g_mutex_lock (&m->gate_lock);
  while (!m->in_read)
    g_cond_wait (&m->gate_cond, &m->gate_lock);
  g_mutex_unlock (&m->gate_lock);
  df_fence_trip (f, "superseded");
  drainer = g_thread_new ("drainer", drain_thread, f);
  g_usleep (100 * 1000);
  g_assert_cmpint (g_atomic_int_get (&destroyed), ==, 0); /* still in flight */
  g_mutex_lock (&m->gate_lock);
  m->gate_closed = false;
  g_cond_broadcast (&m->gate_cond);
  g_mutex_unlock (&m->gate_lock);
  g_thread_join (reader);
  g_thread_join (drainer);
  g_assert_cmpint (job.rc, ==, 0); /* the request in flight completed */
  g_assert_cmpint (job.buf[0], ==, 'R');
  g_assert_cmpint (g_atomic_int_get (&destroyed), ==, 1);
  g_assert_null (df_fence_blk_inner (b1));
  g_assert_null (df_fence_blk_inner (b2));
  g_assert_cmpint (df_blk_pread (b2, buf, 512, 0, &err), ==, -1);
  g_assert_cmpint (err, ==, ESHUTDOWN);
  df_blk_unref (b1);
  df_blk_unref (b2);
}

/* Many threads doing I/O while another trips: every request either
 * completes normally or fails with ESHUTDOWN, none after the trip. */
typedef struct
{
  df_blk *b;
  DfFence *f;
  gint after_trip_ok; /* successes that started after the trip was seen */
  gint failed_other;
} Storm;

static gpointer
storm_thread (gpointer p)
{
  Storm *s = p;
  uint8_t buf[512] = { 1 };

  for (int i = 0; i < 20000; i++)
    {
      bool tripped_before = df_fence_tripped (s->f);
      int err = 0;
      int rc
          = df_blk_pwrite (s->b, buf, 512, (uint64_t)(i % 64) * 512, 0, &err);

      if (rc == 0 && tripped_before)
        g_atomic_int_inc (&s->after_trip_ok);
      if (rc < 0 && err != ESHUTDOWN)
        g_atomic_int_inc (&s->failed_other);
    }
  return NULL;
}

static void
test_concurrent_trip (void)
{
  Mem *m = mem_new (NULL);
  g_autoptr (DfFence) f = df_fence_new ("test", NULL, NULL, NULL);
  g_autoptr (df_blk) b = df_fence_blk_new (f, &m->blk);
  Storm s = { b, f, 0, 0 };
  GThread *t[4];

  df_blk_unref (&m->blk);
  for (guint i = 0; i < G_N_ELEMENTS (t); i++)
    t[i] = g_thread_new ("storm", storm_thread, &s);
  g_usleep (2000);
  df_fence_trip (f, "reset");
  df_fence_drain (f);
  for (guint i = 0; i < G_N_ELEMENTS (t); i++)
    g_thread_join (t[i]);
  g_assert_cmpint (s.after_trip_ok, ==, 0);
  g_assert_cmpint (s.failed_other, ==, 0);
  g_assert_null (df_fence_blk_inner (b));
}

int
main (int argc, char **argv)
{
  g_log_set_writer_func (fence_writer, NULL, NULL);
  g_test_init (&argc, &argv, NULL);
  g_log_set_always_fatal (G_LOG_LEVEL_CRITICAL);
  g_test_add_func ("/fence/passthrough", test_passthrough);
  g_test_add_func ("/fence/trip", test_trip);
  g_test_add_func ("/fence/trip-moved", test_trip_moved);
  g_test_add_func ("/fence/trip-unused", test_trip_unused);
  g_test_add_func ("/fence/stale-fua-and-flush", test_stale_flush);
  g_test_add_func ("/fence/stale-flush-first", test_check_flush_stale);
  g_test_add_func ("/fence/watch", test_watch);
  g_test_add_func ("/fence/drain", test_drain);
  g_test_add_func ("/fence/concurrent-trip", test_concurrent_trip);
  return g_test_run ();
}
