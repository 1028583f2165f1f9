/* test_splice.c — splice.c: the pipe of the zero-copy body relay, over real sockets (a socketpair
 * on each side of the pipe): byte accounting, room, a full pipe, end of stream, errors, close.
 *
 * Only static functions and main: the Makefile links this file with every proxy object.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "splice.h"

struct fx {
    int src[2];   /* src[0]: written by the test; src[1]: spliced from */
    int dst[2];   /* dst[0]: spliced to; dst[1]: read by the test */
    struct spipe p;
};

static int nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static int fx_setup(void **state)
{
    static struct fx f;

    signal(SIGPIPE, SIG_IGN);   /* as main.c does */
    memset(&f, 0, sizeof(f));
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, f.src), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, f.dst), 0);
    assert_int_equal(nonblock(f.src[1]), 0);
    assert_int_equal(nonblock(f.dst[0]), 0);
    assert_int_equal(nonblock(f.dst[1]), 0);
    spipe_init(&f.p);
    *state = &f;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *f = *state;

    spipe_close(&f->p);
    for (int i = 0; i < 2; i++) {
        if (f->src[i] >= 0)
            close(f->src[i]);
        if (f->dst[i] >= 0)
            close(f->dst[i]);
    }
    return 0;
}

static void fill_pattern(char *b, size_t n, size_t off)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (char)('a' + (off + i) % 23);
}

/* Writes n pattern bytes (starting at pattern offset off) into the source socket. */
static void put(struct fx *f, size_t n, size_t off)
{
    char b[4096];
    while (n) {
        size_t k = n < sizeof(b) ? n : sizeof(b);
        fill_pattern(b, k, off);
        assert_int_equal(write(f->src[0], b, k), (ssize_t)k);
        n -= k;
        off += k;
    }
}

