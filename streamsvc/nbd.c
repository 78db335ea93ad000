/* streamsvc: NBD protocol engine (see nbd.h).
 *
 * Fixed newstyle handshake, then transmission.  Every message is decoded
 * and validated here, once, against the bytes really present; the block
 * layer below only asserts the contract of blk.h.
 */
#define G_LOG_DOMAIN "streamsvc-nbd"

#include "nbd.h"

#include "byteorder.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>

#include "common.h"
#include "layer_account.h"

/* ---- protocol constants (NBD doc/proto.md) ------------------------------ */

#define NBD_MAGIC            UINT64_C (0x4e42444d41474943) /* "NBDMAGIC" */
#define NBD_OPTS_MAGIC       UINT64_C (0x49484156454f5054) /* "IHAVEOPT" */
#define NBD_REP_MAGIC        UINT64_C (0x0003e889045565a9)
#define NBD_REQUEST_MAGIC    UINT32_C (0x25609513)
#define NBD_SIMPLE_MAGIC     UINT32_C (0x67446698)
#define NBD_STRUCTURED_MAGIC UINT32_C (0x668e33ef)

#define NBD_FLAG_FIXED_NEWSTYLE   (1u << 0)
#define NBD_FLAG_NO_ZEROES        (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES      (1u << 1)

#define NBD_FLAG_HAS_FLAGS         (1u << 0)
#define NBD_FLAG_READ_ONLY         (1u << 1)
#define NBD_FLAG_SEND_FLUSH        (1u << 2)
#define NBD_FLAG_SEND_FUA          (1u << 3)
#define NBD_FLAG_SEND_TRIM         (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF           (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN    (1u << 8)
#define NBD_FLAG_SEND_FAST_ZERO    (1u << 11)

enum {
  NBD_OPT_EXPORT_NAME = 1, NBD_OPT_ABORT = 2, NBD_OPT_LIST = 3,
  NBD_OPT_STARTTLS = 5, NBD_OPT_INFO = 6, NBD_OPT_GO = 7,
  NBD_OPT_STRUCTURED_REPLY = 8, NBD_OPT_LIST_META_CONTEXT = 9,
  NBD_OPT_SET_META_CONTEXT = 10,
};

#define NBD_REP_ACK          1u
#define NBD_REP_SERVER       2u
#define NBD_REP_INFO         3u
#define NBD_REP_META_CONTEXT 4u
#define NBD_REP_ERR(n)       ((1u << 31) + (n))
#define NBD_REP_ERR_UNSUP    NBD_REP_ERR (1)
#define NBD_REP_ERR_POLICY   NBD_REP_ERR (2)
#define NBD_REP_ERR_INVALID  NBD_REP_ERR (3)
#define NBD_REP_ERR_TLS_REQD NBD_REP_ERR (5)
#define NBD_REP_ERR_UNKNOWN  NBD_REP_ERR (6)

#define NBD_INFO_EXPORT      0
#define NBD_INFO_NAME        1
#define NBD_INFO_DESCRIPTION 2
#define NBD_INFO_BLOCK_SIZE  3

enum {
  NBD_CMD_READ = 0, NBD_CMD_WRITE = 1, NBD_CMD_DISC = 2, NBD_CMD_FLUSH = 3,
  NBD_CMD_TRIM = 4, NBD_CMD_WRITE_ZEROES = 6, NBD_CMD_BLOCK_STATUS = 7,
  NBD_CMD__COUNT = 8,
};

#define NBD_CMD_FLAG_FUA       (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE   (1u << 1)
#define NBD_CMD_FLAG_DF        (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE   (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO (1u << 4)

#define NBD_REPLY_FLAG_DONE         (1u << 0)
#define NBD_REPLY_TYPE_OFFSET_DATA  1u
#define NBD_REPLY_TYPE_OFFSET_HOLE  2u
#define NBD_REPLY_TYPE_BLOCK_STATUS 5u
#define NBD_REPLY_TYPE_ERROR        ((1u << 15) + 1)

#define NBD_EPERM     1
#define NBD_EIO       5
#define NBD_ENOMEM    12
#define NBD_EINVAL    22
#define NBD_ENOSPC    28
#define NBD_EOVERFLOW 75
#define NBD_ENOTSUP   95
#define NBD_ESHUTDOWN 108

#define BASE_ALLOCATION     "base:allocation"
#define BASE_ALLOCATION_ID  1u

#define OPT_HEADER_LEN   16
#define REQ_HEADER_LEN   28
#define SIMPLE_REPLY_LEN 16
#define CHUNK_HEADER_LEN 20
/* Structured reads at least this long are split into data and hole
 * chunks; shorter ones go as one data chunk (cheaper than a map lookup). */
#define SPARSE_READ_MIN  (64u * 1024)
/* Reads at least this long go as file spans when the transport takes
 * them (nbd_conn_set_splice); shorter ones are copied: one send of many
 * small replies costs less than a sendfile each. */
#define SPLICE_READ_MIN  (32u * 1024)
/* At most this many descriptors in one BLOCK_STATUS reply. */
#define MAX_EXTENTS      4096u
/* Input room offered per read: what the current message still needs, at
 * least INPUT_MIN_ROOM (several small requests per read), at most
 * INPUT_CHUNK (a large WRITE payload grows the buffer as it arrives, not
 * at its header). */
#define INPUT_MIN_ROOM   4096u
#define INPUT_CHUNK      (256u * 1024)
/* An emptied buffer larger than this is freed (input, output). */
#define IN_SHRINK_ABOVE  INPUT_CHUNK
#define OUT_SHRINK_ABOVE (8u * 1024 * 1024)

/* ---- byte buffers -------------------------------------------------------- */

/* A growable byte queue: data[start, end) is pending; once empty, a
 * capacity above shrink_above is given back. */
typedef struct {
  uint8_t *data;
  size_t start, end, cap;
  size_t shrink_above;
} nbd_buf;

static size_t
buf_len (const nbd_buf *b)
{
  return b->end - b->start;
}

/* Make room for n more bytes at the end (compacting first). */
static uint8_t *
buf_room (nbd_buf *b, size_t n)
{
  if (b->start > 0 && b->cap - b->end < n)
    {
      memmove (b->data, b->data + b->start, buf_len (b));
      b->end -= b->start;
      b->start = 0;
    }
  if (b->cap - b->end < n)
    {
      size_t cap = MAX (b->cap * 2, b->end + n);
      b->data = g_realloc (b->data, cap);
      b->cap = cap;
    }
  return b->data + b->end;
}

/* Append n bytes (uninitialised); returns where they go. */
static uint8_t *
buf_append (nbd_buf *b, size_t n)
{
  uint8_t *p = buf_room (b, n);
  b->end += n;
  return p;
}

static void
buf_consume (nbd_buf *b, size_t n)
{
  g_assert (n <= buf_len (b));
  b->start += n;
  if (b->start == b->end)
    {
      b->start = b->end = 0;
      if (b->cap > b->shrink_above)
        {
          g_free (b->data);
          b->data = NULL;
          b->cap = 0;
        }
    }
}

static void
buf_clear (nbd_buf *b)
{
  g_free (b->data);
  b->data = NULL;
  b->start = b->end = b->cap = 0;
}

/* ---- connection ---------------------------------------------------------- */

/* One coalesced run of an extent map (reads and BLOCK_STATUS). */
typedef struct {
  uint64_t offset;
  uint32_t length;
  uint32_t flags;
} nbd_run;

