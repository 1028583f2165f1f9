/* h1.h — HTTP/1.x message parsing and head serialisation; no I/O.
 *
 * The only file that sees http-parser's types is h1.c (a later move to llhttp stays small).
 * A parser owns its head (struct h1_head, with an arena that holds the start line and every
 * header) and is reused for every message of one connection with h1_parser_reset(). The header
 * table and the arena start small, inside the parser (about 2 KiB in all), and grow on the heap as
 * a head needs, up to H1_MAX_HEADERS entries and max_head_bytes: pointers into them (names, values,
 * the target) stay valid only until the next h1_parse() call; the head's own fields follow a
 * growth. Read them through the head, never keep a copy across a feed.
 *
 * Parsing rejects what SPEC §4 rejects (smuggling vectors, malformed framing, oversized heads) with
 * the status the client must get; callers answer with that status and close the connection. The
 * verdict, the head and the events do not depend on how the input is split: a plain head that
 * arrives whole in a message's first input is parsed in one pass of h1.c's own (vector scans where
 * the CPU has them), any other by http-parser, with the same checks.
 *
 * Body bytes are decoded (chunked framing removed) and re-framed into the caller's output buffer
 * as they are parsed: lifeline rebuilds framing and never forwards the peer's chunk syntax.
 */
#ifndef LIFELINE_H1_H
#define LIFELINE_H1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "buf.h"

#define H1_MAX_HEADERS 128
/* The most the trailer lines a chunked output forwards may take, as written ("name:value\r\n"
 * each, with the last chunk and the final CRLF): they are held until the trailer section ends and
 * written with the last chunk, so the output buffer keeps room for them (h1_parser_room). More is
 * refused as a head too large (431 for a request, 502 for a response). It is reached only with a
 * head limit above it; an output buffer that carries trailers must be larger than this and
 * H1_SLACK (32) together, or the room could stay 0 once they are held. */
#define H1_TRAILER_HOLD_MAX (24 * 1024)

enum h1_kind { H1_REQUEST, H1_RESPONSE };

enum h1_method {
    H1_M_OTHER, H1_M_GET, H1_M_HEAD, H1_M_POST, H1_M_PUT, H1_M_DELETE, H1_M_OPTIONS,
    H1_M_TRACE, H1_M_CONNECT, H1_M_PATCH,
};

/* Header flags, set by the parser. */
enum h1_header_flags {
    H1_HDR_HOP     = 1u << 0,  /* hop-by-hop: Connection and the names it lists, Keep-Alive,
                                  Proxy-Connection, TE, Trailer, Upgrade, Transfer-Encoding, Expect */
    H1_HDR_FRAMING = 1u << 1,  /* Content-Length: re-emitted by the writer from h1_*_out */
    H1_HDR_XFF     = 1u << 2,  /* X-Forwarded-For (the writer appends to the first one) */
    H1_HDR_XFWD    = 1u << 3,  /* X-Forwarded-Proto / X-Forwarded-Host (the writer replaces them) */
    H1_HDR_XRID    = 1u << 4,  /* X-Request-Id (the writer emits o->request_id instead) */
    H1_HDR_HOST    = 1u << 5,  /* Host (the writer emits o->host instead when set) */
    H1_HDR_TPARENT = 1u << 6,  /* traceparent (the writer emits o->traceparent instead) */
    H1_HDR_TSTATE  = 1u << 7,  /* tracestate (forwarded only when o->tracestate) */
    H1_HDR_DATE    = 1u << 8,  /* Date (a response forwarded without one gets lifeline's) */
};

struct h1_header {
    const char *name;  size_t name_len;    /* point into the head's arena; as received */
    const char *value; size_t value_len;   /* leading/trailing whitespace removed */
    unsigned flags;
};

struct h1_head {
    /* request line (H1_REQUEST) */
    enum h1_method method;
    const char *method_name; size_t method_len;
    const char *target;      size_t target_len;
    /* status line (H1_RESPONSE) */
    unsigned status;
    const char *reason;      size_t reason_len;

