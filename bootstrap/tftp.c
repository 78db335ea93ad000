/* diskfarm bootstrap: TFTP server.  See tftp.h.
 *
 * Transfer states:
 *   WAIT_OACK_ACK  options were acknowledged with an OACK; waiting for
 *                  ACK 0 (or an ERROR refusing them)
 *   SENDING        a window of DATA blocks [base, next) is outstanding
 * A transfer ends when the ACK of its last block arrives, on a client
 * ERROR, an illegal packet, after max_retries timeouts in a row, or when
 * it has run max_transfer_s.  One address holds at most max_per_source
 * transfers, so a flood from one host leaves slots for the others.
 *
 * Blocks are counted with 64-bit numbers (block k is sent as k mod 65536,
 * so 65535 is followed by 0).  An ACK is mapped back into [base-1, next-1];
 * an ACK of base-1 (a duplicate) is ignored: DATA is only ever resent on a
 * timeout, never because of a duplicate ACK (Sorcerer's Apprentice, RFC
 * 1123 4.2.3.1).  A partial ACK inside the window (RFC 7440: the client
 * saw a gap) restarts the window after the acknowledged block.
 *
 * Data path: the server runs in a thread of its own ("tftp") around one
 * epoll set holding the listening socket, a stop eventfd and every
 * transfer's connected socket; the listening socket, the transfers and the
 * file cache are touched by that thread only (the counters are shared under
 * stats_lock).  Per ACK: epoll_wait, one recvmmsg (an ACK burst costs one
 * call), one send of the next window.  A window of cached blocks goes out as
 * UDP GSO super-datagrams whose iovecs point into the cache (header, data,
 * header, data...; the kernel cuts them every 4 + blksize bytes), falling
 * back to sendmmsg when the route refuses GSO; no block is copied in user
 * space.  Retransmission deadlines are plain numbers: arming one is a store,
 * and the loop scans the transfers only when the earliest deadline may have
 * passed. */
#include "tftp.h"
#include "tftp_proto.h"
#include "beneath.h"
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <glib-unix.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define RTO_INITIAL_MS 1000
#define RTO_MIN_MS 200
#define RTO_MAX_MS 5000

/* ---- file cache ------------------------------------------------------- */

typedef struct {
  dev_t dev;
  ino_t ino;
  gint64 mtime_ns;
  gint64 size;
} FileKey;

typedef struct {
  FileKey key;
  GBytes *data;         /* owned */
  gint64 last_use_us;
} CacheEntry;

static guint
file_key_hash (gconstpointer p)
{
  const FileKey *k = p;
  return (guint) (k->ino ^ (k->ino >> 32) ^ k->dev ^ (guint64) k->mtime_ns
                  ^ (guint64) k->size);
}

static gboolean
file_key_equal (gconstpointer a, gconstpointer b)
{
  const FileKey *x = a, *y = b;
  return x->dev == y->dev && x->ino == y->ino && x->mtime_ns == y->mtime_ns
         && x->size == y->size;
}

static void
cache_entry_free (gpointer p)
{
  CacheEntry *e = p;
  g_bytes_unref (e->data);
  g_free (e);
}

/* ---- server and transfers --------------------------------------------- */

struct DfTftpServer {
  DfTftpConfig cfg;
  char *root;
  int root_fd;
  int listen_fd;
  int epoll_fd;
  int wake_fd;              /* eventfd: df_tftp_server_free stops the thread */
  GThread *thread;
  /* Owned by the tftp thread while it runs: */
  GHashTable *xfers;        /* Xfer* set, owned */
  GPtrArray *dead;          /* finished Xfer*, freed after the event batch */
  GHashTable *cache;        /* FileKey* -> CacheEntry* (owned) */
  GHashTable *per_source;   /* address string (owned) -> transfers (uint) */
  gint64 refusal_log_us;    /* per-source refusals: one log line a second */
  guint refusals_unlogged;
  guint64 cache_used;
  gint64 next_scan_us;      /* no deadline passes before; G_MAXINT64: none */
  bool gso_refused;         /* a route refused UDP GSO: use sendmmsg */
  /* Shared with the caller's thread: */
  GMutex stats_lock;
  DfTftpStats stats;        /* under stats_lock */
};

/* Count one event in a DfTftpStats field (any thread). */
static void
stat_add (DfTftpServer *srv, guint64 *field, gint64 delta)
{
  g_mutex_lock (&srv->stats_lock);
  *field += delta;
  g_mutex_unlock (&srv->stats_lock);
}

typedef enum {
  XFER_WAIT_OACK_ACK,
  XFER_SENDING,
} XferState;

