// The reload bench's PM2 scenario: a minimal Node HTTP server for PM2 cluster mode
// (`pm2 start benches/pm2/server.js -i 2 --wait-ready`, then `pm2 reload`). Node 18+,
// stdlib only. PM2's cluster master owns 127.0.0.1:$PORT and hands connections to workers;
// a worker says it is ready with process.send('ready') (--wait-ready) and drains on SIGINT,
// which is what `pm2 reload` sends to the old worker once its successor is ready.
'use strict';
const http = require('node:http');

const port = Number(process.env.PORT || 8080);
const server = http.createServer((req, res) => {
  const body = `pid=${process.pid} runtime=node\n`;
  res.writeHead(200, {
    'Content-Type': 'text/plain',
    'Content-Length': Buffer.byteLength(body),
    'X-Pid': String(process.pid),
  });
  res.end(body);
});

server.listen(port, '127.0.0.1', () => {
  if (process.send) process.send('ready');
});

process.on('SIGINT', () => {
  // Stop accepting, close idle keep-alive connections, finish in-flight requests, exit.
  server.close(() => process.exit(0));
  server.closeIdleConnections();
});
