/* streamsvc: a protocol engine as its transport sees it.
 *
 * An engine (nbd_conn, iscsi_conn) turns input bytes into output bytes and
 * owns no socket.  Each one embeds a DfEngineConn first and defines one
 * DfEngineOps of typed thunks with DF_ENGINE_DEFINE (nbd.c,
 * iscsi_session.c), so a transport
 * (server.c), a fuzzer or a test drives either engine through the same
 * calls, without casting function pointers:
 *
 *   DfEngineConn *e = nbd_conn_engine (nbd_conn_new (...));
 *   loop:
 *     buf = df_engine_input_space (e, &room);  read (fd, buf, room) -> n
 *     df_engine_input_commit (e, n);           n == 0: EOF, free the conn
 *     df_engine_process (e);
 *     df_engine_pump (e, sink, opaque);        output -> sink, run held work
 *     if (df_engine_should_close (e) && nothing pending) close
 *
 * df_engine_feed is that loop over a buffer (fuzzers, tests).
 *
 * Thread safety: one engine is driven by one thread at a time.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blk.h"

typedef struct DfEngineConn DfEngineConn;

/* Where a connection stands, for the transport's deadlines (server.c):
 *   HANDSHAKE  no session yet: NBD option haggling, an iSCSI login, or an
 *              iSCSI discovery session (which never gets one)
 *   IDLE       a session, nothing of a next message received (or only
 *              complete messages held back for backpressure): a booted
 *              target may stay so for hours
 *   PARTIAL    a session, part of a message received, more awaited */
typedef enum {
  DF_ENGINE_HANDSHAKE,
  DF_ENGINE_IDLE,
  DF_ENGINE_PARTIAL,
} DfEnginePhase;

typedef struct {
  DfEnginePhase phase;
  guint64 messages; /* complete messages taken from the input so far */
} DfEngineProgress;

/* Output to send from a file rather than from the engine's buffer
 * (sendfile): length bytes of fd at offset. */
typedef struct {
  int fd;
  uint64_t offset;
  size_t length;
} DfEngineSpan;

typedef struct {
  const char *name; /* "nbd", "iscsi" */
  /* Room to read into (*room >= 1); valid until the next call on e. */
  uint8_t *(*input_space) (DfEngineConn *e, size_t *room);
  /* n bytes were written at the pointer from input_space. */
  void (*input_commit) (DfEngineConn *e, size_t n);
  /* Run every complete message (stops early above the output high water). */
  void (*process) (DfEngineConn *e);
  /* Complete input is waiting that process has not run yet. */
  bool (*has_work) (const DfEngineConn *e);
  /* Pending output (borrowed until the next call); *len 0: nothing. */
  const uint8_t *(*output) (DfEngineConn *e, size_t *len);
  void (*output_consume) (DfEngineConn *e, size_t n);
  /* The output is a sequence of buffered bytes and file spans (NULL: only
   * bytes).  output gives the bytes up to the next span; when it gives
   * none and output_span returns true, the next span->length bytes are
   * span's (borrowed until the next call), consumed with output_consume.
   * Only an engine its transport allowed to (nbd_conn_set_splice) queues
   * spans; df_engine_pump copies them for a sink that cannot take them. */
  bool (*output_span) (DfEngineConn *e, DfEngineSpan *span);
  /* A span follows the bytes output gives (the transport may hold them
   * back to go out with it: MSG_MORE). */
  bool (*span_follows) (const DfEngineConn *e);
  /* Close once the output is drained. */
  bool (*should_close) (const DfEngineConn *e);
  /* Where the connection stands (see DfEngineProgress). */
  void (*progress) (const DfEngineConn *e, DfEngineProgress *p);
  /* The connection is idle (no message since the last tick, no output
   * pending): give back what it holds at a high-water size (buffers a
   * large request grew); the next request allocates again.  A booted
   * target idles for hours: this keeps an idle session small. */
  void (*release_idle) (DfEngineConn *e);
  /* The engine's clock (NULL: it has none).  false: drop the connection
   * now, without draining its output. */
  bool (*tick) (DfEngineConn *e, gint64 now_us);
  /* In-band TLS (NULL: the engine has none).  tls_wanted: the engine
   * agreed to start TLS (NBD_OPT_STARTTLS) and reads nothing more until
   * the transport, once the output is drained, has run the handshake
   * (tls.h) and called tls_started with the peer's identity (NULL: none).
   * Input the engine held when it agreed is discarded then: nothing sent
   * in plaintext is ever read as if it came through TLS. */
  bool (*tls_wanted) (const DfEngineConn *e);
  void (*tls_started) (DfEngineConn *e, const char *identity);
  /* Frees the engine (and the connection embedding e). */
  void (*free) (DfEngineConn *e);
} DfEngineOps;