/* Reads what arrived at the destination and checks it against the pattern from offset off. */
static size_t take(struct fx *f, size_t off)
{
    char b[4096], want[4096];
    size_t got = 0;
    ssize_t r;

    while ((r = read(f->dst[1], b, sizeof(b))) > 0) {
        fill_pattern(want, (size_t)r, off + got);
        assert_memory_equal(b, want, (size_t)r);
        got += (size_t)r;
    }
    assert_true(r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
    return got;
}

static void test_closed_pipe(void **state)
{
    struct fx *f = *state;

    assert_false(spipe_is_open(&f->p));
    assert_int_equal(f->p.len, 0);
    assert_int_equal(spipe_room(&f->p), 0);
    spipe_close(&f->p);   /* idempotent on a closed pipe */
    assert_int_equal(f->p.rd, -1);
    assert_int_equal(f->p.wr, -1);
}

static void test_bytes_pass_in_order_and_are_counted(void **state)
{
    struct fx *f = *state;
    size_t off = 0;

    assert_int_equal(spipe_open(&f->p), 0);
    assert_true(spipe_is_open(&f->p));
    assert_true(f->p.cap >= 4096);
    assert_int_equal(f->p.len, 0);
    assert_int_equal(spipe_room(&f->p), f->p.cap);

    /* nothing to read yet: not ready, nothing counted */
    assert_int_equal(spipe_fill(&f->p, f->src[1], 1000), -EAGAIN);
    assert_int_equal(f->p.len, 0);
    /* draining an empty pipe moves nothing */
    assert_int_equal(spipe_drain(&f->p, f->dst[0], 1000), 0);

    put(f, 3000, 0);
    /* max is respected */
    assert_int_equal(spipe_fill(&f->p, f->src[1], 1000), 1000);
    assert_int_equal(f->p.len, 1000);
    assert_int_equal(spipe_room(&f->p), f->p.cap - 1000);
    assert_int_equal(spipe_fill(&f->p, f->src[1], 5000), 2000);
    assert_int_equal(f->p.len, 3000);
    /* a drain asks for more than the pipe holds: what it holds */
    assert_int_equal(spipe_drain(&f->p, f->dst[0], 1200), 1200);
    assert_int_equal(f->p.len, 1800);
    assert_int_equal(spipe_drain(&f->p, f->dst[0], 100000), 1800);
    assert_int_equal(f->p.len, 0);
    off += take(f, off);
    assert_int_equal(off, 3000);
}

static void test_full_pipe_fills_no_more(void **state)
{
    struct fx *f = *state;
    size_t in = 0, out = 0;
    ssize_t r;

    assert_int_equal(spipe_open(&f->p), 0);
    /* more than the pipe holds waits in the source socket */
    put(f, f->p.cap, 0);
    put(f, 4096, f->p.cap);
    while ((r = spipe_fill(&f->p, f->src[1], SIZE_MAX)) > 0)
        in += (size_t)r;
    assert_int_equal(r, -EAGAIN);   /* full (or nothing left): never more than cap */
    assert_true(f->p.len <= f->p.cap);
    assert_int_equal(f->p.len, in);
    if (f->p.len == f->p.cap)
        assert_int_equal(spipe_room(&f->p), 0);
    /* drain everything and the rest follows */
    for (int guard = 0; in < f->p.cap + 4096; guard++) {
        assert_true(guard < 10000);   /* bounded: each pass moves bytes */
        r = spipe_drain(&f->p, f->dst[0], f->p.len);
        assert_true(r >= 0);
        out += take(f, out);
        r = spipe_fill(&f->p, f->src[1], SIZE_MAX);
        if (r > 0)
            in += (size_t)r;
        else
            assert_int_equal(r, -EAGAIN);
    }
    while (f->p.len) {
        r = spipe_drain(&f->p, f->dst[0], f->p.len);
        assert_true(r > 0);
        out += take(f, out);
    }
    out += take(f, out);
    assert_int_equal(out, f->p.cap + 4096);
}

static void test_end_of_stream_and_errors(void **state)
{
    struct fx *f = *state;

    assert_int_equal(spipe_open(&f->p), 0);
    put(f, 10, 0);
    close(f->src[0]);
    f->src[0] = -1;
    assert_int_equal(spipe_fill(&f->p, f->src[1], 100), 10);
    assert_int_equal(spipe_fill(&f->p, f->src[1], 100), 0);   /* end of stream */
    assert_int_equal(f->p.len, 10);
    /* the peer of the destination is gone: an error, -EPIPE, never SIGPIPE; nothing counted */
    close(f->dst[1]);
    f->dst[1] = -1;
    assert_int_equal(spipe_drain(&f->p, f->dst[0], 10), -EPIPE);
    assert_int_equal(f->p.len, 10);
    /* closing discards what the pipe holds */
    spipe_close(&f->p);
    assert_false(spipe_is_open(&f->p));
    assert_int_equal(f->p.len, 0);
    /* a bad fd is an error, not a crash */
    assert_int_equal(spipe_open(&f->p), 0);
    assert_int_equal(spipe_fill(&f->p, -1, 10), -EBADF);
}

/* At most SPIPE_MAX pipes open in the process: the next open is refused with -ENOSPC (the caller
 * copies) and succeeds again once one is closed; the count follows opens and closes. Needs about
 * 2 x SPIPE_MAX + 100 fds: skipped when the limit is lower. */
static void test_pipes_bounded(void **state)
{
    static struct spipe ps[SPIPE_MAX];
    struct spipe extra;
    struct rlimit rl;
    int base = spipe_open_count();

    (void)state;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 2 * SPIPE_MAX + 100) {
        rl.rlim_cur = rl.rlim_max < 2 * SPIPE_MAX + 100 ? rl.rlim_max : 2 * SPIPE_MAX + 100;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < 2 * SPIPE_MAX + 100)
            skip();
    }
    for (int i = 0; i < SPIPE_MAX - base; i++)
        assert_int_equal(spipe_open(&ps[i]), 0);
    assert_int_equal(spipe_open_count(), SPIPE_MAX);
    spipe_init(&extra);
    assert_int_equal(spipe_open(&extra), -ENOSPC);
    assert_false(spipe_is_open(&extra));
    spipe_close(&ps[0]);
    assert_int_equal(spipe_open(&extra), 0);
    spipe_close(&extra);
    spipe_close(&extra);   /* idempotent: counted once */
    for (int i = 0; i < SPIPE_MAX - base; i++)
        spipe_close(&ps[i]);
    assert_int_equal(spipe_open_count(), base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_closed_pipe, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_bytes_pass_in_order_and_are_counted, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_full_pipe_fills_no_more, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_end_of_stream_and_errors, fx_setup, fx_teardown),
        cmocka_unit_test(test_pipes_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
