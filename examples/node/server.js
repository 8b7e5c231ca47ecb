// Minimal Node HTTP server run under hotswap (Node 20, stdlib only).
//
//   hotswap --listen 127.0.0.1:8080 -- node examples/node/server.js
//
// What hotswap gives it (see DESIGN.md §3, §4):
//   fd 3                  the listening socket, shared by every generation
//                         (LISTEN_FDS=1, LISTEN_PID=<our pid>)
//   HOTSWAP_GENERATION    1, 2, ... one per reload
//   NODE_CHANNEL_FD       an IPC channel, so process.send('ready') works (PM2 style)
//   HOTSWAP_READY_FD      a pipe: write a newline to it when ready (s6 style)
//   SIGTERM               stop accepting, finish in-flight requests, exit 0
//
// Env knobs for tests: READY_VIA=ipc|fd|none forces one readiness channel
// (default: ipc if process.send exists, else fd if HOTSWAP_READY_FD is set);
// BOOT_DELAY_MS delays listening and readiness. `?delay=<ms>` delays one response.
'use strict';
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');

const gen = process.env.HOTSWAP_GENERATION || '0';
const log = (msg) => process.stderr.write(`node[${process.pid}]: ${msg}\n`);
let draining = false;

const server = http.createServer((req, res) => {
  const delay = Number(new URL(req.url, 'http://x').searchParams.get('delay')) || 0;
  setTimeout(() => {
    const body = `pid=${process.pid} gen=${gen} runtime=node\n`;
    res.writeHead(200, {
      'Content-Type': 'text/plain',
      'Content-Length': Buffer.byteLength(body),
      'X-Pid': process.pid,
      'X-Generation': gen,
      // Once draining, answer and close instead of keeping the connection alive.
      ...(draining ? { Connection: 'close' } : {}),
    });
    res.end(body);
  }, delay);
});

// Connections that have not sent a request yet: closeIdleConnections() leaves
// them alone (Node times them from accept), so a drain would wait for them.
const fresh = new Set();
server.on('connection', (sock) => {
  fresh.add(sock);
  sock.once('close', () => fresh.delete(sock));
});
server.on('request', (req) => fresh.delete(req.socket));

function announceReady() {
  const via = process.env.READY_VIA || (process.send ? 'ipc' : 'fd');
  if (via === 'ipc' && process.send) {
    process.send('ready');
  } else if (via === 'fd' && process.env.HOTSWAP_READY_FD) {
    const fd = Number(process.env.HOTSWAP_READY_FD);
    fs.writeSync(fd, '\n');
    fs.closeSync(fd);
  } else {
    log(`ready, not announced (READY_VIA=${via})`);
    return;
  }
  log(`gen ${gen} ready via ${via}`);
}

process.on('SIGTERM', () => {
  if (!server.listening) process.exit(0); // still booting: nothing to drain
  log('draining');
  draining = true;
  // Stop accepting. http's server.close() would also drop idle keep-alive
  // connections at once, racing a request a client is sending on one right
  // now; net's close() only stops accepting, and idle ones go 200ms later.
  net.Server.prototype.close.call(server, () => {
    log('drained, exiting');
    process.exit(0); // also ends the IPC channel, which would keep us alive
  });
  setTimeout(() => {
    server.closeIdleConnections();
    fresh.forEach((sock) => sock.destroy());
  }, 200);
});

setTimeout(() => {
  server.listen({ fd: 3 }, () => {
    log(`gen ${gen} listening on fd 3`);
    announceReady();
  });
}, Number(process.env.BOOT_DELAY_MS) || 0);
