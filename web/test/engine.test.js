import 'fake-indexeddb/auto';
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ChatEngine } from '../dist/lib/engine.js';
import { LocalStore } from '../dist/lib/storage.js';
import { Backoff } from '../dist/lib/retry.js';
import { FakeApi, FakeBroker, tick, until } from './fakes.js';

let dbs = 0;

async function setup(ctx, { conversations = { team: { members: ['alice', 'bob'], messages: [] } }, store, device = 'web-1',
  listRetryMs = 1_000 } = {}) {
  const api = new FakeApi(conversations);
  const broker = new FakeBroker();
  const engine = new ChatEngine({
    store: store ?? await LocalStore.open(`engine-test-${dbs++}`), mqttConnect: broker.connect, wsUrl: 'ws://x/mqtt',
    apiUrl: 'http://api.test', device, fetch: api.fetch, heartbeatMs: 50, backoff: new Backoff({ min: 10, max: 20, jitter: 0 }),
    listBackoff: new Backoff({ min: listRetryMs, max: listRetryMs, jitter: 0 }),
  });
  ctx.after(() => engine.stop({ clean: false }));
  const events = [];
  engine.listen((name, data) => events.push([name, data]));
  const delivered = () => events.filter(([n]) => n === 'messages').flatMap(([, d]) => d.messages.map((x) => `${d.conv}#${x.seq}`));
  return { api, broker, engine, events, delivered };
}

async function online(t) {
  await t.engine.signIn('alice', 'pw');
  t.broker.last.accept();
  await until(() => t.engine.state === 'online');
}

test('connects with a will on its device presence topic, subscribes, announces itself', async (ctx) => {
  const t = await setup(ctx);
  await online(t);
  const client = t.broker.last;
  assert.equal(client.options.clientId, 'alice.web-1');
  assert.equal(client.options.username, 'alice');
  assert.equal(client.options.password, 'token-of-alice');
  assert.equal(client.options.will.topic, 'presence/alice/web-1');
  const will = JSON.parse(client.options.will.payload);
  assert.deepEqual(will, { status: 'offline', conn: client.chatmq.conn });
  await until(() => client.subscriptions.length >= 6);
  assert.deepEqual(new Set(client.subscriptions), new Set(['user/alice/ack', 'user/alice/events', 'chat/team/msg',
    'chat/team/typing/+', 'chat/team/receipts', 'presence/bob']));
  assert.deepEqual(client.sent('presence/alice/web-1')[0].payload, { status: 'online', conn: will.conn });
  await until(() => client.sent('presence/alice/web-1').length >= 3, 1000); // heartbeats
  await t.engine.stop({ clean: true });
  assert.equal(client.sent('presence/alice/web-1').at(-1).payload.status, 'offline', 'a clean stop says offline first');
});

test('a send made offline is kept, goes out on connect, and is settled by its ack', async (ctx) => {
  const t = await setup(ctx);
  await t.engine.signIn('alice', 'pw'); // connecting, not connected yet
  const item = await t.engine.send('team', 'hello');
  assert.deepEqual(t.broker.last.sent('chat/'), []);
  t.broker.last.accept();
  await until(() => t.broker.last.sent('chat/team/send/alice').length === 1);
  assert.deepEqual(t.broker.last.sent('chat/team/send/alice')[0].payload, { client_msg_id: item.client_msg_id, body: 'hello' });
  t.broker.last.deliver('user/alice/ack', { client_msg_id: item.client_msg_id, conv: 'team', status: 'received', seq: 1, ts: 1 });
  await until(() => t.events.some(([n, d]) => n === 'ack' && d.seq === 1));
  assert.equal(t.engine.outbox.size, 0);
  assert.deepEqual(t.events.filter(([n]) => n === 'outbox').at(-1)[1], []);
  await t.engine.stop();
});

