/* streamsvc: NBD protocol engine (fixed newstyle, no sockets).
 *
 * The engine turns input bytes into output bytes.  A transport (server.c,
 * the fuzzer, a test) owns the socket and drives it through the engine
 * interface (engine.h: nbd_conn_engine), or through the functions below,
 * which it wraps.
 *
 * The greeting is queued by nbd_conn_new.  Replies to reads are built by
 * reading the block layer straight into the output buffer (no extra copy)
 * or, once the transport allows it (nbd_conn_set_splice), large ones as
 * spans of the immutable files that hold them, which the transport sends
 * without copying (sendfile).
 * nbd_conn_process stops early when the output backlog is large; call it
 * again after draining (nbd_conn_has_work tells whether it has more to do).
 *
 * Thread safety: one nbd_conn is driven by one thread at a time.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "exports.h"
#include "sessions.h"

typedef struct nbd_conn nbd_conn;

typedef enum {
  NBD_STATE_SEND_GREETING,  /* greeting queued, waiting for client flags */
  NBD_STATE_OPTIONS,        /* option haggling */
  NBD_STATE_STARTTLS,       /* STARTTLS acknowledged: the transport runs
                             * the TLS handshake (engine.h tls_wanted) */
  NBD_STATE_TRANSMISSION,   /* requests and replies */
  NBD_STATE_CLOSED,         /* drain the output, then close */
} nbd_state;

/* Limits enforced at the edge. */
#define NBD_MAX_OPTION_LEN   (64u * 1024)        /* beyond: close */
#define NBD_MAX_STRING       4096u               /* export names, queries */
#define NBD_MAX_BLOCK        (32u * 1024 * 1024) /* READ/WRITE payload */
#define NBD_PREF_BLOCK       4096u
#define NBD_OUTPUT_HIGH_WATER (4u * 1024 * 1024) /* stop processing above */

/* Start a connection: opens a session in ss (kept until nbd_conn_free) and
 * queues the greeting.  ex and ss are borrowed and must outlive the conn.
 * client is copied ("127.0.0.1:4242", "unix"). */
nbd_conn *nbd_conn_new (DfExports *ex, DfSessions *ss, const char *client);
/* The TLS policy of the connection (default DF_TLS_OFF: STARTTLS is
 * refused).  on: STARTTLS is accepted, plaintext still served.  require:
 * before TLS every option but NBD_OPT_STARTTLS and NBD_OPT_ABORT gets
 * NBD_REP_ERR_TLS_REQD (NBD_OPT_EXPORT_NAME closes).  Once TLS is up,
 * the identity opens only what df_exports_authorize allows.  Only a
 * transport that runs the handshake (server.c) may set on or require. */
void nbd_conn_set_tls (nbd_conn *c, DfTlsMode mode);
/* The transport sends the output's file spans itself (engine.h
 * output_span; server.c: sendfile on a plain socket).  Default off: every
 * byte is in the output buffer.  Once TLS is up the conn copies again. */
void nbd_conn_set_splice (nbd_conn *c, bool on);
/* The connection's socket (server.c), so that a fenced export can shut it
 * down (df_export_shutdown_when_fenced).  Optional: -1 by default. */
void nbd_conn_set_fd (nbd_conn *c, int fd);
/* Close the export and end the session. NULL is allowed. */
void nbd_conn_free (nbd_conn *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (nbd_conn, nbd_conn_free)
/* c as an engine (borrowed; df_engine_free frees c). */
DfEngineConn *nbd_conn_engine (nbd_conn *c);

nbd_state nbd_conn_state (const nbd_conn *c);
const char *nbd_state_name (nbd_state s);

/* Room to read into: returns a pointer into the conn's input buffer with
 * *room bytes free: what the current message still needs, at least 4 KiB
 * and at most 256 KiB (a WRITE payload grows the buffer as it arrives).
 * The pointer is valid until the next call on c. */
uint8_t *nbd_conn_input_space (nbd_conn *c, size_t *room);
/* n bytes were written at the pointer from nbd_conn_input_space. */
void nbd_conn_input_commit (nbd_conn *c, size_t n);

/* Run the engine over every complete message in the input (stopping when
 * the output backlog passes NBD_OUTPUT_HIGH_WATER or the conn closes). */
void nbd_conn_process (nbd_conn *c);
/* Where the connection stands (engine.h DfEngineProgress): HANDSHAKE
 * until transmission, PARTIAL while part of a request (or of a refused
 * WRITE's payload) is awaited. */
void nbd_conn_progress (const nbd_conn *c, DfEngineProgress *p);
/* True when complete input is waiting that process() has not run yet. */
bool nbd_conn_has_work (const nbd_conn *c);
/* Idle (engine.h): free the input and output buffers when empty (a large
 * READ or WRITE grew them); the next request allocates again. */
void nbd_conn_release_idle (nbd_conn *c);

/* Pending output (borrowed, valid until the next call on c); *len 0 when
 * there is nothing to send. */
const uint8_t *nbd_conn_output (nbd_conn *c, size_t *len);
/* When nbd_conn_output gives no bytes: true and *span when a file span
 * is next (engine.h output_span). */
bool nbd_conn_output_span (nbd_conn *c, DfEngineSpan *span);
/* A span follows the bytes nbd_conn_output gives. */
bool nbd_conn_span_follows (const nbd_conn *c);
/* n bytes of the pending output (bytes or the span) were sent. */
void nbd_conn_output_consume (nbd_conn *c, size_t n);

/* True when the engine wants the connection closed once the output is
 * drained (protocol violation, NBD_CMD_DISC, NBD_OPT_ABORT, failed
 * EXPORT_NAME). */
bool nbd_conn_should_close (const nbd_conn *c);
/* Transport-side shutdown (SIGTERM): requests still in the input that were
 * not processed get no reply; the conn enters CLOSED. */
void nbd_conn_shutdown (nbd_conn *c);
