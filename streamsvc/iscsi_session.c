/* streamsvc: iSCSI connections and sessions (see iscsi.h).
 *
 * One connection per session (MaxConnections=1, ErrorRecoveryLevel=0).
 * Handlers, one per PDU type accepted in the full feature phase:
 *   rx_scsi_cmd     SCSI Command -> Data-In / R2T / SCSI Response
 *   rx_data_out     Data-Out of a write solicited by R2T
 *   rx_nop_out      NOP-Out -> NOP-In (ping echo)
 *   rx_ping_answer  NOP-Out answering a NOP-In of ours (iscsi_conn_tick)
 *   rx_tmf          task management (ABORT TASK, LUN RESET, ...)
 *   rx_text         Text (SendTargets), with C-bit continuation
 *   rx_logout       Logout -> Logout Response, then close
 * Non-immediate commands must carry CmdSN == ExpCmdSN; anything else
 * (too high, too low, outside the window) is dropped silently as RFC 7143
 * 3.2.2.1 says.
 *
 * Reinstatement: a new session with the same (InitiatorName, ISID,
 * TargetName) shuts the old connection's socket down; its worker then
 * drops it and any write still waiting for data is discarded.
 */
#define G_LOG_DOMAIN "streamsvc-iscsi"

#include "iscsi_int.h"

#include <string.h>
#include <sys/socket.h>

#include "common.h"

/* Input room offered per read: what the PDU being received still needs,
 * at least INPUT_MIN_ROOM, at most INPUT_CHUNK (a large data segment
 * grows the buffer as it arrives); an emptied buffer above INPUT_CHUNK
 * shrinks back to INPUT_MIN_ROOM. */
#define INPUT_MIN_ROOM 4096u
#define INPUT_CHUNK (64u * 1024)
#define NO_TAG 0xffffffffu
/* Ticks come a few ms early or late: an interval that ends within this of
 * a tick ends at that tick, not one period later. */
#define TICK_SLACK_US (100 * 1000)

/* ---- session registry (reinstatement) ---------------------------------------- */

struct iscsi_sess_entry {
  char *key;
  char *initiator; /* borrowed from the owning conn, which outlives e */
  char *target;    /* borrowed likewise; NULL for discovery */
  int fd;          /* socket of the owning conn, -1 once shut down */
};

/* In c->t: reg_lock, reg, reg_next_tsih (iscsi_int.h). */

void
iscsi_session_register (iscsi_conn *c)
{
  g_autofree char *isid = iscsi_encode_hex (c->isid, 6);
  iscsi_sess_entry *e = g_new0 (iscsi_sess_entry, 1), *old;

  e->key = g_strdup_printf ("%s|%s|%s", c->initiator, isid,
                            c->discovery ? "discovery" : c->target);
  e->initiator = c->initiator;
  e->target = c->discovery ? NULL : c->target;
  e->fd = c->fd;
  g_mutex_lock (&c->t->reg_lock);
  old = g_hash_table_lookup (c->t->reg, e->key);
  if (old != NULL)
    {
      g_message ("iSCSI session %s reinstated by %s", e->key, c->client);
      if (old->fd >= 0)
        shutdown (old->fd, SHUT_RDWR);
      old->fd = -1;
    }
  g_hash_table_replace (c->t->reg, e->key, e);
  if (++c->t->reg_next_tsih == 0)
    c->t->reg_next_tsih = 1;
  c->tsih = c->t->reg_next_tsih;
  g_mutex_unlock (&c->t->reg_lock);
  c->entry = e;
}

bool
iscsi_session_has_predecessor (iscsi_conn *c)
{
  GHashTableIter it;
  gpointer value;
  bool found = false;

  g_mutex_lock (&c->t->reg_lock);
  g_hash_table_iter_init (&it, c->t->reg);
  while (!found && g_hash_table_iter_next (&it, NULL, &value))
    {
      const iscsi_sess_entry *e = value;

      found = e->fd >= 0 && e->target != NULL
              && g_strcmp0 (e->initiator, c->initiator) == 0
              && g_ascii_strcasecmp (e->target, c->target) == 0;
    }
  g_mutex_unlock (&c->t->reg_lock);
  return found;
}

static void
session_unregister (iscsi_conn *c)
{
  iscsi_sess_entry *e = c->entry;

  if (e == NULL)
    return;
  g_mutex_lock (&c->t->reg_lock);
  if (g_hash_table_lookup (c->t->reg, e->key) == e)
    g_hash_table_remove (c->t->reg, e->key);
  g_mutex_unlock (&c->t->reg_lock);
  g_free (e->key);
  g_free (e);
  c->entry = NULL;
}

/* ---- lifecycle ---------------------------------------------------------------- */

static void
task_free (gpointer p)
{
  iscsi_task *t = p;

  *t->buffered -= t->edtl;
  g_free (t->buf);
  g_free (t);
}

/* ---- the engine interface (engine.h): typed thunks ----------------------- */

static bool
eng_tick (DfEngineConn *e, gint64 now_us)
{
  return iscsi_conn_tick (DF_ENGINE_CONN (iscsi_conn, e), now_us);
}

DF_ENGINE_DEFINE (iscsi_conn, "iscsi", eng_tick, NULL, NULL)

DfEngineConn *
iscsi_conn_engine (iscsi_conn *c)
{
  return &c->engine;
}

