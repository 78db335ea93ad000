/* streamsvc: the one engine-driving loop (see engine.h). */
#include "engine.h"

#include <string.h>

void
df_engine_offload (DfEngineConn *e, DfEngineJob *job)
{
  if (e->offload != NULL)
    {
      e->offload (e->offload_opaque, job);
      return;
    }
  job->err = 0;
  job->ret = df_blk_flush (job->blk, &job->err);
  job->done (job);
}

bool
df_engine_pump (DfEngineConn *e, DfEngineSink sink, void *opaque)
{
  for (;;)
    {
      size_t len;
      const uint8_t *out = df_engine_output (e, &len);
      gssize n;

      if (len == 0)
        {
          if (!df_engine_has_work (e))
            return true;
          df_engine_process (e);
          if (df_engine_output (e, &len), len == 0)
            return true;
          continue;
        }
      n = sink != NULL ? sink (opaque, out, len) : (gssize) len;
      if (n < 0)
        return false;
      if (n == 0)
        return true;
      g_assert ((size_t) n <= len);
      df_engine_output_consume (e, (size_t) n);
    }
}

bool
df_engine_feed (DfEngineConn *e, const void *buf, size_t len,
                DfEngineSink sink, void *opaque)
{
  const uint8_t *p = buf;

  while (len > 0)
    {
      size_t room;
      uint8_t *dst = df_engine_input_space (e, &room);
      size_t n = MIN (room, len);

      memcpy (dst, p, n);
      df_engine_input_commit (e, n);
      p += n;
      len -= n;
      df_engine_process (e);
      if (!df_engine_pump (e, sink, opaque))
        return false;
      if (df_engine_should_close (e))
        return false;
    }
  return true;
}

gssize
df_engine_sink_bytes (void *opaque, const uint8_t *buf, size_t len)
{
  g_byte_array_append (opaque, buf, (guint) len);
  return (gssize) len;
}
