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
#include <stdint.h>
#include <string.h>

#include "fuzz-farm.h"
#include "iscsi_int.h"

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static DfExports *exports;
static DfSessions *sessions;
static DfIscsiTarget *tgt; /* process lifetime */
static GByteArray *prefixes[4];

/* Vdisk "fz" (64 KiB of 'A', then zeroes), device "d1" without CHAP
 * and device "d2" with CHAP user "u2". */
static void
make_farm (char **dir)
{
  g_autoptr (GError) err = NULL;
  g_autofree uint8_t *image = g_malloc0 (FUZZ_IMAGE_SIZE);
  g_autoptr (DfFarm) farm = NULL;

  memset (image, 'A', 65536);
  farm = fuzz_farm_start ("fuzz-iscsi", image, dir);
  fuzz_farm_add_device (farm, "d1", "52:54:00:00:00:01");
  fuzz_farm_add_device (farm, "d2", "52:54:00:00:00:02");
  if (!df_farm_chap_set (farm, "d2", "u2", "fuzz-secret-12", NULL, &err))
    fuzz_die ("chap", err);
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

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  g_autofree char *dir = NULL;

  (void) argc; (void) argv;
  make_farm (&dir);
  fuzz_farm_finish (dir, &exports, &sessions);
  tgt = df_iscsi_target_new (exports, sessions);
  prefixes[0] = g_byte_array_new ();
  prefixes[1] = make_prefix (DF_IQN_PREFIX "d1");
  prefixes[2] = make_prefix (DF_IQN_PREFIX "vdisk.fz");
  prefixes[3] = make_prefix (NULL);
  return 0;
}

/* Feed like a transport would (engine.h: input_space, process, drain the
 * output, repeat while the engine has work held back). */
static bool
feed (iscsi_conn *c, const uint8_t *p, size_t len)
{
  return df_engine_feed (iscsi_conn_engine (c), p, len, NULL, NULL);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autoptr (iscsi_conn) c = NULL;
  uint8_t mode, split;
  gint64 now = G_USEC_PER_SEC;

  if (size < 2)
    return 0;
  mode = data[0] % G_N_ELEMENTS (prefixes);
  split = data[1];
  data += 2;
  size -= 2;
  /* each input starts unlocked: runs do not depend on earlier ones'
   * CHAP failures (iscsi_authlimit.c) */
  iscsi_authlimit_succeeded (tgt, "fuzz");
  c = iscsi_conn_new (tgt, "fuzz", "127.0.0.1:3260");
  iscsi_conn_set_nop (c, 1, 1); /* pings and their timeouts between chunks */
  if (!feed (c, prefixes[mode]->data, prefixes[mode]->len))
    return 0;
  while (size > 0)
    {
      size_t n = split ? MIN ((size_t) split, size) : size;
      if (!feed (c, data, n))
        break;
      data += n;
      size -= n;
      /* the split byte's low bits: how many idle seconds follow */
      for (int i = 0; i < (split & 3); i++)
        if (!iscsi_conn_tick (c, now += G_USEC_PER_SEC))
          return 0;
      df_engine_pump (iscsi_conn_engine (c), NULL, NULL);
    }
  return 0;
}
