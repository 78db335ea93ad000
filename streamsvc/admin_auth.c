/* streamsvc: bearer-token access to the admin HTTP API (see admin_auth.h). */
#define G_LOG_DOMAIN "streamsvc"

#include "admin_auth.h"

#include <gio/gunixsocketaddress.h>
#include <string.h>

#include "common.h"

#define REALM "diskfarm"
#define BEARER "Bearer "

static const char *const open_paths[] = { "/metrics", "/v1/health" };

gboolean
df_admin_path_is_open (const char *path)
{
  for (gsize i = 0; i < G_N_ELEMENTS (open_paths); i++)
    if (strcmp (path, open_paths[i]) == 0)
      return TRUE;
  return FALSE;
}

#define DF_TYPE_ADMIN_AUTH (df_admin_auth_get_type ())
G_DECLARE_FINAL_TYPE (DfAdminAuth, df_admin_auth, DF, ADMIN_AUTH,
                      SoupAuthDomain)

struct _DfAdminAuth
{
  SoupAuthDomain parent;
  char *token;          /* owned secret, NULL: none accepted */
  gint64 log_window;    /* monotonic µs when the last refusal was logged */
  guint unlogged;       /* refusals since, not logged */
};

G_DEFINE_FINAL_TYPE (DfAdminAuth, df_admin_auth, SOUP_TYPE_AUTH_DOMAIN)

/* "Bearer <token>" naming our token: a user name for libsoup (new). */
static char *
auth_accepts (SoupAuthDomain *domain, SoupServerMessage *msg,
              const char *header)
{
  DfAdminAuth *a = DF_ADMIN_AUTH (domain);

  if (g_ascii_strncasecmp (header, BEARER, strlen (BEARER)) != 0)
    return NULL;
  return df_secret_equal (header + strlen (BEARER), a->token)
             ? g_strdup ("admin")
             : NULL;
}

static void
log_refusal (DfAdminAuth *a, SoupServerMessage *msg)
{
  gint64 now = g_get_monotonic_time ();
  GSocketAddress *peer = soup_server_message_get_remote_address (msg);
  g_autofree char *who = NULL;
  const char *why = soup_message_headers_get_one (
                        soup_server_message_get_request_headers (msg),
                        "Authorization")
                        ? "wrong token"
                        : "no token";

  if (a->log_window != 0
      && now - a->log_window < DF_ADMIN_REFUSAL_LOG_S * G_TIME_SPAN_SECOND)
    {
      a->unlogged++;
      return;
    }
  if (peer != NULL && G_IS_INET_SOCKET_ADDRESS (peer))
    who = g_inet_address_to_string (g_inet_socket_address_get_address (
        G_INET_SOCKET_ADDRESS (peer)));
  g_message ("admin: refused %s %s from %s: %s (401)%s",
             soup_server_message_get_method (msg),
             g_uri_get_path (soup_server_message_get_uri (msg)),
             who ? who : "?", why,
             a->unlogged ? " (and earlier refusals not logged)" : "");
  a->log_window = now;
  a->unlogged = 0;
}

static char *
auth_challenge (SoupAuthDomain *domain, SoupServerMessage *msg)
{
  log_refusal (DF_ADMIN_AUTH (domain), msg);
  return g_strdup ("Bearer realm=\"" REALM "\"");
}

/* Whether msg needs the token: TCP, and not an open path. */
static gboolean
auth_filter (SoupAuthDomain *domain, SoupServerMessage *msg, gpointer unused)
{
  GSocketAddress *local = soup_server_message_get_local_address (msg);

  if (local != NULL && G_IS_UNIX_SOCKET_ADDRESS (local))
    return FALSE;
  return !df_admin_path_is_open (
      g_uri_get_path (soup_server_message_get_uri (msg)));
}

static void
df_admin_auth_finalize (GObject *obj)
{
  DfAdminAuth *a = DF_ADMIN_AUTH (obj);

  df_secret_free (a->token);
  G_OBJECT_CLASS (df_admin_auth_parent_class)->finalize (obj);
}

static void
df_admin_auth_class_init (DfAdminAuthClass *klass)
{
  SoupAuthDomainClass *dc = SOUP_AUTH_DOMAIN_CLASS (klass);

  G_OBJECT_CLASS (klass)->finalize = df_admin_auth_finalize;
  dc->accepts = auth_accepts;
  dc->challenge = auth_challenge;
}

static void
df_admin_auth_init (DfAdminAuth *a)
{
}

SoupAuthDomain *
df_admin_auth_new (const char *token)
{
  DfAdminAuth *a = g_object_new (DF_TYPE_ADMIN_AUTH, "realm", REALM, NULL);
  SoupAuthDomain *d = SOUP_AUTH_DOMAIN (a);

  a->token = g_strdup (token);
  soup_auth_domain_add_path (d, "/");
  soup_auth_domain_set_filter (d, auth_filter, NULL, NULL);
  return d;
}
