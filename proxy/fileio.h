/* fileio.h — opening the files a configuration names (the config itself, fallback files, TLS
 * certificates and keys, the access log) so that the open never blocks.
 *
 * A FIFO at such a path blocks open() until its other end is opened: for good when nobody does,
 * holding the loader or log-writer thread, and with it the exit that joins that thread. Opened
 * with O_NONBLOCK, a FIFO opens at once for reading (read then says end of file while nobody
 * writes) and fails with ENXIO for writing while nobody reads; O_NONBLOCK is then cleared, so reads
 * and writes behave as on any file. Regular files are not affected. */
#ifndef LIFELINE_FILEIO_H
#define LIFELINE_FILEIO_H

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

/* open(path, flags | O_CLOEXEC | O_NOCTTY, mode) that never waits for a FIFO's other end. */
static inline int file_open(const char *path, int flags, mode_t mode)
{
    int fd = open(path, flags | O_NONBLOCK | O_CLOEXEC | O_NOCTTY, mode), fl;

    if (fd >= 0 && (fl = fcntl(fd, F_GETFL)) >= 0)
        (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

/* For a path handed to a library that opens it itself (OpenSSL): 0 when it is a regular file that
 * opens for reading, -1 with errno set when it does not open, -2 when it is something else (a FIFO,
 * a directory, a device). */
static inline int file_check_regular(const char *path)
{
    struct stat st;
    int fd = file_open(path, O_RDONLY, 0), rc;

    if (fd < 0)
        return -1;
    rc = fstat(fd, &st) < 0 ? -1 : S_ISREG(st.st_mode) ? 0 : -2;
    close(fd);
    return rc;
}

#endif