typedef struct {
  DfTftpServer *srv;        /* borrowed */
  int fd;                   /* connected to the client, owned */
  gint64 deadline_us;       /* retransmission due */
  char peer[64];            /* "addr:port" for logs */
  char source[48];          /* "addr": the per-source slot count */
  bool counted;             /* holds a slot in srv->per_source */
  char path[DF_TFTP_NAME_MAX + 1];
  XferState state;
  bool finished;            /* xfer_finish ran: on srv->dead, fd closed */
  GBytes *data;             /* cached file, or NULL */
  int file_fd;              /* uncached file, or -1 */
  guint64 size;
  guint32 blksize;
  guint16 windowsize;
  bool gso;                 /* socket has UDP_SEGMENT = 4 + blksize */
  DfTftpOptions oack;       /* options acknowledged */
  bool has_oack;
  guint64 nblocks;          /* last block number (always >= 1) */
  guint64 base;             /* oldest unacknowledged block */
  guint64 next;             /* next block to send */
  guint retries;            /* timeouts in a row */
  guint fixed_timeout_ms;   /* timeout option, 0: adaptive */
  double srtt_ms, rttvar_ms;
  guint rto_ms;
  gint64 window_sent_us;    /* when the window was first sent */
  bool window_resent;       /* Karn: no RTT sample after a resend */
  guint8 *buf;              /* 4 + blksize, uncached files only, owned */
  gint64 started_us;
} Xfer;

static void xfer_finish (Xfer *x, bool ok, const char *why);
static void source_release (Xfer *x);
static bool xfer_overdue (Xfer *x);
static void xfer_send_error (Xfer *x, int code, const char *msg);

/* ---- sending ---------------------------------------------------------- */

static void
xfer_send (Xfer *x, const guint8 *pkt, size_t len)
{
  if (send (x->fd, pkt, len, MSG_DONTWAIT) < 0 && errno != EAGAIN
      && errno != ECONNREFUSED)
    g_debug ("tftp %s: send: %s", x->peer, g_strerror (errno));
}

static void
xfer_send_error (Xfer *x, int code, const char *msg)
{
  guint8 pkt[256];
  size_t n = df_tftp_build_error (pkt, sizeof pkt, code, msg);
  xfer_send (x, pkt, n);
}

/* Bytes of block k (1-based). */
static size_t
block_len (const Xfer *x, guint64 k)
{
  guint64 off = (k - 1) * x->blksize;
  if (off >= x->size)
    return 0;
  return (size_t) MIN ((guint64) x->blksize, x->size - off);
}

/* Send block k of an uncached file (read into x->buf). */
static bool
xfer_send_block (Xfer *x, guint64 k)
{
  size_t n = block_len (x, k);
  guint64 off = (k - 1) * x->blksize;
  g_assert (!x->data);
  df_tftp_build_data_header (x->buf, 4, (guint16) (k & 0xffff));
  if (n > 0 && df_pread_all (x->file_fd, x->buf + 4, n, off) < 0)
    {
      g_message ("tftp %s: %s: read error: %s", x->peer, x->path,
                 g_strerror (errno));
      xfer_send_error (x, DF_TFTP_EUNDEF, "read error");
      return false;
    }
  xfer_send (x, x->buf, 4 + n);
  return true;
}

/* Point iov[0..1] at block k of the cached file behind header hdr. */
static void
cached_block_iov (const Xfer *x, guint64 k, guint8 hdr[4], struct iovec *iov)
{
  const guint8 *d = g_bytes_get_data (x->data, NULL);
  df_tftp_build_data_header (hdr, 4, (guint16) (k & 0xffff));
  iov[0] = (struct iovec) { hdr, 4 };
  iov[1] = (struct iovec) { (void *) (d + (k - 1) * x->blksize),
                            block_len (x, k) };
}

/* UDP GSO: at most this many segments and payload bytes per send. */
#define GSO_SEGS_MAX 64
#define GSO_BYTES_MAX 65000

static guint
gso_segments (guint32 blksize)
{
  return MIN (GSO_SEGS_MAX, GSO_BYTES_MAX / (4 + blksize));
}

/* Ask the kernel to cut this transfer's sends every 4 + blksize bytes, when
 * a window holds several blocks that fit one GSO send. */
static void
xfer_enable_gso (Xfer *x)
{
  int seg = (int) (4 + x->blksize);
  if (x->srv->gso_refused || x->windowsize < 2 || gso_segments (x->blksize) < 2)
    return;
  x->gso = setsockopt (x->fd, SOL_UDP, UDP_SEGMENT, &seg, sizeof seg) == 0;
}

static void
xfer_disable_gso (Xfer *x, int e)
{
  int zero = 0;
  g_message ("tftp %s: UDP GSO refused (%s): sending windows with sendmmsg",
             x->peer, g_strerror (e));
  x->srv->gso_refused = true;
  x->gso = false;
  setsockopt (x->fd, SOL_UDP, UDP_SEGMENT, &zero, sizeof zero);
}

/* Send cached blocks [next, end) as GSO super-datagrams: one sendmsg per
 * gso_segments blocks, iovecs into the cache.  False when the kernel
 * refuses GSO on this route (x->next tells what is left to send). */
static bool
xfer_send_gso (Xfer *x, guint64 end)
{
  guint max = gso_segments (x->blksize);
  while (x->next < end)
    {
      struct iovec iov[2 * GSO_SEGS_MAX];
      guint8 hdr[GSO_SEGS_MAX][4];
      guint n = 0;
      for (guint64 k = x->next; k < end && n < max; k++, n++)
        cached_block_iov (x, k, hdr[n], &iov[2 * n]);
      struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 * n };
      if (sendmsg (x->fd, &mh, MSG_DONTWAIT) < 0)
        {
          int e = errno;
          if (e == EIO || e == EINVAL || e == EMSGSIZE || e == EOPNOTSUPP)
            {
              xfer_disable_gso (x, e);
              return false;
            }
          /* Full socket buffer or ICMP refusal: the rest goes out on the
           * retransmission timeout, as if lost. */
          g_debug ("tftp %s: send: %s", x->peer, g_strerror (e));
          x->next = end;
          return true;
        }
      x->next += n;
    }
  return true;
}

