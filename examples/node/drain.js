// A graceful stop for a Node HTTP server that loses no request, keep-alive
// ones included. Use it under hotswap, PM2 or systemd alike:
//
//   const drainOnSigterm = require('./drain');
//   drainOnSigterm(server);
//
// Why not the common `process.on('SIGTERM', () => server.close())`: since
// Node 19, http's server.close() also closes every idle keep-alive connection
// at once. A client that is sending its next request on one at that moment
// gets the connection closed under it, and its request fails (wrk counts one
// per open connection per reload). Here the server stops accepting first,
// answers whatever still arrives on open connections with `Connection: close`
// (so clients move to the new generation), and closes the connections that
// stayed idle only after a grace period.
'use strict';
const net = require('node:net');

module.exports = function drainOnSigterm(server, { graceMs = 200, log = () => {} } = {}) {
  let draining = false;

  // Connections that have not sent a request yet: closeIdleConnections()
  // leaves them alone (Node times them from accept), so the drain would wait
  // for them.
  const fresh = new Set();
  server.on('connection', (sock) => {
    fresh.add(sock);
    sock.once('close', () => fresh.delete(sock));
  });
  // First of the 'request' listeners, so it runs before the app's handler.
  server.prependListener('request', (req, res) => {
    fresh.delete(req.socket);
    if (draining) res.setHeader('Connection', 'close');
  });

  process.on('SIGTERM', () => {
    if (!server.listening) process.exit(0); // still starting: nothing to drain
    if (draining) return;
    draining = true;
    log('draining');
    // Stop accepting only; the callback runs once every connection is gone.
    net.Server.prototype.close.call(server, () => {
      log('drained, exiting');
      process.exit(0); // also ends an IPC channel, which would keep us alive
    });
    setTimeout(() => {
      server.closeIdleConnections();
      fresh.forEach((sock) => sock.destroy());
    }, graceMs).unref();
  });
};
