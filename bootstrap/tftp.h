/* diskfarm bootstrap: TFTP server (read requests only).
 *
 * One listening UDP socket (bound by the caller, so it can be bound before
 * privileges are dropped) and one connected UDP socket per transfer, all on
 * the thread-default GLib main context: no thread per transfer.  Each
 * transfer is a state machine (tftp.c) with adaptive retransmission, RFC
 * 7440 windows and 16-bit block-number rollover.  Files are opened below
 * the root with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) and checked
 * on the descriptor; small files are kept in a shared in-memory cache keyed
 * by device, inode, mtime and size. */
#pragma once

#include <glib.h>
#include <stdbool.h>

typedef struct DfTftpServer DfTftpServer;

typedef struct {
  const char *root;         /* directory served (<farm>/boot) */
  guint max_transfers;      /* concurrent transfers, 0: 1024 */
  guint32 max_blksize;      /* cap on negotiated blksize, 0: 65464 */
  guint16 max_windowsize;   /* cap on negotiated windowsize, 0: 256 */
  guint64 cache_bytes;      /* in-memory cache budget, 0: 128 MiB */
  guint64 cache_file_max;   /* largest file cached, 0: 64 MiB */
  guint max_retries;        /* retransmissions before giving up, 0: 6 */
  guint max_per_source;     /* concurrent transfers of one address, 0: 8 */
  guint max_transfer_s;     /* a transfer's total time, 0: 120 s */
} DfTftpConfig;

/* The timeout option (RFC 2349) is honoured up to this many seconds; a
 * larger value is not acknowledged (adaptive retransmission instead). */
#define DF_TFTP_TIMEOUT_MAX_S 5

/* Serve requests arriving on listen_fd (a bound UDP socket; taken).
 * Opens the root now.  NULL + err when the root cannot be opened. */
DfTftpServer *df_tftp_server_new (const DfTftpConfig *cfg, int listen_fd,
                                  GError **err);
/* Stops listening and drops every transfer. */
void df_tftp_server_free (DfTftpServer *srv);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfTftpServer, df_tftp_server_free)

typedef struct {
  guint64 transfers_started;
  guint64 transfers_done;
  guint64 transfers_failed;
  guint64 requests_refused;
  guint64 cache_hits;
  guint64 cache_misses;     /* files read from disk into the cache */
  guint64 retransmits;
  guint active;
} DfTftpStats;
void df_tftp_server_stats (DfTftpServer *srv, DfTftpStats *out);
