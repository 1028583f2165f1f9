/* probe.h — the `--probe URL` HTTP client for Docker's HEALTHCHECK (no curl in the image).
 *
 * A blocking one-shot GET of an http:// URL (host, [v6] or name, optional port: 1 to 65535 in digits,
 * none or empty for 80; path, query) with Connection: close, bounded by one 5 s deadline for connect, send and the status line together
 * (name resolution excepted: getaddrinfo has no deadline). Knows nothing of the proxy: it runs in the process
 * that `lifeline --probe` starts, before (instead of) anything else.
 */
#ifndef LIFELINE_PROBE_H
#define LIFELINE_PROBE_H

/* GETs url; returns the process exit code: 0 on a 2xx status line (three digits, then a space or the line's end), 1 otherwise (why on stderr),
 * an invalid URL (a port that is not a number from 1 to 65535, say) included. */
int probe(const char *url);

#endif
