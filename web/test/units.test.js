import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Sequencer } from '../dist/lib/sequencer.js';
import { Backoff } from '../dist/lib/retry.js';
import { decode, parseTopic, requireId, topics } from '../dist/lib/protocol.js';

const m = (seq) => ({ conv: 'c', seq, body: `#${seq}` });
const seqs = (messages) => messages.map((x) => x.seq);

test('sequencer delivers in order, each seq once', () => {
  const s = new Sequencer();
  assert.deepEqual(s.offer(m(1)), [], 'nothing before the start point is known');
  assert.deepEqual(seqs(s.start(0)), [1]);
  assert.deepEqual(seqs(s.offer(m(3))), [], 'held behind the gap');
  assert.equal(s.missingAfter(), 1);
  assert.deepEqual(seqs(s.offer(m(2))), [2, 3]);
  assert.deepEqual(s.offer(m(2)), [], 'a repeat is dropped');
  assert.deepEqual(s.offer(m(3)), []);
  assert.equal(s.missingAfter(), null);
  assert.deepEqual(s.offer({ seq: 'x' }), []);
  assert.deepEqual(s.offer({ seq: 0 }), []);
});

test('sequencer start drops what the start point already covers', () => {
  const s = new Sequencer();
  s.offer(m(4));
  s.offer(m(6));
  assert.deepEqual(seqs(s.start(5)), [6]);
  assert.equal(s.last, 6);
  assert.deepEqual(s.start(3), [], 'the start never moves back');
  assert.equal(s.last, 6);
});

test('backoff grows to its cap and resets', () => {
  const b = new Backoff({ min: 100, max: 1000, jitter: 0 });
  assert.deepEqual([b.next(), b.next(), b.next(), b.next(), b.next()], [100, 200, 400, 800, 1000]);
  b.reset();
  assert.equal(b.next(), 100);
  const jittered = new Backoff({ min: 1000, jitter: 0.5, random: () => 1 });
  assert.equal(jittered.next(), 500);
});

test('topics are built and parsed as the contract names them', () => {
  assert.equal(topics.send('team', 'alice'), 'chat/team/send/alice');
  assert.equal(topics.typingFilter('team'), 'chat/team/typing/+');
  assert.equal(topics.devicePresence('alice', 'web-1'), 'presence/alice/web-1');
  assert.deepEqual(parseTopic('chat/team/msg'), { kind: 'msg', conv: 'team' });
  assert.deepEqual(parseTopic('chat/team/typing/bob'), { kind: 'typing', conv: 'team', user: 'bob' });
  assert.deepEqual(parseTopic('chat/team/receipts'), { kind: 'receipts', conv: 'team' });
  assert.deepEqual(parseTopic('user/alice/ack'), { kind: 'ack', user: 'alice' });
  assert.deepEqual(parseTopic('presence/bob'), { kind: 'user_presence', user: 'bob' });
  assert.deepEqual(parseTopic('presence/bob/web'), { kind: 'device_presence', user: 'bob', device: 'web' });
  for (const bad of ['chat/team', 'chat/+/msg', 'sensors/x', 'user/alice/other', 'chat/a b/msg', '']) {
    assert.equal(parseTopic(bad), null, bad);
  }
});

test('payloads decode to objects only', () => {
  assert.deepEqual(decode(new TextEncoder().encode('{"a":1}')), { a: 1 });
  assert.equal(decode(new TextEncoder().encode('[1]')), null);
  assert.equal(decode(new Uint8Array([0xff, 0x7b])), null, 'invalid UTF-8');
  assert.equal(decode(new TextEncoder().encode('{')), null);
});

test('ids are checked', () => {
  assert.equal(requireId('team-1.a_b', 'conversation'), 'team-1.a_b');
  assert.throws(() => requireId('a/b', 'conversation'), /not a valid conversation id/);
  assert.throws(() => requireId('x'.repeat(65), 'user'), TypeError);
  for (const bad of ['.', '..', '']) assert.throws(() => requireId(bad, 'conversation'), TypeError, bad);
  for (const good of ['a', '.a', 'a.', '...', 'ab']) assert.equal(requireId(good, 'user'), good);
});
