import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  applyReceipt, brokerUrl, conversationName, deliveryStatus, pendingFor, typingLine,
} from '../dist/app/format.js';

test('✓ sent, ✓✓ delivered to every other member, ✓✓ read by every other member', () => {
  const members = ['alice', 'bob', 'carol'];
  assert.equal(deliveryStatus(5, 'alice', members, {}), 'sent');
  let markers = applyReceipt({}, { user: 'bob', seq: 5, status: 'delivered' });
  assert.equal(deliveryStatus(5, 'alice', members, markers), 'sent', 'carol has not got it yet');
  markers = applyReceipt(markers, { user: 'carol', seq: 9, status: 'read' });
  assert.equal(deliveryStatus(5, 'alice', members, markers), 'delivered');
  markers = applyReceipt(markers, { user: 'bob', seq: 6, status: 'read' });
  assert.equal(deliveryStatus(5, 'alice', members, markers), 'read');
  assert.equal(deliveryStatus(7, 'alice', members, markers), 'sent');
  assert.equal(deliveryStatus(1, 'alice', ['alice'], {}), 'sent', 'alone in a conversation');
});

test('receipts only move markers forward; read implies delivered', () => {
  let markers = applyReceipt({}, { user: 'bob', seq: 4, status: 'read' });
  assert.deepEqual(markers.bob, { delivered_seq: 4, read_seq: 4 });
  markers = applyReceipt(markers, { user: 'bob', seq: 2, status: 'delivered' });
  assert.deepEqual(markers.bob, { delivered_seq: 4, read_seq: 4 });
});

test('outbox entries show until their message is back from the server', () => {
  const outbox = [{ conv: 'team', client_msg_id: 'a', payload: {} }, { conv: 'team', client_msg_id: 'b', payload: {} },
    { conv: 'other', client_msg_id: 'c', payload: {} }, { conv: 'team', client_msg_id: 'e', payload: { kind: 'edit', target: 1 } }];
  const messages = [{ seq: 1, sender: 'alice', client_msg_id: 'a' }, { seq: 2, sender: 'bob', client_msg_id: 'b' }];
  assert.deepEqual(pendingFor('team', outbox, messages, 'alice').map((i) => i.client_msg_id), ['b']);
});

test('names, typing lines and the broker URL', () => {
  assert.equal(conversationName({ id: 'x', title: 'Team', members: [] }, 'alice'), 'Team');
  assert.equal(conversationName({ id: 'x', title: null, members: ['alice', 'bob'] }, 'alice'), 'bob');
  assert.equal(typingLine([]), '');
  assert.equal(typingLine(['bob']), 'bob is typing…');
  assert.equal(typingLine(['bob', 'carol']), 'bob and carol are typing…');
  assert.equal(typingLine(['a', 'b', 'c']), '3 people are typing…');
  const config = { ws_url: null, ws_port: 8083, wss_port: null, ws_path: '/mqtt' };
  assert.equal(brokerUrl(config, { protocol: 'http:', hostname: 'chat.local' }), 'ws://chat.local:8083/mqtt');
  assert.equal(brokerUrl({ ...config, wss_port: 8084 }, { protocol: 'https:', hostname: 'h' }), 'wss://h:8084/mqtt');
  assert.equal(brokerUrl({ ...config, ws_url: 'wss://x/mqtt' }, { protocol: 'http:', hostname: 'h' }), 'wss://x/mqtt');
});
