import assert from 'node:assert/strict';
import { test } from 'node:test';

import { applyEntries } from '../dist/lib/timeline.js';

const msg = (seq, sender, body, extra = {}) => ({ conv: 'c', seq, sender, body, attachments: [], ts: seq, client_msg_id: `m${seq}`, ...extra });
const change = (seq, sender, kind, target, extra = {}) => ({ ...msg(seq, sender, extra.body ?? '', extra), kind, target });

const LOG = [
  msg(1, 'alice', 'helo'),
  msg(2, 'bob', 'hi', { reply_to: 1 }),
  change(3, 'alice', 'edit', 1, { body: 'hello' }),
  change(4, 'bob', 'react', 1, { emoji: '👍', body: '👍' }),
  change(5, 'carol', 'react', 1, { emoji: '👍', body: '👍' }),
  change(6, 'bob', 'react', 2, { emoji: '🎉', body: '🎉' }),
  change(7, 'bob', 'unreact', 1, { emoji: '👍' }),
  change(8, 'bob', 'delete', 2),
  change(9, 'bob', 'mystery', 1),
];

test('the log replays into messages as they stand now', () => {
  const view = applyEntries(new Map(), LOG);
  assert.deepEqual([...view.keys()], [1, 2], 'changes are not messages');
  const first = view.get(1);
  assert.equal(first.body, 'hello');
  assert.deepEqual(first.edited, { seq: 3, ts: 3 });
  assert.deepEqual(first.reactions, [{ emoji: '👍', count: 1, users: ['carol'] }]);
  const second = view.get(2);
  assert.equal(second.reply_to, 1);
  assert.deepEqual(second.deleted, { seq: 8, by: 'bob', ts: 8 });
  assert.equal(second.body, '');
  assert.deepEqual(second.reactions, []);
});

test('replaying any suffix over a state that holds part of it gives the same result', () => {
  const whole = applyEntries(new Map(), LOG);
  for (let cut = 0; cut <= LOG.length; cut += 1) {
    const partial = applyEntries(new Map(), LOG.slice(0, cut));
    for (let from = 0; from <= cut; from += 1) {
      assert.deepEqual(applyEntries(partial, LOG.slice(from)), whole, `state after ${cut}, replay from ${from}`);
    }
  }
});

test('nothing changes: the same Map comes back; a change to a message not loaded is skipped', () => {
  const view = applyEntries(new Map(), LOG.slice(0, 2));
  assert.equal(applyEntries(view, [msg(1, 'alice', 'helo')]), view);
  assert.equal(applyEntries(view, [change(10, 'bob', 'edit', 99, { body: 'x' })]), view);
  const deleted = applyEntries(view, [change(11, 'alice', 'delete', 1)]);
  assert.equal(applyEntries(deleted, [change(12, 'alice', 'edit', 1, { body: 'back' })]).get(1).body, '', 'a tombstone stays one');
});
