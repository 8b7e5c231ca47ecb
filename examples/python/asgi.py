"""An ASGI app for uvicorn under hotswap.

    hotswap --listen 127.0.0.1:8000 --chdir examples/python -- uvicorn --fd 3 asgi:app

uvicorn does not read LISTEN_FDS: `--fd 3` gives it the socket hotswap owns.
It says nothing about readiness either, so the app does, once its startup
(connecting to a database, say) is done: READY=1 on the NOTIFY_SOCKET
hotswap gives it (the lifespan startup below). uvicorn starts accepting a
moment later; connections that arrive meanwhile wait in the socket's queue.
On SIGTERM uvicorn stops accepting, closes idle keep-alive connections,
finishes the requests in flight and exits.
"""

import os
import socket


def notify(state: str) -> None:
    """Send `state` to NOTIFY_SOCKET, as sd_notify(3) does (no-op without one)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(state.encode(), path)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                notify("READY=1")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = f"pid={os.getpid()} gen={os.environ.get('HOTSWAP_GENERATION', '0')} runtime=uvicorn\n".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
                (b"x-pid", str(os.getpid()).encode()),
                (b"x-generation", os.environ.get("HOTSWAP_GENERATION", "0").encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