/* Send cached blocks [next, end) with one sendmmsg per batch: a window
 * costs one system call, not one per block. */
#define SEND_BATCH 64
static void
xfer_send_cached (Xfer *x, guint64 end)
{
  if (x->gso && end - x->next > 1 && xfer_send_gso (x, end))
    return;
  while (x->next < end)
    {
      struct mmsghdr mm[SEND_BATCH];
      struct iovec iov[SEND_BATCH][2];
      guint8 hdr[SEND_BATCH][4];
      guint n = 0;
      for (guint64 k = x->next; k < end && n < SEND_BATCH; k++, n++)
        {
          cached_block_iov (x, k, hdr[n], iov[n]);
          memset (&mm[n], 0, sizeof mm[n]);
          mm[n].msg_hdr.msg_iov = iov[n];
          mm[n].msg_hdr.msg_iovlen = 2;
        }
      int sent = sendmmsg (x->fd, mm, n, MSG_DONTWAIT);
      if (sent <= 0)
        {
          /* Full socket buffer or ICMP refusal: the rest goes out on the
           * retransmission timeout, as if lost. */
          g_debug ("tftp %s: sendmmsg: %s", x->peer, g_strerror (errno));
          x->next = end;
          return;
        }
      x->next += (guint) sent;
    }
}

static guint
xfer_rto (const Xfer *x)
{
  guint rto = x->fixed_timeout_ms ? x->fixed_timeout_ms : x->rto_ms;
  for (guint i = 0; i < x->retries && rto < RTO_MAX_MS * 4; i++)
    rto *= 2;                 /* exponential back-off */
  return rto;
}

/* Set the retransmission deadline: a store, plus pulling the next scan
 * earlier when needed. */
static void
xfer_arm (Xfer *x)
{
  x->deadline_us = g_get_monotonic_time () + xfer_rto (x) * 1000;
  x->srv->next_scan_us = MIN (x->srv->next_scan_us, x->deadline_us);
}

/* Send blocks [next, base + windowsize) up to the last one. */
static bool
xfer_send_window (Xfer *x)
{
  guint64 end = MIN (x->base + x->windowsize, x->nblocks + 1);
  if (x->next == x->base)
    x->window_sent_us = g_get_monotonic_time ();
  if (x->data)
    xfer_send_cached (x, end);
  for (; x->next < end; x->next++)
    if (!xfer_send_block (x, x->next))
      return false;
  xfer_arm (x);
  return true;
}

static void
xfer_send_oack (Xfer *x)
{
  guint8 pkt[256];
  size_t n = df_tftp_build_oack (pkt, sizeof pkt, &x->oack, x->size);
  x->window_sent_us = g_get_monotonic_time ();
  xfer_send (x, pkt, n);
  xfer_arm (x);
}

/* ---- receiving -------------------------------------------------------- */

/* RFC 6298 estimator on one sample. */
static void
xfer_rtt_sample (Xfer *x, double ms)
{
  if (x->srtt_ms == 0)
    {
      x->srtt_ms = ms;
      x->rttvar_ms = ms / 2;
    }
  else
    {
      x->rttvar_ms = 0.75 * x->rttvar_ms + 0.25 * ABS (x->srtt_ms - ms);
      x->srtt_ms = 0.875 * x->srtt_ms + 0.125 * ms;
    }
  double rto = x->srtt_ms + 4 * x->rttvar_ms;
  x->rto_ms = (guint) CLAMP (rto, RTO_MIN_MS, RTO_MAX_MS);
}

static void
xfer_progress (Xfer *x)
{
  if (!x->window_resent)
    xfer_rtt_sample (x, (g_get_monotonic_time () - x->window_sent_us)
                        / 1000.0);
  x->window_resent = false;
  x->retries = 0;
}

static void
xfer_rx_ack_oack (Xfer *x, guint16 block)
{
  if (block != 0)
    return;                   /* stray: wait for ACK 0 or the timeout */
  xfer_progress (x);
  x->state = XFER_SENDING;
  x->base = x->next = 1;
  if (!xfer_send_window (x))
    xfer_finish (x, false, "read error");
}

static void
xfer_rx_ack_data (Xfer *x, guint16 block)
{
  guint64 prev = x->base - 1;
  guint64 k = prev + (guint16) (block - (guint16) (prev & 0xffff));
  if (k == prev || k >= x->next)
    return;                   /* duplicate or outside the window: ignore */
  xfer_progress (x);
  x->base = k + 1;
  if (x->base > x->nblocks)
    {
      xfer_finish (x, true, NULL);
      return;
    }
  if (xfer_overdue (x))
    return;
  x->next = x->base;          /* RFC 7440: next window after block k */
  if (!xfer_send_window (x))
    xfer_finish (x, false, "read error");
}

