"""A WSGI app for gunicorn under hotswap; it needs nothing hotswap-specific.

    hotswap --listen 127.0.0.1:8000 --chdir examples/python -- gunicorn -w 2 wsgi:app

gunicorn reads LISTEN_FDS and LISTEN_PID itself (systemd's socket activation)
and serves on the socket hotswap passes as fd 3: do not add `--bind fd://3`,
or gunicorn opens fd 3 twice and fails with EBADF. It tells hotswap it is
ready with READY=1 on NOTIFY_SOCKET, and on SIGTERM it stops accepting and
lets its workers finish the requests they have (graceful_timeout, 30s).
"""

import os


def app(environ, start_response):
    body = f"pid={os.getpid()} gen={os.environ.get('HOTSWAP_GENERATION', '0')} runtime=gunicorn\n"
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain"),
            ("Content-Length", str(len(body))),
            ("X-Pid", str(os.getpid())),
            ("X-Generation", os.environ.get("HOTSWAP_GENERATION", "0")),
        ],
    )
    return [body.encode()]