    unsigned http_major, http_minor;
    struct h1_header *hdrs;  /* the parser's table: nhdrs + ntrailers entries are valid */
    unsigned nhdrs;          /* headers of the head */
    unsigned ntrailers;      /* trailers, stored after the headers: hdrs[nhdrs .. nhdrs+ntrailers) */

    /* framing facts, valid from H1_HEAD on */
    int64_t content_length;  /* -1 when absent */
    bool chunked;            /* Transfer-Encoding: chunked */
    bool keep_alive;         /* the peer wants the connection kept (version + Connection) */
    bool upgrade;            /* request: Upgrade + Connection: upgrade; response: 101 */
    bool expect_continue;    /* Expect: 100-continue */
    bool has_date;           /* a Date header (a response without one gets lifeline's: RFC 9110 §6.6.1) */
    unsigned keep_alive_timeout;   /* Keep-Alive: timeout=N (RFC 2068 §19.7.1.1): how long the
                                    * sender keeps the connection idle, in seconds; 0: not said */
    int host;                /* index of Host in hdrs, -1 when absent */
    int request_id;          /* index of X-Request-Id, -1 when absent */
    int traceparent;         /* index of traceparent, -1 when absent, -2 when more than one */
    int idempotency_key;     /* index of the first Idempotency-Key, -1 when absent */
    /* the arena is private to h1.c */
};

struct h1_parser;

/* Creates a parser; the head arena holds at most max_head_bytes (start line + headers; for a
 * request beyond it: 431, or 414 when the request line alone exceeds it). NULL when out of memory.
 * The caller owns the parser and frees it with h1_parser_free(). */
struct h1_parser *h1_parser_new(enum h1_kind kind, size_t max_head_bytes);
void h1_parser_free(struct h1_parser *p);
/* The most a parser made with max_head_bytes holds once its table and arena have grown in full. */
size_t h1_parser_size_max(size_t max_head_bytes);
/* The max_head_bytes it was made with. */
size_t h1_parser_capacity(const struct h1_parser *p);
/* Forgets the current message; the next byte fed starts a new one. */
void h1_parser_reset(struct h1_parser *p);
struct h1_head *h1_parser_head(struct h1_parser *p);

/* Response parsers only: the request was HEAD, so the response has no body whatever it says.
 * Call before feeding the response. Reset by h1_parser_reset(). */
void h1_parser_expect_no_body(struct h1_parser *p, bool no_body);

/* Body limit (0 = none): a body longer than this fails the parse with 413. Reset keeps it. */
void h1_parser_set_max_body(struct h1_parser *p, uint64_t max);

enum h1_framing {
    H1_FRAME_DROP,     /* body bytes are discarded */
    H1_FRAME_RAW,      /* body bytes are copied as they are (Content-Length or close-delimited) */
    H1_FRAME_CHUNKED,  /* each piece becomes one chunk; the last chunk (`0`), the trailers and the
                          final CRLF are written together at the message's end, never before: a
                          message that fails in its trailers leaves the output without them */
};
/* Where decoded body bytes go, from now until the end of the message. Set it after H1_HEAD and
 * before feeding body bytes; before it is set, body bytes are dropped. */
void h1_parser_set_output(struct h1_parser *p, struct buf *out, enum h1_framing framing);

/* Also hands every decoded body byte to fn(ctx, bytes, len) (the stale store's capture, which
 * bounds and accounts for its own memory); once fn returns < 0 it is not called again for this
 * message. NULL stops copying. */
void h1_parser_set_tee(struct h1_parser *p, int (*fn)(void *ctx, const char *at, size_t len), void *ctx);

enum h1_event {
    H1_NEED_MORE,   /* everything given was consumed; feed more */
    H1_HEAD,        /* the head is complete; *consumed stops right after it */
    H1_DONE,        /* the message is complete; *consumed stops right after it (pipelined bytes
                       that follow belong to the next message: reset, then feed them) */
    H1_ERROR,       /* malformed: see h1_parser_error(); the connection must be closed */
};