struct nbd_conn {
  DfEngineConn engine;     /* first: the transport's view (engine.h) */
  nbd_state state;
  DfExports *exports;      /* borrowed */
  DfSession *session;      /* owned: ended in nbd_conn_free */
  char *client;            /* owned */
  int fd;                  /* socket, -1 if unknown (stdio, tests) */
  DfExport *export;        /* owned after GO / EXPORT_NAME */
  df_blk *blk;             /* owned: the accounting layer over the
                            * export's blk (layer_account.h) */
  bool no_zeroes;
  bool structured;
  bool meta_allocation;    /* base:allocation selected ... */
  char *meta_export;       /* ... for this export name (owned) */
  bool close_after_output; /* set with state CLOSED */
  DfTlsMode tls_mode;
  bool tls_active;         /* the handshake is done: c->in is TLS */
  char *tls_identity;      /* owned: PSK identity or certificate CN; NULL
                            * without TLS or for a client without one */
  bool tls_refusal_logged; /* one log line per connection for TLS_REQD
                            * or a refused STARTTLS */
  nbd_buf in, out;
  uint32_t discard;        /* bytes of a refused WRITE's payload still to
                            * drop unbuffered */
  guint64 messages;        /* complete messages taken from c->in */
  GArray *runs;            /* nbd_run scratch, reused across requests */
  /* The output is c->out's bytes with file spans between them (engine.h
   * output_span): spans[span_head..] in order, each sent when the bytes
   * of c->out before its "at" are.  The array is reused (emptied, never
   * freed, while the conn lives). */
  bool splice;             /* the transport sends spans (set_splice) */
  GArray *spans;           /* out_span */
  guint span_head;
  uint64_t out_sent;       /* bytes of c->out consumed so far */
  uint64_t span_bytes;     /* bytes of the spans queued */
  /* A FLUSH (or a FUA write's flush) running off the loop thread
   * (engine.h DfEngineJob): nothing more is read or run until its
   * reply to parked_cookie is queued. */
  bool parked;
  uint64_t parked_cookie;
  DfEngineJob job;
};

/* A file span of the output after the first "at" bytes of c->out's
 * stream (counted from the start of the connection). */
typedef struct {
  uint64_t at;
  df_blk_span span; /* owns its owner reference */
} out_span;

/* Release the spans from index i on (a reply taken back, the end). */
static void
spans_drop_from (nbd_conn *c, guint i)
{
  for (guint k = i; k < c->spans->len; k++)
    {
      out_span *o = &g_array_index (c->spans, out_span, k);
      c->span_bytes -= o->span.length;
      df_blk_span_release (&o->span);
    }
  g_array_set_size (c->spans, i);
  if (c->span_head == c->spans->len)
    {
      g_array_set_size (c->spans, 0);
      c->span_head = 0;
    }
}

/* Queue span (its owner reference is taken over) after the bytes queued
 * so far; it joins the last span when it continues it in the same file
 * with no bytes between (so only a span of the same reply: every reply
 * starts with header bytes, which out_rollback relies on). */
static void
queue_span (nbd_conn *c, df_blk_span *span)
{
  uint64_t at = c->out_sent + buf_len (&c->out);
  out_span *last = c->spans->len > c->span_head
    ? &g_array_index (c->spans, out_span, c->spans->len - 1) : NULL;

  c->span_bytes += span->length;
  if (last != NULL && last->at == at && last->span.fd == span->fd
      && last->span.offset + last->span.length == span->offset
      && (uint64_t) last->span.length + span->length <= UINT32_MAX)
    {
      last->span.length += span->length;
      df_blk_span_release (span);
      return;
    }
  g_array_append_val (c->spans, ((out_span) { at, *span }));
}

/* Where the output stood before a reply, to take the reply back when it
 * fails half way.  (A length, not a pointer: appending may compact.) */
typedef struct {
  size_t len;
  guint spans;
} out_mark;

static out_mark
out_mark_now (const nbd_conn *c)
{
  return (out_mark) { buf_len (&c->out), c->spans->len };
}

static void
out_rollback (nbd_conn *c, const out_mark *m)
{
  g_assert (m->len <= buf_len (&c->out));
  c->out.end = c->out.start + m->len;
  spans_drop_from (c, MAX (m->spans, c->span_head));
}

static const char *const state_names[] = {
  [NBD_STATE_SEND_GREETING] = "SEND_GREETING",
  [NBD_STATE_OPTIONS] = "OPTIONS",
  [NBD_STATE_STARTTLS] = "STARTTLS",
  [NBD_STATE_TRANSMISSION] = "TRANSMISSION",
  [NBD_STATE_CLOSED] = "CLOSED",
};

const char *
nbd_state_name (nbd_state s)
{
  return s < G_N_ELEMENTS (state_names) ? state_names[s] : "?";
}

nbd_state
nbd_conn_state (const nbd_conn *c)
{
  return c->state;
}

/* Protocol violation or end of conversation: stop reading, drain, close. */
static void
conn_close (nbd_conn *c, const char *why)
{
  if (why != NULL)
    g_message ("nbd %s: closing in %s: %s", c->client,
               nbd_state_name (c->state), why);
  c->state = NBD_STATE_CLOSED;
  c->close_after_output = true;
}