test('after a lost connection: a new conn id in the will, the same client_msg_id again, catch-up of what was missed', async (ctx) => {
  const t = await setup(ctx);
  await online(t);
  const first = t.broker.last;
  const item = await t.engine.send('team', 'are you there?');
  first.drop();
  await until(() => t.engine.state === 'offline');
  assert.ok(t.events.some(([n, d]) => n === 'state' && d.state === 'offline'));
  t.api.add('team', 'bob', 'sent while alice was away');
  await until(() => t.broker.clients.length === 2, 1000); // back-off, then a new connection
  const second = t.broker.last;
  assert.notEqual(JSON.parse(second.options.will.payload).conn, JSON.parse(first.options.will.payload).conn);
  second.accept();
  await until(() => second.sent('chat/team/send/alice').length === 1);
  assert.equal(second.sent('chat/team/send/alice')[0].payload.client_msg_id, item.client_msg_id);
  await until(() => t.delivered().includes('team#1'));
  await t.engine.stop();
});

test('live messages reach the tabs in seq order, exactly once; a gap is filled from history', async (ctx) => {
  const t = await setup(ctx);
  await online(t);
  const c = t.broker.last;
  const m1 = t.api.add('team', 'bob', 'one');
  const m2 = t.api.add('team', 'bob', 'two');
  const m3 = t.api.add('team', 'bob', 'three');
  c.deliver('chat/team/msg', m1);
  c.deliver('chat/team/msg', m1); // QoS 1 repeat
  c.deliver('chat/team/msg', m3); // m2 lost: a gap
  await until(() => t.delivered().length === 3);
  assert.deepEqual(t.delivered(), ['team#1', 'team#2', 'team#3']);
  c.deliver('chat/team/msg', m2); // late duplicate of a caught-up message
  await tick(20);
  assert.deepEqual(t.delivered(), ['team#1', 'team#2', 'team#3']);
  assert.ok(t.api.requests.some((r) => r.includes('/messages?after=1')), t.api.requests.join('\n'));
  // a delivered receipt for the newest seq, and the summary counts unread
  await until(() => c.sent('chat/team/receipt/alice').length === 1);
  assert.deepEqual(c.sent('chat/team/receipt/alice')[0].payload, { seq: 3, status: 'delivered' });
  const summary = t.engine.conversationList()[0];
  assert.equal(summary.unread, 3);
  assert.equal(summary.last_message.body, 'three');
  assert.equal(t.engine.markRead('team', 3), true);
  assert.deepEqual(c.sent('chat/team/receipt/alice').at(-1).payload, { seq: 3, status: 'read' });
  assert.equal(t.engine.conversationList()[0].unread, 0);
  assert.equal(t.engine.markRead('team', 9), false, 'never ahead of the conversation');
  await t.engine.stop();
});

test('a new engine over the same database resumes after its cursor', async (ctx) => {
  const store = await LocalStore.open(`engine-test-${dbs++}`);
  const conversations = { team: { members: ['alice', 'bob'], messages: [] } };
  const t = await setup(ctx, { conversations, store });
  await online(t);
  t.broker.last.deliver('chat/team/msg', t.api.add('team', 'bob', 'one'));
  await until(() => t.delivered().length === 1);
  await tick(10);
  await t.engine.stop({ clean: false });
  t.api.add('team', 'bob', 'two');
  t.api.add('team', 'bob', 'three');

  const u = await setup(ctx, { conversations, store });
  const session = await store.get('session');
  assert.equal(session.user, 'alice');
  await u.engine.resume();
  u.broker.last.accept();
  await until(() => u.delivered().length === 2);
  assert.deepEqual(u.delivered(), ['team#2', 'team#3'], 'only what this browser had not delivered');
  await u.engine.stop();
});

test('changes to earlier messages (entries with a kind) keep their seq but are neither previews nor unread', async (ctx) => {
  const t = await setup(ctx);
  await online(t);
  const c = t.broker.last;
  c.deliver('chat/team/msg', t.api.add('team', 'bob', 'hello'));
  c.deliver('chat/team/msg', t.api.add('team', 'bob', '👍', { kind: 'react', target: 1, emoji: '👍' }));
  await until(() => t.delivered().length === 2);
  const summary = t.engine.conversationList()[0];
  assert.equal(summary.last_seq, 2);
  assert.equal(summary.last_message.body, 'hello');
  assert.equal(summary.unread, 1);
});