iscsi_conn *
iscsi_conn_new (DfIscsiTarget *t, const char *client, const char *local)
{
  iscsi_conn *c = g_new0 (iscsi_conn, 1);

  c->engine.ops = &iscsi_conn_engine_ops;
  c->t = t;
  c->ex = t->ex;
  c->ss = t->ss;
  c->client = g_strdup (client);
  c->local = g_strdup (local);
  c->fd = -1;
  c->sess = df_session_start (c->ss, "iscsi", client);
  c->in_cap = INPUT_MIN_ROOM;
  c->in = g_malloc (c->in_cap);
  c->out = g_byte_array_new ();
  c->tasks = g_hash_table_new_full (NULL, NULL, NULL, task_free);
  c->stat_sn = g_random_int ();
  c->next_ttt = 1;
  c->p.max_send_dsl = 8192; /* RFC 7143 default until declared */
  c->p.max_burst = 262144;
  c->p.first_burst = 65536;
  c->p.immediate_data = true;
  c->p.initial_r2t = true;
  iscsi_conn_set_nop (c, ISCSI_NOP_INTERVAL_DEFAULT,
                      ISCSI_NOP_TIMEOUT_DEFAULT);
  return c;
}

void
iscsi_conn_free (iscsi_conn *c)
{
  if (c == NULL)
    return;
  session_unregister (c);
  iscsi_lu_detach (&c->lu); /* I_T nexus loss */
  g_hash_table_destroy (c->tasks);
  df_blk_unref (c->blk); /* before the session it accounts to */
  if (c->export != NULL)
    df_export_close (c->export);
  df_session_end (c->sess);
  iscsi_login_clear (&c->login);
  if (c->text_rest)
    g_byte_array_unref (c->text_rest);
  g_free (c->initiator);
  g_free (c->target);
  g_free (c->in);
  g_byte_array_unref (c->out);
  g_free (c->scratch);
  g_free (c->client);
  g_free (c->local);
  g_free (c);
}

void
iscsi_conn_set_fd (iscsi_conn *c, int fd)
{
  c->fd = fd;
}

void
iscsi_conn_close (iscsi_conn *c, const char *why)
{
  if (c->state != ISCSI_CONN_CLOSED)
    g_debug ("iSCSI %s: closing: %s", c->client, why);
  c->state = ISCSI_CONN_CLOSED;
}

bool
iscsi_conn_should_close (const iscsi_conn *c)
{
  return c->state == ISCSI_CONN_CLOSED;
}

uint32_t
iscsi_max_cmd_sn (const iscsi_conn *c)
{
  return c->exp_cmd_sn + ISCSI_CMD_WINDOW - 1;
}

/* ---- buffers ------------------------------------------------------------------ */

uint8_t *
iscsi_conn_input_space (iscsi_conn *c, size_t *room)
{
  size_t avail = c->in_len - c->in_pos;
  size_t need = MAX (c->in_need, (size_t) ISCSI_BHS_LEN);
  size_t want = CLAMP (need > avail ? need - avail : 0,
                       (size_t) INPUT_MIN_ROOM, (size_t) INPUT_CHUNK);

  if (c->in_pos > 0 && (avail == 0 || c->in_cap - c->in_len < want))
    {
      memmove (c->in, c->in + c->in_pos, avail);
      c->in_len = avail;
      c->in_pos = 0;
    }
  if (avail == 0 && c->in_cap > INPUT_CHUNK)
    {
      c->in_cap = INPUT_MIN_ROOM;
      c->in = g_realloc (c->in, c->in_cap);
    }
  if (c->in_cap - c->in_len < want)
    {
      c->in_cap = MAX (c->in_cap * 2, c->in_len + want);
      c->in = g_realloc (c->in, c->in_cap);
    }
  *room = c->in_cap - c->in_len;
  return c->in + c->in_len;
}

void
iscsi_conn_input_commit (iscsi_conn *c, size_t n)
{
  g_assert (c->in_len + n <= c->in_cap);
  c->in_len += n;
  if (n > 0)
    c->rx_seen = true;
}

void
iscsi_conn_release_idle (iscsi_conn *c)
{
  if (c->in_len == c->in_pos && c->in_cap > INPUT_MIN_ROOM)
    {
      c->in_len = c->in_pos = 0;
      c->in_cap = INPUT_MIN_ROOM;
      c->in = g_realloc (c->in, c->in_cap);
    }
  if (c->out->len == 0)
    {
      /* a GByteArray keeps its capacity: a new one gives it back */
      g_byte_array_unref (c->out);
      c->out = g_byte_array_new ();
    }
  g_clear_pointer (&c->scratch, g_free);
  c->scratch_len = 0;
}

const uint8_t *
iscsi_conn_output (iscsi_conn *c, size_t *len)
{
  *len = c->out->len - c->out_pos;
  return *len > 0 ? c->out->data + c->out_pos : c->out->data; /* may be NULL */
}

void
iscsi_conn_output_consume (iscsi_conn *c, size_t n)
{
  c->out_pos += n;
  g_assert (c->out_pos <= c->out->len);
  if (c->out_pos == c->out->len)
    {
      g_byte_array_set_size (c->out, 0);
      c->out_pos = 0;
    }
  else if (c->out_pos > 1024 * 1024)
    {
      g_byte_array_remove_range (c->out, 0, (guint) c->out_pos);
      c->out_pos = 0;
    }
}

static size_t
output_pending (const iscsi_conn *c)
{
  return c->out->len - c->out_pos;
}

