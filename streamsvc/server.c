/* streamsvc: NBD transport (see server.h).
 *
 * Threads: one acceptor (epoll over the listening sockets + a stop
 * eventfd) and N workers (epoll over their connections + a wake eventfd
 * + a one-second timerfd that ticks the engines' clocks).  A new
 * connection is created by the acceptor and pushed on a worker's queue;
 * from then on only that worker touches it.
 */
#define G_LOG_DOMAIN "streamsvc-server"

#include "server.h"

#include <errno.h>
#include <fcntl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include "conf.h"
#include "iscsi.h"
#include "nbd.h"
#include "privilege.h"
#include "tls.h"

#define MAX_EVENTS 64
#define SHUTDOWN_DRAIN_MS 5000
#define TICK_S 1  /* engine clock period (iSCSI NOP-In precision) */
/* At the fd limit the acceptor stops polling its listeners this long. */
#define FD_LIMIT_PAUSE_MS 250
/* Threads that run the engines' blocking work (engine.h DfEngineJob:
 * flushes), so that a worker never waits on the disk. */
#define IO_THREADS 4

typedef enum { PROTO_NBD, PROTO_ISCSI } proto;

typedef struct {
  int fd;
  char *unix_path; /* owned; unlinked at free */
  proto proto;
} listener;

typedef struct worker worker;

/* One client connection (owned by its worker). */
typedef struct {
  DfStreamServer *srv; /* borrowed */
  worker *w;           /* borrowed: the worker that drives it */
  int fd;
  DfEngineConn *eng; /* owned: an nbd_conn or iscsi_conn (engine.h) */
  DfTlsConn *tls;    /* owned, once the engine asked for TLS; then every
                      * byte goes through it */
  bool handshaking;  /* tls is not up yet */
  uint32_t interest; /* events registered with epoll */
  char *client;      /* owned: "127.0.0.1:4242", "unix" (log lines) */
  char *source;      /* owned: the address counted against
                      * max_per_source, NULL for unix sockets */
  gint64 accepted_us;      /* monotonic */
  guint64 messages_seen;   /* DfEngineProgress.messages at the last tick */
  gint64 partial_since_us; /* first tick that saw this partial message */
  guint64 tick_messages;   /* DfEngineProgress.messages at the last tick,
                            * for release_when_idle */
  bool released;           /* buffers given back since the last message */
  /* The engine's job on the I/O pool (conn_offload): while busy the fd is
   * out of the epoll set and the engine reads nothing; a connection
   * dropped meanwhile is dead and freed when its job comes back. */
  DfEngineJob *job;        /* borrowed from the engine */
  bool busy, dead;
} srv_conn;

struct worker {
  DfStreamServer *srv;
  GThread *thread;
  int epfd, wakefd;
  int tickfd;            /* timerfd, TICK_S period */
  GAsyncQueue *incoming; /* srv_conn *, pushed by the acceptor */
  GAsyncQueue *done;     /* srv_conn * whose job ended, pushed by the pool */
  GHashTable *conns;     /* srv_conn * set, worker-only */
  guint busy;            /* its connections with a job in the pool */
};

struct DfStreamServer {
  DfExports *exports;   /* borrowed */
  DfSessions *sessions; /* borrowed */
  DfIscsiTarget *iscsi; /* owned: the target of every iSCSI listener */
  DfTls *tls;           /* borrowed: NBD TLS, NULL when off */
  GArray *listeners;    /* listener */
  DfStreamLiveness liveness;
  DfStreamLimits limits;
  GMutex sources_lock;
  GHashTable *sources;  /* source address (owned) -> open connections */
  int reserve_fd;       /* /dev/null, given up at the fd limit to refuse */
  DfLogLimit log_refused, log_fd_limit, log_handshake, log_request;
  worker *workers;
  guint n_workers, next_worker;
  GThread *acceptor;
  GThreadPool *io_pool; /* runs engine jobs (srv_conn *) */
  int stopfd;           /* eventfd: acceptor stop */
  gint stopping;
  bool running;
};

/* ---- per-source connection counts ------------------------------------------ */

/* Count one more connection from source; false (nothing counted) when it
 * already has max_per_source.  NULL (unix) is never counted. */
static bool
source_take (DfStreamServer *s, const char *source, guint *open)
{
  guint n;

  *open = 0;
  if (source == NULL || s->limits.max_per_source == 0)
    return true;
  g_mutex_lock (&s->sources_lock);
  n = GPOINTER_TO_UINT (g_hash_table_lookup (s->sources, source));
  *open = n;
  if (n < s->limits.max_per_source)
    g_hash_table_insert (s->sources, g_strdup (source),
                         GUINT_TO_POINTER (n + 1));
  g_mutex_unlock (&s->sources_lock);
  return n < s->limits.max_per_source;
}

static void
source_release (DfStreamServer *s, const char *source)
{
  guint n;

  if (source == NULL || s->limits.max_per_source == 0)
    return;
  g_mutex_lock (&s->sources_lock);
  n = GPOINTER_TO_UINT (g_hash_table_lookup (s->sources, source));
  g_assert (n > 0);
  if (n == 1)
    g_hash_table_remove (s->sources, source);
  else
    g_hash_table_insert (s->sources, g_strdup (source),
                         GUINT_TO_POINTER (n - 1));
  g_mutex_unlock (&s->sources_lock);
}

