"""An HTTP server on Python's standard library alone, written for hotswap.

    hotswap --listen 127.0.0.1:8000 -- python3 examples/python/stdlib_server.py

It takes the listening socket from fd 3 (LISTEN_FDS), says READY=1 on
NOTIFY_SOCKET once it serves, and on SIGTERM stops accepting, answers what
still arrives on open keep-alive connections with `Connection: close`, and
exits once every connection is done. Outside hotswap it binds 127.0.0.1:8000.
"""

import http.server
import os
import signal
import socket
import sys
import threading

GEN = os.environ.get("HOTSWAP_GENERATION", "0")
# An idle keep-alive connection is closed after this many seconds, so that a
# drain never waits on a client that keeps a connection open and says nothing.
IDLE_TIMEOUT = 2.0

draining = threading.Event()


def log(message: str) -> None:
    print(f"python[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


def notify(state: str) -> None:
    """Send `state` to NOTIFY_SOCKET, as sd_notify(3) does (no-op without one)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(state.encode(), path)


def listening_socket() -> socket.socket:
    """fd 3 when hotswap (or systemd) passed it to this very process, else a socket of our own."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and int(os.environ.get("LISTEN_FDS", "0")) >= 1:
        return socket.socket(fileno=3)
    return socket.create_server(("127.0.0.1", 8000))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    timeout = IDLE_TIMEOUT

    def do_GET(self):
        body = f"pid={os.getpid()} gen={GEN} runtime=python\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Pid", str(os.getpid()))
        self.send_header("X-Generation", GEN)
        if draining.is_set():
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass  # one line per request is too much for a load test


class Server(http.server.ThreadingHTTPServer):
    # Join the connection threads at server_close(): the drain waits for them.
    daemon_threads = False
    block_on_close = True


def main() -> None:
    server = Server(("", 0), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = listening_socket()
    server.server_address = server.socket.getsockname()

    def stop(signum, frame):
        if not draining.is_set():
            draining.set()
            log("draining")
            # shutdown() waits for serve_forever() to return: not in this thread.
            threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    log(f"gen {GEN} serving on {server.server_address}")
    notify("READY=1")
    server.serve_forever()
    server.server_close()  # joins the threads of the connections still open
    log("drained, exiting")


if __name__ == "__main__":
    main()
