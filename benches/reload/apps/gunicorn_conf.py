"""gunicorn settings for the bench (`-c`): the app itself is
tests/fixtures/unmodified/slow_wsgi.py, unchanged. `post_worker_init` runs in
each worker once it has imported the app, right before the worker enters its
run loop (select for sync workers, epoll for gthread): it prints
`gunicorn[MASTER] worker PID: serving`, the moment the bench takes as "the app
starts waiting on the socket" (the first worker's). The master's pid is the
one hotswap spawned: it tells this generation's workers from the last one's."""
import os
import sys


def post_worker_init(worker):
    print(f"gunicorn[{worker.ppid}] worker {os.getpid()}: serving", file=sys.stderr, flush=True)