test('replies and changes go through the outbox with their kind and target', async (ctx) => {
  const t = await setup(ctx);
  await online(t);
  const c = t.broker.last;
  await t.engine.send('team', 'yes', { replyTo: 1, clientMsgId: 'r1' });
  await t.engine.change('team', 'edit', 1, { body: 'fixed', clientMsgId: 'e1' });
  await t.engine.change('team', 'react', 1, { emoji: '👍', clientMsgId: 'x1' });
  await t.engine.change('team', 'delete', 1, { clientMsgId: 'd1' });
  assert.deepEqual(c.sent('chat/team/send/alice').map((p) => p.payload), [
    { client_msg_id: 'r1', body: 'yes', reply_to: 1 },
    { client_msg_id: 'e1', kind: 'edit', target: 1, body: 'fixed' },
    { client_msg_id: 'x1', kind: 'react', target: 1, emoji: '👍' },
    { client_msg_id: 'd1', kind: 'delete', target: 1 },
  ]);
  assert.equal(t.engine.outbox.size, 4, 'each waits for its ack like a send');
  await assert.rejects(t.engine.change('team', 'shout', 1), /kind must be one of/);
  await assert.rejects(t.engine.change('team', 'edit', 0, { body: 'x' }), /target must be a seq/);
});

test('a body over the limit is refused before it is queued (it could never go out)', async (ctx) => {
  const t = await setup(ctx);
  await online(t);
  await assert.rejects(t.engine.send('team', 'é'.repeat(2049)), (exc) => exc.code === 'too_large');
  await assert.rejects(t.engine.change('team', 'edit', 1, { body: 'x'.repeat(4097) }), /at most 4096/);
  assert.equal(t.engine.outbox.size, 0);
  assert.deepEqual(t.broker.last.sent('chat/'), []);
  await t.engine.send('team', 'x'.repeat(4096));
  assert.equal(t.engine.outbox.size, 1);
});

test('an edit or a delete of the last message shows in the conversation list', async (ctx) => {
  const t = await setup(ctx);
  await online(t);
  const c = t.broker.last;
  c.deliver('chat/team/msg', t.api.add('team', 'bob', 'helo'));
  c.deliver('chat/team/msg', t.api.add('team', 'bob', 'hello', { kind: 'edit', target: 1 }));
  await until(() => t.engine.conversationList()[0].last_message?.body === 'hello');
  c.deliver('chat/team/msg', t.api.add('team', 'bob', '', { kind: 'delete', target: 1 }));
  await until(() => t.engine.conversationList()[0].last_message?.deleted === true);
});

test('a conversation new to this browser starts at its newest message; a notice triggers a catch-up', async (ctx) => {
  const conversations = { big: { members: ['alice', 'bob'], messages: [] } };
  const t = await setup(ctx, { conversations });
  t.api.add('big', 'bob', 'old');
  await online(t);
  await tick(20);
  assert.deepEqual(t.delivered(), [], 'history is not replayed as new messages');
  const m2 = t.api.add('big', 'bob', 'new');
  t.broker.last.deliver('chat/big/msg', { conv: 'big', seq: m2.seq, sender: 'bob', ts: 1, notice: true });
  await until(() => t.delivered().length === 1);
  assert.deepEqual(t.delivered(), ['big#2']);
  await t.engine.stop();
});

