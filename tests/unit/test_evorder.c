/* test_evorder.c — evorder.h: of the sockets one loop turn finds ready, the one that became ready
 * first is served first (libev alone serves them last-in first-out). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>
#include <ev.h>

#include "evorder.h"

#define N 8

static int served[N], nserved;

static void on_ready(struct ev_loop *loop, ev_io *w, int revents)
{
    char b;

    (void)loop;
    (void)revents;
    assert_int_equal(read(w->fd, &b, 1), 1);
    served[nserved++] = (int)(intptr_t)w->data;
}

/* Makes the sockets ready in ORDER, runs one turn, checks they were served in that order. A turn
 * with nothing ready comes first: epoll re-queues what it reported (level-triggered) and drops it
 * only at its next wait, so sockets made ready before that keep their old place. */
static void one_turn(struct ev_loop *loop, int pairs[N][2], const int order[N])
{
    nserved = 0;
    ev_run(loop, EVRUN_NOWAIT);
    assert_int_equal(nserved, 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(write(pairs[order[i]][1], "x", 1), 1);
    ev_run(loop, EVRUN_NOWAIT);
    assert_int_equal(nserved, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(served[i], order[i]);
}

static void test_first_ready_first_served(void **state)
{
    struct ev_loop *loop = ev_loop_new(EVBACKEND_EPOLL);
    int pairs[N][2];
    ev_io io[N];
    static const int in_fd_order[N] = { 0, 1, 2, 3, 4, 5, 6, 7 };
    static const int shuffled[N] = { 5, 2, 7, 0, 3, 6, 1, 4 };
    static const int backwards[N] = { 7, 6, 5, 4, 3, 2, 1, 0 };

    (void)state;
    assert_non_null(loop);
    for (int i = 0; i < N; i++) {
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, pairs[i]), 0);
        ev_io_init(&io[i], on_ready, pairs[i][0], EV_READ);
        io[i].data = (void *)(intptr_t)i;
        ev_io_start(loop, &io[i]);
    }
    ev_run(loop, EVRUN_NOWAIT);   /* the watchers reach epoll */
    one_turn(loop, pairs, in_fd_order);
    one_turn(loop, pairs, shuffled);
    one_turn(loop, pairs, backwards);
    for (int i = 0; i < N; i++) {
        ev_io_stop(loop, &io[i]);
        close(pairs[i][0]);
        close(pairs[i][1]);
    }
    ev_loop_destroy(loop);
}

static void test_errors_pass_through(void **state)
{
    struct epoll_event ev[4];

    (void)state;
    assert_int_equal(epoll_wait(-1, ev, 4, 0), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_ready_first_served),
        cmocka_unit_test(test_errors_pass_through),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