/* ---- sending ------------------------------------------------------------------ */

void
iscsi_send (iscsi_conn *c, const uint8_t bhs[ISCSI_BHS_LEN], const void *data,
            uint32_t dlen)
{
  bool hd = c->state == ISCSI_CONN_FULL && c->p.header_digest;
  bool dd = c->state == ISCSI_CONN_FULL && c->p.data_digest;
  size_t off = iscsi_out_begin (c->out, dlen, hd, dd);

  memcpy (c->out->data + off, bhs, ISCSI_BHS_LEN);
  if (dlen)
    memcpy (iscsi_out_data (c->out, off, hd), data, dlen);
  iscsi_out_end (c->out, off, dlen, hd, dd);
}

/* Common target fields: ITT, StatSN (advanced when counted), ExpCmdSN,
 * MaxCmdSN. */
static void
fill_sns (iscsi_conn *c, uint8_t *bhs, uint32_t itt, bool status)
{
  df_put_be32 (bhs + 16, itt);
  df_put_be32 (bhs + 24, status ? c->stat_sn++ : c->stat_sn);
  df_put_be32 (bhs + 28, c->exp_cmd_sn);
  df_put_be32 (bhs + 32, iscsi_max_cmd_sn (c));
}

static void
send_reject (iscsi_conn *c, const uint8_t *bad_bhs, uint8_t reason)
{
  uint8_t bhs[ISCSI_BHS_LEN] = { ISCSI_OP_REJECT, 0x80, reason };

  fill_sns (c, bhs, NO_TAG, true);
  iscsi_send (c, bhs, bad_bhs, ISCSI_BHS_LEN);
}

/* ---- SCSI responses ---------------------------------------------------------- */

typedef struct {
  uint32_t itt;
  const uint8_t *lun;      /* 8 bytes from the command */
  uint32_t edtl;
  bool read, write;        /* R / W flags of the command */
} cmd_info;

/* Residual flags and count of a finished command. */
static uint8_t
residual (uint32_t edtl, uint32_t actual, uint32_t *count)
{
  if (actual > edtl)
    {
      *count = actual - edtl;
      return 0x04; /* O */
    }
  if (actual < edtl)
    {
      *count = edtl - actual;
      return 0x02; /* U */
    }
  *count = 0;
  return 0;
}

static void
send_scsi_response (iscsi_conn *c, const cmd_info *ci,
                    const iscsi_scsi_result *r, uint32_t actual,
                    uint32_t exp_data_sn)
{
  uint8_t bhs[ISCSI_BHS_LEN] = { ISCSI_OP_SCSI_RSP, 0x80, 0x00, r->status };
  uint8_t data[2 + SCSI_SENSE_LEN];
  uint32_t count = 0;

  bhs[1] |= residual (ci->edtl, actual, &count);
  fill_sns (c, bhs, ci->itt, true);
  df_put_be32 (bhs + 36, exp_data_sn);
  df_put_be32 (bhs + 44, count);
  if (r->sense_len == 0)
    return iscsi_send (c, bhs, NULL, 0);
  df_put_be16 (data, (uint16_t) r->sense_len);
  memcpy (data + 2, r->sense, r->sense_len);
  iscsi_send (c, bhs, data, 2 + r->sense_len);
}

/* Data-In PDUs for data[0..len), the last one carrying the GOOD status
 * (phase collapse).  Returns the number of PDUs (DataSN). */
static uint32_t
send_data_in (iscsi_conn *c, const cmd_info *ci, const uint8_t *data,
              uint32_t len, uint32_t actual)
{
  uint32_t sn = 0, off = 0;
  uint32_t pdu_max = MIN (c->p.max_send_dsl, c->p.max_burst);

  while (off < len)
    {
      uint32_t n = MIN (pdu_max, len - off);
      bool last = off + n == len;
      uint8_t bhs[ISCSI_BHS_LEN] = { ISCSI_OP_DATA_IN };
      bool burst_end = last || ((off + n) % c->p.max_burst) == 0;

      bhs[1] = burst_end ? 0x80 : 0;
      memcpy (bhs + 8, ci->lun, 8);
      fill_sns (c, bhs, ci->itt, false);
      df_put_be32 (bhs + 20, NO_TAG);
      df_put_be32 (bhs + 36, sn++);
      df_put_be32 (bhs + 40, off);
      if (last)
        {
          uint32_t count = 0;
          bhs[1] |= 0x01 | residual (ci->edtl, actual, &count);
          bhs[3] = SCSI_GOOD;
          df_put_be32 (bhs + 24, c->stat_sn++);
          df_put_be32 (bhs + 44, count);
        }
      iscsi_send (c, bhs, data + off, n);
      off += n;
    }
  return sn;
}

static void
complete_command (iscsi_conn *c, const cmd_info *ci,
                  const iscsi_scsi_result *r, uint32_t actual,
                  const uint8_t *din)
{
  uint32_t send = ci->read ? MIN (r->data_len, ci->edtl) : 0;

  if (r->status == SCSI_GOOD && send > 0)
    {
      send_data_in (c, ci, din, send, actual);
      return;
    }
  send_scsi_response (c, ci, r, actual, 0);
}

/* ---- SCSI commands ------------------------------------------------------------ */

