# cython: language_level=3, boundscheck=False, wraparound=False
"""A commit-log fsync thread that never takes the GIL (docs/decisions.md D30).

The event loop writes a group's records to the segment file itself and then asks this
thread to ``fdatasync`` it (``request``); the thread syncs and signals the loop through an
eventfd, which the loop watches (``fileno``) and drains (``drain``). The thread is plain C
(pthreads), so a group commit costs the kernel's fsync, one futex wake and one eventfd
write, instead of a Python thread's GIL handoffs (docs/decisions.md D30 has the figures).

Invariants:
- ``done`` (the highest sequence number known durable) only grows, and grows to ``want``
  only after an fdatasync of ``fd`` that started after every record up to ``want`` was
  written to ``fd`` (``request`` is called after the write);
- ``fd`` is changed only while the thread is not syncing (``set_fd`` waits), so the caller
  may close the old file once ``set_fd`` returns;
- a failed fdatasync is sticky (``err``): nothing is reported durable after it, since a
  failed fsync leaves the file's state unknown;
- with ``batch_sched`` (the default) the thread runs under SCHED_BATCH: its wakeups do
  not preempt the event loop (D34).

Built only as an extension (there is no Python source of this module): without a C
compiler, or with RINGKV_PURE_PYTHON set, the commit log keeps its Python syncer thread.
"""

from libc.errno cimport errno
from libc.stdint cimport uint64_t
from libc.stdlib cimport malloc, free
from posix.unistd cimport fdatasync, read, write, close


cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_cond_t:
        pass
    int pthread_create(pthread_t *thread, void *attr, void *(*start)(void *) noexcept nogil, void *arg)
    int pthread_join(pthread_t thread, void **retval)
    int pthread_mutex_init(pthread_mutex_t *m, void *attr)
    int pthread_mutex_destroy(pthread_mutex_t *m)
    int pthread_mutex_lock(pthread_mutex_t *m)
    int pthread_mutex_unlock(pthread_mutex_t *m)
    int pthread_cond_init(pthread_cond_t *c, void *attr)
    int pthread_cond_destroy(pthread_cond_t *c)
    int pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m)
    int pthread_cond_signal(pthread_cond_t *c)
    int pthread_cond_broadcast(pthread_cond_t *c)


cdef extern from "<sched.h>" nogil:
    struct sched_param:
        int sched_priority
    int sched_setscheduler(int pid, int policy, const sched_param *param)
    int SCHED_BATCH


cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    int EFD_NONBLOCK
    int EFD_CLOEXEC


ctypedef struct State:
    pthread_mutex_t mu
    pthread_cond_t work     # the thread waits here for a request (or stop)
    pthread_cond_t idle     # set_fd waits here for the thread to finish a sync
    int efd                 # eventfd the loop watches; written after each sync
    int fd                  # the file to sync
    long long want          # highest seq requested
    long long done          # highest seq durable
    int err                 # errno of the first failed fdatasync, 0 if none
    int busy                # 1 while an fdatasync runs
    int stop
    int batch               # 1: the thread runs under SCHED_BATCH (see _run)
    long long fsyncs


cdef void *_run(void *arg) noexcept nogil:
    cdef State *s = <State *>arg
    cdef int fd, rc, e
    cdef long long target
    cdef uint64_t one = 1
    cdef sched_param prio
    if s.batch:
        # SCHED_BATCH (Linux; pid 0 = this thread only): when an fdatasync ends, waking
        # this thread does not preempt whatever runs on the CPU, typically a node's busy
        # event loop, which would come back to cold caches; the thread runs at once on an
        # idle CPU, else at the next switch, so the group keeps filling meanwhile. Same CPU
        # share as the normal policy, so it is never starved. Best effort: a failure
        # leaves the normal policy. Measured in docs/decisions.md D34.
        prio.sched_priority = 0
        sched_setscheduler(0, SCHED_BATCH, &prio)
    pthread_mutex_lock(&s.mu)
    while True:
        while not s.stop and (s.want <= s.done or s.err != 0):
            pthread_cond_wait(&s.work, &s.mu)
        if s.stop:
            break
        fd, target, s.busy = s.fd, s.want, 1
        pthread_mutex_unlock(&s.mu)
        rc = fdatasync(fd)
        e = errno
        pthread_mutex_lock(&s.mu)
        s.busy = 0
        if rc != 0:
            s.err = e if e != 0 else 5  # EIO if errno was somehow not set
        else:
            s.fsyncs += 1
            if target > s.done:
                s.done = target
        pthread_cond_broadcast(&s.idle)
        pthread_mutex_unlock(&s.mu)
        write(s.efd, &one, 8)  # wakes the loop; a full counter (never, 2**64-2) only means it is awake already
        pthread_mutex_lock(&s.mu)
    pthread_mutex_unlock(&s.mu)
    return NULL


