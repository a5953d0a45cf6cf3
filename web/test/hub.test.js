import assert from 'node:assert/strict';
import { test } from 'node:test';

import { TabHub, tabLockName } from '../dist/lib/hub.js';
import { tick, until } from './fakes.js';

class FakeEngine {
  constructor() {
    this.listeners = new Set();
    this.stopped = 0;
    this.sent = [];
  }
  listen(fn) { this.listeners.add(fn); return () => this.listeners.delete(fn); }
  emit(name, data) { for (const fn of this.listeners) fn(name, data); }
  async resume() { return { state: 'online', session: { user: 'alice' } }; }
  async send(conv, body) { this.sent.push([conv, body]); return { client_msg_id: 'x', conv }; }
  async stop() { this.stopped += 1; }
}

/** Web Locks as the hub uses them: the hub's request is granted when the test says the tab died. */
class FakeLocks {
  constructor() { this.waiting = new Map(); }
  request(name, callback) { this.waiting.set(name, callback); return Promise.resolve(); }
  release(name) { this.waiting.get(name)?.(); }
}

function tab(hub, id) {
  const { port1, port2 } = new MessageChannel();
  hub.attach(port2);
  const inbox = [];
  port1.addEventListener('message', (e) => inbox.push(e.data));
  port1.start();
  port1.postMessage({ type: 'hello', tab: id, config: { wsUrl: 'ws://x' }, locked: true });
  return { port: port1, inbox, close: () => port1.close() };
}

test('one engine serves every tab; events reach all of them; calls answer the caller', async (ctx) => {
  let created = 0;
  const engine = new FakeEngine();
  const hub = new TabHub({ createEngine: async () => { created += 1; return engine; }, locks: new FakeLocks(), lingerMs: 10 });
  const a = tab(hub, 'a');
  const b = tab(hub, 'b');
  ctx.after(() => { a.close(); b.close(); });
  await until(() => a.inbox.length && b.inbox.length);
  assert.equal(created, 1, 'one engine, one connection');
  assert.equal(a.inbox[0].type, 'welcome');
  assert.equal(a.inbox[0].snapshot.session.user, 'alice');
  engine.emit('messages', { conv: 'team', messages: [{ seq: 1 }] });
  await until(() => a.inbox.length === 2 && b.inbox.length === 2);
  assert.deepEqual(b.inbox[1], { type: 'event', name: 'messages', data: { conv: 'team', messages: [{ seq: 1 }] } });
  a.port.postMessage({ type: 'call', id: 7, method: 'send', args: ['team', 'hi'] });
  a.port.postMessage({ type: 'call', id: 8, method: 'constructor', args: [] });
  await until(() => a.inbox.length === 4);
  assert.deepEqual(a.inbox[2], { type: 'result', id: 7, value: { client_msg_id: 'x', conv: 'team' } });
  assert.match(a.inbox[3].error.message, /unknown call constructor/);
  assert.equal(b.inbox.length, 2, 'results go to the caller only');
  assert.deepEqual(engine.sent, [['team', 'hi']]);
});

test('a closing tab keeps the connection for the others; the last one ends it after the linger time', async (ctx) => {
  const engine = new FakeEngine();
  const locks = new FakeLocks();
  let idle = 0;
  const hub = new TabHub({ createEngine: async () => engine, locks, lingerMs: 30, onIdle: () => { idle += 1; } });
  const a = tab(hub, 'a');
  const b = tab(hub, 'b');
  ctx.after(() => { a.close(); b.close(); });
  await until(() => hub.tabs.size === 2);
  a.port.postMessage({ type: 'bye', tab: 'a' });
  await until(() => hub.tabs.size === 1);
  await tick(60);
  assert.equal(engine.stopped, 0, 'the other tab still uses it');
  locks.release(tabLockName('b')); // b died without a word (crash, killed): its lock is released
  await until(() => engine.stopped === 1 && idle === 1);
});

test('a tab that comes back within the linger time keeps the connection', async (ctx) => {
  const engine = new FakeEngine();
  const hub = new TabHub({ createEngine: async () => engine, locks: new FakeLocks(), lingerMs: 50 });
  const a = tab(hub, 'a');
  await until(() => hub.tabs.size === 1);
  a.port.postMessage({ type: 'bye', tab: 'a' });
  await until(() => hub.tabs.size === 0);
  const again = tab(hub, 'a2'); // the reloaded page
  ctx.after(() => { a.close(); again.close(); });
  await until(() => hub.tabs.size === 1);
  await tick(100);
  assert.equal(engine.stopped, 0);
});
