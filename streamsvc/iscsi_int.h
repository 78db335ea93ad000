/* streamsvc: iSCSI target internals shared by the iscsi_*.c files (and
 * their unit test and fuzzer); the public API is iscsi.h.
 */
#pragma once

#include "byteorder.h"

#include "iscsi.h"

/* ---- constants ------------------------------------------------------------ */

#define ISCSI_BHS_LEN 48u
#define ISCSI_DIGEST_LEN 4u
#define ISCSI_MAX_AHS (255u * 4)          /* TotalAHSLength is 8 bits */
#define ISCSI_LOGIN_MAX_DATA 8192u         /* login/text PDU data cap */
#define ISCSI_TEXT_MAX_TOTAL (64u * 1024)  /* continued login/text text */
#define ISCSI_OUR_MRDSL (256u * 1024)      /* MaxRecvDataSegmentLength */
#define ISCSI_MAX_BURST (1024u * 1024)     /* our MaxBurstLength cap */
#define ISCSI_MAX_XFER (32u * 1024 * 1024) /* one command's data */
#define ISCSI_MAX_BUFFERED (64u * 1024 * 1024) /* writes waiting, per conn */
#define ISCSI_CMD_WINDOW 64u               /* MaxCmdSN - ExpCmdSN + 1 */
#define ISCSI_MAX_TASKS 64u                /* writes waiting for data */
#define ISCSI_OUTPUT_HIGH_WATER (4u * 1024 * 1024)
#define ISCSI_LUN 1u
#define ISCSI_BLOCK 512u

enum {
  ISCSI_OP_NOP_OUT = 0x00, ISCSI_OP_SCSI_CMD = 0x01, ISCSI_OP_TMF_REQ = 0x02,
  ISCSI_OP_LOGIN_REQ = 0x03, ISCSI_OP_TEXT_REQ = 0x04,
  ISCSI_OP_DATA_OUT = 0x05, ISCSI_OP_LOGOUT_REQ = 0x06,
  ISCSI_OP_SNACK = 0x10,
  ISCSI_OP_NOP_IN = 0x20, ISCSI_OP_SCSI_RSP = 0x21, ISCSI_OP_TMF_RSP = 0x22,
  ISCSI_OP_LOGIN_RSP = 0x23, ISCSI_OP_TEXT_RSP = 0x24,
  ISCSI_OP_DATA_IN = 0x25, ISCSI_OP_LOGOUT_RSP = 0x26, ISCSI_OP_R2T = 0x31,
  ISCSI_OP_ASYNC = 0x32, ISCSI_OP_REJECT = 0x3f,
};

/* Reject reasons (RFC 7143 11.17.1) */
enum {
  ISCSI_REJECT_DIGEST = 0x02, ISCSI_REJECT_PROTOCOL = 0x04,
  ISCSI_REJECT_NOT_SUPPORTED = 0x05, ISCSI_REJECT_INVALID_FIELD = 0x09,
};

/* Login status (class << 8 | detail) */
enum {
  ISCSI_LOGIN_OK = 0x0000, ISCSI_LOGIN_INITIATOR_ERROR = 0x0200,
  ISCSI_LOGIN_AUTH_FAILED = 0x0201, ISCSI_LOGIN_FORBIDDEN = 0x0202,
  ISCSI_LOGIN_NOT_FOUND = 0x0203, ISCSI_LOGIN_BAD_VERSION = 0x0205,
  ISCSI_LOGIN_TOO_MANY_CONNS = 0x0206,
  ISCSI_LOGIN_MISSING_PARAM = 0x0207, ISCSI_LOGIN_UNSUPPORTED_TYPE = 0x0209,
  ISCSI_LOGIN_NO_SESSION = 0x020a, ISCSI_LOGIN_INVALID_REQUEST = 0x020b,
  ISCSI_LOGIN_TARGET_ERROR = 0x0300, ISCSI_LOGIN_UNAVAILABLE = 0x0301,
  ISCSI_LOGIN_OUT_OF_RESOURCES = 0x0302,
};