/* Blocking work an engine hands to its transport so that the loop thread
 * never waits on the disk (FLUSH, FUA: an fsync of a persistent cache).
 * Only df_blk_flush for now.  The engine fills blk and done, submits the
 * job with df_engine_offload and takes no more input until done runs; the
 * transport runs the flush on another thread, stores its result in ret
 * and err, and calls done on the connection's loop thread. */
typedef struct DfEngineJob DfEngineJob;
struct DfEngineJob {
  df_blk *blk;                     /* borrowed: the engine holds it */
  int ret, err;                    /* df_blk_flush's result */
  void (*done) (DfEngineJob *job); /* the engine's, on its loop thread */
};
/* The transport's runner; NULL (stdio, tests, fuzzers): run inline. */
typedef void (*DfEngineOffload) (void *opaque, DfEngineJob *job);

/* The head of every engine connection (first member). */
struct DfEngineConn {
  const DfEngineOps *ops;
  DfEngineOffload offload;         /* set by the transport, or NULL */
  void *offload_opaque;
};

/* Run job: on the transport's runner when it has one, else here and now
 * (done is then called before this returns). */
void df_engine_offload (DfEngineConn *e, DfEngineJob *job);

/* The connection struct embedding e as its member "engine". */
#define DF_ENGINE_CONN(type, e)                                              \
  ((type *) (void *) ((char *) (e) - offsetof (type, engine)))
#define DF_ENGINE_CONN_CONST(type, e)                                        \
  ((const type *) (const void *) ((const char *) (e)                         \
                                  - offsetof (type, engine)))

/* Define static const DfEngineOps T_engine_ops named name, of typed thunks
 * over an engine whose connection type is T (which embeds DfEngineConn as
 * "engine") and whose functions are T_input_space (T *, size_t *),
 * T_input_commit, T_process, T_has_work (const T *), T_output,
 * T_output_consume, T_should_close (const T *), T_release_idle and
 * T_free; tick,
 * tls_wanted and tls_started are the engine's own thunks for its clock and
 * its in-band TLS, or NULL. */
#define DF_ENGINE_DEFINE(T, name_, tick_, tls_wanted_, tls_started_)         \
  DF_ENGINE_DEFINE_SPANS (T, name_, tick_, tls_wanted_, tls_started_, NULL,  \
                          NULL)
/* The same for an engine whose output has file spans: output_span_ and
 * span_follows_ are its thunks (DfEngineOps). */
#define DF_ENGINE_DEFINE_SPANS(T, name_, tick_, tls_wanted_, tls_started_,  \
                               output_span_, span_follows_)                 \
  static uint8_t *eng_input_space (DfEngineConn *e, size_t *room)            \
  {                                                                          \
    return T##_input_space (DF_ENGINE_CONN (T, e), room);                    \
  }                                                                          \
  static void eng_input_commit (DfEngineConn *e, size_t n)                   \
  {                                                                          \
    T##_input_commit (DF_ENGINE_CONN (T, e), n);                             \
  }                                                                          \
  static void eng_process (DfEngineConn *e)                                  \
  {                                                                          \
    T##_process (DF_ENGINE_CONN (T, e));                                     \
  }                                                                          \
  static bool eng_has_work (const DfEngineConn *e)                           \
  {                                                                          \
    return T##_has_work (DF_ENGINE_CONN_CONST (T, e));                       \
  }                                                                          \
  static const uint8_t *eng_output (DfEngineConn *e, size_t *len)            \
  {                                                                          \
    return T##_output (DF_ENGINE_CONN (T, e), len);                          \
  }                                                                          \
  static void eng_output_consume (DfEngineConn *e, size_t n)                 \
  {                                                                          \
    T##_output_consume (DF_ENGINE_CONN (T, e), n);                           \
  }                                                                          \
  static bool eng_should_close (const DfEngineConn *e)                       \
  {                                                                          \
    return T##_should_close (DF_ENGINE_CONN_CONST (T, e));                   \
  }                                                                          \
  static void eng_progress (const DfEngineConn *e, DfEngineProgress *p)      \
  {                                                                          \
    T##_progress (DF_ENGINE_CONN_CONST (T, e), p);                           \
  }                                                                          \
  static void eng_release_idle (DfEngineConn *e)                             \
  {                                                                          \
    T##_release_idle (DF_ENGINE_CONN (T, e));                                \
  }                                                                          \
  static void eng_free (DfEngineConn *e)                                     \
  {                                                                          \
    T##_free (DF_ENGINE_CONN (T, e));                                        \
  }                                                                          \
  static const DfEngineOps T##_engine_ops = {                                \
    .name = name_,                                                           \
    .input_space = eng_input_space,                                          \
    .input_commit = eng_input_commit,                                        \
    .process = eng_process,                                                  \
    .has_work = eng_has_work,                                                \
    .output = eng_output,                                                    \
    .output_consume = eng_output_consume,                                    \
    .output_span = output_span_,                                             \
    .span_follows = span_follows_,                                           \
    .should_close = eng_should_close,                                        \
    .progress = eng_progress,                                                \
    .release_idle = eng_release_idle,                                        \
    .tick = tick_,                                                           \
    .tls_wanted = tls_wanted_,                                               \
    .tls_started = tls_started_,                                             \
    .free = eng_free,                                                        \
  };

