/* diskfarm: interrupting long work cleanly (see common.h).
 *
 * The handler does only async-signal-safe things: it records the first
 * signal in a sig_atomic_t, and on a second one unlinks the registered
 * temporary files and _exits.  Everything else (messages, removing the
 * partial output, the exit status) happens on the normal error path of
 * the loop that notices df_interrupt_check. */
#include "config.h"
#include "common.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

#define MAX_TEMPS 8

static const int handled[] = { SIGINT, SIGTERM, SIGHUP };
static struct sigaction saved[G_N_ELEMENTS (handled)];
static volatile sig_atomic_t received;
static volatile sig_atomic_t child; /* gets our signals too, or 0 */
static char twice_msg[128];         /* "<program>: interrupted twice; ..." */
static const char *volatile temps[MAX_TEMPS];
static int depth;

static void
on_signal (int sig)
{
  if (child > 0)
    kill ((pid_t)child, sig);
  if (received == 0)
    {
      received = sig;
      return;
    }
  for (int i = 0; i < MAX_TEMPS; i++) /* files, then their directories */
    {
      const char *p = temps[i];
      if (p != NULL)
        unlink (p);
    }
  for (int i = MAX_TEMPS - 1; i >= 0; i--) /* inner ones came later */
    {
      const char *p = temps[i];
      if (p != NULL)
        rmdir (p);
    }
  if (write (STDERR_FILENO, twice_msg, strlen (twice_msg)) < 0)
    { /* nothing left to do */
    }
  _exit (128 + sig);
}

void
df_interrupt_begin (void)
{
  if (depth++ > 0)
    return;
  received = 0;
  /* the message is made here: the handler may not allocate */
  const char *prg = g_get_prgname () ? g_get_prgname () : "diskfarm";
  g_snprintf (twice_msg, sizeof twice_msg,
              "%.*s: interrupted twice; "
              "temporary files removed\n",
              (int)strcspn (prg, " "), prg);
  struct sigaction sa;
  memset (&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset (&sa.sa_mask);
  for (gsize i = 0; i < G_N_ELEMENTS (handled); i++)
    {
      sigaction (handled[i], NULL, &saved[i]);
      /* ignored (nohup, "cmd &" without job control): keep ignoring */
      if (saved[i].sa_handler != SIG_IGN)
        sigaction (handled[i], &sa, NULL);
    }
}

void
df_interrupt_end (void)
{
  g_return_if_fail (depth > 0);
  if (--depth > 0)
    return;
  for (gsize i = 0; i < G_N_ELEMENTS (handled); i++)
    sigaction (handled[i], &saved[i], NULL);
}

void
df_interrupt_forward (int pid)
{
  child = pid;
}

int
df_interrupt_signal (void)
{
  return received;
}

static const char *
signal_name (int sig)
{
  switch (sig)
    {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    case SIGHUP:
      return "SIGHUP";
    default:
      return "a signal";
    }
}

bool
df_interrupt_check (GError **err)
{
  int sig = received;
  if (sig == 0)
    return true;
  g_set_error (err, DF_ERROR, DF_ERROR_INTERRUPTED,
               "interrupted by %s; the partial output was removed",
               signal_name (sig));
  return false;
}

void
df_temp_register (const char *path)
{
  for (int i = 0; i < MAX_TEMPS; i++)
    if (temps[i] == NULL)
      {
        temps[i] = path;
        return;
      }
  g_warning ("more than %d temporary files at once: %s is not removed by a "
             "second signal",
             MAX_TEMPS, path);
}

void
df_temp_unregister (const char *path)
{
  for (int i = 0; i < MAX_TEMPS; i++)
    if (temps[i] == path)
      temps[i] = NULL;
}
