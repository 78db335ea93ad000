/* diskfarm: small shared pieces (logging, sizes, MAC and address parsing).
 * Everything here validates untrusted text from the command line, the
 * config file or the farm DB and reports one precise GError per failure. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#define DF_ERROR (df_error_quark ())
GQuark df_error_quark (void);

typedef enum {
  DF_ERROR_INVALID,     /* malformed input (name, MAC, size, address, file) */
  DF_ERROR_NOT_FOUND,   /* unknown vdisk, device, version, export */
  DF_ERROR_EXISTS,      /* duplicate name or MAC */
  DF_ERROR_BUSY,        /* in use (live session, maintenance lock) */
  DF_ERROR_NOSPC,       /* quota reached */
  DF_ERROR_UNSUPPORTED, /* image feature we refuse (encryption, ...) */
  DF_ERROR_CORRUPT,     /* on-disk structure out of range */
  DF_ERROR_IO,          /* system call failed: message carries strerror */
  DF_ERROR_INTERRUPTED, /* SIGINT/SIGTERM/SIGHUP during long work */
  DF_ERROR_DENIED,      /* refused by policy (a TLS identity's exports) */
} DfErrorCode;

/* Logging: route g_log structured output to journald when stderr is the
 * journal, else to stderr as one line each:
 *   2026-12-01T10:00:15.722Z streamsvc[4242]: notice: ready
 * (ISO-8601 UTC, milliseconds).  verbose enables info and debug. */
void df_log_init (const char *progname, bool verbose);
/* A daemon's fatal error, once logging is set up: "error: message". */
void df_log_fatal (const char *message);

/* Sizes as qemu-img reads them: a decimal number and an optional suffix
 * B (bytes) or K, M, G, T, P, E (binary powers, any case; "KiB"/"KB" read
 * as K too).  A fraction needs a suffix other than B and must come to a
 * whole number of bytes: "1.5G", "4096M", "512K", "1T", "512", "512B".
 * Rejects empty, signs, spaces, hex, overflow and trailing garbage, each
 * with its own message. */
bool df_parse_size (const char *s, uint64_t *out, GError **err);
/* Human size "1.5 GiB" into a new string. */
char *df_format_size (uint64_t bytes);

/* MAC in any of aa:bb:cc:dd:ee:ff, aa-bb-..., aabb.ccdd.eeff, aabbccddeeff
 * (any case) -> canonical lower-case colon form in out[18]. */
bool df_parse_mac (const char *s, char out[18], GError **err);
/* df_parse_mac, then refuse what cannot be one device's address: all
 * zeros, broadcast ff:ff:ff:ff:ff:ff and multicast (low bit of the first
 * byte set).  For MACs being assigned; lookups use df_parse_mac. */
bool df_parse_device_mac (const char *s, char out[18], GError **err);

/* Object names (vdisk, device, collection): 1-63 chars of [A-Za-z0-9._-],
 * not starting with '.' or '-'.  what is "vdisk", "device"... for messages. */
bool df_validate_name (const char *what, const char *s, GError **err);

/* A host as written into boot media and scripts: an IPv4 literal, an IPv6
 * literal or a DNS host name per RFC 1123 (labels of letters, digits and
 * '-', 1-63 characters, not starting or ending with '-', at most 253 in
 * all; a name whose last label is all digits must be a valid IPv4
 * literal, so "999.1.1.1" is refused).  what: "server address"... */
bool df_validate_host (const char *what, const char *s, GError **err);

/* Untrusted text made fit for a one-line message (new string): invalid
 * UTF-8 replaced by U+FFFD, control characters by '?', and cut after
 * max_chars characters (never inside one) with "..." appended. */
char *df_display_text (const char *s, gsize max_chars);

/* After g_option_context_parse: refuse an empty or blank value given to a
 * string, file name or string-array option of entries ("--farm ''"), with
 * the one-line error "option --farm: empty value".  may_be_empty: NULL or a
 * NULL-terminated list of long names for which '' means "none".  Entries
 * still holding NULL were not given. */
bool df_options_check_values (const GOptionEntry *entries,
                              const char *const *may_be_empty, GError **err);
/* Free what the options of entries own, so that the table that fills an
 * options struct also empties it: the string of each STRING and FILENAME
 * option (g_free) and the vector of each STRING_ARRAY and FILENAME_ARRAY
 * one (g_strfreev), each set back to NULL.  entries itself is not freed;
 * NULL does nothing. */
