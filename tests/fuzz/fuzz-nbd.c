/* libFuzzer harness: the NBD engine (handshake, options, requests) over a
 * small real farm built at start-up: a 1 MiB qcow2 vdisk "fz" and a device
 * "d1" with a server cache, in a temporary directory.
 *
 * The first input byte picks a prefix so that the fuzzer reaches every
 * state quickly:
 *   0: raw input from the first byte (greeting, client flags, options)
 *   1: negotiated GO on vdisk/fz with structured replies + base:allocation
 *   2: negotiated GO on device/d1, simple replies
 *   3: negotiated GO on device/d1 with structured replies + base:allocation
 *   4: raw input under --tls=require; when the engine accepts STARTTLS,
 *      the handshake is taken as done with identity d1 (between pieces)
 * The rest of the input is fed in pieces whose sizes come from the input.
 */
#include <glib.h>
#include <stdint.h>
#include <string.h>

#include "fuzz-farm.h"
#include "nbd.h"
#include "../unit/test-nbd-opt.h"

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static DfExports *exports;
static DfSessions *sessions;
static GByteArray *prefixes[4];

/* Vdisk "fz" (some data, some zero clusters) and device "d1". */
static void
make_farm (char **dir)
{
  g_autofree uint8_t *image = g_malloc0 (FUZZ_IMAGE_SIZE);
  g_autoptr (DfFarm) farm = NULL;

  for (int i = 0; i < 64; i++) /* some data, some zero clusters */
    memset (image + i * 16384, i % 3 ? 0 : 'A' + i, 16384);
  farm = fuzz_farm_start ("fuzz-nbd", image, dir);
  fuzz_farm_add_device (farm, "d1", "52:54:00:00:00:01");
}

static GByteArray *
make_prefix (const char *export, bool structured)
{
  GByteArray *b = g_byte_array_new ();
  g_autoptr (GByteArray) body = g_byte_array_new ();

  tu_put_be32 (b, 3); /* client flags: fixed newstyle, no zeroes */
  if (structured)
    {
      tu_put_opt (b, 8, NULL, 0);
      tu_put_be32 (body, strlen (export));
      g_byte_array_append (body, (const uint8_t *) export, strlen (export));
      tu_put_be32 (body, 1);
      tu_put_be32 (body, strlen ("base:allocation"));
      g_byte_array_append (body, (const uint8_t *) "base:allocation", 15);
      tu_put_opt (b, 10, body->data, body->len);
      g_byte_array_set_size (body, 0);
    }
  tu_put_be32 (body, strlen (export));
  g_byte_array_append (body, (const uint8_t *) export, strlen (export));
  g_byte_array_append (body, (const uint8_t *) "\0\0", 2);
  tu_put_opt (b, 7, body->data, body->len);
  return b;
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  g_autofree char *dir = NULL;

  make_farm (&dir);
  fuzz_farm_finish (dir, &exports, &sessions);
  prefixes[0] = g_byte_array_new ();
  prefixes[1] = make_prefix ("vdisk/fz", true);
  prefixes[2] = make_prefix ("device/d1", false);
  prefixes[3] = make_prefix ("device/d1", true);
  /* The farm directory stays for the process lifetime (caches live in it). */
  return 0;
}

/* Feed like a transport would (engine.h: input_space, process, drain the
 * output, repeat while the engine has work held back). */
static bool
feed (nbd_conn *c, const uint8_t *p, size_t len)
{
  return df_engine_feed (nbd_conn_engine (c), p, len, NULL, NULL);
}

/* Mode 4: a transport whose TLS handshake always succeeds. */
static void
tls_done_if_wanted (nbd_conn *c, bool tls)
{
  DfEngineConn *e = nbd_conn_engine (c);

  if (tls && df_engine_tls_wanted (e))
    df_engine_tls_started (e, "d1");
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autoptr (nbd_conn) c = NULL;
  uint8_t mode, split;
  bool tls;

  if (size < 2)
    return 0;
  mode = data[0] % (G_N_ELEMENTS (prefixes) + 1);
  tls = mode == G_N_ELEMENTS (prefixes);
  if (tls)
    mode = 0;
  split = data[1];
  data += 2;
  size -= 2;
  c = nbd_conn_new (exports, sessions, "fuzz");
  if (tls)
    nbd_conn_set_tls (c, DF_TLS_REQUIRE);
  df_engine_pump (nbd_conn_engine (c), NULL, NULL); /* the greeting */
  if (!feed (c, prefixes[mode]->data, prefixes[mode]->len))
    return 0;
  /* Split the rest at a data-chosen point to exercise partial input. */
  size_t cut = split ? MIN (size, (size_t) split * 7) : size;
  if (feed (c, data, cut))
    {
      tls_done_if_wanted (c, tls);
      if (feed (c, data + cut, size - cut))
        tls_done_if_wanted (c, tls);
    }
  return 0;
}