test('typing, presence, receipts and membership events are relayed; my own typing is not', async (ctx) => {
  const t = await setup(ctx);
  await online(t);
  const c = t.broker.last;
  c.deliver('chat/team/typing/bob', { typing: true });
  c.deliver('chat/team/typing/alice', { typing: true });
  c.deliver('presence/bob', { user: 'bob', status: 'online', last_seen: 5 });
  c.deliver('chat/team/receipts', { user: 'bob', seq: 1, status: 'read', ts: 1 });
  t.conversations = t.api.conversations.other = { members: ['alice', 'carol'], messages: [] };
  c.deliver('user/alice/events', { event: 'conversation_added', conv: 'other', title: 'Other', ts: 1 });
  await until(() => t.engine.conversations.has('other'));
  await until(() => c.subscriptions.includes('chat/other/msg') && c.subscriptions.includes('presence/carol'));
  const names = t.events.map(([n, d]) => `${n}:${d?.user ?? ''}`);
  assert.ok(names.includes('typing:bob'));
  assert.ok(!names.includes('typing:alice'));
  assert.ok(names.includes('presence:bob'));
  assert.ok(names.includes('receipt:bob'));
  assert.equal(t.engine.snapshot().presence.bob.status, 'online');
  c.deliver('user/alice/events', { event: 'conversation_removed', conv: 'other', ts: 2 });
  await until(() => !t.engine.conversations.has('other'));
  await t.engine.stop();
});

test('a refused login ends the session: signed out, with a reason', async (ctx) => {
  const t = await setup(ctx);
  await t.engine.signIn('alice', 'pw');
  t.broker.last.refuse(5);
  await until(() => t.engine.state === 'signed-out');
  assert.match(t.engine.reason, /sign in again/);
  assert.equal(await t.engine.store.get('session'), undefined);
  await tick(50);
  assert.equal(t.broker.clients.length, 1, 'no reconnect after a refusal');
  assert.equal(t.api.loggedOut, undefined, 'a token the server refused is not revoked');
});

test('signing out revokes the token on the server after the clean disconnect', async (ctx) => {
  const t = await setup(ctx);
  await online(t);
  await t.engine.signOut();
  assert.equal(t.engine.state, 'signed-out');
  assert.equal(t.broker.last.ended, true);
  assert.deepEqual(t.api.loggedOut, ['Bearer token-of-alice']);
  assert.equal(await t.engine.store.get('session'), undefined);
});

test('an unreachable API at start: the list says why, is tried again, and what it brings is subscribed', async (ctx) => {
  const t = await setup(ctx, { listRetryMs: 60 });
  t.api.down = (path) => path.startsWith('/v1/conversations');
  await online(t); // the broker is reachable, the API is not (since just after the sign-in)
  const listing = () => t.events.filter(([n]) => n === 'listing').map(([, d]) => d);
  await until(() => listing().length >= 2);
  const [failed] = listing();
  assert.equal(failed.loaded, false);
  assert.match(failed.error, /could not be reached/);
  assert.ok(failed.retryAt > Date.now() - 1_000);
  assert.deepEqual(t.engine.snapshot().listing, listing().at(-1));
  assert.ok(!t.broker.last.subscriptions.includes('chat/team/msg'), 'nothing to subscribe yet');
  t.api.add('team', 'bob', 'sent while the list was away');
  t.api.down = false;
  await until(() => t.engine.listing.loaded);
  assert.deepEqual(listing().at(-1), { loaded: true, error: null, retryAt: null });
  await until(() => t.broker.last.subscriptions.includes('chat/team/msg') && t.broker.last.subscriptions.includes('presence/bob'));
  assert.deepEqual(t.engine.conversationList().map((c) => c.id), ['team']);
});

test('retryConversations loads the list now, not at the back-off\'s next turn', async (ctx) => {
  const t = await setup(ctx, { listRetryMs: 60_000 });
  t.api.down = (path) => path.startsWith('/v1/conversations');
  await online(t);
  await until(() => t.engine.listing.error);
  t.api.down = false;
  assert.equal(await t.engine.retryConversations(), true);
  assert.equal(t.engine.listing.loaded, true);
  await until(() => t.broker.last.subscriptions.includes('chat/team/msg'));
});

test('a subscription the broker refuses at first (membership not seen yet) is retried', async (ctx) => {
  const t = await setup(ctx);
  t.broker.refuse.add('chat/team/msg');
  await online(t);
  const c = t.broker.last;
  await until(() => c.subscriptions.filter((s) => s === 'chat/team/msg').length === 1);
  t.broker.refuse.clear();
  await until(() => c.subscriptions.filter((s) => s === 'chat/team/msg').length === 2, 3000);
  await t.engine.stop();
});
