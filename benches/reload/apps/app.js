// The bench's copy of tests/fixtures/unmodified/app.js, a Node app as the
// tutorials write it: it binds its own port (PORT) with no host, so Node binds
// [::] dual-stack; it knows nothing of hotswap; on SIGTERM it closes its server.
// Left out: the fixture's ADMIN_PORT (a second server). One addition: the
// 'listening' callback prints `app[PID]: listening on …` on stderr, the moment
// the bench takes as "the app starts waiting on the socket" (the callback runs
// on the tick after listen(), before the event loop first waits).
const http = require('http');

// Some start-up work before listen, as a real app loads config and modules.
const until = Date.now() + Number(process.env.BOOT_MS || 100);
while (Date.now() < until) {}

function handler(req, res) {
  res.setHeader('X-Pid', String(process.pid));
  res.setHeader('X-Generation', process.env.HOTSWAP_GENERATION || '0');
  res.end('ok\n');
}

const server = http.createServer(handler);
server.listen(Number(process.env.PORT || 3000), () => {
  const a = server.address();
  console.error(`app[${process.pid}]: listening on [${a.address}]:${a.port}`);
});
process.on('SIGTERM', () => server.close());