/* Byte order: lib/common/byteorder.h (df_get_be32, df_put_be16, ...). */

/* Serial number arithmetic (RFC 1982, 32 bits). */
static inline bool
iscsi_sn_lt (uint32_t a, uint32_t b)
{
  return a != b && (int32_t) (a - b) < 0;
}

/* ---- PDU framing (iscsi_pdu.c) --------------------------------------------- */

uint32_t iscsi_crc32c (uint32_t crc, const void *buf, size_t len);

/* A received PDU; pointers borrow the input buffer. */
typedef struct {
  const uint8_t *bhs;   /* 48 bytes */
  const uint8_t *ahs;
  uint32_t ahs_len;
  const uint8_t *data;
  uint32_t data_len;    /* DataSegmentLength, without padding */
} iscsi_pdu;

static inline uint8_t
iscsi_pdu_opcode (const iscsi_pdu *p)
{
  return p->bhs[0] & 0x3f;
}
static inline bool
iscsi_pdu_immediate (const iscsi_pdu *p)
{
  return (p->bhs[0] & 0x40) != 0;
}

typedef enum {
  ISCSI_PARSE_OK, ISCSI_PARSE_NEED_MORE, ISCSI_PARSE_AHS_TOO_LONG,
  ISCSI_PARSE_DATA_TOO_LONG, ISCSI_PARSE_HEADER_DIGEST,
  ISCSI_PARSE_DATA_DIGEST,
} iscsi_parse_result;
const char *iscsi_parse_result_name (iscsi_parse_result r);

/* Frame one PDU from buf[0..len).  max_data: the largest data segment
 * accepted (our MaxRecvDataSegmentLength, or the login cap).  Checks every
 * length against max_data / ISCSI_MAX_AHS before waiting for the bytes,
 * then the digests.  On OK *pdu points into buf and *consumed is the PDU's
 * full wire size; on NEED_MORE *consumed is the size needed (0 when the
 * BHS itself is incomplete).  A DATA_DIGEST failure still fills *pdu and
 * *consumed (the PDU can be skipped and rejected). */
iscsi_parse_result iscsi_pdu_parse (const uint8_t *buf, size_t len,
                                    uint32_t max_data, bool header_digest,
                                    bool data_digest, iscsi_pdu *pdu,
                                    size_t *consumed);

/* Output buffer: PDUs are appended to out (a GByteArray with a send
 * position kept by the conn).  iscsi_out_begin appends a zeroed BHS plus
 * room for dlen data bytes (padded, digests) and returns the BHS offset;
 * the caller fills the BHS (opcode, fields) and the data at
 * iscsi_out_data (), then iscsi_out_end sets DataSegmentLength and the
 * digests.  Offsets stay valid across appends (pointers do not). */
size_t iscsi_out_begin (GByteArray *out, uint32_t dlen, bool hd, bool dd);
uint8_t *iscsi_out_data (GByteArray *out, size_t off, bool hd);
void iscsi_out_end (GByteArray *out, size_t off, uint32_t dlen, bool hd,
                    bool dd);
/* Shrink a begun PDU's data to dlen <= the reserved length (short read). */
void iscsi_out_trim (GByteArray *out, size_t off, uint32_t reserved,
                     uint32_t dlen, bool hd, bool dd);

/* Text keys: "key=value\0" pairs.  Parses the whole segment (a missing
 * final NUL is tolerated as the RFC allows none after the last pair only
 * when the segment ends there); rejects keys over 63 bytes, values over
 * 8192 bytes, a pair without '=', empty keys, non-printable bytes in
 * keys.  Returns a list of (key, value) in order (duplicates kept so the
 * caller can refuse them), or NULL + err. */
typedef struct {
  char *key;
  char *value;
} iscsi_kv;
GPtrArray *iscsi_text_parse (const uint8_t *data, size_t len, GError **err);
/* True when a key occurs twice (RFC 7143 6.2: a key is sent at most once
 * in a login or text negotiation; a protocol error otherwise). */
bool iscsi_text_has_duplicates (const GPtrArray *kvs);
void iscsi_text_add (GString *out, const char *key, const char *value);

