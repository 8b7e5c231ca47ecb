// A Node HTTP server written for hotswap (Node 20, standard library only):
// it takes the listening socket hotswap passes as fd 3 and says when it is
// ready, so a new generation gets traffic only once it can answer.
//
//   hotswap --listen 127.0.0.1:8080 -- node examples/node/server.js
//
// What hotswap gives it:
//   fd 3                  the listening socket, shared by every generation
//                         (LISTEN_FDS=1, LISTEN_PID=<our pid>)
//   HOTSWAP_GENERATION    1, 2, ... one per reload
//   NODE_CHANNEL_FD       an IPC channel, so process.send('ready') works (PM2 style)
//   HOTSWAP_READY_FD      a pipe: write a newline to it when ready (s6 style)
//   SIGTERM               retire: drain.js stops accepting and finishes what
//                         is in flight, keep-alive connections included
//
// Knobs for tests: READY_VIA=ipc|fd|none forces one readiness channel
// (default: ipc if process.send exists, else fd if HOTSWAP_READY_FD is set);
// BOOT_DELAY_MS delays listening and readiness.
'use strict';
const fs = require('node:fs');
const http = require('node:http');
const drainOnSigterm = require('./drain');

const gen = process.env.HOTSWAP_GENERATION || '0';
const log = (msg) => process.stderr.write(`node[${process.pid}]: ${msg}\n`);

const server = http.createServer((req, res) => {
  const body = `pid=${process.pid} gen=${gen} runtime=node\n`;
  res.writeHead(200, {
    'Content-Type': 'text/plain',
    'Content-Length': Buffer.byteLength(body),
    'X-Pid': process.pid,
    'X-Generation': gen,
  });
  res.end(body);
});
drainOnSigterm(server, { log });

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

setTimeout(() => {
  server.listen({ fd: 3 }, () => {
    log(`gen ${gen} listening on fd 3`);
    announceReady();
  });
}, Number(process.env.BOOT_DELAY_MS) || 0);
