"""An ASGI app for uvicorn under hotswap.

    hotswap --listen 127.0.0.1:8000 --chdir examples/python -- python3 asgi.py

uvicorn does not read LISTEN_FDS: `fd=3` (`--fd 3` on its command line) gives
it the socket hotswap owns. It says nothing about readiness either, so the app
does, once its startup (connecting to a database, say) is done: READY=1 on the
NOTIFY_SOCKET hotswap gives it, from the lifespan startup below. uvicorn starts
accepting a moment later; connections that arrive meanwhile wait in the
socket's queue.

Run as a script, it starts uvicorn through `Server` below rather than the
`uvicorn --fd 3 asgi:app` command line, which loses a request or two at
reloads under load, in two ways:

- on SIGTERM, uvicorn's shutdown first closes its asyncio server, and asyncio
  drops the connections it accepted in its last batch and had not attached to
  the server yet: they stay unread until the process exits, and the kernel
  resets them;
- then it closes every connection with no request in progress, one it
  accepted a moment ago whose request is not read yet included: reset too.

`Server` stops accepting first (it takes the listening socket out of the event
loop, and the socket's queue goes to the new generation), gives the
connections already accepted a moment to attach and deliver their requests,
then lets uvicorn finish as usual: answer what is in flight, close the idle
keep-alive connections (a client that reuses one at that very moment sees it
close and retries, as HTTP clients do), exit. It also hands uvicorn fd 3 as the TCP socket it is: `--fd 3` takes any
fd for a unix socket, so asyncio leaves TCP_NODELAY off and an answer written
in two parts waits 40 ms for the client's delayed ACK.
"""

import asyncio
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


# How long connections that are already accepted get to deliver their request once the server
# stops accepting.
GRACE_SECONDS = 0.2


def serve() -> None:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, stopping without resetting a connection it has accepted."""

        stopping = False

        async def startup(self, sockets=None) -> None:
            self.loop = asyncio.get_running_loop()
            await super().startup(sockets)

        def handle_exit(self, sig, frame) -> None:
            # A signal handler: only hand the work to the event loop.
            if self.stopping or not hasattr(self, "loop"):
                return super().handle_exit(sig, frame)
            self.stopping = True
            self.loop.call_soon_threadsafe(self.stop_accepting, sig, frame)

        def stop_accepting(self, sig, frame) -> None:
            # Not server.close() yet: a connection asyncio accepted in its last batch is
            # attached to its server a moment later, and a closed server drops it unread.
            for server in self.servers:
                for sock in server.sockets:
                    self.loop.remove_reader(sock.fileno())
            self.loop.call_later(GRACE_SECONDS, super().handle_exit, sig, frame)

    # fd 3 as the socket it is: socket.socket(fileno=3) asks the kernel for its family.
    Server(uvicorn.Config(app, lifespan="on")).run(sockets=[socket.socket(fileno=3)])


if __name__ == "__main__":
    serve()
