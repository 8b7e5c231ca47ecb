// A Node HTTP server as most are written: it binds its own port and knows
// nothing of hotswap. Run it unchanged:
//
//   PORT=3000 hotswap -- node examples/node/app.js
//
// hotswap preloads a bind() shim, so listen(PORT) gets the socket hotswap
// owns for that port: the same one in every generation, so the port never
// closes and no generation meets EADDRINUSE. hotswap sees the new generation
// ready when it takes connections from that socket (read from /proc). The
// one thing the app needs is a graceful stop on SIGTERM (drain.js).
'use strict';
const http = require('node:http');
const drainOnSigterm = require('./drain');

const port = Number(process.env.PORT) || 3000;

const server = http.createServer((req, res) => {
  const body = `hello from pid ${process.pid}\n`;
  res.writeHead(200, {
    'Content-Type': 'text/plain',
    'Content-Length': Buffer.byteLength(body),
    'X-Pid': process.pid,
  });
  res.end(body);
});
drainOnSigterm(server);

server.listen(port, () => {
  process.stderr.write(`app[${process.pid}]: listening on port ${port}\n`);
});