/* Handle one packet; false when the transfer ended (x is freed). */
static bool
xfer_rx (Xfer *x, const guint8 *buf, size_t len)
{
  DfTftpClientPacket pkt;
  int code;
  g_autoptr (GError) err = NULL;
  if (!df_tftp_parse_client (buf, len, &pkt, &code, &err))
    {
      if (code == DF_TFTP_SILENT)
        return true;
      xfer_send_error (x, code, err->message);
      xfer_finish (x, false, err->message);
      return false;
    }
  if (pkt.opcode == DF_TFTP_ERROR)
    {
      g_autofree char *why = g_strdup_printf ("client error %u '%s'",
                                              pkt.error_code, pkt.message);
      xfer_finish (x, false, why);
      return false;
    }
  if (x->state == XFER_WAIT_OACK_ACK)
    xfer_rx_ack_oack (x, pkt.block);
  else
    xfer_rx_ack_data (x, pkt.block);
  return !x->finished;
}

/* Read what the client sent: one recvmmsg takes a burst of ACKs. */
#define RX_BATCH 8
#define RX_PKT 1024
static void
xfer_on_readable (Xfer *x)
{
  guint8 buf[RX_BATCH][RX_PKT];
  struct iovec iov[RX_BATCH];
  struct mmsghdr mm[RX_BATCH];
  memset (mm, 0, sizeof mm);
  for (guint i = 0; i < RX_BATCH; i++)
    {
      iov[i] = (struct iovec) { buf[i], RX_PKT };
      mm[i].msg_hdr.msg_iov = &iov[i];
      mm[i].msg_hdr.msg_iovlen = 1;
    }
  int n = recvmmsg (x->fd, mm, RX_BATCH, MSG_DONTWAIT | MSG_TRUNC, NULL);
  /* n < 0: EAGAIN, or an ICMP refusal; the timeout handles both. */
  for (int i = 0; i < n && !x->finished; i++)
    xfer_rx (x, buf[i], MIN ((size_t) mm[i].msg_len, RX_PKT));
}

/* True (and the transfer finished) when x has run out of total time. */
static bool
xfer_overdue (Xfer *x)
{
  gint64 limit = (gint64) x->srv->cfg.max_transfer_s * G_USEC_PER_SEC;
  if (g_get_monotonic_time () - x->started_us <= limit)
    return false;
  xfer_send_error (x, DF_TFTP_EUNDEF, "transfer took too long");
  xfer_finish (x, false, "transfer took too long");
  return true;
}

static void
xfer_timeout (Xfer *x)
{
  DfTftpServer *srv = x->srv;
  if (xfer_overdue (x))
    return;
  if (++x->retries > srv->cfg.max_retries)
    {
      xfer_send_error (x, DF_TFTP_EUNDEF, "timed out");
      xfer_finish (x, false, "timed out");
      return;
    }
  stat_add (srv, &srv->stats.retransmits, 1);
  x->window_resent = true;
  if (x->state == XFER_WAIT_OACK_ACK)
    {
      xfer_send_oack (x);
      return;
    }
  x->next = x->base;
  if (!xfer_send_window (x))
    xfer_finish (x, false, "read error");
}

/* Frees a transfer (GDestroyNotify for srv->xfers and srv->dead). */
static void
xfer_free (gpointer p)
{
  Xfer *x = p;
  if (x->fd >= 0)
    close (x->fd);
  if (x->file_fd >= 0)
    close (x->file_fd);
  g_clear_pointer (&x->data, g_bytes_unref);
  g_free (x->buf);
  g_free (x);
}

/* ---- per-source slots ------------------------------------------------- */

static guint
source_count (DfTftpServer *srv, const char *source)
{
  return GPOINTER_TO_UINT (g_hash_table_lookup (srv->per_source, source));
}

static void
source_take (Xfer *x)
{
  DfTftpServer *srv = x->srv;
  guint n = source_count (srv, x->source);
  g_hash_table_replace (srv->per_source, g_strdup (x->source),
                        GUINT_TO_POINTER (n + 1));
  x->counted = true;
}

static void
source_release (Xfer *x)
{
  DfTftpServer *srv = x->srv;
  if (!x->counted)
    return;
  x->counted = false;
  guint n = source_count (srv, x->source);
  if (n <= 1)
    g_hash_table_remove (srv->per_source, x->source);
  else
    g_hash_table_replace (srv->per_source, g_strdup (x->source),
                          GUINT_TO_POINTER (n - 1));
}

/* End a transfer: log it once, close its socket (which leaves the epoll
 * set) and park it on srv->dead until the event batch is over, so nothing
 * in the batch points at freed memory. */
static void
xfer_finish (Xfer *x, bool ok, const char *why)
{
  DfTftpServer *srv = x->srv;
  x->finished = true;
  double secs = (g_get_monotonic_time () - x->started_us) / 1e6;
  g_mutex_lock (&srv->stats_lock);
  if (ok)
    srv->stats.transfers_done++;
  else
    srv->stats.transfers_failed++;
  srv->stats.active--;
  g_mutex_unlock (&srv->stats_lock);
  if (ok) /* every transfer: only with --verbose (info) */
    g_info ("tftp %s: sent %s (%" G_GUINT64_FORMAT " bytes, blksize %u, "
            "windowsize %u) in %.3f s", x->peer, x->path, x->size,
            x->blksize, x->windowsize, secs);
  else
    g_message ("tftp %s: %s: transfer ended: %s", x->peer, x->path, why);
  source_release (x);
  close (x->fd);
  x->fd = -1;
  g_hash_table_steal (srv->xfers, x);
  g_ptr_array_add (srv->dead, x);
}

