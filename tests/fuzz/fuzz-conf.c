/* libFuzzer harness: diskfarm.conf (lib/common/conf.c): any text either
 * loads, every key then readable, or is refused with one line naming the
 * file. */
#include "conf.h"

#include <glib.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autofree char *text = g_strndup ((const char *) data, size);
  GError *err = NULL;
  DfConf *c = df_conf_load_data (text, "f.conf", &err);
  if (c == NULL)
    {
      g_assert (err != NULL && g_str_has_prefix (err->message, "f.conf"));
      g_assert (strchr (err->message, '\n') == NULL);   /* one line */
      g_error_free (err);
      return 0;
    }
  for (const DfConfKey *k = df_conf_schema; k->group != NULL; k++)
    {
      g_autofree char *dotted = g_strdup_printf ("%s.%s", k->group, k->key);
      g_free (df_conf_get_text (c, dotted, &err));
      g_assert_no_error (err);
    }
  df_conf_free (c);
  return 0;
}