/* Feeds bytes; stops at the first event. Never writes more to the output buffer than it has free:
 * feed at most h1_parser_room() bytes at a time while a body is being parsed. 1xx responses other
 * than 101 are reported as H1_HEAD followed by H1_DONE; the caller resets and continues. */
enum h1_event h1_parse(struct h1_parser *p, const char *data, size_t len, size_t *consumed);

/* The connection ended. For a close-delimited response body this completes the message (H1_DONE);
 * anywhere else within a message it is H1_ERROR (truncated); between messages, H1_NEED_MORE. */
enum h1_event h1_parse_eof(struct h1_parser *p);

/* How many input bytes may be fed now without overrunning the output buffer's free space.
 * Raw framing: all the free space. Chunked: less the chunk headers and trailers the parser may
 * write (the output buffer must be larger than the 32 bytes kept in reserve, or the room stays 0),
 * and, within the trailers, less what they hold (H1_TRAILER_HOLD_MAX): nothing of them is in the
 * output yet, so the room may be 0 with the output drained of all it had.
 * SIZE_MAX when body bytes are dropped. */
size_t h1_parser_room(const struct h1_parser *p);

/* True once the head is complete and until the message is done (the body is being parsed). */
bool h1_parser_in_body(const struct h1_parser *p);
/* True from the last chunk's line until the message is done: the trailer section is being read,
 * and the bytes it consumes are held by the parser, not yet in the output (H1_TRAILER_HOLD_MAX). */
bool h1_parser_in_trailers(const struct h1_parser *p);
/* Decoded body bytes seen so far in the current message. */
uint64_t h1_parser_body_bytes(const struct h1_parser *p);

/* After H1_ERROR: the status to answer with (400, 413, 414, 431, 501, 505; 503 when the head's
 * table or arena could not grow) and a short reason. */
unsigned h1_parser_error(const struct h1_parser *p, const char **why);

/* True when the parser was reset and has been fed no byte since: the next h1_parse() reads the
 * message from its first byte (the caller then still holds every byte an error would be about). */
bool h1_parser_fresh(const struct h1_parser *p);

/* Request parsers: the request line as far as it was read, for the log line of an answer to a head
 * that never completed (400, 414, 431, 505 or header_timeout's 408): the method once the target
 * has begun, the target as stored so far (bytes http-parser refused are not stored). Empty where
 * nothing was read. Valid until the next h1_parse() or reset. */
void h1_parser_request_seen(const struct h1_parser *p, const char **method, size_t *method_len,
                            const char **target, size_t *target_len);

/* Request parsers, after H1_ERROR: the value of the head's first X-Request-Id (trailing
 * whitespace removed) when the head was read to its end, then refused by a check of the whole head
 * (framing, Host, version, target: the 400/501/505 a client gets for a complete head) or by an
 * error in the body, so that the answer can carry the client's id. False when there is none, or
 * the error came before the head's end (its header lines are not all known). *value and
 * *value_len are set only when true. Valid until the next h1_parse() or reset. */
bool h1_parser_request_id(const struct h1_parser *p, const char **value, size_t *value_len);

/* What the writer emits for a forwarded request head. */
struct h1_req_out {
    const char *target; size_t target_len;   /* request target to send (after strip_prefix) */
    const char *host;   size_t host_len;     /* Host value; NULL keeps the request's */
    const char *client; size_t client_len;   /* appended to X-Forwarded-For */
    const char *proto;                       /* X-Forwarded-Proto: "http" or "https" */
    const char *request_id; size_t request_id_len;
    const char *traceparent;                 /* H1_TRACEPARENT_LEN bytes to send; NULL: none */
    bool tracestate;                         /* forward the request's tracestate headers */
    int64_t content_length;                  /* >= 0: emit Content-Length */
    bool chunked;                            /* emit Transfer-Encoding: chunked */
    bool upgrade;                            /* forward Upgrade and send Connection: upgrade */
};
/* Writes "METHOD target HTTP/1.1", the request's end-to-end headers (the request's traceparent
 * never; its tracestate only when o->tracestate), then X-Forwarded-For (appended),
 * X-Forwarded-Proto, X-Forwarded-Host (the request's Host), traceparent, X-Request-Id, framing
 * headers. Returns 0, or -1 when it does not fit (nothing written). */
