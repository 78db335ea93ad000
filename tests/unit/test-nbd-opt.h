/* diskfarm: NBD client option bytes for the tests that drive the NBD
 * engine without a socket (test-exports, tests/fuzz/fuzz-nbd).
 * Header-only: static inline. */
#pragma once

#include <glib.h>
#include <stdint.h>

#include "byteorder.h"

/* Append v to b, big-endian. */
static inline void
tu_put_be32 (GByteArray *b, uint32_t v)
{
  uint8_t p[4];

  df_put_be32 (p, v);
  g_byte_array_append (b, p, 4);
}

/* Append one option request: IHAVEOPT, opt, len, then data[0..len). */
static inline void
tu_put_opt (GByteArray *b, uint32_t opt, const void *data, uint32_t len)
{
  g_byte_array_append (b, (const uint8_t *) "IHAVEOPT", 8);
  tu_put_be32 (b, opt);
  tu_put_be32 (b, len);
  g_byte_array_append (b, data, len);
}