cdef class FsyncThread:
    """One C thread that fdatasyncs a commit-log file on request; see the module doc."""

    cdef State *s
    cdef pthread_t tid
    cdef bint running
    cdef bint fd_open

    def __cinit__(self, int fd, long long synced, bint batch_sched=True):
        self.s = <State *>malloc(sizeof(State))
        if self.s == NULL:
            raise MemoryError()
        self.running = False
        self.fd_open = False
        pthread_mutex_init(&self.s.mu, NULL)
        pthread_cond_init(&self.s.work, NULL)
        pthread_cond_init(&self.s.idle, NULL)
        self.s.fd, self.s.want, self.s.done = fd, synced, synced
        self.s.err = self.s.busy = self.s.stop = 0
        self.s.batch = 1 if batch_sched else 0
        self.s.fsyncs = 0
        self.s.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if self.s.efd < 0:
            raise OSError(errno, "eventfd failed")
        self.fd_open = True
        if pthread_create(&self.tid, NULL, _run, <void *>self.s) != 0:
            raise OSError(errno, "could not start the fsync thread")
        self.running = True

    def fileno(self) -> int:
        """The eventfd that becomes readable after each sync (for ``loop.add_reader``)."""
        return self.s.efd

    def request(self, int fd, long long seq) -> None:
        """Ask for ``fd`` to be synced, covering records up to ``seq`` (already written to
        it). Never blocks on IO: the thread holds the lock only between syncs."""
        with nogil:
            pthread_mutex_lock(&self.s.mu)
            self.s.fd = fd
            if seq > self.s.want:
                self.s.want = seq
            pthread_cond_signal(&self.s.work)
            pthread_mutex_unlock(&self.s.mu)

    def set_fd(self, int fd) -> None:
        """Sync ``fd`` from now on; returns once no sync of the old file runs (so the
        caller may close it). Requests not yet synced are carried over to ``fd``: the
        caller synced the old file itself before switching."""
        with nogil:
            pthread_mutex_lock(&self.s.mu)
            while self.s.busy:
                pthread_cond_wait(&self.s.idle, &self.s.mu)
            self.s.fd = fd
            pthread_mutex_unlock(&self.s.mu)

    def drain(self) -> tuple:
        """Clear the eventfd; ``(done, err, fsyncs)``: the highest durable seq, the errno of
        a failed fdatasync (0 if none) and the number of fdatasyncs so far."""
        cdef uint64_t n
        cdef long long done, fsyncs
        cdef int err
        with nogil:
            read(self.s.efd, &n, 8)  # non-blocking: EAGAIN when already clear
            pthread_mutex_lock(&self.s.mu)
            done, err, fsyncs = self.s.done, self.s.err, self.s.fsyncs
            pthread_mutex_unlock(&self.s.mu)
        return done, err, fsyncs

    def stop(self) -> None:
        """Stop the thread (waits for a running sync to end). Idempotent. The eventfd
        stays open until ``close_eventfd`` (the loop may still watch it)."""
        if not self.running:
            return
        with nogil:
            pthread_mutex_lock(&self.s.mu)
            self.s.stop = 1
            pthread_cond_signal(&self.s.work)
            pthread_mutex_unlock(&self.s.mu)
            pthread_join(self.tid, NULL)
        self.running = False

    def close_eventfd(self) -> None:
        """Close the eventfd (after the loop stopped watching it). Idempotent."""
        if self.fd_open:
            close(self.s.efd)
            self.fd_open = False

    def __dealloc__(self):
        if self.s == NULL:
            return
        if self.running:
            self.stop()
        self.close_eventfd()
        pthread_cond_destroy(&self.s.idle)
        pthread_cond_destroy(&self.s.work)
        pthread_mutex_destroy(&self.s.mu)
        free(self.s)
        self.s = NULL