/* Binary values of CHAP keys: "0x<hex>" or "0b<base64>" (case of the
 * prefix ignored).  Empty, odd-length hex, bad characters, bad base64
 * padding: false + err.  max: the largest decoded size accepted.
 * Returns a new GBytes. */
GBytes *iscsi_decode_binary (const char *s, size_t max, GError **err);
/* Numeric values: decimal, 0x hex or 0b base64 big-endian; <= max. */
bool iscsi_decode_number (const char *s, uint64_t max, uint64_t *out,
                          GError **err);
/* "0x" + lower-case hex of buf (new string). */
char *iscsi_encode_hex (const uint8_t *buf, size_t len);

/* ---- CHAP (iscsi_login.c) -------------------------------------------------- */

#define ISCSI_CHAP_CHALLENGE_LEN 16u
#define ISCSI_CHAP_MAX_CHALLENGE 1024u   /* initiator's CHAP_C for mutual */
#define ISCSI_CHAP_SECRET_MIN 12u
#define ISCSI_CHAP_SECRET_MAX 255u

/* MD5 (id || secret || challenge) into out[16]. */
void iscsi_chap_response (uint8_t id, const uint8_t *secret, size_t slen,
                          const uint8_t *chal, size_t clen, uint8_t out[16]);
/* A fresh challenge never handed out before by target t (bounded
 * history, t->chal_*). */
void iscsi_chap_new_challenge (DfIscsiTarget *t,
                               uint8_t out[ISCSI_CHAP_CHALLENGE_LEN]);
/* True when chal is one t issued (reflection check). */
bool iscsi_chap_is_ours (DfIscsiTarget *t, const uint8_t *chal, size_t len);

/* ---- target names ----------------------------------------------------------- */

/* iqn.2026-11.org.diskfarm:<device> / :<mac-with-hyphens> /
 * :vdisk.<name> -> export name "device/<x>" or "vdisk/<name>" (new
 * string), or NULL + DF_ERROR_NOT_FOUND. */
char *iscsi_target_to_export (const char *iqn, GError **err);

/* ---- SCSI logical unit (iscsi_scsi.c) --------------------------------------- */

/* SCSI status and sense keys used. */
#define SCSI_GOOD 0x00
#define SCSI_CHECK_CONDITION 0x02
#define SCSI_RESERVATION_CONFLICT 0x18
#define SCSI_SENSE_LEN 18u

typedef struct iscsi_lu_shared iscsi_lu_shared;
typedef struct iscsi_scsi_result iscsi_scsi_result;

typedef struct {
  df_blk *blk;          /* borrowed: the conn's accounting layer */
  bool readonly;
  const char *serial;   /* device or vdisk name (VPD 0x80), borrowed */
  const char *target;   /* target IQN (VPD 0x83), borrowed */
  uint8_t last_sense[SCSI_SENSE_LEN]; /* for REQUEST SENSE */
  bool have_sense;
  iscsi_lu_shared *shared; /* per-LU state (iscsi_pr.c), owned by the
                            * target */
  char *nexus;          /* I_T nexus "<initiator>,i,0x<isid>" (owned) */
} iscsi_lu;

/* iscsi_pr.c: state shared by every session of one LU (persistent and
 * SPC-2 reservations, the COMPARE AND WRITE lock), in memory only.
 * name: the LU's identity ("device/pc01"); initiator + isid: this I_T
 * nexus.  Every conn in the full feature phase of a normal session is
 * attached; detach is the loss of the I_T nexus (drops its SPC-2
 * reservation; persistent registrations stay, as SPC-4 says). */
void iscsi_lu_attach (iscsi_lu *lu, DfIscsiTarget *t, const char *name,
                      const char *initiator, const uint8_t isid[6]);
/* Free one LU's shared state (the target's table, when it goes). */
void iscsi_lu_shared_free (iscsi_lu_shared *s);
void iscsi_lu_detach (iscsi_lu *lu);
/* LOGICAL UNIT RESET: releases the SPC-2 reservation. */
void iscsi_lu_reset (iscsi_lu *lu);