/* ---- connections ----------------------------------------------------------- */

static void
srv_conn_free (srv_conn *sc)
{
  df_engine_free (sc->eng); /* before close: iSCSI reinstatement uses fd */
  df_tls_conn_free (sc->tls);
  close (sc->fd);
  source_release (sc->srv, sc->source);
  g_free (sc->client);
  g_free (sc->source);
  g_free (sc);
}

static void
worker_drop (worker *w, srv_conn *sc)
{
  epoll_ctl (w->epfd, EPOLL_CTL_DEL, sc->fd, NULL);
  g_hash_table_remove (w->conns, sc);
  if (sc->busy)
    sc->dead = true; /* its job still uses the engine: freed at its end */
  else
    srv_conn_free (sc);
}

static void wake (int fd);

/* On a pool thread: run the job (engine.h: a flush), hand the
 * connection back to its worker. */
static void
io_run (gpointer data, gpointer user_data)
{
  srv_conn *sc = data;
  DfEngineJob *job = sc->job;
  worker *w = sc->w; /* sc may be freed once pushed */

  job->err = 0;
  job->ret = df_blk_flush (job->blk, &job->err);
  g_async_queue_push (w->done, sc);
  wake (w->wakefd);
}

/* The engine's DfEngineOffload (on the worker, inside df_engine_process):
 * the job goes to the pool; conn_event takes the fd out of epoll. */
static void
conn_offload (void *opaque, DfEngineJob *job)
{
  srv_conn *sc = opaque;

  g_assert (!sc->busy);
  sc->job = job;
  sc->busy = true;
  sc->w->busy++;
  g_thread_pool_push (sc->srv->io_pool, sc, NULL);
}

/* The job of sc came back: false when sc was dropped meanwhile (now
 * freed), else the engine has taken the result (its reply is queued). */
static bool
job_finish (worker *w, srv_conn *sc)
{
  sc->busy = false;
  w->busy--;
  if (sc->dead)
    {
      srv_conn_free (sc);
      return false;
    }
  sc->job->done (sc->job);
  return true;
}

static void
set_interest (worker *w, srv_conn *sc, uint32_t ev)
{
  struct epoll_event e = { .events = ev, .data.ptr = sc };

  if (sc->interest == ev)
    return;
  if (epoll_ctl (w->epfd, EPOLL_CTL_MOD, sc->fd, &e) == 0)
    sc->interest = ev;
}

/* A non-blocking socket as an engine's sink (engine.h). */
static gssize
send_sink (void *opaque, const uint8_t *buf, size_t len)
{
  const srv_conn *sc = opaque;
  ssize_t n;

  if (sc->tls != NULL)
    return df_tls_conn_write (sc->tls, buf, len);
  /* a reply header whose data goes from a file next: one segment */
  n = send (sc->fd, buf, len,
            MSG_NOSIGNAL | (df_engine_span_follows (sc->eng) ? MSG_MORE : 0));
  if (n >= 0)
    return n;
  return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
}

/* A file span of the output straight from the page cache to the socket
 * (engine.h DfEngineSpanSink; plain sockets only). */
static gssize
sendfile_sink (void *opaque, const DfEngineSpan *span)
{
  const srv_conn *sc = opaque;
  off_t off = (off_t) span->offset;
  ssize_t n = sendfile (sc->fd, span->fd, &off, span->length);

  if (n > 0)
    return n;
  if (n == 0)
    {
      /* the span lies inside its file (blk.h): the file shrank */
      g_warning ("connection from %s: sendfile: unexpected end of file",
                 sc->client);
      return -1;
    }
  if (errno == EINVAL || errno == ENOSYS)
    return df_engine_span_copy (span, send_sink, opaque); /* no sendfile */
  return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
}

/* Send pending output, re-running the engine when it held requests back
 * for backpressure.  Returns false when the connection must go. */
static bool
conn_flush (srv_conn *sc)
{
  return df_engine_pump_spans (sc->eng, send_sink,
                               sc->tls == NULL ? sendfile_sink : NULL, sc);
}

/* Read what is there, run the engine.  false: close the connection. */
static bool
conn_read (srv_conn *sc)
{
  size_t room;
  uint8_t *buf = df_engine_input_space (sc->eng, &room);
  ssize_t n;

  if (sc->tls != NULL)
    {
      n = df_tls_conn_read (sc->tls, buf, room);
      if (n <= 0)
        return n == 0;
      df_engine_input_commit (sc->eng, (size_t) n);
      df_engine_process (sc->eng);
      return true;
    }
  n = read (sc->fd, buf, room);
  if (n == 0)
    return false;
  if (n < 0)
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
  df_engine_input_commit (sc->eng, (size_t) n);
  df_engine_process (sc->eng);
  return true;
}

/* Run the TLS handshake as far as the socket allows; once it is up the
 * engine starts over on it.  false: it failed (logged), drop the
 * connection. */
