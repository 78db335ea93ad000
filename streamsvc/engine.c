/* streamsvc: the one engine-driving loop (see engine.h). */
#include "engine.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

/* Bytes read from a span for a sink that takes only bytes, per call. */
#define SPAN_COPY_CHUNK (64u * 1024)

gssize
df_engine_span_copy (const DfEngineSpan *span, DfEngineSink sink,
                     void *opaque)
{
  uint8_t buf[SPAN_COPY_CHUNK];
  size_t len = MIN (span->length, sizeof buf);
  ssize_t r;

  if (sink == NULL)
    return (gssize) span->length;
  do
    r = pread (span->fd, buf, len, (off_t) span->offset);
  while (r < 0 && errno == EINTR);
  if (r <= 0)
    return -1; /* the span was checked to lie inside its file */
  return sink (opaque, buf, (size_t) r);
}

/* Send the next piece of output (bytes or a span) that is there.
 * Returns as the sinks; *none set when there is no output. */
static gssize
pump_one (DfEngineConn *e, DfEngineSink sink, DfEngineSpanSink span_sink,
          void *opaque, bool *none)
{
  size_t len;
  const uint8_t *out = df_engine_output (e, &len);
  DfEngineSpan span;

  *none = false;
  if (len > 0)
    return sink != NULL ? sink (opaque, out, len) : (gssize) len;
  if (!df_engine_output_span (e, &span))
    {
      *none = true;
      return 0;
    }
  return span_sink != NULL ? span_sink (opaque, &span)
                           : df_engine_span_copy (&span, sink, opaque);
}

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
df_engine_pump_spans (DfEngineConn *e, DfEngineSink sink,
                      DfEngineSpanSink span_sink, void *opaque)
{
  for (;;)
    {
      bool none;
      gssize n = pump_one (e, sink, span_sink, opaque, &none);

      if (none)
        {
          if (!df_engine_has_work (e))
            return true;
          df_engine_process (e);
          if (!df_engine_output_pending (e))
            return true;
          continue;
        }
      if (n < 0)
        return false;
      if (n == 0)
        return true;
      df_engine_output_consume (e, (size_t) n);
    }
}

bool
df_engine_pump (DfEngineConn *e, DfEngineSink sink, void *opaque)
{
  return df_engine_pump_spans (e, sink, NULL, opaque);
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
