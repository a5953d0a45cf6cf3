import 'fake-indexeddb/auto';
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { LocalStore } from '../dist/lib/storage.js';
import { Outbox } from '../dist/lib/outbox.js';

let dbs = 0;
const freshStore = () => LocalStore.open(`outbox-test-${dbs++}`);

function recorder(online = true) {
  const wire = [];
  return { wire, online, publish(item) { if (!this.online) return false; wire.push(item.client_msg_id); return true; } };
}

test('a send is persisted before it is published, and a new page finds it', async () => {
  const store = await freshStore();
  const link = recorder(false);
  const outbox = new Outbox({ store, owner: 'alice.web', publish: (i) => link.publish(i) });
  await outbox.add('team', { client_msg_id: 'm1', body: 'hello' });
  assert.deepEqual(link.wire, [], 'offline: nothing on the wire yet');
  assert.equal((await store.queuedSends('alice.web')).length, 1);

  // the page reloads: a new outbox over the same database restores the send
  const again = recorder(true);
  const reloaded = new Outbox({ store, owner: 'alice.web', publish: (i) => again.publish(i) });
  const items = await reloaded.restore();
  assert.deepEqual(items.map((i) => [i.client_msg_id, i.conv, i.payload.body]), [['m1', 'team', 'hello']]);
  assert.equal(reloaded.flush({ reconnected: true }), 1);
  assert.deepEqual(again.wire, ['m1'], 'resent with the same client_msg_id');

  assert.equal((await reloaded.settle({ client_msg_id: 'm1', conv: 'team', status: 'received', seq: 7 })).client_msg_id, 'm1');
  assert.equal(reloaded.size, 0);
  assert.deepEqual(await store.queuedSends('alice.web'), [], 'settled sends leave the database');
});

test('rate_limited keeps the send queued; other rejections and foreign acks settle or are ignored', async () => {
  const store = await freshStore();
  const link = recorder();
  const outbox = new Outbox({ store, owner: 'alice.web', publish: (i) => link.publish(i) });
  await outbox.add('team', { client_msg_id: 'a', body: 'x' });
  await outbox.add('team', { client_msg_id: 'b', body: 'y' });
  assert.equal(await outbox.settle({ client_msg_id: 'a', status: 'rejected', error: { code: 'rate_limited', message: '' } }), null);
  assert.equal(outbox.size, 2);
  assert.equal(await outbox.settle({ client_msg_id: 'zzz', status: 'received', seq: 1 }), null, 'another device of mine');
  assert.ok(await outbox.settle({ client_msg_id: 'b', status: 'rejected', error: { code: 'too_large', message: '' } }));
  assert.deepEqual(outbox.items().map((i) => i.client_msg_id), ['a']);
});

test('the same client_msg_id added twice at once is queued and sent once', async () => {
  const store = await freshStore();
  const link = recorder();
  const outbox = new Outbox({ store, owner: 'o', publish: (i) => link.publish(i) });
  const payload = { client_msg_id: 'same', body: 'x' };
  await Promise.all([outbox.add('c', payload), outbox.add('c', payload), outbox.add('c', payload)]);
  assert.deepEqual(link.wire, ['same']);
  assert.equal((await store.queuedSends('o')).length, 1);
});

test('unacked sends go out again after resendAfterMs, not before', async () => {
  const store = await freshStore();
  const link = recorder();
  let now = 1_000;
  const outbox = new Outbox({ store, owner: 'o', publish: (i) => link.publish(i), resendAfterMs: 10_000, now: () => now });
  await outbox.add('c', { client_msg_id: 'x', body: 'x' });
  now += 9_999;
  assert.equal(outbox.flush(), 0);
  now += 1;
  assert.equal(outbox.flush(), 1);
  assert.deepEqual(link.wire, ['x', 'x']);
});

test('owners do not see each other\'s outbox; cursors only move forward', async () => {
  const store = await freshStore();
  await store.queueSend({ owner: 'alice.web', client_msg_id: '1', conv: 'c', payload: {}, created: 1 });
  await store.queueSend({ owner: 'bob.web', client_msg_id: '1', conv: 'c', payload: {}, created: 2 });
  assert.equal((await store.queuedSends('alice.web')).length, 1);
  await store.setCursor('alice.web', 'c', 5);
  await store.setCursor('alice.web', 'c', 3);
  assert.equal(await store.cursor('alice.web', 'c'), 5);
  assert.equal(await store.cursor('bob.web', 'c'), null);
});