static bool
conn_handshake (srv_conn *sc)
{
  switch (df_tls_conn_handshake (sc->tls))
    {
    case DF_TLS_AGAIN:
      return true;
    case DF_TLS_DONE:
      sc->handshaking = false;
      df_engine_tls_started (sc->eng, df_tls_conn_identity (sc->tls));
      return true;
    case DF_TLS_FAILED:
    default:
      return false;
    }
}

/* The engine acknowledged STARTTLS and its output is out: from now on the
 * socket speaks TLS. */
static bool
conn_start_tls (DfStreamServer *s, srv_conn *sc)
{
  if (s->tls == NULL)
    return false; /* the engine was never offered TLS */
  sc->tls = df_tls_conn_new (s->tls, sc->fd, sc->client);
  sc->handshaking = true;
  return conn_handshake (sc);
}

/* After reading: send, start TLS when asked, and read what TLS already
 * decrypted (the socket will not signal it).  false: drop. */
static bool
conn_pump (worker *w, srv_conn *sc, bool *pending)
{
  for (;;)
    {
      if (!conn_flush (sc))
        return false;
      *pending = df_engine_output_pending (sc->eng);
      if (*pending || sc->handshaking)
        return true;
      if (df_engine_should_close (sc->eng))
        return false;
      if (sc->tls == NULL && df_engine_tls_wanted (sc->eng))
        {
          if (!conn_start_tls (w->srv, sc))
            return false;
          continue;
        }
      if (sc->tls == NULL || !df_tls_conn_pending (sc->tls))
        return true;
      if (!conn_read (sc))
        return false;
    }
}

/* Should this event read?  Data or an end; or, under TLS, a read that
 * stopped for the socket to take bytes (want_write with no output of the
 * engine's waiting) when the socket can. */
static bool
conn_readable (srv_conn *sc, uint32_t ev)
{
  if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))
    return true;
  if (sc->tls == NULL || !(ev & EPOLLOUT))
    return false;
  return !df_engine_output_pending (sc->eng)
         && df_tls_conn_want_write (sc->tls);
}

static void
conn_event (worker *w, srv_conn *sc, uint32_t ev)
{
  bool pending;
  bool tls_write;

  if (sc->handshaking && !conn_handshake (sc))
    {
      worker_drop (w, sc);
      return;
    }
  if (!sc->handshaking && conn_readable (sc, ev)
      && !df_engine_should_close (sc->eng) && !conn_read (sc))
    {
      worker_drop (w, sc);
      return;
    }
  if (!conn_pump (w, sc, &pending))
    {
      worker_drop (w, sc);
      return;
    }
  if (sc->busy)
    {
      /* Nothing is read or sent until the job is back (job_resume). */
      epoll_ctl (w->epfd, EPOLL_CTL_DEL, sc->fd, NULL);
      sc->interest = 0;
      return;
    }
  /* Backpressure: stop reading while replies are queued (or TLS waits
   * for the socket to take its bytes). */
  tls_write = sc->tls != NULL && df_tls_conn_want_write (sc->tls);
  set_interest (w, sc, pending || tls_write ? EPOLLOUT : EPOLLIN);
}

/* The job of sc came back: run what the connection received meanwhile,
 * and watch its fd again. */
static void
job_resume (worker *w, srv_conn *sc)
{
  struct epoll_event e = { .events = EPOLLIN, .data.ptr = sc };

  if (!job_finish (w, sc))
    return;
  df_engine_process (sc->eng);
  if (epoll_ctl (w->epfd, EPOLL_CTL_ADD, sc->fd, &e) < 0)
    {
      g_warning ("epoll_ctl: %s", g_strerror (errno));
      worker_drop (w, sc);
      return;
    }
  sc->interest = EPOLLIN;
  conn_event (w, sc, 0);
}

static void
worker_adopt (worker *w, srv_conn *sc)
{
  struct epoll_event e = { .events = EPOLLIN, .data.ptr = sc };

  if (epoll_ctl (w->epfd, EPOLL_CTL_ADD, sc->fd, &e) < 0)
    {
      g_warning ("epoll_ctl: %s", g_strerror (errno));
      srv_conn_free (sc);
      return;
    }
  sc->interest = EPOLLIN;
  g_hash_table_add (w->conns, sc);
  /* The greeting is already queued. */
  conn_event (w, sc, 0);
}

static void G_GNUC_PRINTF (2, 3)
log_limited (DfLogLimit *l, const char *fmt, ...)
{
  guint suppressed;
  g_autofree char *msg = NULL;
  va_list ap;

  if (!df_log_limit_pass (l, &suppressed))
    return;
  va_start (ap, fmt);
  msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  if (suppressed > 0)
    g_message ("%s (and %u more like it since the last such line)", msg,
               suppressed);
  else
    g_message ("%s", msg);
}

/* The limits' deadlines (DfStreamLimits), checked every tick.  false: the
 * connection is past one (logged): drop it. */