/* What a command does to the medium, for reservation conflicts. */
enum { ISCSI_PR_ALLOWED, ISCSI_PR_READ, ISCSI_PR_WRITE };
/* True when this nexus may not run a command of that access class now
 * (SPC-4 5.7.1 table, SPC-2 reservations unless spc2_exempt). */
bool iscsi_lu_conflict (iscsi_lu *lu, unsigned access, bool spc2_exempt);
/* The commands themselves (CDB validated by iscsi_scsi.c). */
void iscsi_lu_reserve (iscsi_lu *lu, bool reserve, iscsi_scsi_result *r);
void iscsi_lu_pr_out (iscsi_lu *lu, const uint8_t *cdb, const uint8_t *p,
                      uint32_t len, iscsi_scsi_result *r);
void iscsi_lu_pr_in (iscsi_lu *lu, const uint8_t *cdb, uint8_t *din,
                     uint32_t din_cap, iscsi_scsi_result *r);
/* Held around medium writes and COMPARE AND WRITE's compare + write. */
void iscsi_lu_io_lock (iscsi_lu *lu);
void iscsi_lu_io_unlock (iscsi_lu *lu);

typedef enum { SCSI_DIR_NONE, SCSI_DIR_READ, SCSI_DIR_WRITE } scsi_dir;

/* Decode the data phase of a CDB: direction and the byte count the
 * command itself asks for (transfer length x block size, allocation
 * length, parameter list length).  Unknown opcodes: SCSI_DIR_NONE, 0. */
void iscsi_scsi_plan (const iscsi_lu *lu, const uint8_t cdb[16],
                      scsi_dir *dir, uint32_t *len);

struct iscsi_scsi_result {
  uint8_t status;
  uint8_t sense[SCSI_SENSE_LEN];
  uint32_t sense_len;
  uint32_t data_len;    /* data-in bytes produced (<= din_cap) */
  bool flush;           /* iscsi_scsi_exec_deferred: the status is GOOD
                         * only once lu->blk is flushed (SYNCHRONIZE
                         * CACHE, a FUA write): the caller's to run */
};

/* Execute one command.  dout/dout_len: the data-out received (writes);
 * din/din_cap: room for data-in (reads).  Never fails: errors are
 * CHECK CONDITION with sense in *r. */
void iscsi_scsi_exec (iscsi_lu *lu, const uint8_t cdb[16],
                      const uint8_t *dout, uint32_t dout_len, uint8_t *din,
                      uint32_t din_cap, iscsi_scsi_result *r);
/* iscsi_scsi_exec, but the flush a command needs (r->flush) is left to
 * the caller, who runs df_blk_flush (lu->blk) off its loop thread and then
 * iscsi_scsi_flushed with its result. */
void iscsi_scsi_exec_deferred (iscsi_lu *lu, const uint8_t cdb[16],
                               const uint8_t *dout, uint32_t dout_len,
                               uint8_t *din, uint32_t din_cap,
                               iscsi_scsi_result *r);
/* The flush of r (cdb's command) returned ret (errnum): r's final status
 * (MEDIUM ERROR on failure, kept for REQUEST SENSE). */
void iscsi_scsi_flushed (iscsi_lu *lu, const uint8_t cdb[16], int ret,
                         int errnum, iscsi_scsi_result *r);
/* Fill r with CHECK CONDITION key/asc/ascq (fixed format). */
void iscsi_scsi_sense (iscsi_scsi_result *r, uint8_t key, uint8_t asc,
                       uint8_t ascq);

/* ---- connection internals (shared by the iscsi_*.c files) ------------------ */

typedef enum {
  ISCSI_CONN_LOGIN,       /* login phase (security / operational stages) */
  ISCSI_CONN_FULL,        /* full feature phase */
  ISCSI_CONN_CLOSED,      /* drain output, then close */
} iscsi_conn_state;

