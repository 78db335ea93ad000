/* streamsvc: the one access rule of the admin HTTP API.
 *
 * A request that came over a UNIX socket is let through: the socket's
 * mode and group (0660, the farm's group) already said who may connect.
 * Over TCP, every path but the open ones (DF_ADMIN_OPEN_PATHS: /metrics
 * for Prometheus, /v1/health for the bootstrap servers' health checks)
 * needs "Authorization: Bearer <the farm's admin token>"; anything else
 * gets 401 with "WWW-Authenticate: Bearer realm="diskfarm"" before any
 * handler runs and before a request body is read.  It is a SoupAuthDomain
 * covering "/", so it holds for every handler the server has, including
 * ones added later.  The token is compared in constant time and never
 * logged; refusals are logged at most once every
 * DF_ADMIN_REFUSAL_LOG_S seconds (with the count of those not logged). */
#pragma once

#include <libsoup/soup.h>

#define DF_ADMIN_REFUSAL_LOG_S 10

/* New auth domain for soup_server_add_auth_domain (the caller unrefs it
 * after adding).  token: the bearer token, copied (wiped at finalize);
 * NULL refuses every protected path over TCP. */
SoupAuthDomain *df_admin_auth_new (const char *token);

/* Whether path is open to TCP clients without a token. */
gboolean df_admin_path_is_open (const char *path);