static bool
conn_within_deadlines (DfStreamServer *s, srv_conn *sc, gint64 now)
{
  const DfStreamLimits *lim = &s->limits;
  DfEngineProgress p;

  df_engine_progress (sc->eng, &p);
  if (p.phase == DF_ENGINE_HANDSHAKE)
    {
      if (lim->handshake_timeout_s == 0
          || now - sc->accepted_us
               < (gint64) lim->handshake_timeout_s * G_USEC_PER_SEC)
        return true;
      log_limited (&s->log_handshake, "connection from %s: no session "
                   "within %u s (--handshake-timeout): closing", sc->client,
                   lim->handshake_timeout_s);
      return false;
    }
  if (p.phase != DF_ENGINE_PARTIAL || p.messages != sc->messages_seen
      || sc->partial_since_us == 0)
    {
      sc->messages_seen = p.messages;
      sc->partial_since_us = p.phase == DF_ENGINE_PARTIAL ? now : 0;
      return true;
    }
  if (lim->request_timeout_s == 0
      || now - sc->partial_since_us
           < (gint64) lim->request_timeout_s * G_USEC_PER_SEC)
    return true;
  log_limited (&s->log_request, "connection from %s: a request still "
               "incomplete after %u s (--request-timeout): closing",
               sc->client, lim->request_timeout_s);
  return false;
}

/* A connection that took no message for a whole tick and has nothing
 * to send gives back its high-water buffers, once per idle spell (engine.h
 * release_idle).  Returns true when it did. */
static bool
release_when_idle (srv_conn *sc)
{
  DfEngineProgress p;
  size_t pending;

  df_engine_progress (sc->eng, &p);
  if (p.messages != sc->tick_messages)
    {
      sc->tick_messages = p.messages;
      sc->released = false;
      return false;
    }
  df_engine_output (sc->eng, &pending);
  if (sc->released || p.phase != DF_ENGINE_IDLE || pending > 0)
    return false;
  df_engine_release_idle (sc->eng);
  sc->released = true;
  return true;
}

/* Freed buffers sit between live ones in malloc's heaps and stay in RSS:
 * hand their pages back to the kernel (glibc; elsewhere free is enough). */
static void
return_freed_memory (void)
{
#ifdef __GLIBC__
  malloc_trim (0);
#endif
}

/* The worker's clock: the limits' deadlines, then the tick of every
 * engine that has one; a connection past a deadline or whose peer is dead
 * is dropped at once, the others get their new output (an iSCSI NOP-In)
 * sent. */
static void
worker_tick (worker *w)
{
  uint64_t expirations;
  gint64 now = g_get_monotonic_time ();
  bool released = false;
  GList *conns;

  if (read (w->tickfd, &expirations, sizeof expirations) < 0
      && errno != EAGAIN)
    g_warning ("timerfd read: %s", g_strerror (errno));
  conns = g_hash_table_get_keys (w->conns); /* conn_event may drop */
  for (GList *l = conns; l != NULL; l = l->next)
    {
      srv_conn *sc = l->data;

      released |= release_when_idle (sc);
      if (!conn_within_deadlines (w->srv, sc, now))
        worker_drop (w, sc);
      else if (!df_engine_has_clock (sc->eng))
        continue;
      else if (!df_engine_tick (sc->eng, now))
        worker_drop (w, sc);
      else
        conn_event (w, sc, 0);
    }
  g_list_free (conns);
  if (released)
    return_freed_memory ();
}

/* Shutdown: reply to what was received (blocking, bounded), then close. */
static void
conn_finish (srv_conn *sc)
{
  gint64 deadline = g_get_monotonic_time () + SHUTDOWN_DRAIN_MS * 1000;

  for (;;)
    {
      struct pollfd pfd = { .fd = sc->fd, .events = POLLOUT };
      int left = (int) ((deadline - g_get_monotonic_time ()) / 1000);

      if (!conn_flush (sc))
        break;
      if (!df_engine_output_pending (sc->eng)
          || left <= 0 || poll (&pfd, 1, left) <= 0)
        break;
    }
}

static void
worker_shutdown (worker *w)
{
  GHashTableIter it;
  gpointer key;
  srv_conn *sc;

  while ((sc = g_async_queue_try_pop (w->incoming)) != NULL)
    srv_conn_free (sc);
  while (w->busy > 0) /* jobs in the pool: their replies go out below */
    job_finish (w, g_async_queue_pop (w->done));
  g_hash_table_iter_init (&it, w->conns);
  while (g_hash_table_iter_next (&it, &key, NULL))
    {
      sc = key;
      conn_finish (sc);
      g_hash_table_iter_remove (&it);
      srv_conn_free (sc);
    }
}

static char tick_tag; /* epoll data.ptr of the timerfd */