/* ---- opening files ---------------------------------------------------- */

static int
open_errno_code (int e)
{
  return e == ENOENT || e == ENOTDIR ? DF_TFTP_ENOTFOUND : DF_TFTP_EACCESS;
}

static void
cache_evict (DfTftpServer *srv, guint64 need)
{
  while (srv->cache_used + need > srv->cfg.cache_bytes
         && g_hash_table_size (srv->cache) > 0)
    {
      GHashTableIter it;
      gpointer k, v;
      CacheEntry *oldest = NULL;
      g_hash_table_iter_init (&it, srv->cache);
      while (g_hash_table_iter_next (&it, &k, &v))
        if (!oldest || ((CacheEntry *) v)->last_use_us < oldest->last_use_us)
          oldest = v;
      srv->cache_used -= oldest->key.size;
      g_hash_table_remove (srv->cache, &oldest->key);
    }
}

/* The file's bytes from the cache, reading it once when it fits; NULL when
 * it is not cacheable (too large) or on a read error (errno set). */
static GBytes *
cache_lookup (DfTftpServer *srv, int fd, const struct stat *st)
{
  FileKey key = {
    .dev = st->st_dev, .ino = st->st_ino,
    .mtime_ns = (gint64) st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec,
    .size = st->st_size,
  };
  CacheEntry *e = g_hash_table_lookup (srv->cache, &key);
  if (e)
    {
      stat_add (srv, &srv->stats.cache_hits, 1);
      e->last_use_us = g_get_monotonic_time ();
      return g_bytes_ref (e->data);
    }
  if ((guint64) st->st_size > srv->cfg.cache_file_max)
    {
      errno = 0;
      return NULL;
    }
  guint8 *buf = g_malloc (MAX (st->st_size, 1));
  if (st->st_size && df_pread_all (fd, buf, st->st_size, 0) < 0)
    {
      int saved = errno;
      g_free (buf);
      errno = saved;
      return NULL;
    }
  stat_add (srv, &srv->stats.cache_misses, 1);
  cache_evict (srv, st->st_size);
  e = g_new0 (CacheEntry, 1);
  e->key = key;
  e->data = g_bytes_new_take (buf, st->st_size);
  e->last_use_us = g_get_monotonic_time ();
  srv->cache_used += st->st_size;
  g_hash_table_insert (srv->cache, &e->key, e);
  return g_bytes_ref (e->data);
}

/* Open and check the requested file for x; on failure *code and *msg. */
static bool
xfer_open_file (Xfer *x, int *code, const char **msg)
{
  int fd = df_open_beneath (x->srv->root_fd, x->path);
  if (fd < 0)
    {
      *code = open_errno_code (errno);
      *msg = *code == DF_TFTP_ENOTFOUND ? "file not found" : "access violation";
      g_message ("tftp %s: %s: refused: %s", x->peer, x->path,
                 g_strerror (errno));
      return false;
    }
  struct stat st;
  if (fstat (fd, &st) < 0 || !S_ISREG (st.st_mode))
    {
      close (fd);
      *code = DF_TFTP_EACCESS;
      *msg = "not a regular file";
      g_message ("tftp %s: %s: refused: not a regular file", x->peer,
                 x->path);
      return false;
    }
  x->size = st.st_size;
  x->data = cache_lookup (x->srv, fd, &st);
  if (x->data)
    close (fd);
  else if (errno != 0)
    {
      close (fd);
      *code = DF_TFTP_EUNDEF;
      *msg = "read error";
      return false;
    }
  else
    x->file_fd = fd;
  return true;
}

/* ---- new transfers ---------------------------------------------------- */

static void
format_peer (const struct sockaddr_storage *ss, char *out, size_t cap,
             char *source, size_t source_cap)
{
  char ip[INET6_ADDRSTRLEN] = "?";
  guint port = 0;
  if (ss->ss_family == AF_INET)
    {
      const struct sockaddr_in *in = (const struct sockaddr_in *) ss;
      inet_ntop (AF_INET, &in->sin_addr, ip, sizeof ip);
      port = ntohs (in->sin_port);
    }
  else if (ss->ss_family == AF_INET6)
    {
      const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) ss;
      inet_ntop (AF_INET6, &in6->sin6_addr, ip, sizeof ip);
      port = ntohs (in6->sin6_port);
    }
  g_snprintf (out, cap, "%s:%u", ip, port);
  g_strlcpy (source, ip, source_cap);
}

/* Answer a refused request from the listening socket. */
static void
send_error_to (DfTftpServer *srv, const struct sockaddr_storage *peer,
               socklen_t plen, int code, const char *msg)
{
  guint8 pkt[256];
  size_t n = df_tftp_build_error (pkt, sizeof pkt, code, msg);
  if (n && sendto (srv->listen_fd, pkt, n, MSG_DONTWAIT,
                   (const struct sockaddr *) peer, plen) < 0)
    g_debug ("tftp: sendto: %s", g_strerror (errno));
}

