/* streamsvc: iSCSI target engine (RFC 7143), bytes in -> bytes out.
 *
 * Same driving model as nbd.h: the transport (server.c) owns the socket
 * and drives the engine through engine.h (iscsi_conn_engine), whose ops
 * wrap the iscsi_conn_* functions below.
 *
 * This header is the public API (server.c); iscsi_int.h holds what the
 * iscsi_*.c files share (PDU framing, login, the SCSI LU, the conn).
 *
 * Files:
 *   iscsi_target.c   the target (DfIscsiTarget): the state its sessions
 *                    share, owned by one object, not by the process
 *   iscsi_pdu.c      PDU framing (BHS, AHS, data segment, CRC32C digests),
 *                    text key=value parsing, output PDU building
 *   iscsi_login.c    login state machine, key negotiation, CHAP
 *   iscsi_scsi.c     SBC-3 command set over a df_blk (LUN 1): one
 *                    descriptor table of the opcodes
 *   iscsi_pr.c       state shared by the sessions of one LU: persistent
 *                    and SPC-2 reservations, the COMPARE AND WRITE lock
 *   iscsi_session.c  connections, CmdSN window, R2T/Data-Out, task
 *                    management, NOP, Text/SendTargets, Logout,
 *                    session reinstatement
 *
 * Thread safety: one iscsi_conn is driven by one thread at a time; the
 * state of a DfIscsiTarget (session registry for reinstatement, CHAP
 * challenge history, the LUs' reservations) is locked.  Two targets in one
 * process share none of it.
 */
#pragma once

#include "defaults.h" /* DF_IQN_PREFIX */

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "engine.h"
#include "exports.h"
#include "sessions.h"

/* ---- public engine API ---------------------------------------------------- */

typedef struct iscsi_conn iscsi_conn;
typedef struct DfIscsiTarget DfIscsiTarget;

/* A target: what its sessions share (the session registry that
 * reinstatement looks in, the CHAP challenges it handed out, each LU's
 * persistent and SPC-2 reservations).  ex and ss are borrowed and must
 * outlive it; every conn of the target must be freed before it.  Returns
 * a new target. */
DfIscsiTarget *df_iscsi_target_new (DfExports *ex, DfSessions *ss);
void df_iscsi_target_free (DfIscsiTarget *t);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfIscsiTarget, df_iscsi_target_free)

/* A conn of target t (borrowed, must outlive the conn).  client and local
 * are copied ("127.0.0.1:4242", "127.0.0.1:3260": TargetAddress for
 * SendTargets). */
iscsi_conn *iscsi_conn_new (DfIscsiTarget *t, const char *client,
                            const char *local);
void iscsi_conn_free (iscsi_conn *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (iscsi_conn, iscsi_conn_free)
/* c as an engine (borrowed; df_engine_free frees c). */
DfEngineConn *iscsi_conn_engine (iscsi_conn *c);

/* The socket, so that a reinstating login elsewhere can shut it down
 * (never closed by the engine).  -1 (default) for none. */
void iscsi_conn_set_fd (iscsi_conn *c, int fd);

uint8_t *iscsi_conn_input_space (iscsi_conn *c, size_t *room);
void iscsi_conn_input_commit (iscsi_conn *c, size_t n);
void iscsi_conn_process (iscsi_conn *c);
bool iscsi_conn_has_work (const iscsi_conn *c);
const uint8_t *iscsi_conn_output (iscsi_conn *c, size_t *len);
void iscsi_conn_output_consume (iscsi_conn *c, size_t n);
/* Idle (engine.h): shrink the input buffer, free the output buffer and
 * the data-in scratch when empty; the next PDU allocates again. */
void iscsi_conn_release_idle (iscsi_conn *c);
bool iscsi_conn_should_close (const iscsi_conn *c);
/* Where the conn stands (engine.h DfEngineProgress): HANDSHAKE during the
 * login and for a whole discovery session, PARTIAL while part of a PDU is
 * awaited in the full feature phase. */
void iscsi_conn_progress (const iscsi_conn *c, DfEngineProgress *p);

/* Dead-peer pings (RFC 7143 11.19).  In the full feature phase of a normal
 * session, after interval_s without a byte from the initiator the target
 * sends a NOP-In with a valid Target Transfer Tag (ITT 0xffffffff), which
 * asks for a NOP-Out answer; when nothing at all arrives within timeout_s
 * more, the peer is dead.  interval_s 0 turns pings off.  Discovery
 * sessions and the login phase are never pinged (TCP keepalive covers
 * them).  New conns use the defaults. */
#define ISCSI_NOP_INTERVAL_DEFAULT DF_ISCSI_NOP_INTERVAL_DEFAULT /* conf.h */
#define ISCSI_NOP_TIMEOUT_DEFAULT DF_ISCSI_NOP_TIMEOUT_DEFAULT
#define ISCSI_NOP_MAX DF_ISCSI_NOP_MAX /* largest interval or timeout */
void iscsi_conn_set_nop (iscsi_conn *c, guint interval_s, guint timeout_s);
/* Drive the ping clock: call about once a second with the monotonic time
 * in microseconds (g_get_monotonic_time ()); the precision of the
 * interval and timeout is that period.  May queue a NOP-In (send the
 * output).  false: the peer did not answer in time, the conn is closed;
 * drop it now without draining its output (nobody reads it). */
bool iscsi_conn_tick (iscsi_conn *c, gint64 now_us);