static gpointer
worker_main (gpointer data)
{
  worker *w = data;
  struct epoll_event ev[MAX_EVENTS];

  while (!g_atomic_int_get (&w->srv->stopping))
    {
      int n = epoll_wait (w->epfd, ev, MAX_EVENTS, -1);
      bool tick = false;

      if (n < 0 && errno != EINTR)
        {
          g_warning ("epoll_wait: %s", g_strerror (errno));
          break;
        }
      for (int i = 0; i < n; i++)
        {
          if (ev[i].data.ptr == &tick_tag)
            tick = true; /* after the batch: it may drop any conn */
          else if (ev[i].data.ptr == NULL)
            {
              uint64_t v;
              srv_conn *sc;
              if (read (w->wakefd, &v, sizeof v) < 0 && errno != EAGAIN)
                g_warning ("eventfd read: %s", g_strerror (errno));
              while ((sc = g_async_queue_try_pop (w->incoming)) != NULL)
                worker_adopt (w, sc);
              while ((sc = g_async_queue_try_pop (w->done)) != NULL)
                job_resume (w, sc);
            }
          else
            conn_event (w, ev[i].data.ptr, ev[i].events);
        }
      if (tick)
        worker_tick (w);
    }
  worker_shutdown (w);
  return NULL;
}

/* ---- acceptor ------------------------------------------------------------- */

/* The peer of an accepted socket: *client its name for log lines
 * ("127.0.0.1:4242", "[::1]:4242", "unix"), *source its address for the
 * per-source count (NULL for unix).  New strings. */
static void
peer_name (int fd, char **client, char **source)
{
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  char host[NI_MAXHOST], serv[NI_MAXSERV];

  *source = NULL;
  if (getpeername (fd, (struct sockaddr *) &ss, &len) < 0
      || ss.ss_family == AF_UNIX)
    {
      *client = g_strdup ("unix");
      return;
    }
  if (getnameinfo ((struct sockaddr *) &ss, len, host, sizeof host, serv,
                   sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    {
      *client = g_strdup ("?");
      *source = g_strdup ("?");
      return;
    }
  *client = ss.ss_family == AF_INET6 ? g_strdup_printf ("[%s]:%s", host, serv)
                                     : g_strdup_printf ("%s:%s", host, serv);
  *source = g_strdup (host);
}

static char *sock_name (int fd);

/* Dead-peer detection on an accepted TCP connection (not unix). */
static void
set_keepalive (DfStreamServer *s, int fd, const char *client)
{
  g_autoptr (GError) err = NULL;

  if (!df_tcp_set_keepalive (fd, s->liveness.tcp_keepalive_s, &err))
    g_warning ("connection from %s: %s", client, err->message);
}

/* A new connection (fd owned) to a worker, or closed at once when its
 * source has max_per_source open already. */
static void
hand_over (DfStreamServer *s, int fd, const listener *l)
{
  worker *w;
  g_autofree char *client = NULL, *source = NULL;
  srv_conn *sc;
  uint64_t one = 1;
  int on = 1;
  guint open;

  peer_name (fd, &client, &source);
  if (!source_take (s, source, &open))
    {
      log_limited (&s->log_refused, "connection from %s refused: %u open "
                   "from %s already (--max-connections-per-source)", client,
                   open, source);
      close (fd);
      return;
    }
  w = &s->workers[s->next_worker++ % s->n_workers];
  sc = g_new0 (srv_conn, 1);
  setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on); /* ENOTSUP on unix */
  if (l->unix_path == NULL)
    set_keepalive (s, fd, client);
  sc->srv = s;
  sc->w = w;
  sc->fd = fd;
  sc->client = g_strdup (client);
  sc->source = g_steal_pointer (&source);
  sc->accepted_us = g_get_monotonic_time ();
  if (l->proto == PROTO_ISCSI)
    {
      g_autofree char *local = sock_name (fd);
      iscsi_conn *ic = iscsi_conn_new (s->iscsi, client, local);
      iscsi_conn_set_fd (ic, fd);
      iscsi_conn_set_nop (ic, s->liveness.nop_interval_s,
                          s->liveness.nop_timeout_s);
      sc->eng = iscsi_conn_engine (ic);
    }
  else
    {
      nbd_conn *nc = nbd_conn_new (s->exports, s->sessions, client);
      nbd_conn_set_fd (nc, fd);
      nbd_conn_set_splice (nc, true); /* sendfile_sink; not under TLS */
      if (s->tls != NULL)
        nbd_conn_set_tls (nc, df_tls_mode (s->tls));
      sc->eng = nbd_conn_engine (nc);
    }
  sc->eng->offload = conn_offload;
  sc->eng->offload_opaque = sc;
  g_debug ("connection from %s", client);
  g_async_queue_push (w->incoming, sc);
  if (write (w->wakefd, &one, sizeof one) < 0)
    g_warning ("eventfd write: %s", g_strerror (errno));
}

/* At the fd limit: refuse what waits on l by closing it (the reserve fd
 * makes room for one accept at a time), so clients see a close, not a
 * hang.  Returns how many were refused. */
static guint
refuse_pending (DfStreamServer *s, const listener *l)
{
  guint n = 0;

  while (s->reserve_fd >= 0)
    {
      int fd;

      close (s->reserve_fd);
      fd = accept4 (l->fd, NULL, NULL, SOCK_CLOEXEC);
      if (fd >= 0)
        {
          close (fd);
          n++;
        }
      s->reserve_fd = open ("/dev/null", O_RDONLY | O_CLOEXEC);
      if (fd < 0)
        break;
    }
  return n;
}

/* Accept what waits on l.  Returns false at the fd limit (the caller stops
 * polling the listeners for FD_LIMIT_PAUSE_MS). */
static bool
accept_all (DfStreamServer *s, const listener *l)
{
  for (;;)
    {
      int fd = accept4 (l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
      int e = errno;

      if (fd >= 0)
        {
          hand_over (s, fd, l);
          continue;
        }
      if (e == EAGAIN || e == EWOULDBLOCK || e == EINTR || e == ECONNABORTED)
        return true;
      if (e == EMFILE || e == ENFILE)
        {
          guint refused = refuse_pending (s, l);
          log_limited (&s->log_fd_limit, "accept: %s: %u connection%s "
                       "closed unserved (raise the fd limit, LimitNOFILE=)",
                       g_strerror (e), refused, refused == 1 ? "" : "s");
          return false;
        }
      log_limited (&s->log_fd_limit, "accept: %s", g_strerror (e));
      return false;
    }
}

/* Poll the listeners (EPOLLIN) or not (0). */
static void
listeners_poll (DfStreamServer *s, int epfd, uint32_t events)
{
  for (guint i = 0; i < s->listeners->len; i++)
    {
      struct epoll_event e = { .events = events };
      e.data.fd = g_array_index (s->listeners, listener, i).fd;
      epoll_ctl (epfd, EPOLL_CTL_MOD, e.data.fd, &e);
    }
}

static const listener *
listener_of (DfStreamServer *s, int fd)
{
  for (guint i = 0; i < s->listeners->len; i++)
    if (g_array_index (s->listeners, listener, i).fd == fd)
      return &g_array_index (s->listeners, listener, i);
  return NULL;
}

static gpointer
acceptor_main (gpointer data)
{
  DfStreamServer *s = data;
  int epfd = epoll_create1 (EPOLL_CLOEXEC);
  struct epoll_event e = { .events = EPOLLIN, .data.fd = s->stopfd };
  bool paused = false; /* at the fd limit: listeners not polled */

  epoll_ctl (epfd, EPOLL_CTL_ADD, s->stopfd, &e);
  for (guint i = 0; i < s->listeners->len; i++)
    {
      e.data.fd = g_array_index (s->listeners, listener, i).fd;
      epoll_ctl (epfd, EPOLL_CTL_ADD, e.data.fd, &e);
    }
  while (!g_atomic_int_get (&s->stopping))
    {
      struct epoll_event ev[8];
      int n = epoll_wait (epfd, ev, G_N_ELEMENTS (ev),
                          paused ? FD_LIMIT_PAUSE_MS : -1);
      bool at_limit = false;

      for (int i = 0; i < n; i++)
        {
          const listener *l = listener_of (s, ev[i].data.fd);
          if (l != NULL && !accept_all (s, l))
            at_limit = true;
        }
      if (at_limit != paused)
        listeners_poll (s, epfd, at_limit ? 0 : EPOLLIN);
      paused = at_limit;
    }
  close (epfd);
  return NULL;
}

/* ---- listeners ------------------------------------------------------------ */

static int
listen_unix (const char *path, GError **err)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  struct stat st;
  int fd;

  if (strlen (path) >= sizeof sun.sun_path)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "unix socket path too long: %s", path);
      return -1;
    }
  strcpy (sun.sun_path, path);
  if (lstat (path, &st) == 0 && S_ISSOCK (st.st_mode))
    unlink (path); /* stale socket of a previous run */
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0 || bind (fd, (struct sockaddr *) &sun, sizeof sun) < 0
      || listen (fd, SOMAXCONN) < 0)
    {
      df_set_error_errno (err, errno, "cannot listen on unix:%s", path);
      if (fd >= 0)
        close (fd);
      return -1;
    }
  /* bound as root in a directory of the farm's user: the socket is the
   * user's too, like everything else there */
  if (!df_adopt_owner (-1, path, err))
    {
      close (fd);
      unlink (path);
      return -1;
    }
  return fd;
}

