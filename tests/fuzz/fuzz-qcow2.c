/* diskfarm: libFuzzer harness for the qcow2/raw image parser and the chain
 * flattener.  Each input is written to a file in a private temporary
 * directory and opened with df_chain_open (as qcow2, so the header path is
 * always exercised); when it opens, a few ranges and extents are read. */
#include "config.h"
#include "common.h"
#include "vdisk.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static char *img_path;

static void
fuzz_setup (void)
{
  char tmpl[] = "/tmp/fuzz-qcow2-XXXXXX";
  char *dir = mkdtemp (tmpl);

  if (dir == NULL)
    abort ();
  img_path = g_build_filename (dir, "img", NULL);
  /* quiet: corrupt compressed clusters log a warning each */
  g_log_set_writer_func (g_log_writer_default, NULL, NULL);
  g_setenv ("G_MESSAGES_DEBUG", "", TRUE);
}

static int
count_extent (void *opaque, uint64_t offset, uint64_t length, uint32_t flags)
{
  (*(unsigned *) opaque)++;
  return 0;
}

static void
read_some (df_blk *b)
{
  static uint8_t buf[256 * 1024];
  uint64_t offs[] = { 0, b->size / 2, b->size > sizeof buf
                      ? b->size - sizeof buf : 0 };
  unsigned n = 0;
  int e = 0;

  for (size_t i = 0; i < G_N_ELEMENTS (offs); i++)
    {
      uint32_t len = (uint32_t) MIN ((uint64_t) sizeof buf, b->size - offs[i]);
      if (len > 0)
        {
          (void) df_blk_pread (b, buf, len, offs[i], &e);
          (void) df_blk_extents (b, len, offs[i], count_extent, &n, &e);
        }
    }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static gsize once = 0;
  GError *err = NULL;

  if (g_once_init_enter (&once))
    {
      fuzz_setup ();
      g_once_init_leave (&once, 1);
    }
  unlink (img_path);
  int fd = open (img_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || (size > 0 && df_pwrite_all (fd, data, size, 0) < 0))
    abort ();
  close (fd);

  df_blk *b = df_chain_open (img_path, DF_FMT_QCOW2, &err);
  if (b != NULL)
    {
      read_some (b);
      df_blk_unref (b);
    }
  g_clear_error (&err);
  return 0;
}