typedef enum {
  ISCSI_AUTH_START,       /* nothing chosen yet */
  ISCSI_AUTH_NONE_CHOSEN, /* AuthMethod=None agreed */
  ISCSI_AUTH_CHAP_A,      /* AuthMethod=CHAP agreed, waiting for CHAP_A */
  ISCSI_AUTH_CHAP_R,      /* challenge sent, waiting for CHAP_N/CHAP_R */
  ISCSI_AUTH_DONE,        /* authenticated */
} iscsi_auth_state;

typedef struct {
  bool header_digest, data_digest;
  uint32_t max_send_dsl;   /* initiator's MaxRecvDataSegmentLength */
  uint32_t max_burst, first_burst;
  bool immediate_data, initial_r2t;
} iscsi_params;

/* CHAP secrets of the device being logged into (owned strings). */
typedef struct {
  char *user, *secret, *mutual;
} iscsi_chap_cfg;

typedef struct {
  int stage;                 /* CSG: 0 security, 1 operational */
  iscsi_auth_state auth;
  bool chap_required;
  iscsi_chap_cfg chap;
  uint8_t chap_id;
  uint8_t chap_c[ISCSI_CHAP_CHALLENGE_LEN];
  GByteArray *pending;       /* text of continued (C bit) login PDUs */
  bool started;              /* first login PDU seen */
  bool tpgt_sent;
  bool keys_seen_target;     /* first request's keys processed */
  uint32_t itt;
  uint32_t cmd_sn;
  char *chap_user_ok;        /* user authenticated (discovery filter) */
} iscsi_login;

/* A write waiting for its Data-Out PDUs (solicited by R2T). */
typedef struct {
  uint32_t itt, ttt, cmd_sn;
  uint8_t cdb[16];
  uint8_t lun[8];
  uint32_t edtl, received;   /* bytes of data-out expected / in buf */
  uint32_t r2t_off, r2t_len; /* current R2T's window */
  uint32_t r2t_sn, data_sn;  /* next R2TSN; next DataSN expected */
  uint8_t *buf;              /* edtl bytes (owned) */
  size_t *buffered;          /* the conn's total, kept by task_free */
} iscsi_task;

typedef struct iscsi_sess_entry iscsi_sess_entry;

typedef enum {
  ISCSI_PING_IDLE,        /* no NOP-In of ours outstanding */
  ISCSI_PING_SENT,        /* NOP-In sent, waiting for any byte back */
} iscsi_ping_state;

/* iscsi_target.c: one target's shared state.  Each table has its lock;
 * the files that use them keep their own rules (below). */
struct DfIscsiTarget {
  DfExports *ex;             /* borrowed */
  DfSessions *ss;            /* borrowed */
  GMutex reg_lock;           /* iscsi_session.c: reinstatement registry */
  GHashTable *reg;           /* key -> iscsi_sess_entry* (not owned) */
  uint16_t reg_next_tsih;
  GMutex chal_lock;          /* iscsi_login.c: challenges handed out */
  GHashTable *chal_seen;     /* GBytes set (owned) */
  GQueue chal_order;         /* the same GBytes, oldest first */
  GMutex lus_lock;           /* iscsi_pr.c: per-LU state */
  GHashTable *lus;           /* LU name -> iscsi_lu_shared* (owned) */
  GMutex auth_lock;          /* iscsi_authlimit.c: failed CHAP logins */
  GHashTable *auth_sources;  /* address -> its count (owned) */
};

/* ---- CHAP rate limit (iscsi_authlimit.c) ---- */
#define ISCSI_AUTH_MAX_FAILS 5      /* wrong answers before a lockout */
#define ISCSI_AUTH_LOCK_S 10u       /* first lockout, doubled after */
#define ISCSI_AUTH_LOCK_MAX_S 300u
#define ISCSI_AUTH_FORGET_S 600     /* idle entries dropped after */
#define ISCSI_AUTH_MAX_SOURCES 4096
/* The address part of a peer name "a.b.c.d:port" / "[v6]:port" (new). */
char *iscsi_source_address (const char *client);
void iscsi_authlimit_init (DfIscsiTarget *t);
void iscsi_authlimit_clear (DfIscsiTarget *t);
/* Seconds source stays locked out, 0 when it may log in. */
guint iscsi_authlimit_locked (DfIscsiTarget *t, const char *source);
/* Count a wrong CHAP answer: the seconds of the lockout it starts, or 0. */
guint iscsi_authlimit_failed (DfIscsiTarget *t, const char *source);
/* A CHAP success forgets the address's failures. */
void iscsi_authlimit_succeeded (DfIscsiTarget *t, const char *source);