/* LUN 1 in peripheral or flat addressing, nothing beyond. */
static bool
lun_is_ours (const uint8_t *lun)
{
  static const uint8_t zero[6];

  return (lun[0] & 0x3f) == 0 && (lun[0] >> 6) <= 1 && lun[1] == ISCSI_LUN
         && memcmp (lun + 2, zero, 6) == 0;
}

/* Commands to a LUN that does not exist (SPC-4 8.1). */
static void
foreign_lun (iscsi_conn *c, const uint8_t *cdb, iscsi_scsi_result *r,
             uint8_t *din, uint32_t cap)
{
  memset (r, 0, sizeof *r);
  if (cdb[0] == 0x12 && !(cdb[1] & 1) && cdb[2] == 0)
    {
      uint8_t b[36] = { 0x7f, 0, 0x06, 0x02, 31 };
      r->data_len = MIN (MIN ((uint32_t) sizeof b, df_get_be16 (cdb + 3)),
                         cap);
      memcpy (din, b, r->data_len);
    }
  else if (cdb[0] == 0xa0)
    iscsi_scsi_exec (&c->lu, cdb, NULL, 0, din, cap, r);
  else
    iscsi_scsi_sense (r, 0x05, 0x25, 0x00); /* LU NOT SUPPORTED */
}

static uint8_t *
scratch (iscsi_conn *c, size_t n)
{
  if (c->scratch_len < n)
    {
      g_free (c->scratch);
      c->scratch = g_malloc (n);
      c->scratch_len = n;
    }
  return c->scratch;
}

/* The export's binding went stale (device reset or changed, superseded by
 * a newer boot generation) or this server lost its cache lease: the fence
 * layer refuses its I/O; this session answers NOT READY and closes after
 * the reply.  Logs once. */
static bool
fenced (iscsi_conn *c)
{
  const char *why = df_export_fence_reason (c->export);

  if (why == NULL)
    return false;
  if (c->state != ISCSI_CONN_CLOSED)
    g_message ("iSCSI %s: session fenced, closing: %s", c->client, why);
  iscsi_conn_close (c, "fenced");
  return true;
}

/* The sense of a fenced session's command.  A lost cache lease (the cache
 * moves to a survivor, df_export_moved): LOGICAL UNIT IS IN PROCESS OF
 * BECOMING READY (04/01), a transient condition initiators retry (Linux's
 * SCSI midlayer: scsi_check_sense NEEDS_RETRY), so the retry reaches the
 * survivor after the login that follows the close.  Not 04/0A (asymmetric
 * access state transition): that belongs to ALUA, which this target does
 * not report (no TPGS in INQUIRY), and older Linux kernels fail it without
 * an ALUA handler.  A stale binding: MANUAL INTERVENTION REQUIRED (04/03),
 * not retried: the device's cache is no longer the one this OS wrote. */
static void
fenced_sense (iscsi_conn *c, iscsi_scsi_result *r)
{
  if (df_export_moved (c->export))
    iscsi_scsi_sense (r, 0x02, 0x04, 0x01);
  else
    iscsi_scsi_sense (r, 0x02, 0x04, 0x03);
}

/* The flush of the parked command ended (on the loop thread): its
 * response, then input is parsed again. */
static void
flush_done (DfEngineJob *job)
{
  iscsi_conn *c = (iscsi_conn *) (void *) ((char *) job
                                           - offsetof (iscsi_conn, job));
  cmd_info ci = { c->parked_cmd.itt, c->parked_cmd.lun, c->parked_cmd.edtl,
                  c->parked_cmd.read, c->parked_cmd.write };
  iscsi_scsi_result *r = &c->parked_cmd.r;

  c->parked = false;
  iscsi_scsi_flushed (&c->lu, c->parked_cmd.cdb, job->ret, job->err, r);
  if (r->status != SCSI_GOOD && fenced (c))
    fenced_sense (c, r);
  complete_command (c, &ci, r, c->parked_cmd.actual, NULL);
}

/* The flush r asks for, off the loop thread (engine.h); the response
 * comes from flush_done (at once when the transport runs jobs inline). */
static void
park_on_flush (iscsi_conn *c, const cmd_info *ci, const uint8_t *cdb,
               const iscsi_scsi_result *r, uint32_t actual)
{
  c->parked = true;
  c->parked_cmd.itt = ci->itt;
  c->parked_cmd.edtl = ci->edtl;
  c->parked_cmd.actual = actual;
  memcpy (c->parked_cmd.lun, ci->lun, sizeof c->parked_cmd.lun);
  memcpy (c->parked_cmd.cdb, cdb, sizeof c->parked_cmd.cdb);
  c->parked_cmd.read = ci->read;
  c->parked_cmd.write = ci->write;
  c->parked_cmd.r = *r;
  c->job.blk = c->lu.blk;
  c->job.done = flush_done;
  df_engine_offload (&c->engine, &c->job);
}

static void
execute (iscsi_conn *c, const cmd_info *ci, const uint8_t *cdb,
         const uint8_t *dout, uint32_t dout_len)
{
  scsi_dir dir;
  uint32_t len, cap;
  uint8_t *din;
  iscsi_scsi_result r;

  iscsi_scsi_plan (&c->lu, cdb, &dir, &len);
  cap = dir == SCSI_DIR_READ ? MIN (len, ISCSI_MAX_XFER) : 0;
  din = scratch (c, MAX (cap, 512u));
  if (!lun_is_ours (ci->lun))
    foreign_lun (c, cdb, &r, din, cap);
  else if (fenced (c))
    fenced_sense (c, &r);
  else
    {
      iscsi_scsi_exec_deferred (&c->lu, cdb, dout, dout_len, din, cap, &r);
      if (r.flush)
        return park_on_flush (c, ci, cdb, &r,
                              dir == SCSI_DIR_WRITE ? len : 0);
      if (r.status != SCSI_GOOD && fenced (c))
        fenced_sense (c, &r);
    }
  complete_command (c, ci, &r,
                    dir == SCSI_DIR_WRITE ? len
                    : r.status == SCSI_GOOD ? r.data_len : 0,
                    din);
}

