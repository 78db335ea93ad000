/* diskfarm bootstrap: open a file below a root directory, never outside.
 *
 * Used by TFTP and HTTP for <farm>/boot/: the requested name is first
 * cleaned (df_tftp_clean_path: no "..", no absolute part), then opened with
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS),
 * or component by component with O_NOFOLLOW on kernels without openat2.
 * Callers check the returned descriptor with fstat (regular file), never
 * the path: no stat/open race. */
#pragma once

/* Open rel (cleaned, relative) below root_fd read-only, non-blocking (a
 * FIFO cannot hang us), close-on-exec.  -1 + errno on failure. */
int df_open_beneath (int root_fd, const char *rel);