/* A socket bound to local (port 0) and connected to peer; -1 + errno. */
static int
transfer_socket (const struct sockaddr_storage *local,
                 const struct sockaddr_storage *peer, socklen_t plen)
{
  int fd = socket (peer->ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
                   0);
  if (fd < 0)
    return -1;
  struct sockaddr_storage l = *local;
  if (l.ss_family == AF_INET)
    ((struct sockaddr_in *) &l)->sin_port = 0;
  else
    ((struct sockaddr_in6 *) &l)->sin6_port = 0;
  socklen_t llen = l.ss_family == AF_INET ? sizeof (struct sockaddr_in)
                                          : sizeof (struct sockaddr_in6);
  if (bind (fd, (struct sockaddr *) &l, llen) < 0
      || connect (fd, (const struct sockaddr *) peer, plen) < 0)
    {
      int e = errno;
      close (fd);
      errno = e;
      return -1;
    }
  return fd;
}

static void
xfer_negotiate (Xfer *x, const DfTftpRequest *req)
{
  const DfTftpConfig *cfg = &x->srv->cfg;
  x->blksize = DF_TFTP_BLKSIZE_DEFAULT;
  x->windowsize = 1;
  if (req->opt.blksize)
    x->blksize = x->oack.blksize = MIN (req->opt.blksize, cfg->max_blksize);
  if (req->opt.windowsize)
    x->windowsize = x->oack.windowsize =
      MIN (req->opt.windowsize, cfg->max_windowsize);
  if (req->opt.timeout && req->opt.timeout <= DF_TFTP_TIMEOUT_MAX_S)
    {
      x->oack.timeout = req->opt.timeout;
      x->fixed_timeout_ms = req->opt.timeout * 1000u;
    }
  x->oack.tsize = req->opt.tsize;
  x->has_oack = x->oack.blksize || x->oack.windowsize || x->oack.timeout
                || x->oack.tsize;
}

static Xfer *
xfer_new (DfTftpServer *srv, const char *path, const char *peer,
          const char *source)
{
  Xfer *x = g_new0 (Xfer, 1);
  x->srv = srv;
  x->fd = -1;
  x->file_fd = -1;
  x->rto_ms = RTO_INITIAL_MS;
  x->started_us = g_get_monotonic_time ();
  g_strlcpy (x->path, path, sizeof x->path);
  g_strlcpy (x->peer, peer, sizeof x->peer);
  g_strlcpy (x->source, source, sizeof x->source);
  return x;
}

static void
xfer_start (Xfer *x)
{
  DfTftpServer *srv = x->srv;
  if (!x->data)
    x->buf = g_malloc (4 + x->blksize);
  x->nblocks = x->size / x->blksize + 1;
  /* Room for a whole window in the socket buffer (the kernel caps it). */
  int sndbuf = (int) MIN ((guint64) x->windowsize * (x->blksize + 64),
                          8u << 20);
  if (sndbuf > 212992)
    setsockopt (x->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  if (x->data)
    xfer_enable_gso (x);
  g_hash_table_add (srv->xfers, x);
  source_take (x);
  g_mutex_lock (&srv->stats_lock);
  srv->stats.transfers_started++;
  srv->stats.active++;
  g_mutex_unlock (&srv->stats_lock);
  if (x->has_oack)
    {
      x->state = XFER_WAIT_OACK_ACK;
      xfer_send_oack (x);
      return;
    }
  x->state = XFER_SENDING;
  x->base = x->next = 1;
  if (!xfer_send_window (x))
    xfer_finish (x, false, "read error");
}

/* Refuse a request over the per-source cap: answered, logged at most once
 * a second with the count of refusals not logged. */
static void
refuse_source (DfTftpServer *srv, const struct sockaddr_storage *peer,
               socklen_t plen, const char *source)
{
  send_error_to (srv, peer, plen, DF_TFTP_EUNDEF,
                 "too many transfers from this address, try again");
  gint64 now = g_get_monotonic_time ();
  if (now - srv->refusal_log_us < G_USEC_PER_SEC)
    {
      srv->refusals_unlogged++;
      return;
    }
  g_message ("tftp %s: request refused: %u transfers from this address "
             "already (%u more refusals not logged)", source,
             srv->cfg.max_per_source, srv->refusals_unlogged);
  srv->refusal_log_us = now;
  srv->refusals_unlogged = 0;
}

/* Check and start one request; refusals answered from the listen socket. */
static void
handle_request (DfTftpServer *srv, const guint8 *buf, size_t len,
                const struct sockaddr_storage *peer, socklen_t plen,
                const struct sockaddr_storage *local)
{
  char peer_s[64], source[48];
  format_peer (peer, peer_s, sizeof peer_s, source, sizeof source);
  DfTftpRequest req;
  int code = DF_TFTP_EUNDEF;
  const char *msg = NULL;
  g_autoptr (GError) err = NULL;
  char path[DF_TFTP_NAME_MAX + 1];
  if (!df_tftp_parse_request (buf, len, &req, &code, &err))
    msg = err->message;
  else if (req.opcode == DF_TFTP_WRQ)
    code = DF_TFTP_EACCESS, msg = "write requests are refused";
  else if (!df_tftp_clean_path (req.filename, path, &err))
    code = DF_TFTP_EACCESS, msg = err->message;
  else if (source_count (srv, source) >= srv->cfg.max_per_source)
    {
      stat_add (srv, &srv->stats.requests_refused, 1);
      refuse_source (srv, peer, plen, source);
      return;
    }
  else if (g_hash_table_size (srv->xfers) >= srv->cfg.max_transfers)
    code = DF_TFTP_EUNDEF, msg = "server busy, try again";
  if (msg)
    {
      stat_add (srv, &srv->stats.requests_refused, 1);
      if (code == DF_TFTP_SILENT)
        g_debug ("tftp %s: ignored: %s", peer_s, msg);
      else
        g_message ("tftp %s: request refused: %s", peer_s, msg);
      if (code != DF_TFTP_SILENT)
        send_error_to (srv, peer, plen, code, msg);
      return;
    }
  Xfer *x = xfer_new (srv, path, peer_s, source);
  if (!xfer_open_file (x, &code, &msg))
    {
      stat_add (srv, &srv->stats.requests_refused, 1);
      send_error_to (srv, peer, plen, code, msg);
      xfer_free (x);
      return;
    }
  x->fd = transfer_socket (local, peer, plen);
  struct epoll_event ev = { .events = EPOLLIN, .data.ptr = x };
  if (x->fd < 0 || epoll_ctl (srv->epoll_fd, EPOLL_CTL_ADD, x->fd, &ev) < 0)
    {
      g_message ("tftp %s: transfer socket: %s", peer_s, g_strerror (errno));
      send_error_to (srv, peer, plen, DF_TFTP_EUNDEF, "server error");
      xfer_free (x);
      return;
    }
  xfer_negotiate (x, &req);
  xfer_start (x);
}

/* The local address a datagram arrived on (IP_PKTINFO), else the
 * listening socket's own address. */
static void
local_address (DfTftpServer *srv, struct msghdr *mh,
               struct sockaddr_storage *local)
{
  socklen_t l = sizeof *local;
  getsockname (srv->listen_fd, (struct sockaddr *) local, &l);
  for (struct cmsghdr *c = CMSG_FIRSTHDR (mh); c; c = CMSG_NXTHDR (mh, c))
    if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO
        && local->ss_family == AF_INET)
      {
        struct in_pktinfo pi;
        memcpy (&pi, CMSG_DATA (c), sizeof pi);
        ((struct sockaddr_in *) local)->sin_addr = pi.ipi_addr;
      }
}