static void
send_greeting (nbd_conn *c)
{
  uint8_t *p = buf_append (&c->out, 18);

  df_put_be64 (p, NBD_MAGIC);
  df_put_be64 (p + 8, NBD_OPTS_MAGIC);
  df_put_be16 (p + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
}

/* "export device/pc01 device pc01 generation 3 vdisk base version 2 cache
 * server" for the session log lines.  New string. */
static char *
binding_text (DfExport *e)
{
  DfExportBinding b;

  df_export_binding (e, &b);
  if (b.vdisk == NULL) /* not the farm's (the relay's, relay.h) */
    return g_strdup_printf ("export %s", df_export_name (e));
  if (b.device == NULL)
    return g_strdup_printf ("export %s vdisk %s version %d",
                            df_export_name (e), b.vdisk, b.version);
  return g_strdup_printf ("export %s device %s generation %" G_GINT64_FORMAT
                          " vdisk %s version %d cache %s%s",
                          df_export_name (e), b.device, b.generation, b.vdisk,
                          b.version, b.cache,
                          b.maintenance ? " (maintenance)" : "");
}

void
nbd_conn_set_fd (nbd_conn *c, int fd)
{
  c->fd = fd;
}

/* ---- the engine interface (engine.h): typed thunks ----------------------- */

static bool
eng_tls_wanted (const DfEngineConn *e)
{
  return DF_ENGINE_CONN_CONST (nbd_conn, e)->state == NBD_STATE_STARTTLS;
}

static void tls_started (nbd_conn *c, const char *identity);

static void
eng_tls_started (DfEngineConn *e, const char *identity)
{
  tls_started (DF_ENGINE_CONN (nbd_conn, e), identity);
}

/* No clock: TCP keepalive finds dead peers. */
static bool
eng_output_span (DfEngineConn *e, DfEngineSpan *span)
{
  return nbd_conn_output_span (DF_ENGINE_CONN (nbd_conn, e), span);
}

static bool
eng_span_follows (const DfEngineConn *e)
{
  return nbd_conn_span_follows (DF_ENGINE_CONN_CONST (nbd_conn, e));
}

DF_ENGINE_DEFINE_SPANS (nbd_conn, "nbd", NULL, eng_tls_wanted,
                        eng_tls_started, eng_output_span, eng_span_follows)

DfEngineConn *
nbd_conn_engine (nbd_conn *c)
{
  return &c->engine;
}

nbd_conn *
nbd_conn_new (DfExports *ex, DfSessions *ss, const char *client)
{
  nbd_conn *c = g_new0 (nbd_conn, 1);

  c->engine.ops = &nbd_conn_engine_ops;
  c->exports = ex;
  c->client = g_strdup (client);
  c->fd = -1;
  c->session = df_session_start (ss, "nbd", client);
  c->runs = g_array_new (FALSE, FALSE, sizeof (nbd_run));
  c->spans = g_array_new (FALSE, FALSE, sizeof (out_span));
  c->in.shrink_above = IN_SHRINK_ABOVE;
  c->out.shrink_above = OUT_SHRINK_ABOVE;
  send_greeting (c);
  c->state = NBD_STATE_SEND_GREETING;
  return c;
}

void
nbd_conn_free (nbd_conn *c)
{
  if (c == NULL)
    return;
  if (c->export != NULL)
    {
      g_autofree char *b = binding_text (c->export);
      const char *fenced = df_export_fence_reason (c->export);
      g_message ("nbd %s: session closed: %s%s%s%s", c->client, b,
                 fenced ? " (fenced: " : "", fenced ? fenced : "",
                 fenced ? ")" : "");
      df_blk_unref (c->blk); /* before the session it accounts to */
      df_export_close (c->export);
    }
  else if (c->tls_active)
    /* the other end of a TLS refusal made after the handshake (a client
     * that does not trust our certificate leaves here) */
    g_message ("nbd %s: TLS session (identity %s) ended without opening "
               "an export", c->client,
               c->tls_identity != NULL ? c->tls_identity : "none");
  df_session_end (c->session);
  buf_clear (&c->in);
  buf_clear (&c->out);
  spans_drop_from (c, c->span_head);
  g_array_unref (c->spans);
  g_array_unref (c->runs);
  g_free (c->meta_export);
  g_free (c->tls_identity);
  g_free (c->client);
  g_free (c);
}

void
nbd_conn_set_splice (nbd_conn *c, bool on)
{
  c->splice = on;
}

void
nbd_conn_set_tls (nbd_conn *c, DfTlsMode mode)
{
  c->tls_mode = mode;
}

bool
nbd_conn_should_close (const nbd_conn *c)
{
  return c->close_after_output;
}

void
nbd_conn_shutdown (nbd_conn *c)
{
  c->state = NBD_STATE_CLOSED;
  c->close_after_output = true;
}

/* ---- input / output plumbing --------------------------------------------- */

typedef struct {
  uint16_t flags, type;
  uint64_t cookie, offset;
  uint32_t count;
  const uint8_t *payload; /* WRITE only; points into c->in */
} nbd_req;

static void decode_request (const uint8_t *p, nbd_req *rq);
static uint32_t write_header_error (const nbd_conn *c, const nbd_req *rq);

/* The payload bytes to buffer after the request header at p: a WRITE's
 * count, unless the header alone refuses it (its payload is then dropped
 * as it comes, never buffered: a read-only export pins no memory). */
static size_t
write_payload_len (const nbd_conn *c, const uint8_t *p)
{
  nbd_req rq;

  decode_request (p, &rq);
  if (rq.type != NBD_CMD_WRITE || rq.count > NBD_MAX_BLOCK
      || write_header_error (c, &rq) != 0)
    return 0;
  return rq.count;
}

/* Bytes the current state needs before it can run one step. */
static size_t
bytes_needed (const nbd_conn *c)
{
  const nbd_buf *in = &c->in;
  size_t have = buf_len (in);
  const uint8_t *p = have > 0 ? in->data + in->start : NULL;

  switch (c->state)
    {
    case NBD_STATE_SEND_GREETING:
      return 4;
    case NBD_STATE_OPTIONS:
      if (have < OPT_HEADER_LEN)
        return OPT_HEADER_LEN;
      /* An oversize length is refused from the header alone. */
      if (df_get_be32 (p + 12) > NBD_MAX_OPTION_LEN)
        return OPT_HEADER_LEN;
      return OPT_HEADER_LEN + (size_t) df_get_be32 (p + 12);
    case NBD_STATE_TRANSMISSION:
      if (c->parked)
        return SIZE_MAX; /* its flush is running: read nothing yet */
      if (c->discard > 0)
        return 1; /* any byte of the refused payload is dropped */
      if (have < REQ_HEADER_LEN)
        return REQ_HEADER_LEN;
      return REQ_HEADER_LEN + write_payload_len (c, p);
    case NBD_STATE_STARTTLS: /* nothing is read until TLS is up */
    case NBD_STATE_CLOSED:
    default:
      return SIZE_MAX;
    }
}

uint8_t *
nbd_conn_input_space (nbd_conn *c, size_t *room)
{
  size_t need = bytes_needed (c), have = buf_len (&c->in);
  size_t want = 0;

  if (c->discard > 0)
    want = c->discard > have ? c->discard - have : 0;
  else if (need != SIZE_MAX && need > have)
    want = need - have;
  buf_room (&c->in, CLAMP (want, INPUT_MIN_ROOM, INPUT_CHUNK));
  *room = c->in.cap - c->in.end;
  return c->in.data + c->in.end;
}

void
nbd_conn_input_commit (nbd_conn *c, size_t n)
{
  g_assert (n <= c->in.cap - c->in.end);
  c->in.end += n;
}

/* The first queued span, NULL when none. */
static out_span *
span_head (nbd_conn *c)
{
  return c->span_head < c->spans->len
           ? &g_array_index (c->spans, out_span, c->span_head)
           : NULL;
}

const uint8_t *
nbd_conn_output (nbd_conn *c, size_t *len)
{
  const out_span *h = span_head (c);

  *len = buf_len (&c->out);
  if (h != NULL)
    *len = (size_t) MIN ((uint64_t) *len, h->at - c->out_sent);
  return *len > 0 ? c->out.data + c->out.start : c->out.data;
}

bool
nbd_conn_output_span (nbd_conn *c, DfEngineSpan *span)
{
  const out_span *h = span_head (c);

  if (h == NULL || h->at != c->out_sent)
    return false;
  *span = (DfEngineSpan) { h->span.fd, h->span.offset, h->span.length };
  return true;
}

bool
nbd_conn_span_follows (const nbd_conn *c)
{
  return c->span_head < c->spans->len
         && g_array_index (c->spans, out_span, c->span_head).at
              > c->out_sent;
}

void
nbd_conn_output_consume (nbd_conn *c, size_t n)
{
  out_span *h = span_head (c);

  if (h == NULL || h->at != c->out_sent)
    {
      g_assert (h == NULL || n <= h->at - c->out_sent);
      buf_consume (&c->out, n);
      c->out_sent += n;
      return;
    }
  g_assert (n <= h->span.length);
  h->span.offset += n;
  h->span.length -= (uint32_t) n;
  c->span_bytes -= n;
  if (h->span.length > 0)
    return;
  df_blk_span_release (&h->span);
  if (++c->span_head == c->spans->len)
    {
      g_array_set_size (c->spans, 0); /* keeps its allocation */
      c->span_head = 0;
    }
}

/* Output waiting, bytes and spans. */
static uint64_t
out_pending (const nbd_conn *c)
{
  return buf_len (&c->out) + c->span_bytes;
}

void
nbd_conn_release_idle (nbd_conn *c)
{
  if (buf_len (&c->in) == 0 && c->discard == 0)
    buf_clear (&c->in);
  if (buf_len (&c->out) == 0)
    buf_clear (&c->out);
  /* scratch: nothing in it outlives a request */
  g_array_unref (c->runs);
  c->runs = g_array_new (FALSE, FALSE, sizeof (nbd_run));
}

void
nbd_conn_progress (const nbd_conn *c, DfEngineProgress *p)
{
  p->messages = c->messages;
  switch (c->state)
    {
    case NBD_STATE_TRANSMISSION:
      p->phase = (c->discard > 0 || buf_len (&c->in) > 0)
                     && !nbd_conn_has_work (c)
                   ? DF_ENGINE_PARTIAL
                   : DF_ENGINE_IDLE;
      return;
    case NBD_STATE_CLOSED:
      p->phase = DF_ENGINE_IDLE; /* draining: nothing more is read */
      return;
    default: /* every state before transmission is the handshake */
      p->phase = DF_ENGINE_HANDSHAKE;
      return;
    }
}

bool
nbd_conn_has_work (const nbd_conn *c)
{
  size_t need = bytes_needed (c);

  return need != SIZE_MAX && buf_len (&c->in) >= need;
}

/* ---- option replies ------------------------------------------------------ */

static uint8_t *
opt_reply_start (nbd_conn *c, uint32_t opt, uint32_t type, uint32_t len)
{
  uint8_t *p = buf_append (&c->out, 20 + (size_t) len);

  df_put_be64 (p, NBD_REP_MAGIC);
  df_put_be32 (p + 8, opt);
  df_put_be32 (p + 12, type);
  df_put_be32 (p + 16, len);
  return p + 20;
}

static void
opt_reply (nbd_conn *c, uint32_t opt, uint32_t type, const void *data,
           uint32_t len)
{
  uint8_t *p = opt_reply_start (c, opt, type, len);

  if (len > 0)
    memcpy (p, data, len);
}

/* Error reply with a human message (logged at debug level). */
static void G_GNUC_PRINTF (4, 5)
opt_error (nbd_conn *c, uint32_t opt, uint32_t type, const char *fmt, ...)
{
  va_list ap;
  g_autofree char *msg = NULL;
  size_t len;

  va_start (ap, fmt);
  msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  len = MIN (strlen (msg), NBD_MAX_STRING);
  g_debug ("nbd %s: option %u refused: %s", c->client, opt, msg);
  opt_reply (c, opt, type, msg, (uint32_t) len);
}

/* ---- option payload parsing (against an end pointer) --------------------- */

typedef struct {
  const uint8_t *p, *end;
} cursor;

static bool
cur_u32 (cursor *k, uint32_t *v)
{
  if (k->end - k->p < 4)
    return false;
  *v = df_get_be32 (k->p);
  k->p += 4;
  return true;
}

static bool
cur_u16 (cursor *k, uint16_t *v)
{
  if (k->end - k->p < 2)
    return false;
  *v = df_get_be16 (k->p);
  k->p += 2;
  return true;
}

/* A length-prefixed string (<= NBD_MAX_STRING, no NUL) as a new string. */
typedef enum { STR_OK, STR_SHORT, STR_TOO_LONG, STR_NUL } str_result;

static str_result
cur_string (cursor *k, char **out)
{
  uint32_t len;

  if (!cur_u32 (k, &len))
    return STR_SHORT;
  if (len > NBD_MAX_STRING)
    return STR_TOO_LONG;
  if ((size_t) (k->end - k->p) < len)
    return STR_SHORT;
  if (memchr (k->p, '\0', len) != NULL)
    return STR_NUL;
  *out = g_strndup ((const char *) k->p, len);
  k->p += len;
  return STR_OK;
}

static const char *
str_result_msg (str_result r)
{
  switch (r)
    {
    case STR_SHORT: return "string length exceeds the option length";
    case STR_TOO_LONG: return "string longer than 4096 bytes";
    case STR_NUL: return "string contains NUL";
    case STR_OK: default: return "ok";
    }
}

/* May this connection open name?  Without TLS, yes (require refused
 * every option before STARTTLS already); with TLS, what its identity may
 * open (df_exports_authorize).  The answer is decided on the name and the
 * identity alone, so a refusal says nothing about which names exist. */
static bool
export_allowed (nbd_conn *c, const char *name, GError **err)
{
  return !c->tls_active
         || df_exports_authorize (c->exports, name, c->tls_identity, err);
}

/* Open name for an option; on failure send the option error and return
 * NULL. */
static DfExport *
open_export_or_reply (nbd_conn *c, uint32_t opt, const char *name)
{
  g_autoptr (GError) err = NULL;
  DfExport *e = NULL;

  if (!export_allowed (c, name, &err))
    {
      g_message ("nbd %s: refused export '%s': %s", c->client, name,
                 err->message);
      opt_error (c, opt, NBD_REP_ERR_POLICY, "%s", err->message);
      return NULL;
    }
  e = df_exports_open (c->exports, name, &err);
  if (e != NULL)
    return e;
  g_message ("nbd %s: refused export '%s': %s", c->client, name,
             err->message);
  if (g_error_matches (err, DF_ERROR, DF_ERROR_BUSY))
    opt_error (c, opt, NBD_REP_ERR_POLICY, "%s", err->message);
  else if (g_error_matches (err, DF_ERROR, DF_ERROR_NOT_FOUND)
           || g_error_matches (err, DF_ERROR, DF_ERROR_INVALID))
    opt_error (c, opt, NBD_REP_ERR_UNKNOWN, "%s", err->message);
  else
    opt_error (c, opt, NBD_REP_ERR_UNKNOWN, "export '%s': %s", name,
               err->message);
  return NULL;
}

static uint16_t
transmission_flags (nbd_conn *c, DfExport *e)
{
  df_blk *b = df_export_blk (e);
  uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA;

  if (c->structured)
    f |= NBD_FLAG_SEND_DF;
  if (b->readonly) /* the read-only layer (blk_readonly.h) says so */
    /* Read-only vdisk exports are the same bytes on every connection. */
    f |= NBD_FLAG_READ_ONLY | NBD_FLAG_CAN_MULTI_CONN;
  else
    /* Device exports: per-target cache, never CAN_MULTI_CONN. */
    f |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES
         | NBD_FLAG_SEND_FAST_ZERO;
  return f;
}

/* Enter transmission with e (ownership moves to c).  Meta contexts chosen
 * by SET_META_CONTEXT for another export name do not carry over (GO and
 * EXPORT_NAME alike). */
static void
enter_transmission (nbd_conn *c, DfExport *e)
{
  DfExportBinding binding;
  g_autofree char *text = binding_text (e);

  if (c->meta_export != NULL
      && strcmp (c->meta_export, df_export_name (e)) != 0)
    c->meta_allocation = false;
  c->export = e;
  c->blk = df_account_blk_new (df_export_blk (e), c->session);
  c->state = NBD_STATE_TRANSMISSION;
  df_export_binding (e, &binding);
  df_session_set_export (c->session, df_export_name (e),
                         df_export_device (e));
  df_session_set_binding (c->session, &binding);
  if (c->fd >= 0)
    df_export_shutdown_when_fenced (e, c->fd);
  g_message ("nbd %s: session open: %s (%" G_GUINT64_FORMAT " bytes)",
             c->client, text, c->blk->size);
}

/* ---- option handlers ----------------------------------------------------- */

typedef void (*nbd_opt_fn) (nbd_conn *c, uint32_t opt, const uint8_t *data,
                            uint32_t len);

static void
nbd_opt_export_name (nbd_conn *c, uint32_t opt, const uint8_t *data,
                     uint32_t len)
{
  g_autofree char *name = NULL;
  g_autoptr (GError) err = NULL;
  DfExport *e;
  uint8_t *p;

  if (len > NBD_MAX_STRING || memchr (data, '\0', len) != NULL)
    {
      conn_close (c, "NBD_OPT_EXPORT_NAME: invalid export name");
      return;
    }
  name = g_strndup ((const char *) data, len);
  if (export_allowed (c, name, &err))
    e = df_exports_open (c->exports, name, &err);
  else
    e = NULL;
  if (e == NULL)
    {
      g_message ("nbd %s: refused export '%s' (NBD_OPT_EXPORT_NAME): %s",
                 c->client, name, err->message);
      conn_close (c, NULL);
      return;
    }
  p = buf_append (&c->out, c->no_zeroes ? 10 : 134);
  df_put_be64 (p, df_export_blk (e)->size);
  df_put_be16 (p + 8, transmission_flags (c, e));
  if (!c->no_zeroes)
    memset (p + 10, 0, 124);
  enter_transmission (c, e);
}

static void
nbd_opt_abort (nbd_conn *c, uint32_t opt, const uint8_t *data, uint32_t len)
{
  opt_reply (c, opt, NBD_REP_ACK, NULL, 0);
  conn_close (c, NULL);
}

static void
nbd_opt_list (nbd_conn *c, uint32_t opt, const uint8_t *data, uint32_t len)
{
  g_autoptr (GError) err = NULL;
  g_auto (GStrv) names = NULL;

  if (len != 0)
    {
      opt_error (c, opt, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
      return;
    }
  names = df_exports_list (c->exports, &err);
  if (names == NULL)
    {
      opt_error (c, opt, NBD_REP_ERR_POLICY, "cannot list exports: %s",
                 err->message);
      return;
    }
  for (char **n = names; *n != NULL; n++)
    {
      uint32_t nlen = (uint32_t) MIN (strlen (*n), NBD_MAX_STRING);
      uint8_t *p = opt_reply_start (c, opt, NBD_REP_SERVER, 4 + nlen);

      df_put_be32 (p, nlen);
      memcpy (p + 4, *n, nlen);
    }
  opt_reply (c, opt, NBD_REP_ACK, NULL, 0);
}

/* The first TLS refusal of a connection is a notice (the operator sees a
 * plaintext client against require, or a TLS client against off); the
 * others are debug lines like every option error. */
static void
log_tls_refusal (nbd_conn *c, const char *what)
{
  if (c->tls_refusal_logged)
    return;
  c->tls_refusal_logged = true;
  g_message ("nbd %s: %s", c->client, what);
}

static void
nbd_opt_starttls (nbd_conn *c, uint32_t opt, const uint8_t *data,
                  uint32_t len)
{
  if (c->tls_mode == DF_TLS_OFF)
    {
      log_tls_refusal (c, "NBD_OPT_STARTTLS refused: TLS is off");
      opt_error (c, opt, NBD_REP_ERR_POLICY, "TLS is not configured");
    }
  else if (len != 0)
    opt_error (c, opt, NBD_REP_ERR_INVALID, "NBD_OPT_STARTTLS takes no data");
  else if (c->tls_active)
    opt_error (c, opt, NBD_REP_ERR_INVALID, "TLS is already negotiated");
  else
    {
      opt_reply (c, opt, NBD_REP_ACK, NULL, 0);
      c->state = NBD_STATE_STARTTLS; /* the transport takes over */
    }
}

/* The transport finished the handshake: start negotiating afresh over
 * TLS.  Whatever came before it is gone: plaintext input still buffered
 * (a client must wait for the ACK; nbdkit CVE-2021-3716 read such bytes
 * as if they had come through TLS) and every option negotiated in
 * plaintext (structured replies, meta contexts). */
static void
tls_started (nbd_conn *c, const char *identity)
{
  g_assert (c->state == NBD_STATE_STARTTLS);
  if (buf_len (&c->in) > 0)
    g_message ("nbd %s: %zu plaintext bytes after NBD_OPT_STARTTLS "
               "discarded", c->client, buf_len (&c->in));
  buf_consume (&c->in, buf_len (&c->in));
  c->structured = false;
  c->meta_allocation = false;
  g_clear_pointer (&c->meta_export, g_free);
  c->tls_active = true;
  c->tls_identity = g_strdup (identity);
  c->state = NBD_STATE_OPTIONS;
}

static void
nbd_opt_structured_reply (nbd_conn *c, uint32_t opt, const uint8_t *data,
                          uint32_t len)
{
  if (len != 0)
    {
      opt_error (c, opt, NBD_REP_ERR_INVALID,
                 "NBD_OPT_STRUCTURED_REPLY takes no data");
      return;
    }
  c->structured = true;
  opt_reply (c, opt, NBD_REP_ACK, NULL, 0);
}

static void
send_info (nbd_conn *c, uint32_t opt, DfExport *e, uint16_t type)
{
  uint8_t *p;
  const char *s;
  uint32_t slen;

  switch (type)
    {
    case NBD_INFO_EXPORT:
      p = opt_reply_start (c, opt, NBD_REP_INFO, 12);
      df_put_be16 (p, NBD_INFO_EXPORT);
      df_put_be64 (p + 2, df_export_blk (e)->size);
      df_put_be16 (p + 10, transmission_flags (c, e));
      break;
    case NBD_INFO_NAME:
    case NBD_INFO_DESCRIPTION:
      s = type == NBD_INFO_NAME ? df_export_name (e) : df_export_description (e);
      s = s != NULL ? s : "";
      slen = (uint32_t) MIN (strlen (s), NBD_MAX_STRING);
      p = opt_reply_start (c, opt, NBD_REP_INFO, 2 + slen);
      df_put_be16 (p, type);
      memcpy (p + 2, s, slen);
      break;
    case NBD_INFO_BLOCK_SIZE:
      p = opt_reply_start (c, opt, NBD_REP_INFO, 14);
      df_put_be16 (p, NBD_INFO_BLOCK_SIZE);
      df_put_be32 (p + 2, 1);
      df_put_be32 (p + 6, NBD_PREF_BLOCK);
      df_put_be32 (p + 10, NBD_MAX_BLOCK);
      break;
    default:
      break; /* unknown requests are ignored (spec) */
    }
}

/* NBD_OPT_INFO and NBD_OPT_GO: name, then a counted list of info types. */
static void
nbd_opt_info_go (nbd_conn *c, uint32_t opt, const uint8_t *data, uint32_t len)
{
  cursor k = { data, data + len };
  g_autofree char *name = NULL;
  str_result r;
  uint16_t nreq;
  DfExport *e;
  bool want_name = false, want_desc = false;

  if ((r = cur_string (&k, &name)) != STR_OK)
    {
      opt_error (c, opt, NBD_REP_ERR_INVALID, "export name: %s",
                 str_result_msg (r));
      return;
    }
  if (!cur_u16 (&k, &nreq) || (size_t) (k.end - k.p) != 2u * nreq)
    {
      opt_error (c, opt, NBD_REP_ERR_INVALID,
                 "information request count does not match the option "
                 "length");
      return;
    }
  for (uint16_t i = 0, t; i < nreq && cur_u16 (&k, &t); i++)
    {
      want_name |= t == NBD_INFO_NAME;
      want_desc |= t == NBD_INFO_DESCRIPTION;
    }
  if ((e = open_export_or_reply (c, opt, name)) == NULL)
    return;
  send_info (c, opt, e, NBD_INFO_EXPORT);
  send_info (c, opt, e, NBD_INFO_BLOCK_SIZE);
  if (want_name)
    send_info (c, opt, e, NBD_INFO_NAME);
  if (want_desc)
    send_info (c, opt, e, NBD_INFO_DESCRIPTION);
  opt_reply (c, opt, NBD_REP_ACK, NULL, 0);
  if (opt == NBD_OPT_INFO)
    {
      df_export_close (e);
      return;
    }
  enter_transmission (c, e);
}

/* Does query select base:allocation?  LIST accepts the namespace alone. */
static bool
query_selects_allocation (const char *q, bool listing)
{
  return strcmp (q, BASE_ALLOCATION) == 0
         || (listing && strcmp (q, "base:") == 0);
}

static void
nbd_opt_meta_context (nbd_conn *c, uint32_t opt, const uint8_t *data,
                      uint32_t len)
{
  bool listing = opt == NBD_OPT_LIST_META_CONTEXT;
  cursor k = { data, data + len };
  g_autofree char *name = NULL;
  uint32_t nq;
  str_result r;
  bool alloc = false;
  DfExport *e;

  if (!c->structured)
    {
      opt_error (c, opt, NBD_REP_ERR_INVALID,
                 "structured replies must be negotiated first");
      return;
    }
  if ((r = cur_string (&k, &name)) != STR_OK)
    {
      opt_error (c, opt, NBD_REP_ERR_INVALID, "export name: %s",
                 str_result_msg (r));
      return;
    }
  if (!cur_u32 (&k, &nq))
    {
      opt_error (c, opt, NBD_REP_ERR_INVALID, "missing query count");
      return;
    }
  for (uint32_t i = 0; i < nq; i++)
    {
      g_autofree char *q = NULL;

      if ((r = cur_string (&k, &q)) != STR_OK)
        {
          opt_error (c, opt, NBD_REP_ERR_INVALID, "query %u: %s", i,
                     str_result_msg (r));
          return;
        }
      alloc |= query_selects_allocation (q, listing);
    }
  if (k.p != k.end)
    {
      opt_error (c, opt, NBD_REP_ERR_INVALID, "trailing bytes after queries");
      return;
    }
  if ((e = open_export_or_reply (c, opt, name)) == NULL)
    return;
  df_export_close (e);
  if (listing && nq == 0)
    alloc = true;
  if (alloc)
    {
      uint8_t *p = opt_reply_start (c, opt, NBD_REP_META_CONTEXT,
                                    4 + strlen (BASE_ALLOCATION));

      df_put_be32 (p, listing ? 0 : BASE_ALLOCATION_ID);
      memcpy (p + 4, BASE_ALLOCATION, strlen (BASE_ALLOCATION));
    }
  if (!listing)
    {
      c->meta_allocation = alloc;
      g_free (c->meta_export);
      c->meta_export = g_steal_pointer (&name);
    }
  opt_reply (c, opt, NBD_REP_ACK, NULL, 0);
}

static const struct {
  uint32_t opt;
  nbd_opt_fn fn;
} nbd_opts[] = {
  { NBD_OPT_EXPORT_NAME, nbd_opt_export_name },
  { NBD_OPT_ABORT, nbd_opt_abort },
  { NBD_OPT_LIST, nbd_opt_list },
  { NBD_OPT_STARTTLS, nbd_opt_starttls },
  { NBD_OPT_INFO, nbd_opt_info_go },
  { NBD_OPT_GO, nbd_opt_info_go },
  { NBD_OPT_STRUCTURED_REPLY, nbd_opt_structured_reply },
  { NBD_OPT_LIST_META_CONTEXT, nbd_opt_meta_context },
  { NBD_OPT_SET_META_CONTEXT, nbd_opt_meta_context },
};

/* ---- handshake states ---------------------------------------------------- */

/* SEND_GREETING: the 32-bit client flags. */
static void
step_client_flags (nbd_conn *c)
{
  uint32_t flags = df_get_be32 (c->in.data + c->in.start);

  buf_consume (&c->in, 4);
  c->messages++;
  if (flags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
    {
      conn_close (c, "unknown client flags");
      return;
    }
  if (!(flags & NBD_FLAG_C_FIXED_NEWSTYLE))
    {
      conn_close (c, "client does not speak fixed newstyle");
      return;
    }
  c->no_zeroes = (flags & NBD_FLAG_C_NO_ZEROES) != 0;
  c->state = NBD_STATE_OPTIONS;
}

/* OPTIONS: one option header + payload. */
static void
step_option (nbd_conn *c)
{
  const uint8_t *p = c->in.data + c->in.start;
  uint32_t opt = df_get_be32 (p + 8), len = df_get_be32 (p + 12);

  c->messages++;
  if (df_get_be64 (p) != NBD_OPTS_MAGIC)
    {
      conn_close (c, "bad option magic (request before negotiation ended?)");
      return;
    }
  if (len > NBD_MAX_OPTION_LEN)
    {
      conn_close (c, "option length above 64 KiB");
      return;
    }
  if (c->tls_mode == DF_TLS_REQUIRE && !c->tls_active
      && opt != NBD_OPT_STARTTLS && opt != NBD_OPT_ABORT)
    {
      /* FORCEDTLS: EXPORT_NAME cannot carry an error, so it closes */
      if (opt == NBD_OPT_EXPORT_NAME)
        conn_close (c, "NBD_OPT_EXPORT_NAME before TLS: TLS is required");
      else
        {
          log_tls_refusal (c, "plaintext option refused: TLS is required");
          opt_error (c, opt, NBD_REP_ERR_TLS_REQD,
                     "TLS is required: start it with NBD_OPT_STARTTLS");
        }
      buf_consume (&c->in, OPT_HEADER_LEN + (size_t) len);
      return;
    }
  for (size_t i = 0; i < G_N_ELEMENTS (nbd_opts); i++)
    if (nbd_opts[i].opt == opt)
      {
        nbd_opts[i].fn (c, opt, p + OPT_HEADER_LEN, len);
        buf_consume (&c->in, OPT_HEADER_LEN + (size_t) len);
        return;
      }
  opt_error (c, opt, NBD_REP_ERR_UNSUP, "unsupported option %u", opt);
  buf_consume (&c->in, OPT_HEADER_LEN + (size_t) len);
}

/* ---- transmission: replies ----------------------------------------------- */

static void
simple_reply (nbd_conn *c, const nbd_req *rq, uint32_t error)
{
  uint8_t *p = buf_append (&c->out, SIMPLE_REPLY_LEN);

  df_put_be32 (p, NBD_SIMPLE_MAGIC);
  df_put_be32 (p + 4, error);
  df_put_be64 (p + 8, rq->cookie);
}

/* A chunk header announcing len payload bytes, which the caller queues
 * next. */
static void
chunk_header (nbd_conn *c, const nbd_req *rq, uint16_t flags, uint16_t type,
              uint32_t len)
{
  uint8_t *p = buf_append (&c->out, CHUNK_HEADER_LEN);

  df_put_be32 (p, NBD_STRUCTURED_MAGIC);
  df_put_be16 (p + 4, flags);
  df_put_be16 (p + 6, type);
  df_put_be64 (p + 8, rq->cookie);
  df_put_be32 (p + 16, len);
}

/* A chunk header and room for its len payload bytes (returned). */
static uint8_t *
chunk_start (nbd_conn *c, const nbd_req *rq, uint16_t flags, uint16_t type,
             uint32_t len)
{
  chunk_header (c, rq, flags, type, len);
  return buf_append (&c->out, len);
}

static const char *
nbd_errno_name (uint32_t e)
{
  switch (e)
    {
    case NBD_EPERM: return "read-only export";
    case NBD_EIO: return "input/output error";
    case NBD_ENOMEM: return "out of memory";
    case NBD_EINVAL: return "invalid request";
    case NBD_ENOSPC: return "no space left (quota or end of export)";
    case NBD_EOVERFLOW: return "request too large for DF";
    case NBD_ENOTSUP: return "not supported";
    case NBD_ESHUTDOWN: return "server shutting down";
    default: return "error";
    }
}

/* Final error reply: an ERROR chunk for READ / BLOCK_STATUS when structured
 * replies are on (mandatory for READ), else a simple reply. */
static void
error_reply (nbd_conn *c, const nbd_req *rq, uint32_t error)
{
  const char *msg;
  uint8_t *p;

  if (!c->structured
      || (rq->type != NBD_CMD_READ && rq->type != NBD_CMD_BLOCK_STATUS))
    {
      simple_reply (c, rq, error);
      return;
    }
  msg = nbd_errno_name (error);
  p = chunk_start (c, rq, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR,
                   6 + strlen (msg));
  df_put_be32 (p, error);
  df_put_be16 (p + 4, strlen (msg));
  memcpy (p + 6, msg, strlen (msg));
}

static uint32_t
errno_to_nbd (int err)
{
  switch (err)
    {
    case EPERM: case EROFS: return NBD_EPERM;
    case ENOMEM: return NBD_ENOMEM;
    case EINVAL: return NBD_EINVAL;
    case ENOSPC: case EDQUOT: case EFBIG: return NBD_ENOSPC;
    case EOVERFLOW: return NBD_EOVERFLOW;
    case ENOTSUP: return NBD_ENOTSUP;
    case ESHUTDOWN: return NBD_ESHUTDOWN;
    default: return NBD_EIO;
    }
}

/* ---- transmission: command handlers -------------------------------------- */

/* Each handler queues the full reply and returns 0, or returns an NBD
 * error code without queueing anything (the caller replies). */
typedef uint32_t (*nbd_cmd_fn) (nbd_conn *c, const nbd_req *rq);

/* Queue len bytes of the export at off: read straight into the output
 * buffer or, when the transport sends file spans and the read is large,
 * as spans of the immutable files holding them (blk.h df_blk_span), the
 * rest read.  Nothing is allocated once the buffers have grown. */
static int
queue_data (nbd_conn *c, uint64_t off, uint32_t len, int *err)
{
  if (!c->splice || c->tls_active || len < SPLICE_READ_MIN)
    return df_blk_pread (c->blk, buf_append (&c->out, len), len, off, err);
  while (len > 0)
    {
      df_blk_span sp;

      if (df_blk_span_of (c->blk, len, off, &sp, err) < 0)
        return -1;
      if (sp.fd >= 0)
        queue_span (c, &sp);
      else if (df_blk_pread (c->blk, buf_append (&c->out, sp.length),
                             sp.length, off, err) < 0)
        return -1;
      off += sp.length;
      len -= sp.length;
    }
  return 0;
}

static uint32_t
read_simple (nbd_conn *c, const nbd_req *rq)
{
  out_mark mark = out_mark_now (c);
  uint8_t *p = buf_append (&c->out, SIMPLE_REPLY_LEN);
  int err = 0;

  df_put_be32 (p, NBD_SIMPLE_MAGIC);
  df_put_be32 (p + 4, 0);
  df_put_be64 (p + 8, rq->cookie);
  if (queue_data (c, rq->offset, rq->count, &err) < 0)
    {
      out_rollback (c, &mark);
      return errno_to_nbd (err);
    }
  return 0;
}

/* One OFFSET_DATA chunk (queue_data). */
static int
data_chunk (nbd_conn *c, const nbd_req *rq, uint64_t off, uint32_t len,
            bool done, int *err)
{
  chunk_header (c, rq, done ? NBD_REPLY_FLAG_DONE : 0,
                NBD_REPLY_TYPE_OFFSET_DATA, 8 + len);
  df_put_be64 (buf_append (&c->out, 8), off);
  return queue_data (c, off, len, err);
}

static void
hole_chunk (nbd_conn *c, const nbd_req *rq, uint64_t off, uint32_t len,
            bool done)
{
  uint8_t *p = chunk_start (c, rq, done ? NBD_REPLY_FLAG_DONE : 0,
                            NBD_REPLY_TYPE_OFFSET_HOLE, 12);

  df_put_be64 (p, off);
  df_put_be32 (p + 8, len);
}

/* Coalesce extents into c->runs by their flags (mask selects which flags
 * matter); stops at MAX_EXTENTS runs. */
typedef struct {
  GArray *runs;
  uint32_t mask;
} runs_ctx;

static int
collect_run (void *opaque, uint64_t offset, uint64_t length, uint32_t flags)
{
  runs_ctx *rc = opaque;
  GArray *a = rc->runs;
  nbd_run *last = a->len ? &g_array_index (a, nbd_run, a->len - 1) : NULL;

  flags &= rc->mask;
  if (last != NULL && last->flags == flags
      && last->offset + last->length == offset
      && (uint64_t) last->length + length <= UINT32_MAX)
    {
      last->length += (uint32_t) length;
      return 0;
    }
  if (a->len >= MAX_EXTENTS)
    return -1;
  g_array_append_val (a, ((nbd_run) { offset, (uint32_t) length, flags }));
  return 0;
}

/* Extents of [offset, offset+count) coalesced into c->runs, clipped to the
 * range.  count may exceed DF_BLK_MAX_REQUEST: queried in pieces. */
static int
collect_runs (nbd_conn *c, df_blk *b, uint64_t offset, uint64_t count,
              uint32_t mask, uint32_t max_runs, int *err)
{
  runs_ctx rc = { c->runs, mask };
  uint64_t end = offset + count;

  g_array_set_size (c->runs, 0);
  while (offset < end && c->runs->len < max_runs)
    {
      uint32_t n = (uint32_t) MIN (end - offset, DF_BLK_MAX_REQUEST);

      if (df_blk_extents (b, n, offset, collect_run, &rc, err) < 0)
        return -1;
      if (c->runs->len == 0)
        break;
      nbd_run *last = &g_array_index (c->runs, nbd_run, c->runs->len - 1);
      if (last->offset + last->length < offset + n)
        break; /* the layer stopped early or the cap was reached */
      offset += n;
    }
  /* Clip: layers may report beyond the request. */
  for (guint i = 0; i < c->runs->len; i++)
    {
      nbd_run *r = &g_array_index (c->runs, nbd_run, i);
      if (r->offset >= end)
        {
          g_array_set_size (c->runs, i);
          break;
        }
      if (r->offset + r->length > end)
        r->length = (uint32_t) (end - r->offset);
    }
  if (c->runs->len > max_runs)
    g_array_set_size (c->runs, max_runs);
  return 0;
}

/* Structured read split into data and hole chunks. */
static uint32_t
read_sparse (nbd_conn *c, const nbd_req *rq)
{
  out_mark mark = out_mark_now (c);
  int err = 0;
  uint64_t covered = 0;

  /* The read's own map: from the export, not accounted as a client's
   * BLOCK_STATUS (the READ is accounted by its data chunks). */
  if (collect_runs (c, df_export_blk (c->export), rq->offset, rq->count,
                    DF_EXTENT_ZERO, MAX_EXTENTS, &err) < 0)
    return errno_to_nbd (err);
  for (guint i = 0; i < c->runs->len; i++)
    covered += g_array_index (c->runs, nbd_run, i).length;
  if (covered != rq->count)
    {
      /* Map incomplete: send it all as data. */
      g_array_set_size (c->runs, 0);
      g_array_append_val (c->runs,
                          ((nbd_run) { rq->offset, rq->count, 0 }));
    }
  for (guint i = 0; i < c->runs->len; i++)
    {
      const nbd_run *r = &g_array_index (c->runs, nbd_run, i);
      bool done = i + 1 == c->runs->len;

      if (r->flags & DF_EXTENT_ZERO)
        hole_chunk (c, rq, r->offset, r->length, done);
      else if (data_chunk (c, rq, r->offset, r->length, done, &err) < 0)
        {
          out_rollback (c, &mark);
          return errno_to_nbd (err);
        }
    }
  return 0;
}

static uint32_t
nbd_cmd_read (nbd_conn *c, const nbd_req *rq)
{
  out_mark mark = out_mark_now (c);
  int err = 0;

  if (!c->structured)
    return read_simple (c, rq);
  if ((rq->flags & NBD_CMD_FLAG_DF) || rq->count < SPARSE_READ_MIN)
    {
      if (data_chunk (c, rq, rq->offset, rq->count, true, &err) < 0)
        {
          out_rollback (c, &mark);
          return errno_to_nbd (err);
        }
      return 0;
    }
  return read_sparse (c, rq);
}

static void finish_request (nbd_conn *c, const nbd_req *rq, uint32_t error);

/* The flush of rq ended (on the loop thread): its reply, then input is
 * read and run again. */
static void
flush_done (DfEngineJob *job)
{
  nbd_conn *c = (nbd_conn *) (void *) ((char *) job
                                       - offsetof (nbd_conn, job));
  nbd_req rq = { .type = NBD_CMD_FLUSH, .cookie = c->parked_cookie };

  c->parked = false;
  if (job->ret < 0)
    finish_request (c, &rq, errno_to_nbd (job->err));
  else
    simple_reply (c, &rq, 0);
}

/* Flush for rq off the loop thread (engine.h); the reply comes from
 * flush_done.  Returns 0: run_request sends nothing more. */
static uint32_t
park_on_flush (nbd_conn *c, const nbd_req *rq)
{
  c->parked = true;
  c->parked_cookie = rq->cookie;
  c->job.blk = c->blk;
  c->job.done = flush_done;
  df_engine_offload (&c->engine, &c->job);
  return 0;
}

/* A FUA write is the write, then a flush of the export: the same promise
 * (stable on return), and the flush runs off the loop thread. */
static uint32_t
nbd_cmd_write (nbd_conn *c, const nbd_req *rq)
{
  bool fua = (rq->flags & NBD_CMD_FLAG_FUA) != 0;
  int err = 0;

  if (df_blk_pwrite (c->blk, rq->payload, rq->count, rq->offset, 0, &err) < 0)
    return errno_to_nbd (err);
  if (fua)
    return park_on_flush (c, rq);
  simple_reply (c, rq, 0);
  return 0;
}

static uint32_t
nbd_cmd_flush (nbd_conn *c, const nbd_req *rq)
{
  return park_on_flush (c, rq);
}

static uint32_t
nbd_cmd_trim (nbd_conn *c, const nbd_req *rq)
{
  uint32_t f = (rq->flags & NBD_CMD_FLAG_FUA) ? DF_BLK_FUA : 0;
  uint64_t off = rq->offset, end = rq->offset + rq->count;
  int err = 0;

  /* TRIM is advisory: a layer that cannot trim succeeds doing nothing. */
  while (c->blk->can_trim && off < end)
    {
      uint32_t n = (uint32_t) MIN (end - off, DF_BLK_MAX_REQUEST);
      if (df_blk_trim (c->blk, n, off, f, &err) < 0)
        return errno_to_nbd (err);
      off += n;
    }
  if (!c->blk->can_trim && f && df_blk_flush (c->blk, &err) < 0)
    return errno_to_nbd (err);
  simple_reply (c, rq, 0);
  return 0;
}

/* WRITE_ZEROES on a layer without a zero op: write zero buffers. */
static int
zero_by_writing (nbd_conn *c, uint32_t count, uint64_t off, uint32_t f,
                 int *err)
{
  static const uint8_t zeroes[64 * 1024];

  while (count > 0)
    {
      uint32_t n = MIN (count, (uint32_t) sizeof zeroes);
      if (df_blk_pwrite (c->blk, zeroes, n, off, f, err) < 0)
        return -1;
      off += n;
      count -= n;
    }
  return 0;
}

static uint32_t
nbd_cmd_write_zeroes (nbd_conn *c, const nbd_req *rq)
{
  uint32_t f = 0;
  uint64_t off = rq->offset, end = rq->offset + rq->count;
  int err = 0;

  if (rq->flags & NBD_CMD_FLAG_FUA)
    f |= DF_BLK_FUA;
  if (!(rq->flags & NBD_CMD_FLAG_NO_HOLE))
    f |= DF_BLK_MAY_TRIM;
  if (rq->flags & NBD_CMD_FLAG_FAST_ZERO)
    {
      if (!c->blk->can_zero || !c->blk->can_fast_zero)
        return NBD_ENOTSUP;
      f |= DF_BLK_FAST_ZERO;
    }
  while (off < end)
    {
      uint32_t n = (uint32_t) MIN (end - off, DF_BLK_MAX_REQUEST);
      int r = c->blk->can_zero ? df_blk_zero (c->blk, n, off, f, &err)
                               : zero_by_writing (c, n, off, f & DF_BLK_FUA,
                                                  &err);
      if (r < 0)
        return errno_to_nbd (err);
      off += n;
    }
  simple_reply (c, rq, 0);
  return 0;
}

static uint32_t
nbd_cmd_block_status (nbd_conn *c, const nbd_req *rq)
{
  uint32_t max = (rq->flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : MAX_EXTENTS;
  int err = 0;
  uint8_t *p;

  if (collect_runs (c, c->blk, rq->offset, rq->count,
                    DF_EXTENT_HOLE | DF_EXTENT_ZERO, max, &err) < 0)
    return errno_to_nbd (err);
  if (c->runs->len == 0)
    return NBD_EIO; /* a layer reported nothing for a valid range */
  p = chunk_start (c, rq, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS,
                   4 + 8 * c->runs->len);
  df_put_be32 (p, BASE_ALLOCATION_ID);
  for (guint i = 0; i < c->runs->len; i++)
    {
      const nbd_run *r = &g_array_index (c->runs, nbd_run, i);
      df_put_be32 (p + 4 + 8 * i, r->length);
      df_put_be32 (p + 8 + 8 * i, r->flags);
    }
  return 0;
}

/* Per-command validation data. */
enum {
  CMD_RANGE = 1 << 0,   /* offset/count must lie inside the export */
  CMD_WRITES = 1 << 1,  /* refused on read-only exports */
  CMD_LIMITED = 1 << 2, /* count <= NBD_MAX_BLOCK */
};

typedef struct {
  const char *name;
  nbd_cmd_fn fn;
  uint16_t flags_ok;
  unsigned props;
  uint32_t range_error; /* error for a range past the end */
} nbd_cmd_desc;

static const nbd_cmd_desc nbd_cmds[NBD_CMD__COUNT] = {
  [NBD_CMD_READ] = { "READ", nbd_cmd_read,
                     NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_DF,
                     CMD_RANGE | CMD_LIMITED, NBD_EINVAL },
  [NBD_CMD_WRITE] = { "WRITE", nbd_cmd_write, NBD_CMD_FLAG_FUA,
                      CMD_RANGE | CMD_LIMITED | CMD_WRITES, NBD_ENOSPC },
  [NBD_CMD_FLUSH] = { "FLUSH", nbd_cmd_flush, NBD_CMD_FLAG_FUA, 0,
                      NBD_EINVAL },
  [NBD_CMD_TRIM] = { "TRIM", nbd_cmd_trim, NBD_CMD_FLAG_FUA,
                     CMD_RANGE | CMD_WRITES, NBD_EINVAL },
  [NBD_CMD_WRITE_ZEROES] = { "WRITE_ZEROES", nbd_cmd_write_zeroes,
                             NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE
                             | NBD_CMD_FLAG_FAST_ZERO,
                             CMD_RANGE | CMD_WRITES, NBD_ENOSPC },
  [NBD_CMD_BLOCK_STATUS] = { "BLOCK_STATUS", nbd_cmd_block_status,
                             NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_REQ_ONE,
                             CMD_RANGE, NBD_EINVAL },
};

/* Check a request once, here.  0 = valid, else the NBD error to send. */
static uint32_t
validate_request (const nbd_conn *c, const nbd_cmd_desc *d,
                  const nbd_req *rq)
{
  if (d->fn == NULL)
    return NBD_EINVAL; /* unknown command */
  if (rq->flags & ~d->flags_ok)
    return NBD_EINVAL;
  if ((rq->flags & NBD_CMD_FLAG_DF) && !c->structured)
    return NBD_EINVAL;
  if ((d->props & CMD_WRITES) && c->blk->readonly)
    return errno_to_nbd (EROFS); /* as the read-only layer would */
  if (rq->type == NBD_CMD_FLUSH)
    return rq->offset == 0 && rq->count == 0 ? 0 : NBD_EINVAL;
  if (rq->type == NBD_CMD_BLOCK_STATUS
      && (!c->structured || !c->meta_allocation))
    return NBD_EINVAL;
  if (rq->count == 0)
    return NBD_EINVAL;
  if ((d->props & CMD_LIMITED) && rq->count > NBD_MAX_BLOCK)
    return NBD_EINVAL;
  if ((d->props & CMD_RANGE)
      && (rq->offset > c->blk->size
          || rq->count > c->blk->size - rq->offset))
    return d->range_error;
  return 0;
}

static const nbd_cmd_desc unknown_cmd = { "UNKNOWN", NULL, 0, 0, 0 };

/* A WRITE's error known from its header alone (0: take the payload). */
static uint32_t
write_header_error (const nbd_conn *c, const nbd_req *rq)
{
  return validate_request (c, &nbd_cmds[NBD_CMD_WRITE], rq);
}

/* Validate, run, reply (the accounting layer under c->blk counts what
 * reaches the block layer). */
static void
run_request (nbd_conn *c, const nbd_req *rq)
{
  const nbd_cmd_desc *d = rq->type < NBD_CMD__COUNT ? &nbd_cmds[rq->type]
                                                    : &unknown_cmd;
  uint32_t error;

  if (d->fn == NULL)
    d = &unknown_cmd;
  error = validate_request (c, d, rq);
  if (error != 0)
    g_debug ("nbd %s: %s refused: %s", c->client, d->name,
             nbd_errno_name (error));
  else
    error = d->fn (c, rq);
  finish_request (c, rq, error);
}

/* The error reply of a request that failed (error 0: nothing to add). */
static void
finish_request (nbd_conn *c, const nbd_req *rq, uint32_t error)
{
  if (error != 0)
    error_reply (c, rq, error);
  /* Fenced (the binding went stale): nothing more is read; the connection
   * closes once this reply is out, and its close line names the fence. */
  if (error == NBD_ESHUTDOWN && df_export_fence_reason (c->export) != NULL)
    conn_close (c, NULL);
}

static void
decode_request (const uint8_t *p, nbd_req *rq)
{
  rq->flags = df_get_be16 (p + 4);
  rq->type = df_get_be16 (p + 6);
  rq->cookie = df_get_be64 (p + 8);
  rq->offset = df_get_be64 (p + 16);
  rq->count = df_get_be32 (p + 24);
  rq->payload = NULL;
}

/* TRANSMISSION: drop what is there of a refused WRITE's payload. */
static void
step_discard (nbd_conn *c)
{
  uint32_t n = (uint32_t) MIN ((size_t) c->discard, buf_len (&c->in));

  buf_consume (&c->in, n);
  c->discard -= n;
  if (c->discard == 0)
    c->messages++;
}

/* TRANSMISSION: one request header (+ WRITE payload). */
static void
step_request (nbd_conn *c)
{
  const uint8_t *p = c->in.data + c->in.start;
  nbd_req rq;
  size_t used = REQ_HEADER_LEN;

  if (df_get_be32 (p) != NBD_REQUEST_MAGIC)
    {
      conn_close (c, "bad request magic");
      return;
    }
  decode_request (p, &rq);
  if (rq.type == NBD_CMD_DISC)
    {
      buf_consume (&c->in, used);
      conn_close (c, NULL);
      return;
    }
  if (rq.type == NBD_CMD_WRITE)
    {
      if (rq.count > NBD_MAX_BLOCK)
        {
          conn_close (c, "write payload above 32 MiB");
          return;
        }
      if (write_header_error (c, &rq) == 0)
        {
          rq.payload = p + REQ_HEADER_LEN;
          used += rq.count;
        }
      else
        c->discard = rq.count; /* run_request refuses it */
    }
  run_request (c, &rq);
  buf_consume (&c->in, used);
  if (c->discard == 0)
    c->messages++;
}

void
nbd_conn_process (nbd_conn *c)
{
  while (c->state != NBD_STATE_CLOSED && nbd_conn_has_work (c)
         && out_pending (c) < NBD_OUTPUT_HIGH_WATER)
    {
      switch (c->state)
        {
        case NBD_STATE_SEND_GREETING:
          step_client_flags (c);
          break;
        case NBD_STATE_OPTIONS:
          step_option (c);
          break;
        case NBD_STATE_TRANSMISSION:
          if (c->discard > 0)
            step_discard (c);
          else
            step_request (c);
          break;
        case NBD_STATE_STARTTLS:
        case NBD_STATE_CLOSED:
        default:
          g_assert_not_reached ();
        }
    }
}