static inline uint8_t *
df_engine_input_space (DfEngineConn *e, size_t *room)
{
  return e->ops->input_space (e, room);
}
static inline void
df_engine_input_commit (DfEngineConn *e, size_t n)
{
  e->ops->input_commit (e, n);
}
static inline void
df_engine_process (DfEngineConn *e)
{
  e->ops->process (e);
}
static inline bool
df_engine_has_work (const DfEngineConn *e)
{
  return e->ops->has_work (e);
}
static inline const uint8_t *
df_engine_output (DfEngineConn *e, size_t *len)
{
  return e->ops->output (e, len);
}
static inline void
df_engine_output_consume (DfEngineConn *e, size_t n)
{
  e->ops->output_consume (e, n);
}
/* false when the next output is not a span (or there is none). */
static inline bool
df_engine_output_span (DfEngineConn *e, DfEngineSpan *span)
{
  return e->ops->output_span != NULL && e->ops->output_span (e, span);
}
static inline bool
df_engine_span_follows (const DfEngineConn *e)
{
  return e->ops->span_follows != NULL && e->ops->span_follows (e);
}
/* Output of either kind is waiting. */
static inline bool
df_engine_output_pending (DfEngineConn *e)
{
  size_t len;
  DfEngineSpan span;

  e->ops->output (e, &len);
  return len > 0 || df_engine_output_span (e, &span);
}
static inline bool
df_engine_should_close (const DfEngineConn *e)
{
  return e->ops->should_close (e);
}
static inline void
df_engine_progress (const DfEngineConn *e, DfEngineProgress *p)
{
  e->ops->progress (e, p);
}
static inline void
df_engine_release_idle (DfEngineConn *e)
{
  e->ops->release_idle (e);
}
static inline bool
df_engine_has_clock (const DfEngineConn *e)
{
  return e->ops->tick != NULL;
}
/* The engine must have a clock (df_engine_has_clock). */
static inline bool
df_engine_tick (DfEngineConn *e, gint64 now_us)
{
  return e->ops->tick (e, now_us);
}
static inline bool
df_engine_tls_wanted (const DfEngineConn *e)
{
  return e->ops->tls_wanted != NULL && e->ops->tls_wanted (e);
}
/* Only after df_engine_tls_wanted. */
static inline void
df_engine_tls_started (DfEngineConn *e, const char *identity)
{
  e->ops->tls_started (e, identity);
}
/* NULL is allowed. */
static inline void
df_engine_free (DfEngineConn *e)
{
  if (e != NULL)
    e->ops->free (e);
}

/* Where output goes: takes up to len bytes of buf and returns how many it
 * took (> 0), 0 when it cannot take more now (a full non-blocking socket),
 * or -1 when the connection is broken. */
typedef gssize (*DfEngineSink) (void *opaque, const uint8_t *buf,
                                size_t len);

/* Where file spans go: sends up to span->length bytes of the span and
 * returns as DfEngineSink. */
typedef gssize (*DfEngineSpanSink) (void *opaque, const DfEngineSpan *span);

/* Hand the pending output to sink, running the work the engine held back
 * for backpressure each time the output empties.  sink NULL discards the
 * output.  Spans go to span_sink; span_sink NULL: they are read (pread)
 * and go to sink as bytes.  Returns false when a sink failed (or a span
 * could not be read); true when all is sent or the sink is full. */
bool df_engine_pump_spans (DfEngineConn *e, DfEngineSink sink,
                           DfEngineSpanSink span_sink, void *opaque);
/* Send up to 64 KiB of span through sink as bytes (read with pread): the
 * span sink of a transport whose socket cannot take a file.  Returns as
 * sink; -1 also when the file cannot be read. */
gssize df_engine_span_copy (const DfEngineSpan *span, DfEngineSink sink,
                            void *opaque);
/* df_engine_pump_spans without a span sink. */
bool df_engine_pump (DfEngineConn *e, DfEngineSink sink, void *opaque);

/* Feed len bytes as a transport would: through input_space in the pieces
 * it offers, processing and pumping (sink as df_engine_pump) after each.
 * Returns false once the engine wants to close (or the sink failed). */
bool df_engine_feed (DfEngineConn *e, const void *buf, size_t len,
                     DfEngineSink sink, void *opaque);

/* A sink appending to a GByteArray (opaque), for tests and fuzzers. */
gssize df_engine_sink_bytes (void *opaque, const uint8_t *buf, size_t len);