static int
listen_inet (const struct addrinfo *ai, GError **err)
{
  int on = 1;
  int fd = socket (ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK
                   | SOCK_CLOEXEC, ai->ai_protocol);

  if (fd < 0)
    {
      df_set_error_errno (err, errno, "socket");
      return -1;
    }
  setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  if (ai->ai_family == AF_INET6)
    setsockopt (fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
  if (bind (fd, ai->ai_addr, ai->ai_addrlen) < 0
      || listen (fd, SOMAXCONN) < 0)
    {
      df_set_error_errno (err, errno, "cannot listen");
      close (fd);
      return -1;
    }
  return fd;
}

static char *
sock_name (int fd)
{
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  char host[NI_MAXHOST], serv[NI_MAXSERV];

  if (getsockname (fd, (struct sockaddr *) &ss, &len) < 0
      || getnameinfo ((struct sockaddr *) &ss, len, host, sizeof host, serv,
                      sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return g_strdup ("?");
  return ss.ss_family == AF_INET6 ? g_strdup_printf ("[%s]:%s", host, serv)
                                  : g_strdup_printf ("%s:%s", host, serv);
}

static void
add_listener (DfStreamServer *s, int fd, const char *unix_path, proto pr)
{
  listener l = { fd, g_strdup (unix_path), pr };

  g_array_append_val (s->listeners, l);
}

static bool
listen_host (DfStreamServer *s, const DfListenAddr *addr, proto pr,
             GString *bound, GError **err)
{
  struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
                            .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
  struct addrinfo *res = NULL;
  char port[8];
  int rc;

  g_snprintf (port, sizeof port, "%u", addr->port);
  rc = getaddrinfo (addr->host, port, &hints, &res);
  if (rc != 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID, "address %s:%s: %s",
                   addr->host ? addr->host : "*", port, gai_strerror (rc));
      return false;
    }
  for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next)
    {
      int fd = listen_inet (ai, err);
      g_autofree char *name = NULL;

      if (fd < 0)
        {
          g_prefix_error (err, "%s:%s: ", addr->host ? addr->host : "*",
                          port);
          freeaddrinfo (res);
          return false;
        }
      add_listener (s, fd, NULL, pr);
      name = sock_name (fd);
      g_string_append_printf (bound, "%s%s", bound->len ? "\n" : "", name);
      if (addr->port == 0)
        break; /* one socket: several would get different ports */
    }
  freeaddrinfo (res);
  return true;
}

bool
df_stream_server_listen_nbd (DfStreamServer *s, const DfListenAddr *addr,
                             char **bound, GError **err)
{
  g_autoptr (GString) b = g_string_new (NULL);

  g_return_val_if_fail (!s->running, false);
  if (addr->unix_path != NULL)
    {
      int fd = listen_unix (addr->unix_path, err);
      if (fd < 0)
        return false;
      add_listener (s, fd, addr->unix_path, PROTO_NBD);
      g_string_append_printf (b, "unix:%s", addr->unix_path);
    }
  else if (!listen_host (s, addr, PROTO_NBD, b, err))
    return false;
  *bound = g_string_free (g_steal_pointer (&b), FALSE);
  return true;
}

bool
df_stream_server_listen_iscsi (DfStreamServer *s, const DfListenAddr *addr,
                               char **bound, GError **err)
{
  g_autoptr (GString) b = g_string_new (NULL);

  g_return_val_if_fail (!s->running, false);
  if (addr->unix_path != NULL)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "iSCSI listens on TCP only (unix:%s given)",
                   addr->unix_path);
      return false;
    }
  if (!listen_host (s, addr, PROTO_ISCSI, b, err))
    return false;
  *bound = g_string_free (g_steal_pointer (&b), FALSE);
  return true;
}

