// The browser side of bench/ws_deflate.py: MQTT-over-WebSocket subscribers on mqtt.js (what the web
// app uses) over the `ws` library, which offers permessage-deflate the way browsers do
// (client_max_window_bits, context takeover). Prints one JSON line per phase on stdout.
//
//   node bench/ws_load.mjs --url ws://127.0.0.1:8083/mqtt --conv C --users u1,u2 --tokens t1,t2 --expect N
//   node bench/ws_load.mjs --url ... --users ... --tokens ... --idle     (connect, report, wait for stdin to close)

import { createRequire } from 'node:module';

const require = createRequire(new URL('../web/package.json', import.meta.url));
const mqtt = require('mqtt');
const { WebSocket } = require('ws');

const args = Object.fromEntries(process.argv.slice(2).reduce((pairs, arg, i, all) => {
  if (arg.startsWith('--')) pairs.push([arg.slice(2), all[i + 1]?.startsWith('--') ? true : all[i + 1] ?? true]);
  return pairs;
}, []));
const users = args.users.split(',');
const tokens = args.tokens.split(',');
const expect = Number(args.expect ?? 0);
const sockets = [];
const received = new Array(users.length).fill(0);
const say = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

const clients = await Promise.all(users.map((user, i) => new Promise((resolve, reject) => {
  const client = mqtt.connect(args.url, {
    protocolVersion: 4, clientId: `bench-ws-${user}`, username: user, password: tokens[i], clean: true,
    keepalive: 120, reconnectPeriod: 0,
    createWebsocket: (url, protocols) => {
      const ws = new WebSocket(url, protocols, { perMessageDeflate: true });
      sockets.push(ws);
      return ws;
    },
  });
  client.on('error', reject);
  client.on('message', () => { received[i] += 1; });
  client.on('connect', () => {
    if (!args.conv) return resolve(client);
    client.subscribe(`chat/${args.conv}/msg`, { qos: 1 }, (err) => (err ? reject(err) : resolve(client)));
  });
})));

const bytes = () => sockets.reduce((t, ws) => ({ read: t.read + ws._socket.bytesRead, written: t.written + ws._socket.bytesWritten }),
  { read: 0, written: 0 });
const extensions = [...new Set(sockets.map((ws) => ws.extensions || 'none'))];
const cpu0 = process.cpuUsage();
const bytes0 = bytes();
say({ phase: 'ready', connections: clients.length, extensions });

if (args.idle) {
  process.stdin.resume();
  await new Promise((resolve) => process.stdin.on('end', resolve));
} else {
  const deadline = Date.now() + Number(args.timeout ?? 120) * 1000;
  while (received.some((n) => n < expect) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const cpu = process.cpuUsage(cpu0);
  const b = bytes();
  say({ phase: 'done', delivered: received.reduce((a, n) => a + n, 0), bytes_in: b.read - bytes0.read,
    bytes_out: b.written - bytes0.written, cpu_ms: (cpu.user + cpu.system) / 1000 });
}
await Promise.all(clients.map((c) => c.endAsync(true)));
process.exit(0);