/* A fresh Target Transfer Tag: never the reserved 0xffffffff (RFC 7143
 * 11.7.4, 11.8.1), whichever PDU type took the previous one. */
static uint32_t
new_ttt (iscsi_conn *c)
{
  uint32_t ttt = c->next_ttt++;

  if (ttt == NO_TAG)
    ttt = c->next_ttt++;
  return ttt;
}

static void
send_r2t (iscsi_conn *c, iscsi_task *t, const uint8_t *lun)
{
  uint8_t bhs[ISCSI_BHS_LEN] = { ISCSI_OP_R2T, 0x80 };

  t->r2t_off = t->received;
  t->r2t_len = MIN (t->edtl - t->received, c->p.max_burst);
  t->data_sn = 0;
  memcpy (bhs + 8, lun, 8);
  fill_sns (c, bhs, t->itt, false);
  df_put_be32 (bhs + 20, t->ttt);
  df_put_be32 (bhs + 36, t->r2t_sn++);
  df_put_be32 (bhs + 40, t->r2t_off);
  df_put_be32 (bhs + 44, t->r2t_len);
  iscsi_send (c, bhs, NULL, 0);
}

static void
task_done (iscsi_conn *c, iscsi_task *t)
{
  uint8_t lun[8] = { 0, ISCSI_LUN };
  cmd_info ci = { t->itt, lun, t->edtl, false, true };

  memcpy (lun, t->lun, 8);
  execute (c, &ci, t->cdb, t->buf, t->edtl);
  g_hash_table_remove (c->tasks, GUINT_TO_POINTER (t->itt));
}

/* A write whose data did not all come with the command. */
static void
start_write_task (iscsi_conn *c, const iscsi_pdu *pdu, const cmd_info *ci,
                  uint32_t immediate)
{
  iscsi_task *t;

  if (g_hash_table_size (c->tasks) >= ISCSI_MAX_TASKS
      || c->buffered + ci->edtl > ISCSI_MAX_BUFFERED
      || g_hash_table_contains (c->tasks, GUINT_TO_POINTER (ci->itt)))
    {
      iscsi_scsi_result r = { .status = 0x28 }; /* TASK SET FULL */
      send_scsi_response (c, ci, &r, ci->edtl, 0);
      return;
    }
  t = g_new0 (iscsi_task, 1);
  t->itt = ci->itt;
  t->ttt = new_ttt (c);
  t->cmd_sn = df_get_be32 (pdu->bhs + 24);
  t->buffered = &c->buffered;
  memcpy (t->cdb, pdu->bhs + 32, 16);
  memcpy (t->lun, ci->lun, 8);
  t->edtl = ci->edtl;
  t->buf = g_malloc (t->edtl);
  c->buffered += t->edtl;
  memcpy (t->buf, pdu->data, immediate);
  t->received = immediate;
  g_hash_table_insert (c->tasks, GUINT_TO_POINTER (t->itt), t);
  send_r2t (c, t, ci->lun);
}

static void
rx_scsi_cmd (iscsi_conn *c, const iscsi_pdu *pdu)
{
  const uint8_t *bhs = pdu->bhs;
  cmd_info ci = { df_get_be32 (bhs + 16), bhs + 8, df_get_be32 (bhs + 20),
                  (bhs[1] & 0x40) != 0, (bhs[1] & 0x20) != 0 };
  uint32_t immediate = MIN (pdu->data_len, ci.edtl);

  if (c->discovery)
    return send_reject (c, bhs, ISCSI_REJECT_PROTOCOL);
  if (pdu->data_len > 0 && (!ci.write || !c->p.immediate_data
                            || pdu->data_len > c->p.first_burst))
    return send_reject (c, bhs, ISCSI_REJECT_PROTOCOL);
  if (!ci.write || ci.edtl == immediate)
    return execute (c, &ci, bhs + 32, pdu->data, immediate);
  if (ci.edtl > ISCSI_MAX_XFER)
    {
      iscsi_scsi_result r;
      iscsi_scsi_sense (&r, 0x05, 0x24, 0x00);
      return send_scsi_response (c, &ci, &r, 0, 0);
    }
  start_write_task (c, pdu, &ci, immediate);
}