/* ---- lifecycle -------------------------------------------------------------- */

DfStreamServer *
df_stream_server_new (DfExports *ex, DfSessions *ss, guint n_threads)
{
  DfStreamServer *s = g_new0 (DfStreamServer, 1);

  s->exports = ex;
  s->sessions = ss;
  s->iscsi = df_iscsi_target_new (ex, ss);
  s->listeners = g_array_new (FALSE, FALSE, sizeof (listener));
  s->n_workers = n_threads ? n_threads : MAX (1u, g_get_num_processors ());
  s->stopfd = -1;
  s->liveness = (DfStreamLiveness) { DF_TCP_KEEPALIVE_DEFAULT,
                                     ISCSI_NOP_INTERVAL_DEFAULT,
                                     ISCSI_NOP_TIMEOUT_DEFAULT };
  s->limits = (DfStreamLimits) { DF_HANDSHAKE_TIMEOUT_DEFAULT,
                                 DF_REQUEST_TIMEOUT_DEFAULT,
                                 DF_MAX_CONN_PER_SOURCE_DEFAULT };
  g_mutex_init (&s->sources_lock);
  s->sources = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  s->reserve_fd = open ("/dev/null", O_RDONLY | O_CLOEXEC);
  return s;
}

void
df_stream_server_set_limits (DfStreamServer *s, const DfStreamLimits *l)
{
  g_return_if_fail (!s->running);
  g_return_if_fail (l->handshake_timeout_s <= DF_TIMEOUT_MAX
                    && l->request_timeout_s <= DF_TIMEOUT_MAX
                    && l->max_per_source <= DF_MAX_CONN_PER_SOURCE_MAX);
  s->limits = *l;
}

void
df_stream_server_set_tls (DfStreamServer *s, DfTls *tls)
{
  g_return_if_fail (!s->running);
  s->tls = tls;
}

void
df_stream_server_set_liveness (DfStreamServer *s, const DfStreamLiveness *l)
{
  g_return_if_fail (!s->running);
  g_return_if_fail (df_check_tcp_keepalive (l->tcp_keepalive_s, NULL));
  g_return_if_fail (l->nop_interval_s <= ISCSI_NOP_MAX
                    && l->nop_timeout_s <= ISCSI_NOP_MAX);
  s->liveness = *l;
}