void df_options_clear (const GOptionEntry *entries);
/* A heap copy of entries, through the NULL entry, for an options struct
 * to keep until df_options_clear (caller frees the copy with g_free). */
GOptionEntry *df_options_keep (const GOptionEntry *entries);
/* df_options_clear a kept table, then free it (from df_options_keep);
 * NULL does nothing. */
void df_options_release (GOptionEntry *kept);

/* Split "HOST", "HOST:PORT", "[v6]" or "[v6]:PORT" (a bare IPv6 address,
 * more than one colon, is all host): *host a new string (maybe empty),
 * *port_text what follows the colon (inside s) or NULL.  False (nothing
 * set) when a '[' has no ']' right before the end or a colon. */
bool df_split_host_port (const char *s, char **host, const char **port_text);

/* Listen address: "HOST:PORT", "[v6]:PORT", ":PORT" (all addresses) or
 * "unix:PATH".  Results are newly allocated; *port is 0 for unix. */
typedef struct {
  char *host;       /* NULL for unix or wildcard */
  char *unix_path;  /* non-NULL for unix: */
  uint16_t port;
} DfListenAddr;
bool df_parse_listen (const char *s, uint16_t default_port, DfListenAddr *out,
                      GError **err);
void df_listen_addr_clear (DfListenAddr *a);

/* The wall clock (CLOCK_REALTIME) in nanoseconds: the time stamps of the
 * cache write journal, which a test compares across processes. */
gint64 df_real_ns (void);

/* s[0..len) is one or more ASCII digits (and nothing else). */
bool df_all_digits (const char *s, gsize len);

/* Set *err from errno with "what: strerror" (DF_ERROR_IO, or NOSPC). */
void df_set_error_errno (GError **err, int errnum, const char *fmt, ...)
  G_GNUC_PRINTF (3, 4);

/* open (path, flags, mode) and fstat it into *st: the descriptor (caller
 * closes), or -1 with *err "open PATH: strerror" and nothing left open. */
int df_open_stat (const char *path, int flags, mode_t mode, struct stat *st,
                  GError **err);

/* Write a whole buffer at offset / read exactly; EINTR-safe.  -1 + errno. */
int df_pwrite_all (int fd, const void *buf, size_t len, uint64_t off);
int df_pread_all (int fd, void *buf, size_t len, uint64_t off);

/* fsync the directory containing path (after a rename). */
bool df_fsync_dir_of (const char *path, GError **err);

/* SHA-256 of a whole file as 64 lower-case hex chars + NUL. */
bool df_file_sha256 (const char *path, char out[65], GError **err);

/* ---- interruption (interrupt.c) --------------------------------------- */

/* Long work (import, export, merge, seal) stops cleanly on SIGINT, SIGTERM
 * or SIGHUP.  Between df_interrupt_begin and df_interrupt_end (nestable;
 * main thread; the previous handlers come back at the end) a handler only
 * records the signal (a signal ignored before, as under nohup, stays
 * ignored); copy loops call df_interrupt_check between chunks
 * and fail with DF_ERROR_INTERRUPTED, so their normal error path removes
 * the partial output.  Outside begin/end signals keep their usual effect.
 * A second signal does not wait for a loop: the handler unlinks the
 * files registered with df_temp_register and _exits with 128 + signal. */
void df_interrupt_begin (void);
void df_interrupt_end (void);
/* While a child does the long work (qemu-img convert), pass it the
 * signals too (pid; 0 to stop). */
void df_interrupt_forward (int pid);
/* The signal received since df_interrupt_begin, or 0. */
int df_interrupt_signal (void);
/* false + DF_ERROR_INTERRUPTED "interrupted by SIGINT; ..." once a signal
 * came; true otherwise. */
bool df_interrupt_check (GError **err);
/* Temporary files or (empty once those are gone) directories for the
 * second-signal handler (at most 8 at once).  path is borrowed: it must
 * stay valid until df_temp_unregister (same pointer). */
void df_temp_register (const char *path);
void df_temp_unregister (const char *path);