static void
rx_data_out (iscsi_conn *c, const iscsi_pdu *pdu)
{
  const uint8_t *bhs = pdu->bhs;
  iscsi_task *t = g_hash_table_lookup (c->tasks, GUINT_TO_POINTER (
                                                     df_get_be32 (bhs + 16)));
  uint32_t off = df_get_be32 (bhs + 40);

  if (t == NULL)
    return; /* aborted task: its remaining data is discarded */
  if (df_get_be32 (bhs + 20) != t->ttt || df_get_be32 (bhs + 36) != t->data_sn
      || off != t->received || pdu->data_len > t->r2t_off + t->r2t_len - off)
    {
      /* The task fails (ABORTED COMMAND, DATA PHASE ERROR); its other
       * Data-Out PDUs are discarded; the connection goes on. */
      uint8_t lun[8];
      cmd_info ci = { t->itt, lun, t->edtl, false, true };
      iscsi_scsi_result r;

      g_message ("iSCSI %s: Data-Out out of sequence (DataSN %u, want %u; "
                 "offset %u, want %u): task failed", c->client,
                 df_get_be32 (bhs + 36), t->data_sn, off, t->received);
      memcpy (lun, t->lun, 8);
      iscsi_scsi_sense (&r, 0x0b, 0x4b, 0x00);
      g_hash_table_remove (c->tasks, GUINT_TO_POINTER (ci.itt));
      return send_scsi_response (c, &ci, &r, 0, 0);
    }
  memcpy (t->buf + off, pdu->data, pdu->data_len);
  t->received += pdu->data_len;
  t->data_sn++;
  if (t->received == t->edtl)
    return task_done (c, t);
  if (t->received == t->r2t_off + t->r2t_len)
    send_r2t (c, t, t->lun);
}

/* ---- NOP, task management, text, logout ---------------------------------------- */

static void
rx_nop_out (iscsi_conn *c, const iscsi_pdu *pdu)
{
  const uint8_t *req = pdu->bhs;
  uint8_t bhs[ISCSI_BHS_LEN] = { ISCSI_OP_NOP_IN, 0x80 };
  uint32_t itt = df_get_be32 (req + 16);

  memcpy (bhs + 8, req + 8, 8);
  fill_sns (c, bhs, itt, true);
  df_put_be32 (bhs + 20, NO_TAG);
  iscsi_send (c, bhs, pdu->data, MIN (pdu->data_len, c->p.max_send_dsl));
}

/* The initiator's answer to our NOP-In (ITT 0xffffffff, our TTT). */
static void
rx_ping_answer (iscsi_conn *c, const iscsi_pdu *pdu)
{
  uint32_t ttt = df_get_be32 (pdu->bhs + 20);

  if (c->ping == ISCSI_PING_SENT && ttt == c->ping_ttt)
    c->ping = ISCSI_PING_IDLE;
  else
    g_debug ("iSCSI %s: NOP-Out for TTT 0x%08x we did not ask: ignored",
             c->client, ttt);
}

/* ---- dead-peer pings ------------------------------------------------------------- */

void
iscsi_conn_set_nop (iscsi_conn *c, guint interval_s, guint timeout_s)
{
  g_return_if_fail (interval_s <= ISCSI_NOP_MAX && timeout_s <= ISCSI_NOP_MAX);
  g_return_if_fail (interval_s == 0 || timeout_s > 0);
  c->nop_interval_us = (gint64) interval_s * G_USEC_PER_SEC;
  c->nop_timeout_us = (gint64) timeout_s * G_USEC_PER_SEC;
}

/* A NOP-In asking for an answer (RFC 7143 11.19: valid TTT, ITT
 * 0xffffffff, StatSN not advanced, the LUN echoed back). */
static void
send_ping (iscsi_conn *c, gint64 now_us)
{
  uint8_t bhs[ISCSI_BHS_LEN] = { ISCSI_OP_NOP_IN, 0x80 };

  bhs[9] = ISCSI_LUN;
  c->ping_ttt = new_ttt (c);
  fill_sns (c, bhs, NO_TAG, false);
  df_put_be32 (bhs + 20, c->ping_ttt);
  iscsi_send (c, bhs, NULL, 0);
  c->ping = ISCSI_PING_SENT;
  c->ping_sent_us = now_us;
  g_debug ("iSCSI %s: idle: NOP-In TTT 0x%08x", c->client, c->ping_ttt);
}

bool
iscsi_conn_tick (iscsi_conn *c, gint64 now_us)
{
  if (c->rx_seen || c->last_rx_us == 0 || c->state != ISCSI_CONN_FULL
      || c->discovery || c->nop_interval_us == 0)
    {
      c->rx_seen = false;
      c->last_rx_us = now_us;
      c->ping = ISCSI_PING_IDLE;
      return true;
    }
  switch (c->ping)
    {
    case ISCSI_PING_IDLE:
      if (now_us - c->last_rx_us + TICK_SLACK_US >= c->nop_interval_us)
        send_ping (c, now_us);
      return true;
    case ISCSI_PING_SENT:
      if (now_us - c->ping_sent_us + TICK_SLACK_US < c->nop_timeout_us)
        return true;
      g_message ("iSCSI %s: no answer to a NOP-In in %" G_GINT64_FORMAT
                 " s (silent for %" G_GINT64_FORMAT " s): dropping the "
                 "connection", c->client, c->nop_timeout_us / G_USEC_PER_SEC,
                 (now_us - c->last_rx_us) / G_USEC_PER_SEC);
      iscsi_conn_close (c, "NOP-In not answered");
      return false;
    default:
      g_assert_not_reached ();
    }
}

static uint8_t
tmf_abort_task (iscsi_conn *c, const uint8_t *req)
{
  uint32_t rtt = df_get_be32 (req + 20);
  uint32_t ref = df_get_be32 (req + 32);

  if (g_hash_table_remove (c->tasks, GUINT_TO_POINTER (rtt)))
    return 0;
  /* RFC 7143 11.5.1: a RefCmdSN inside the window that we have not seen
   * counts as received; completed or unknown tasks do not exist. */
  if (!iscsi_sn_lt (ref, c->exp_cmd_sn)
      && !iscsi_sn_lt (iscsi_max_cmd_sn (c), ref)
      && iscsi_sn_lt (ref, df_get_be32 (req + 24)))
    return 0;
  return 1;
}