int h1_write_request_head(struct buf *out, const struct h1_head *req, const struct h1_req_out *o);

/* W3C Trace Context: "00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>". */
#define H1_TRACEPARENT_LEN 55
#define H1_TP_TRACE_OFF 3                    /* the trace id's 32 characters */
#define H1_TP_SPAN_OFF 36                    /* the parent (span) id's 16 characters */
#define H1_TP_FLAGS_OFF 53                   /* the flags' 2 characters */
/* A traceparent value lifeline accepts (W3C Trace Context level 1 §3.2): lowercase hex only,
 * version not ff, trace id and parent id not all zero; version 00 exactly 55 characters, a later
 * version at least 55 with '-' after the flags when longer. Its trace id and flags are at the
 * offsets above. Anything else is treated as absent. */
bool h1_traceparent_valid(const char *v, size_t n);

struct h1_resp_out {
    const char *request_id; size_t request_id_len;
    int64_t content_length;                  /* >= 0: emit Content-Length (also for HEAD/304) */
    bool chunked;                            /* emit Transfer-Encoding: chunked */
    bool close;                              /* emit Connection: close */
    bool keep_alive_10;                      /* HTTP/1.0 client kept alive: Connection: keep-alive */
    bool upgrade;                            /* 101: forward Upgrade, Connection: upgrade */
};
/* Writes "HTTP/1.1 status reason", the response's end-to-end headers, X-Request-Id, framing and
 * connection headers. Returns 0, or -1 when it does not fit (nothing written). */
int h1_write_response_head(struct buf *out, const struct h1_head *resp, const struct h1_resp_out *o);

/* A complete response generated by lifeline: status line, `extra` (zero or more complete
 * "name: value\r\n" lines, may be NULL), content-type text/plain when body is given and extra has
 * none, content-length, connection: close when close, then the body unless head_only.
 * Returns 0 or -1 when it does not fit (nothing written). */
int h1_write_simple_response(struct buf *out, unsigned status, const char *extra,
                             const char *body, size_t body_len, bool close, bool head_only);

/* "OK", "Bad Gateway", ...; "Unknown" for codes it does not know. */
const char *h1_reason(unsigned status);
/* The current time as an IMF-fixdate (RFC 9110 §5.6.7, "Sun, 06 Nov 1994 08:49:37 GMT"), for the
 * Date header of lifeline's own answers; formatted once per second per thread. */
const char *h1_date_now(void);

/* Host value (or an absolute-form authority) shaped as RFC 3986 host[:port]: reg-name, IPv4 or an
 * IP-literal in brackets, then digits after ':'. No spaces, userinfo ('@'), path, controls or
 * non-ASCII bytes. The empty value is valid (RFC 9112 §3.2). */
bool h1_host_valid(const char *v, size_t n);
/* A reason phrase that may be forwarded: visible ASCII, spaces and tabs (SPEC §4); otherwise
 * h1_write_response_head() writes h1_reason(status). */
bool h1_reason_valid(const char *r, size_t n);
/* A trailer field that may be forwarded: not one that frames, routes, authenticates or describes
 * the payload (SPEC §4), compared case-insensitively with '_' read as '-'. Trailers dropped by the
 * parser carry H1_HDR_HOP. */
bool h1_trailer_forwardable(const char *name, size_t len);

/* Case-insensitive lookup of a header in the head (not trailers); NULL when absent. h1_find() is
 * inline so that a literal name's length is known at compile time. */
const struct h1_header *h1_find_n(const struct h1_head *h, const char *name, size_t len);
static inline const struct h1_header *h1_find(const struct h1_head *h, const char *name)
{
    return h1_find_n(h, name, strlen(name));
}
/* A 101's Upgrade names a protocol the request's Upgrade offered (RFC 9110 §7.8: a server sends
 * Upgrade with a 101 and switches only to a protocol the client listed; compared without regard
 * to case). */
bool h1_upgrade_offered(const struct h1_head *req, const struct h1_head *resp);

#endif
