"""The bench's copy of tests/fixtures/unmodified/accept_loop.py: a plain
blocking accept() loop on its own port (PORT), one request per connection, no
event loop, no SIGTERM handler. One addition: `accept_loop[PID]: accepting` on
stderr right before the loop, the moment the bench takes as "the app starts
waiting on the socket"."""
import os
import socket
import sys


def read_head(conn):
    """Reads the request head whole: a client may write it in pieces."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk

server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(os.environ["PORT"])))
server.listen(128)
generation = os.environ.get("HOTSWAP_GENERATION", "0")
print(f"accept_loop[{os.getpid()}]: accepting", file=sys.stderr, flush=True)
while True:
    conn, _ = server.accept()
    read_head(conn)
    conn.sendall(
        f"HTTP/1.1 200 OK\r\nX-Pid: {os.getpid()}\r\nX-Generation: {generation}\r\n"
        "Content-Length: 3\r\nConnection: close\r\n\r\nok\n".encode()
    )
    conn.close()