static void
rx_tmf (iscsi_conn *c, const iscsi_pdu *pdu)
{
  const uint8_t *req = pdu->bhs;
  uint8_t fn = req[1] & 0x7f;
  uint8_t bhs[ISCSI_BHS_LEN] = { ISCSI_OP_TMF_RSP, 0x80 };
  uint8_t resp;

  switch (fn)
    {
    case 1: /* ABORT TASK */
      resp = tmf_abort_task (c, req);
      break;
    case 2: case 4: case 5: /* ABORT/CLEAR TASK SET, LOGICAL UNIT RESET */
      if (!lun_is_ours (req + 8))
        {
          resp = 2;
          break;
        }
      g_hash_table_remove_all (c->tasks);
      if (fn == 5)
        iscsi_lu_reset (&c->lu);
      resp = 0;
      break;
    case 3: /* CLEAR ACA: no ACA is ever established (NACA unsupported) */
      resp = 0;
      break;
    case 6: case 7: /* TARGET WARM/COLD RESET: other devices share us */
      resp = 6;
      break;
    case 8: /* TASK REASSIGN: ErrorRecoveryLevel 0 */
      resp = 4;
      break;
    default:
      resp = 5;
      break;
    }
  g_debug ("iSCSI %s: TMF %u -> %u", c->client, fn, resp);
  bhs[2] = resp;
  fill_sns (c, bhs, df_get_be32 (req + 16), true);
  iscsi_send (c, bhs, NULL, 0);
}

/* Send the next chunk of a Text Response (C bit while more is left). */
static void
text_respond (iscsi_conn *c, uint32_t itt, const uint8_t *lun)
{
  uint8_t bhs[ISCSI_BHS_LEN] = { ISCSI_OP_TEXT_RSP };
  uint32_t n = MIN (c->text_rest->len, c->p.max_send_dsl);
  bool more = n < c->text_rest->len;

  bhs[1] = more ? 0x40 : 0x80;
  memcpy (bhs + 8, lun, 8);
  fill_sns (c, bhs, itt, true);
  if (more)
    c->text_ttt = new_ttt (c);
  df_put_be32 (bhs + 20, more ? c->text_ttt : NO_TAG);
  iscsi_send (c, bhs, c->text_rest->data, n);
  g_byte_array_remove_range (c->text_rest, 0, n);
  if (!more)
    g_clear_pointer (&c->text_rest, g_byte_array_unref);
}

static void
rx_text (iscsi_conn *c, const iscsi_pdu *pdu)
{
  const uint8_t *req = pdu->bhs;
  uint32_t ttt = df_get_be32 (req + 20);
  g_autoptr (GError) err = NULL;
  g_autoptr (GPtrArray) kvs = NULL;
  g_autoptr (GString) out = g_string_new (NULL);

  if (ttt != NO_TAG && c->text_rest != NULL && ttt == c->text_ttt)
    return text_respond (c, df_get_be32 (req + 16), req + 8);
  if (req[1] & 0x40) /* continued requests: our keys always fit one PDU */
    return send_reject (c, req, ISCSI_REJECT_NOT_SUPPORTED);
  kvs = iscsi_text_parse (pdu->data, pdu->data_len, &err);
  if (kvs == NULL)
    {
      g_message ("iSCSI %s: bad Text Request: %s", c->client, err->message);
      return send_reject (c, req, ISCSI_REJECT_PROTOCOL);
    }
  if (iscsi_text_has_duplicates (kvs))
    {
      g_message ("iSCSI %s: bad Text Request: a key sent twice", c->client);
      return send_reject (c, req, ISCSI_REJECT_PROTOCOL);
    }
  for (guint i = 0; i < kvs->len; i++)
    {
      const iscsi_kv *kv = kvs->pdata[i];
      if (strcmp (kv->key, "SendTargets") == 0)
        iscsi_send_targets (c, kv->value, out);
      else
        iscsi_text_add (out, kv->key, "NotUnderstood");
    }
  if (c->text_rest)
    g_byte_array_unref (c->text_rest);
  c->text_rest = g_byte_array_new ();
  g_byte_array_append (c->text_rest, (const uint8_t *) out->str,
                       (guint) out->len);
  text_respond (c, df_get_be32 (req + 16), req + 8);
}

static void
rx_logout (iscsi_conn *c, const iscsi_pdu *pdu)
{
  const uint8_t *req = pdu->bhs;
  uint8_t reason = req[1] & 0x7f;
  uint8_t bhs[ISCSI_BHS_LEN] = { ISCSI_OP_LOGOUT_RSP, 0x80 };

  bhs[2] = reason == 2 ? 2 : 0; /* connection recovery: not supported */
  fill_sns (c, bhs, df_get_be32 (req + 16), true);
  iscsi_send (c, bhs, NULL, 0);
  if (reason != 2)
    {
      g_hash_table_remove_all (c->tasks);
      iscsi_conn_close (c, "logout");
    }
}

/* ---- dispatch ------------------------------------------------------------------- */

