/* streamsvc: NBD TLS, the transport layer between a socket and an engine
 * (OpenSSL on the connection's non-blocking socket).
 *
 * DfTls is the server's TLS setup, made once at start (before the
 * privilege drop, so the key files may be root's): x509 from a directory
 * holding ca-cert.pem, server-cert.pem and server-key.pem (nbdkit's and
 * qemu's names; client certificates are verified against ca-cert.pem and
 * a client's CN is its identity), and pre-shared keys from a file of
 * nbdkit's "identity:hexkey" lines and from a lookup (the farm's device
 * keys).  Either or both.
 *
 * DfTlsConn is one connection's TLS session.  The NBD engine asks for it
 * (NBD_OPT_STARTTLS, engine.h df_engine_tls_wanted) once its ACK is sent;
 * the transport then runs df_tls_conn_handshake until it is done, tells
 * the engine the identity, and from then on reads and writes through
 * df_tls_conn_read / df_tls_conn_write.  A failed handshake ends that one
 * connection.
 *
 * Secrets: keys live in memory only as long as DfTls (wiped at free) and
 * a lookup's copy is wiped once OpenSSL took it; none is ever logged.
 *
 * Thread safety: a DfTls is shared read-only by every worker; a DfTlsConn
 * is driven by one thread at a time.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h" /* DfTlsMode */

typedef struct DfTls DfTls;
typedef struct DfTlsConn DfTlsConn;

/* Longest key a PSK file line or a lookup may give; shortest accepted. */
#define DF_TLS_PSK_MAX 256
#define DF_TLS_PSK_MIN 16

/* The key of identity: copy it to key (room DF_TLS_PSK_MAX) and set *len;
 * false when identity has none (unknown, or no key).  Called from the
 * worker doing the handshake. */
typedef bool (*DfTlsPskLookup) (void *opaque, const char *identity,
                                uint8_t *key, size_t *len);

typedef struct {
  DfTlsMode mode;
  const char *certificates; /* DIR, or NULL: no x509 */
  const char *psk_file;     /* FILE, or NULL */
  bool verify_peer;         /* x509: a client certificate is required */
  DfTlsPskLookup lookup;    /* NULL: file keys only */
  void *lookup_opaque;      /* borrowed; must outlive the DfTls */
} DfTlsConfig;

/* Load what cfg names (mode must not be off).  Errors name the file (and
 * line for the PSK file).  New DfTls. */
DfTls *df_tls_new (const DfTlsConfig *cfg, GError **err);
void df_tls_free (DfTls *t);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfTls, df_tls_free)
DfTlsMode df_tls_mode (const DfTls *t);
/* "x509+psk", "x509", "psk" for the start-up line (static). */
const char *df_tls_kinds (const DfTls *t);

/* Start the server side of a handshake on fd (borrowed, non-blocking).
 * client names the peer in log lines (copied). */
DfTlsConn *df_tls_conn_new (DfTls *t, int fd, const char *client);
void df_tls_conn_free (DfTlsConn *c);

typedef enum {
  DF_TLS_DONE,       /* the session is up */
  DF_TLS_AGAIN,      /* call again when the socket is ready (want_write) */
  DF_TLS_FAILED,     /* logged once; close the connection */
} DfTlsStep;
DfTlsStep df_tls_conn_handshake (DfTlsConn *c);
/* The last call stopped for the socket to become writable (else
 * readable). */
bool df_tls_conn_want_write (const DfTlsConn *c);
/* After DF_TLS_DONE: the PSK identity or the verified client certificate's
 * CN; NULL for a TLS client without either (borrowed, valid while c). */
const char *df_tls_conn_identity (const DfTlsConn *c);

/* Read decrypted bytes: > 0 bytes read, 0 when nothing is there now, -1
 * when the connection ended (close_notify, EOF or an error, logged). */
gssize df_tls_conn_read (DfTlsConn *c, uint8_t *buf, size_t len);
/* Decrypted bytes are buffered that the socket will not signal. */
bool df_tls_conn_pending (const DfTlsConn *c);
/* Engine sink semantics (engine.h DfEngineSink): > 0 taken, 0 socket
 * full, -1 broken. */
gssize df_tls_conn_write (DfTlsConn *c, const uint8_t *buf, size_t len);
