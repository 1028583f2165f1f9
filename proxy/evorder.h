/* evorder.h — the order in which one loop turn's ready sockets are served: first ready, first served.
 *
 * libev invokes the pending watchers of one priority last-in first-out: of the sockets one
 * epoll_wait() reports, the one that became ready first (the kernel lists them in the order they
 * became ready) is served last. Under load, with hundreds of connections ready per turn, that puts
 * the requests that have waited longest at the back of every turn, which is what a p99 measures.
 * nginx and HAProxy serve epoll's answer in its order.
 *
 * evorder.c defines epoll_wait() in the executable, so the call libev makes resolves to it (an
 * executable's definition comes before libc's in symbol lookup): the kernel's answer is reversed,
 * and libev's last-in first-out order turns it back into the kernel's. Nothing to call; linking
 * evorder.o is the whole interface. Other epoll_wait() callers in the process (none today) would
 * see the answer reversed too, which is harmless for a set of events. */
#ifndef LIFELINE_EVORDER_H
#define LIFELINE_EVORDER_H

#include <sys/epoll.h>

int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout);

#endif