/* TCP dead-peer detection on a connected socket.  timeout_s is the longest
 * a connection whose peer vanished (reset, cable pulled, power lost) stays
 * open; 0 turns it off.  Keepalive probes start after timeout_s / 3 of
 * silence, one every timeout_s / 6, and DF_TCP_KEEPALIVE_PROBES unanswered
 * ones end the connection; TCP_USER_TIMEOUT timeout_s ends a connection
 * whose sent data stays unacknowledged that long.  Default 30 s: idle 10,
 * interval 5, 4 probes.  timeout_s must be 0 or within
 * [DF_TCP_KEEPALIVE_MIN, DF_TCP_KEEPALIVE_MAX] (df_check_tcp_keepalive). */
#define DF_TCP_KEEPALIVE_DEFAULT 30 /* plain numbers: G_STRINGIFY'd */
#define DF_TCP_KEEPALIVE_MIN 6
#define DF_TCP_KEEPALIVE_MAX 86400
#define DF_TCP_KEEPALIVE_PROBES 4
bool df_check_tcp_keepalive (gint64 timeout_s, GError **err);
bool df_tcp_set_keepalive (int fd, guint timeout_s, GError **err);

/* One log line per interval for an event that can come in a flood (a
 * refused connection, accept failing at the fd limit): the first event of
 * an interval passes, the others are counted.  Zero-initialised state is
 * ready (static or g_new0); df_log_limit_pass is thread-safe.  Returns
 * true when the caller logs now; *suppressed then receives how many events
 * were not logged since the previous line. */
typedef struct {
  gint64 next_us;   /* monotonic time the next line may pass */
  guint suppressed; /* events since the last line that passed */
} DfLogLimit;
#define DF_LOG_LIMIT_INTERVAL_S 10
bool df_log_limit_pass (DfLogLimit *l, guint *suppressed);

/* Secrets (CHAP secrets, boot scripts that carry one): wipe n bytes of p
 * so no copy outlives its use (OPENSSL_cleanse: the compiler may not drop
 * it), and wipe-then-free a NUL-terminated secret string (NULL is fine).
 * Every path that frees a secret frees it with df_secret_free;
 * g_autoptr (DfSecret) does it at scope exit. */
void df_secret_wipe (void *p, size_t n);
void df_secret_free (char *s);
typedef char DfSecret;
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfSecret, df_secret_free)

/* NBD TLS policy (streamsvc --tls, diskfarm.conf [streamsvc] tls, farm
 * setting nbd-tls), nbdkit's words: off = no TLS (STARTTLS refused), on =
 * TLS offered, plaintext still served, require = nothing but
 * NBD_OPT_STARTTLS and NBD_OPT_ABORT before TLS (the NBD spec's
 * FORCEDTLS). */
typedef enum {
  DF_TLS_OFF,
  DF_TLS_ON,
  DF_TLS_REQUIRE,
} DfTlsMode;
#define DF_TLS_MODES "off|on|require"
/* "off", "on" or "require" (exactly) -> *mode; else DF_ERROR_INVALID
 * "'X' is not off, on or require". */
bool df_tls_mode_parse (const char *s, DfTlsMode *mode, GError **err);
const char *df_tls_mode_name (DfTlsMode mode);
/* Whether two secret strings are equal, in time that depends on their
 * lengths only (CRYPTO_memcmp): for tokens a client presents.  NULL
 * equals nothing. */
bool df_secret_equal (const char *a, const char *b);
/* n random bytes (RAND_bytes) as 2n lowercase hex digits: a new secret
 * string (df_secret_free), or NULL + err (DF_ERROR_IO). */
char *df_random_hex (size_t n, GError **err);

/* The UNIX socket of streamsvc's admin API for the farm at farm_dir,
 * where streamsvc listens by default and the console looks:
 * DF_RUNTIME_DIR "/" DF_ADMIN_SOCKET for the default farm
 * (DF_DEFAULT_FARM), <farm_dir>/run/DF_ADMIN_SOCKET for any other (a
 * test's farm, a second farm on the host).  New string. */
char *df_admin_socket_path (const char *farm_dir);

/* The InitiatorName a device's boot script sets (bootstrap/script.c's
 * initiator-iqn) and, by default under the farm's iscsi-chap required
 * policy, the only one its target accepts: DF_IQN_PREFIX "<device>" in
 * lower case.  New string. */
char *df_device_initiator_iqn (const char *device);
