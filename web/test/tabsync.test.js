// Without a SharedWorker each tab runs its own engine: signing in and out in one reaches the others
// (tabsync.js over a real BroadcastChannel, node's own).
import 'fake-indexeddb/auto';
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ChatEngine } from '../dist/lib/engine.js';
import { LocalStore } from '../dist/lib/storage.js';
import { Backoff } from '../dist/lib/retry.js';
import { shareSession } from '../dist/lib/tabsync.js';
import { FakeApi, FakeBroker, until } from './fakes.js';

test('a tab that signs in or out takes every other tab with it', async (ctx) => {
  const api = new FakeApi({ team: { members: ['alice', 'bob'], messages: [] } });
  const broker = new FakeBroker();
  const name = `tabsync-${process.pid}`;
  const tabs = [];
  for (const device of ['web-1-ta', 'web-1-tb', 'web-1-tc']) {
    const engine = new ChatEngine({
      store: await LocalStore.open('tabsync-db'), mqttConnect: broker.connect, wsUrl: 'ws://x/mqtt', apiUrl: 'http://api.test',
      device, fetch: api.fetch, backoff: new Backoff({ min: 10, max: 20, jitter: 0 }),
    });
    const channel = new BroadcastChannel(name);
    const snapshots = [];
    const stop = shareSession(engine, channel, (snapshot) => snapshots.push(snapshot));
    ctx.after(async () => {
      stop();
      channel.close();
      await engine.stop({ clean: false });
    });
    tabs.push({ engine, snapshots });
  }
  const [a, b, c] = tabs;
  await a.engine.signIn('alice', 'pw');
  await until(() => b.engine.session?.user === 'alice' && c.engine.session?.user === 'alice');
  assert.equal(b.snapshots.at(-1).session.user, 'alice');
  await until(() => broker.clients.length === 3); // each tab its own connection

  await b.engine.signOut(); // the user signs out in the second tab
  await until(() => a.engine.state === 'signed-out' && c.engine.state === 'signed-out');
  assert.equal(a.engine.session, null);
  assert.deepEqual(api.loggedOut, ['Bearer token-of-alice'], 'revoked once, by the tab that signed out');
  assert.ok(broker.clients.every((client) => client.ended), 'every tab\'s connection ended');

  await c.engine.signIn('bob', 'pw'); // and another user in the third
  await until(() => a.engine.session?.user === 'bob' && b.engine.session?.user === 'bob');
  await until(() => broker.clients.length === 6);
});
