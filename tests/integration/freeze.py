"""Stops one thread of a running lifeline and lets it go again, to put two events into one loop
turn in a chosen order (SIGSTOP stops every thread; a worker stopped alone keeps its socket events
and its wake-ups pending while the main thread goes on). Uses ptrace (PTRACE_SEIZE, then
PTRACE_INTERRUPT; PTRACE_DETACH resumes): needs root or CAP_SYS_PTRACE, as these tests run.

  thread_id(pid, name)      the TID of the thread whose name (/proc/PID/task/TID/comm) is `name`,
                            e.g. "worker 0" (lifeline names its threads)
  frozen(pid, name)         context manager: that thread stopped inside the block

A worker thread let go with both a readable client socket and a wake-up (a command posted by
the main thread) pending sees them in one loop turn, the wake-up first: libev runs its wake-up
pipe's watcher at the highest priority."""

import contextlib
import ctypes
import errno
import os
import time

from conftest import t

PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
WALL = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.restype = ctypes.c_long


def _ptrace(req, tid):
    if _libc.ptrace(ctypes.c_long(req), ctypes.c_long(tid), ctypes.c_void_p(0), ctypes.c_void_p(0)) < 0:
        e = ctypes.get_errno()
        raise OSError(e, "ptrace(%#x, %d): %s" % (req, tid, os.strerror(e)))


def thread_id(pid, name, timeout=None):
    deadline = time.monotonic() + (timeout if timeout is not None else t(5))
    while True:
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                    if f.read().strip() == name:
                        return int(tid)
            except OSError:
                continue
        if time.monotonic() > deadline:
            raise AssertionError("no thread named %r in process %d" % (name, pid))
        time.sleep(0.02)


def _state(tid):
    with open("/proc/%d/stat" % tid) as f:
        return f.read().rsplit(")", 1)[1].split()[0]


@contextlib.contextmanager
def frozen(pid, name):
    tid = thread_id(pid, name)
    _ptrace(PTRACE_SEIZE, tid)
    try:
        _ptrace(PTRACE_INTERRUPT, tid)
        got, _ = os.waitpid(tid, WALL)
        assert got == tid
        assert _state(tid) == "t", "thread %d not stopped" % tid   # t: stopped by its tracer
        yield tid
    finally:
        try:
            _ptrace(PTRACE_DETACH, tid)
        except OSError as e:
            if e.errno != errno.ESRCH:
                raise
