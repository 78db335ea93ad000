/* streamsvc: the stream transport (listeners, epoll worker threads,
 * --stdio).
 *
 * One acceptor thread hands accepted connections round-robin to a small
 * pool of worker threads; each worker owns an epoll set and drives its
 * connections' protocol engines (nbd_conn or iscsi_conn) with non-blocking
 * sockets.  No thread per connection.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>

#include "common.h"
#include "exports.h"
#include "sessions.h"
#include "tls.h"

typedef struct DfStreamServer DfStreamServer;

/* ex and ss are borrowed and must outlive the server.  n_threads 0 = one
 * worker per CPU. */
DfStreamServer *df_stream_server_new (DfExports *ex, DfSessions *ss,
                                      guint n_threads);
/* Dead peers (before start).  tcp_keepalive_s: see df_tcp_set_keepalive
 * (TCP connections; unix sockets have no dead peers); nop_*: see
 * iscsi_conn_set_nop.  Defaults DF_TCP_KEEPALIVE_DEFAULT,
 * ISCSI_NOP_INTERVAL_DEFAULT, ISCSI_NOP_TIMEOUT_DEFAULT; values checked
 * at the edge (main.c). */
typedef struct {
  guint tcp_keepalive_s;
  guint nop_interval_s;
  guint nop_timeout_s;
} DfStreamLiveness;
void df_stream_server_set_liveness (DfStreamServer *s,
                                    const DfStreamLiveness *l);
/* Connection limits (before start), 0 = none for each:
 *   handshake_timeout_s  a connection still without a session (NBD
 *                        negotiation, iSCSI login, a whole iSCSI discovery
 *                        session) that long after accept is closed
 *   request_timeout_s    a session with part of a message received and
 *                        no complete message for that long is closed (a
 *                        slow sender; a session idle between messages is
 *                        never cut: TCP keepalive and NOP-In find dead
 *                        peers)
 *   max_per_source       TCP connections from one client address (unix
 *                        sockets are not counted); one more is closed at
 *                        accept
 * Defaults DF_HANDSHAKE_TIMEOUT_DEFAULT, DF_REQUEST_TIMEOUT_DEFAULT,
 * DF_MAX_CONN_PER_SOURCE_DEFAULT (conf.h); the precision of the timeouts
 * is the worker tick (1 s).  Floods of refusals log one line per 10 s. */
typedef struct {
  guint handshake_timeout_s;
  guint request_timeout_s;
  guint max_per_source;
} DfStreamLimits;
void df_stream_server_set_limits (DfStreamServer *s,
                                  const DfStreamLimits *l);
/* NBD TLS for every NBD connection (before start; tls.h): borrowed, must
 * outlive the server; NULL (the default) = off. */
void df_stream_server_set_tls (DfStreamServer *s, DfTls *tls);
/* Bind and listen (before start).  On success *bound receives a new string
 * naming what is really bound ("127.0.0.1:10809", "[::1]:4000",
 * "unix:/run/x.sock"; one line per address when a wildcard host resolves to
 * several).  An existing socket file at a unix path is replaced. */
bool df_stream_server_listen_nbd (DfStreamServer *s,
                                  const DfListenAddr *addr, char **bound,
                                  GError **err);
/* Same for iSCSI (iscsi.h engine, TCP only), served by the same
 * workers. */
bool df_stream_server_listen_iscsi (DfStreamServer *s,
                                    const DfListenAddr *addr, char **bound,
                                    GError **err);
/* Start the acceptor and worker threads. */
bool df_stream_server_start (DfStreamServer *s, GError **err);
/* Stop accepting, finish the requests already received, send their
 * replies (bounded wait), close every connection, join the threads. */
void df_stream_server_stop (DfStreamServer *s);
/* Stop if running, close listeners (unlinking unix sockets), free. */
void df_stream_server_free (DfStreamServer *s);

/* Serve one connection on in_fd/out_fd (blocking) until it ends.
 * Returns 0 when the client ended cleanly, 1 on a transport error. */
int df_nbd_serve_stdio (DfExports *ex, DfSessions *ss, int in_fd,
                        int out_fd);
