/* evorder.c — see evorder.h: epoll_wait() answers reversed, so libev serves them first ready, first
 * served. */
#include "evorder.h"

#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout)
{
    /* epoll_pwait with no mask is epoll_wait on every architecture (some have no epoll_wait call);
     * _NSIG / 8 is the kernel's sigset size. */
    long n = syscall(SYS_epoll_pwait, epfd, events, maxevents, timeout, (void *)0, _NSIG / 8);

    for (long i = 0, j = n - 1; i < j; i++, j--) {
        struct epoll_event t = events[i];
        events[i] = events[j];
        events[j] = t;
    }
    return (int)n;
}
