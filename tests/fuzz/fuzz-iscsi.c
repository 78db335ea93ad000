/* libFuzzer harness: the iSCSI engine (PDU framing, login and text keys,
 * CHAP, SCSI commands, R2T/Data-Out, task management) over a small real
 * farm built at start-up: a 1 MiB vdisk "fz", device "d1" (no CHAP) and
 * device "d2" (CHAP user "u2"), in a temporary directory.
 *
 * The first input byte picks a prefix so that every phase is reached:
 *   0: raw input from the first byte (login phase)
 *   1: logged in to d1 (full feature phase, SCSI commands)
 *   2: logged in to the vdisk target (read-only LU)
 *   3: discovery session (Text / SendTargets)
 * The rest is fed in pieces whose size comes from the second byte.
 */
#include <glib.h>
#include <glib/gstdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "exports.h"
#include "farm.h"
#include "iscsi.h"
#include "sessions.h"
#include "vdisk.h"

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static DfExports *exports;
static DfSessions *sessions;
static GByteArray *prefixes[4];

static void
die (const char *what, GError *err)
{
  fprintf (stderr, "fuzz-iscsi init: %s: %s\n", what,
           err ? err->message : "failed");
  exit (1);
}

static void
add_device (DfFarm *farm, const char *name, const char *mac)
{
  g_autoptr (GError) err = NULL;
  DfDevice d = { .name = (char *) name, .mac = (char *) mac,
                 .type = (char *) "production", .vdisk = (char *) "fz",
                 .cache_mode = (char *) "server" };

  if (!df_farm_device_add (farm, &d, &err))
    die ("device add", err);
}

static void
make_farm (const char *dir)
{
  g_autoptr (GError) err = NULL;
  g_autoptr (DfFarm) farm = df_farm_open (dir, true, "fuzz", &err);
  g_autofree char *raw = g_build_filename (dir, "src.raw", NULL);
  g_autofree char *store = NULL, *dest = NULL, *base = NULL;
  g_autofree uint8_t *buf = g_malloc0 (1 << 20);
  char sha[65];
  uint64_t vsize = 0;
  GStatBuf st;

  if (farm == NULL)
    die ("farm", err);
  memset (buf, 'A', 65536);
  if (!g_file_set_contents (raw, (char *) buf, 1 << 20, &err))
    die ("raw", err);
  store = df_farm_store_dir (farm, "fz");
  dest = df_farm_version_path (farm, "fz", 0);
  base = g_path_get_basename (dest);
  g_mkdir_with_parents (store, 0755);
  if (!df_vdisk_import (raw, "raw", dest, NULL, NULL, &vsize, &err)
      || !df_file_sha256 (dest, sha, &err))
    die ("import", err);
  g_stat (dest, &st);
  if (!df_farm_vdisk_add (farm, "fz", vsize, base, sha, st.st_size, &err))
    die ("vdisk add", err);
  add_device (farm, "d1", "52:54:00:00:00:01");
  add_device (farm, "d2", "52:54:00:00:00:02");
  if (!df_farm_chap_set (farm, "d2", "u2", "fuzz-secret-12", NULL, &err))
    die ("chap", err);
}

/* Append one login request PDU (no digests). */
static void
put_login (GByteArray *b, const char *keys, size_t klen, int csg, int nsg)
{
  size_t off = iscsi_out_begin (b, (uint32_t) klen, false, false);
  uint8_t *bhs = b->data + off;

  bhs[0] = ISCSI_OP_LOGIN_REQ | 0x40;
  bhs[1] = (uint8_t) (0x80 | csg << 2 | nsg);
  bhs[8] = 0x80;
  memcpy (iscsi_out_data (b, off, false), keys, klen);
  iscsi_out_end (b, off, (uint32_t) klen, false, false);
}

static GByteArray *
make_prefix (const char *target)
{
  GByteArray *b = g_byte_array_new ();
  g_autoptr (GString) k = g_string_new (NULL);

  iscsi_text_add (k, "InitiatorName", "iqn.2000-01.fuzz:i");
  if (target)
    iscsi_text_add (k, "TargetName", target);
  else
    iscsi_text_add (k, "SessionType", "Discovery");
  iscsi_text_add (k, "AuthMethod", "None");
  iscsi_text_add (k, "MaxRecvDataSegmentLength", "4096");
  put_login (b, k->str, k->len, 0, 3);
  return b;
}

static GLogWriterOutput
quiet_writer (GLogLevelFlags level, const GLogField *fields, gsize n,
              gpointer data)
{
  (void) level; (void) fields; (void) n; (void) data;
  return G_LOG_WRITER_HANDLED;
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  g_autoptr (GError) err = NULL;
  g_autofree char *dir = g_dir_make_tmp ("fuzz-iscsi-XXXXXX", &err);

  (void) argc; (void) argv;
  if (dir == NULL)
    die ("tmpdir", err);
  g_log_set_writer_func (quiet_writer, NULL, NULL);
  make_farm (dir);
  exports = df_exports_new (dir, &err);
  if (exports == NULL)
    die ("exports", err);
  sessions = df_sessions_new ();
  prefixes[0] = g_byte_array_new ();
  prefixes[1] = make_prefix (ISCSI_IQN_PREFIX "d1");
  prefixes[2] = make_prefix (ISCSI_IQN_PREFIX "vdisk.fz");
  prefixes[3] = make_prefix (NULL);
  return 0;
}

static void
drain (iscsi_conn *c)
{
  size_t len;

  iscsi_conn_output (c, &len);
  iscsi_conn_output_consume (c, len);
}

static bool
feed (iscsi_conn *c, const uint8_t *p, size_t len)
{
  while (len > 0)
    {
      size_t room;
      uint8_t *dst = iscsi_conn_input_space (c, &room);
      size_t n = MIN (room, len);

      memcpy (dst, p, n);
      iscsi_conn_input_commit (c, n);
      p += n;
      len -= n;
      do
        {
          iscsi_conn_process (c);
          drain (c);
        }
      while (iscsi_conn_has_work (c));
      if (iscsi_conn_should_close (c))
        return false;
    }
  return true;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autoptr (iscsi_conn) c = NULL;
  uint8_t mode, split;

  if (size < 2)
    return 0;
  mode = data[0] % G_N_ELEMENTS (prefixes);
  split = data[1];
  data += 2;
  size -= 2;
  c = iscsi_conn_new (exports, sessions, "fuzz", "127.0.0.1:3260");
  if (!feed (c, prefixes[mode]->data, prefixes[mode]->len))
    return 0;
  while (size > 0)
    {
      size_t n = split ? MIN ((size_t) split, size) : size;
      if (!feed (c, data, n))
        break;
      data += n;
      size -= n;
    }
  return 0;
}