/* Take the queued requests (up to 64 per wake-up, fair to transfers). */
static void
on_listen (DfTftpServer *srv)
{
  int fd = srv->listen_fd;
  for (guint i = 0; i < 64; i++)
    {
      guint8 buf[DF_TFTP_REQ_MAX + 1];
      union { char c[CMSG_SPACE (sizeof (struct in_pktinfo))];
              struct cmsghdr align; } cbuf;
      struct sockaddr_storage peer, local;
      struct iovec iov = { buf, sizeof buf };
      struct msghdr mh = {
        .msg_name = &peer, .msg_namelen = sizeof peer,
        .msg_iov = &iov, .msg_iovlen = 1,
        .msg_control = cbuf.c, .msg_controllen = sizeof cbuf.c,
      };
      ssize_t n = recvmsg (fd, &mh, MSG_DONTWAIT);
      if (n < 0)
        break;
      local_address (srv, &mh, &local);
      /* A request longer than DF_TFTP_REQ_MAX arrives truncated (MSG_TRUNC
       * in msg_flags): the parser refuses len > DF_TFTP_REQ_MAX. */
      size_t len = (mh.msg_flags & MSG_TRUNC) ? sizeof buf : (size_t) n;
      handle_request (srv, buf, len, &peer, mh.msg_namelen, &local);
    }
}

/* ---- the tftp thread -------------------------------------------------- */

/* Retransmit for every transfer whose deadline passed and set
 * next_scan_us to the earliest deadline left. */
static void
scan_deadlines (DfTftpServer *srv, gint64 now)
{
  g_autoptr (GPtrArray) due = g_ptr_array_new ();
  GHashTableIter it;
  gpointer k;
  srv->next_scan_us = G_MAXINT64;
  g_hash_table_iter_init (&it, srv->xfers);
  while (g_hash_table_iter_next (&it, &k, NULL))
    {
      Xfer *x = k;
      if (x->deadline_us <= now)
        g_ptr_array_add (due, x);
      else
        srv->next_scan_us = MIN (srv->next_scan_us, x->deadline_us);
    }
  for (guint i = 0; i < due->len; i++)
    xfer_timeout (due->pdata[i]);   /* re-arms, or finishes */
}

/* Milliseconds epoll_wait may sleep: until the next scan, rounded up. */
static int
wait_ms (const DfTftpServer *srv)
{
  if (srv->next_scan_us == G_MAXINT64)
    return -1;
  gint64 left = srv->next_scan_us - g_get_monotonic_time ();
  return left <= 0 ? 0 : (int) MIN ((left + 999) / 1000, G_MAXINT);
}