/* CmdSN ordering for non-immediate commands.  false: drop the PDU. */
static bool
cmd_sn_accept (iscsi_conn *c, const iscsi_pdu *pdu)
{
  uint32_t sn = df_get_be32 (pdu->bhs + 24);

  if (iscsi_pdu_immediate (pdu))
    return true;
  if (sn == c->exp_cmd_sn)
    {
      c->exp_cmd_sn++;
      return true;
    }
  g_debug ("iSCSI %s: CmdSN %u outside [%u, %u]: dropped", c->client, sn,
           c->exp_cmd_sn, iscsi_max_cmd_sn (c));
  return false;
}

static void
dispatch_full (iscsi_conn *c, const iscsi_pdu *pdu)
{
  uint8_t op = iscsi_pdu_opcode (pdu);

  if (op == ISCSI_OP_DATA_OUT)
    return rx_data_out (c, pdu);
  if (op == ISCSI_OP_SNACK)
    return send_reject (c, pdu->bhs, ISCSI_REJECT_NOT_SUPPORTED);
  if (op != ISCSI_OP_NOP_OUT && op != ISCSI_OP_SCSI_CMD
      && op != ISCSI_OP_TMF_REQ && op != ISCSI_OP_TEXT_REQ
      && op != ISCSI_OP_LOGOUT_REQ)
    return send_reject (c, pdu->bhs, ISCSI_REJECT_PROTOCOL);
  if (op == ISCSI_OP_NOP_OUT && df_get_be32 (pdu->bhs + 16) == NO_TAG)
    return rx_ping_answer (c, pdu); /* carries no CmdSN to count */
  if (!cmd_sn_accept (c, pdu))
    return;
  switch (op)
    {
    case ISCSI_OP_NOP_OUT: rx_nop_out (c, pdu); break;
    case ISCSI_OP_SCSI_CMD: rx_scsi_cmd (c, pdu); break;
    case ISCSI_OP_TMF_REQ: rx_tmf (c, pdu); break;
    case ISCSI_OP_TEXT_REQ: rx_text (c, pdu); break;
    case ISCSI_OP_LOGOUT_REQ: rx_logout (c, pdu); break;
    default: g_assert_not_reached ();
    }
}

static void
dispatch (iscsi_conn *c, const iscsi_pdu *pdu)
{
  if (c->state == ISCSI_CONN_LOGIN)
    {
      if (iscsi_pdu_opcode (pdu) != ISCSI_OP_LOGIN_REQ)
        return iscsi_conn_close (c, "non-login PDU during login");
      return iscsi_login_rx (c, pdu);
    }
  if (iscsi_pdu_opcode (pdu) == ISCSI_OP_LOGIN_REQ)
    return send_reject (c, pdu->bhs, ISCSI_REJECT_PROTOCOL);
  dispatch_full (c, pdu);
}

static void
parse_failed (iscsi_conn *c, iscsi_parse_result r)
{
  g_message ("iSCSI %s: %s: closing the connection", c->client,
             iscsi_parse_result_name (r));
  if (c->in_len - c->in_pos >= ISCSI_BHS_LEN && c->state == ISCSI_CONN_FULL)
    send_reject (c, c->in + c->in_pos, r == ISCSI_PARSE_DATA_DIGEST
                                           ? ISCSI_REJECT_DIGEST
                                           : ISCSI_REJECT_PROTOCOL);
  iscsi_conn_close (c, iscsi_parse_result_name (r));
}

static iscsi_parse_result
parse_next (iscsi_conn *c, iscsi_pdu *pdu, size_t *consumed)
{
  bool full = c->state == ISCSI_CONN_FULL;

  return iscsi_pdu_parse (c->in + c->in_pos, c->in_len - c->in_pos,
                          full ? ISCSI_OUR_MRDSL : ISCSI_LOGIN_MAX_DATA,
                          full && c->p.header_digest,
                          full && c->p.data_digest, pdu, consumed);
}

void
iscsi_conn_process (iscsi_conn *c)
{
  while (c->state != ISCSI_CONN_CLOSED && !c->parked
         && output_pending (c) < ISCSI_OUTPUT_HIGH_WATER)
    {
      iscsi_pdu pdu;
      size_t consumed;
      iscsi_parse_result r = parse_next (c, &pdu, &consumed);

      if (r == ISCSI_PARSE_NEED_MORE)
        {
          c->in_need = consumed;
          return;
        }
      if (r != ISCSI_PARSE_OK)
        return parse_failed (c, r);
      c->in_need = 0;
      dispatch (c, &pdu);
      c->in_pos += consumed;
      c->messages++;
    }
}

void
iscsi_conn_progress (const iscsi_conn *c, DfEngineProgress *p)
{
  p->messages = c->messages;
  if (c->state == ISCSI_CONN_LOGIN
      || (c->state == ISCSI_CONN_FULL && c->discovery))
    p->phase = DF_ENGINE_HANDSHAKE;
  else if (c->state == ISCSI_CONN_FULL && c->in_len > c->in_pos
           && !iscsi_conn_has_work (c))
    p->phase = DF_ENGINE_PARTIAL;
  else
    p->phase = DF_ENGINE_IDLE;
}

bool
iscsi_conn_has_work (const iscsi_conn *c)
{
  size_t avail = c->in_len - c->in_pos;

  if (c->state == ISCSI_CONN_CLOSED || c->parked || avail < ISCSI_BHS_LEN)
    return false;
  return c->in_need == 0 || avail >= c->in_need;
}
