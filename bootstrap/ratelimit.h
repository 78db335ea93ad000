/* diskfarm bootstrap: fixed-window rate limits per source and in total.
 *
 * A window of window_s seconds allows per_source events from one source
 * (an address string) and total events from all sources.  Pure state, no
 * I/O, not thread-safe (each user keeps its own). */
#pragma once

#include <glib.h>
#include <stdbool.h>

typedef struct DfRateLimit DfRateLimit;

DfRateLimit *df_rate_limit_new (guint per_source, guint total,
                                guint window_s);
void df_rate_limit_free (DfRateLimit *r);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfRateLimit, df_rate_limit_free)

typedef enum {
  DF_RATE_OK,
  DF_RATE_SOURCE,           /* this source used its share of the window */
  DF_RATE_TOTAL,            /* every source together used the window */
} DfRateResult;

/* Count one event of source at now_us, unless it is over a limit (then
 * nothing is counted). */
DfRateResult df_rate_limit_take (DfRateLimit *r, const char *source,
                                 gint64 now_us);

/* Refusal log lines: at most DF_LOG_BURST_PER_S a second, so that a flood
 * of bad requests does not flood the log.  A value in its owner; zeroed,
 * it is ready (lib/common's DfLogLimit is one line per interval). */
#define DF_LOG_BURST_PER_S 20
typedef struct {
  gint64 window_us;         /* monotonic start of the current second */
  guint count;              /* lines asked for in it */
} DfLogBurst;

/* Whether one more line may be logged at now_us (monotonic; each call
 * counts). */
bool df_log_burst_allow (DfLogBurst *l, gint64 now_us);