#define EVENT_BATCH 64
static gpointer
tftp_thread (gpointer data)
{
  DfTftpServer *srv = data;
  for (;;)
    {
      struct epoll_event ev[EVENT_BATCH];
      int n = epoll_wait (srv->epoll_fd, ev, EVENT_BATCH, wait_ms (srv));
      if (n < 0 && errno != EINTR)
        g_error ("tftp: epoll_wait: %s", g_strerror (errno));
      for (int i = 0; i < n; i++)
        if (ev[i].data.ptr == &srv->wake_fd)
          return NULL;
        else if (ev[i].data.ptr == &srv->listen_fd)
          on_listen (srv);
        else
          xfer_on_readable (ev[i].data.ptr);
      gint64 now = g_get_monotonic_time ();
      if (now >= srv->next_scan_us)
        scan_deadlines (srv, now);
      g_ptr_array_set_size (srv->dead, 0);   /* frees finished transfers */
    }
}

static bool
epoll_watch (DfTftpServer *srv, int fd, gpointer tag, GError **err)
{
  struct epoll_event ev = { .events = EPOLLIN, .data.ptr = tag };
  if (epoll_ctl (srv->epoll_fd, EPOLL_CTL_ADD, fd, &ev) == 0)
    return true;
  df_set_error_errno (err, errno, "tftp: epoll_ctl");
  return false;
}

/* The epoll set, the stop eventfd and the thread. */
static bool
server_start_thread (DfTftpServer *srv, GError **err)
{
  srv->epoll_fd = epoll_create1 (EPOLL_CLOEXEC);
  if (srv->epoll_fd < 0)
    {
      df_set_error_errno (err, errno, "tftp: epoll_create1");
      return false;
    }
  srv->wake_fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (srv->wake_fd < 0)
    {
      df_set_error_errno (err, errno, "tftp: eventfd");
      return false;
    }
  if (!epoll_watch (srv, srv->listen_fd, &srv->listen_fd, err)
      || !epoll_watch (srv, srv->wake_fd, &srv->wake_fd, err))
    return false;
  srv->thread = g_thread_try_new ("tftp", tftp_thread, srv, err);
  return srv->thread != NULL;
}

/* ---- server ----------------------------------------------------------- */

static void
config_defaults (DfTftpConfig *c)
{
  if (!c->max_transfers)
    c->max_transfers = 1024;
  if (!c->max_blksize || c->max_blksize > DF_TFTP_BLKSIZE_MAX)
    c->max_blksize = DF_TFTP_BLKSIZE_MAX;
  if (!c->max_windowsize)
    c->max_windowsize = 256;
  if (!c->cache_bytes)
    c->cache_bytes = 128 << 20;
  if (!c->cache_file_max)
    c->cache_file_max = 64 << 20;
  if (!c->max_retries)
    c->max_retries = 6;
  if (!c->max_per_source)
    c->max_per_source = 8;
  if (!c->max_transfer_s)
    c->max_transfer_s = 120;
}

DfTftpServer *
df_tftp_server_new (const DfTftpConfig *cfg, int listen_fd, GError **err)
{
  int root_fd = open (cfg->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root_fd < 0)
    {
      df_set_error_errno (err, errno, "tftp root %s", cfg->root);
      close (listen_fd);
      return NULL;
    }
  DfTftpServer *srv = g_new0 (DfTftpServer, 1);
  srv->cfg = *cfg;
  config_defaults (&srv->cfg);
  srv->root = g_strdup (cfg->root);
  srv->cfg.root = srv->root;
  srv->root_fd = root_fd;
  srv->listen_fd = listen_fd;
  int one = 1;
  setsockopt (listen_fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
  srv->epoll_fd = srv->wake_fd = -1;
  g_mutex_init (&srv->stats_lock);
  srv->next_scan_us = G_MAXINT64;
  srv->xfers = g_hash_table_new_full (NULL, NULL, xfer_free, NULL);
  srv->dead = g_ptr_array_new_with_free_func (xfer_free);
  srv->cache = g_hash_table_new_full (file_key_hash, file_key_equal, NULL,
                                      cache_entry_free);
  srv->per_source = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                           NULL);
  if (!server_start_thread (srv, err))
    {
      df_tftp_server_free (srv);
      return NULL;
    }
  return srv;
}

void
df_tftp_server_free (DfTftpServer *srv)
{
  if (!srv)
    return;
  if (srv->thread)
    {
      guint64 one = 1;
      if (write (srv->wake_fd, &one, sizeof one) < 0)
        g_error ("tftp: cannot stop the thread: %s", g_strerror (errno));
      g_thread_join (srv->thread);
    }
  g_hash_table_destroy (srv->xfers);
  g_ptr_array_unref (srv->dead);
  g_hash_table_destroy (srv->cache);
  g_hash_table_destroy (srv->per_source);
  if (srv->epoll_fd >= 0)
    close (srv->epoll_fd);
  if (srv->wake_fd >= 0)
    close (srv->wake_fd);
  close (srv->listen_fd);
  close (srv->root_fd);
  g_mutex_clear (&srv->stats_lock);
  g_free (srv->root);
  g_free (srv);
}

void
df_tftp_server_stats (DfTftpServer *srv, DfTftpStats *out)
{
  g_mutex_lock (&srv->stats_lock);
  *out = srv->stats;
  g_mutex_unlock (&srv->stats_lock);
}
