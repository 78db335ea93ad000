/* diskfarm bootstrap: TFTP wire format (RFC 1350, 2347, 2348, 2349, 7440).
 *
 * Pure functions, no I/O: parse a request or a client packet against its
 * real length, build DATA / OACK / ERROR packets into a caller's buffer.
 * Each distinct parse failure has its own message and the TFTP error code
 * to send back (or DF_TFTP_SILENT when the packet deserves no answer). */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
  DF_TFTP_RRQ = 1, DF_TFTP_WRQ = 2, DF_TFTP_DATA = 3, DF_TFTP_ACK = 4,
  DF_TFTP_ERROR = 5, DF_TFTP_OACK = 6,
};

/* Error codes of RFC 1350 + 2347. */
enum {
  DF_TFTP_EUNDEF = 0, DF_TFTP_ENOTFOUND = 1, DF_TFTP_EACCESS = 2,
  DF_TFTP_ENOSPACE = 3, DF_TFTP_EBADOP = 4, DF_TFTP_EBADID = 5,
  DF_TFTP_EEXISTS = 6, DF_TFTP_ENOUSER = 7, DF_TFTP_EOPTNEG = 8,
  DF_TFTP_SILENT = -1,          /* drop without answering */
};

#define DF_TFTP_BLKSIZE_MIN 8
#define DF_TFTP_BLKSIZE_MAX 65464
#define DF_TFTP_BLKSIZE_DEFAULT 512
#define DF_TFTP_NAME_MAX 255        /* file name bytes */
#define DF_TFTP_OPTVAL_MAX 20       /* digits of a numeric option value */
#define DF_TFTP_REQ_MAX 1024        /* bytes of a request we read */

/* Options the client asked for; 0 / false when absent. */
typedef struct {
  guint32 blksize;      /* 8..65464 */
  bool tsize;           /* asked for the transfer size */
  guint8 timeout;       /* seconds, 1..255 */
  guint16 windowsize;   /* 1..65535 */
} DfTftpOptions;

/* A parsed RRQ/WRQ.  filename points into a copy owned by the request. */
typedef struct {
  int opcode;           /* DF_TFTP_RRQ or DF_TFTP_WRQ */
  char filename[DF_TFTP_NAME_MAX + 1];
  char mode[16];        /* lower-cased */
  DfTftpOptions opt;
  guint n_ignored;      /* unknown options / harmless trailing bytes */
} DfTftpRequest;

/* Parse a request packet of len bytes.  On failure returns false, sets
 * *code to the TFTP error to answer with (or DF_TFTP_SILENT) and err to a
 * precise message. */
bool df_tftp_parse_request (const guint8 *buf, size_t len, DfTftpRequest *req,
                            int *code, GError **err);

/* A packet from the client during a transfer. */
typedef struct {
  int opcode;           /* DF_TFTP_ACK or DF_TFTP_ERROR */
  guint16 block;        /* ACK */
  guint16 error_code;   /* ERROR */
  char message[128];    /* ERROR, printable, may be empty */
} DfTftpClientPacket;

/* Parse an ACK or ERROR (ERROR of 4 bytes or fewer parses, with an empty
 * message).  Other opcodes and short ACKs fail with *code set. */
bool df_tftp_parse_client (const guint8 *buf, size_t len,
                           DfTftpClientPacket *pkt, int *code, GError **err);

/* Builders: write into out (cap bytes) and return the length, or 0 when
 * it does not fit. */
size_t df_tftp_build_error (guint8 *out, size_t cap, int code,
                            const char *message);
size_t df_tftp_build_data_header (guint8 *out, size_t cap, guint16 block);
/* OACK with the options of opt that are set; tsize_value used when
 * opt->tsize. */
size_t df_tftp_build_oack (guint8 *out, size_t cap, const DfTftpOptions *opt,
                           guint64 tsize_value);

/* Clean a requested name into a relative path below the root: backslashes
 * become '/', leading '/' are removed, empty components and "." dropped.
 * Fails (access violation) on "..", control characters or an empty name.
 * out has DF_TFTP_NAME_MAX + 1 bytes. */
bool df_tftp_clean_path (const char *name, char *out, GError **err);
