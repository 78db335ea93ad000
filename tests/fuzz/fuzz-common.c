/* libFuzzer harness: the shared grammars of lib/common (sizes, MACs,
 * names, hosts, message text) and the cache-mode grammar of lib/vdisk that
 * the farm DB relies on.  Properties: no crash; every error message is one
 * valid UTF-8 line; a cache mode that parses prints in a spelling that
 * parses back to the same mode. */
#include "common.h"
#include "vdisk.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static void
check_error (GError **err)
{
  if (*err != NULL)
    {
      g_assert (g_utf8_validate ((*err)->message, -1, NULL));
      g_assert (strchr ((*err)->message, '\n') == NULL);
    }
  g_clear_error (err);
}

static void
check_cache_mode (const char *s)
{
  DfCacheMode m, back;
  GError *err = NULL;
  if (df_cache_mode_parse (s, &m, &err))
    {
      g_autofree char *canon = df_cache_mode_to_string (&m);
      g_assert (df_cache_mode_parse (canon, &back, NULL));
      g_assert (back.kind == m.kind && back.ram_limit == m.ram_limit);
    }
  g_clear_error (&err);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autofree char *s = g_strndup ((const char *) data, size);
  GError *err = NULL;
  uint64_t v;
  char mac[18];

  df_parse_size (s, &v, &err);
  check_error (&err);
  if (df_parse_device_mac (s, mac, &err))
    g_assert (df_parse_mac (mac, mac, NULL));
  check_error (&err);
  df_validate_name ("device", s, &err);
  check_error (&err);
  df_validate_host ("server address", s, &err);
  check_error (&err);
  g_autofree char *shown = df_display_text (s, 16);
  g_assert (g_utf8_validate (shown, -1, NULL));
  g_assert (g_utf8_strlen (shown, -1) <= 16 + 3);
  check_cache_mode (s);
  return 0;
}