static bool
worker_init (worker *w, DfStreamServer *s, guint i, GError **err)
{
  struct epoll_event e = { .events = EPOLLIN, .data.ptr = NULL };
  struct epoll_event te = { .events = EPOLLIN, .data.ptr = &tick_tag };
  const struct itimerspec period = { { TICK_S, 0 }, { TICK_S, 0 } };
  g_autofree char *name = g_strdup_printf ("nbd-worker-%u", i);

  w->srv = s;
  w->epfd = epoll_create1 (EPOLL_CLOEXEC);
  w->wakefd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
  w->tickfd = timerfd_create (CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (w->epfd < 0 || w->wakefd < 0 || w->tickfd < 0
      || epoll_ctl (w->epfd, EPOLL_CTL_ADD, w->wakefd, &e) < 0
      || timerfd_settime (w->tickfd, 0, &period, NULL) < 0
      || epoll_ctl (w->epfd, EPOLL_CTL_ADD, w->tickfd, &te) < 0)
    {
      df_set_error_errno (err, errno, "worker %u setup", i);
      return false;
    }
  w->incoming = g_async_queue_new ();
  w->done = g_async_queue_new ();
  w->conns = g_hash_table_new (NULL, NULL);
  w->thread = g_thread_new (name, worker_main, w);
  return true;
}

bool
df_stream_server_start (DfStreamServer *s, GError **err)
{
  g_return_val_if_fail (!s->running, false);
  s->stopfd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (s->stopfd < 0)
    {
      df_set_error_errno (err, errno, "eventfd");
      return false;
    }
  s->io_pool = g_thread_pool_new (io_run, NULL, IO_THREADS, FALSE, NULL);
  s->workers = g_new0 (worker, s->n_workers);
  for (guint i = 0; i < s->n_workers; i++)
    if (!worker_init (&s->workers[i], s, i, err))
      {
        s->n_workers = i; /* join only what started */
        s->running = true;
        df_stream_server_stop (s);
        return false;
      }
  s->acceptor = g_thread_new ("nbd-accept", acceptor_main, s);
  s->running = true;
  return true;
}

static void
wake (int fd)
{
  uint64_t one = 1;

  if (fd >= 0 && write (fd, &one, sizeof one) < 0)
    g_warning ("eventfd write: %s", g_strerror (errno));
}

void
df_stream_server_stop (DfStreamServer *s)
{
  if (!s->running)
    return;
  g_atomic_int_set (&s->stopping, 1);
  wake (s->stopfd);
  if (s->acceptor != NULL)
    g_thread_join (s->acceptor);
  s->acceptor = NULL;
  for (guint i = 0; i < s->n_workers; i++)
    {
      worker *w = &s->workers[i];
      wake (w->wakefd);
      if (w->thread != NULL)
        g_thread_join (w->thread);
      close (w->epfd);
      close (w->wakefd);
      close (w->tickfd);
      if (w->incoming != NULL)
        g_async_queue_unref (w->incoming);
      if (w->done != NULL)
        g_async_queue_unref (w->done);
      if (w->conns != NULL)
        g_hash_table_unref (w->conns);
    }
  /* every worker waited for its connections' jobs: the pool is idle */
  if (s->io_pool != NULL)
    g_thread_pool_free (g_steal_pointer (&s->io_pool), FALSE, TRUE);
  g_clear_pointer (&s->workers, g_free);
  s->n_workers = 0;
  s->running = false;
}

void
df_stream_server_free (DfStreamServer *s)
{
  if (s == NULL)
    return;
  df_stream_server_stop (s);
  for (guint i = 0; i < s->listeners->len; i++)
    {
      listener *l = &g_array_index (s->listeners, listener, i);
      close (l->fd);
      if (l->unix_path != NULL)
        unlink (l->unix_path);
      g_free (l->unix_path);
    }
  g_array_unref (s->listeners);
  df_iscsi_target_free (s->iscsi); /* after stop: its conns are freed */
  if (s->stopfd >= 0)
    close (s->stopfd);
  if (s->reserve_fd >= 0)
    close (s->reserve_fd);
  g_assert (g_hash_table_size (s->sources) == 0);
  g_hash_table_unref (s->sources);
  g_mutex_clear (&s->sources_lock);
  g_free (s);
}

/* ---- --stdio ----------------------------------------------------------------- */

/* A blocking fd as an engine's sink: all or nothing. */
static gssize
write_sink (void *opaque, const uint8_t *p, size_t len)
{
  int fd = GPOINTER_TO_INT (opaque);
  size_t left = len;

  while (left > 0)
    {
      ssize_t n = write (fd, p, left);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return -1;
      p += n;
      left -= (size_t) n;
    }
  return (gssize) len;
}

int
df_nbd_serve_stdio (DfExports *ex, DfSessions *ss, int in_fd, int out_fd)
{
  nbd_conn *nc = nbd_conn_new (ex, ss, "stdio");
  DfEngineConn *e = nbd_conn_engine (nc);
  int rc;

  for (;;)
    {
      size_t room;
      uint8_t *buf;
      ssize_t n;

      if (!df_engine_pump (e, write_sink, GINT_TO_POINTER (out_fd)))
        {
          rc = 1;
          break;
        }
      if (df_engine_should_close (e))
        {
          rc = 0;
          break;
        }
      buf = df_engine_input_space (e, &room);
      n = read (in_fd, buf, room);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        {
          rc = n == 0 ? 0 : 1;
          break;
        }
      df_engine_input_commit (e, (size_t) n);
      df_engine_process (e);
    }
  df_engine_free (e);
  return rc;
}