struct iscsi_conn {
  DfEngineConn engine;       /* first: the transport's view (engine.h) */
  DfIscsiTarget *t;          /* borrowed */
  DfExports *ex;             /* borrowed (t's) */
  DfSessions *ss;            /* borrowed (t's) */
  DfSession *sess;           /* owned (df_session_end) */
  char *client, *local;
  int fd;
  uint8_t *in;               /* received bytes [in_pos, in_len) */
  size_t in_cap, in_len, in_pos;
  size_t in_need;            /* bytes the next PDU needs (0: a BHS) */
  guint64 messages;          /* PDUs taken from the input */
  GByteArray *text_rest;     /* Text Response continuation (C bit) */
  uint32_t text_ttt;
  GByteArray *out;
  size_t out_pos;
  iscsi_conn_state state;
  iscsi_login login;
  iscsi_params p;
  bool discovery;
  char *initiator;           /* InitiatorName */
  char *target;              /* TargetName (normal sessions) */
  uint8_t isid[6];
  uint16_t tsih;
  uint32_t stat_sn, exp_cmd_sn;
  DfExport *export;          /* owned; NULL for discovery */
  df_blk *blk;               /* owned: accounting layer over the export's
                              * blk (layer_account.h); NULL for discovery */
  iscsi_lu lu;
  GHashTable *tasks;         /* itt -> iscsi_task* (owned) */
  size_t buffered;           /* bytes held by tasks */
  uint32_t next_ttt;
  iscsi_sess_entry *entry;   /* reinstatement registry, owned ref */
  uint8_t *scratch;          /* data-in buffer (owned) */
  size_t scratch_len;
  gint64 nop_interval_us;    /* dead-peer pings; 0: off */
  gint64 nop_timeout_us;
  bool rx_seen;              /* bytes arrived since the last tick */
  gint64 last_rx_us;         /* tick time of the last arrival; 0: none */
  iscsi_ping_state ping;
  uint32_t ping_ttt;         /* Target Transfer Tag of the NOP-In sent */
  gint64 ping_sent_us;
  /* A command waiting for its flush on the transport's I/O pool
   * (engine.h DfEngineJob): nothing more is parsed until flush_done has
   * sent its response. */
  DfEngineJob job;
  bool parked;
  struct {
    uint32_t itt, edtl, actual;
    uint8_t lun[8];
    uint8_t cdb[16];
    bool read, write;
    iscsi_scsi_result r;
  } parked_cmd;
};

/* iscsi_session.c helpers used by the login code. */
void iscsi_conn_close (iscsi_conn *c, const char *why);
uint32_t iscsi_max_cmd_sn (const iscsi_conn *c);
/* Claim (initiator, ISID, target) for this conn, shutting down a previous
 * session with the same identity (reinstatement). */
void iscsi_session_register (iscsi_conn *c);
/* Whether a session of c's InitiatorName to c's target (any ISID) is
 * registered and its connection not yet shut down: the firmware's or an
 * earlier boot's session of the same machine, which c supersedes. */
bool iscsi_session_has_predecessor (iscsi_conn *c);

/* Queue a PDU: bhs (48 bytes, DataSegmentLength filled here) + data. */
void iscsi_send (iscsi_conn *c, const uint8_t bhs[ISCSI_BHS_LEN],
                 const void *data, uint32_t dlen);

/* iscsi_login.c: handle one Login Request in the login phase. */
void iscsi_login_rx (iscsi_conn *c, const iscsi_pdu *pdu);
void iscsi_login_clear (iscsi_login *l);
/* Text Request handling (SendTargets) shared with full feature phase. */
void iscsi_send_targets (iscsi_conn *c, const char *what, GString *out);
