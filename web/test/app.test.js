import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  applyReceipt, brokerUrl, conversationName, deliveryStatus, highlight, pendingFor, typingLine,
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

test('a search result marks the words it matched: whole words, case and accents folded', () => {
  const marked = (text, q, lead) => highlight(text, q, lead).map((p) => (p.match ? `[${p.text}]` : p.text)).join('');
  assert.equal(marked('Lunch at the Café? lunchbox, LUNCH!', 'cafe lunch'), '[Lunch] at the [Café]? lunchbox, [LUNCH]!');
  assert.equal(marked('nothing here', 'lunch'), 'nothing here');
  assert.equal(marked('"quoted" -minus', '"quoted" *minus'), '"[quoted]" -[minus]', 'query syntax is only separators');
  assert.equal(marked('a long preamble that goes on and on before we talk about lunch today', 'lunch', 20),
    '…we talk about [lunch] today', 'a match far in starts the line');
  assert.equal(marked('lunch first', 'lunch', 5), '[lunch] first');
  assert.deepEqual(highlight('', 'x'), []);
});
