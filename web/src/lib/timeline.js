// A conversation's messages as they stand now, kept from its log (docs/protocol.md, "Changing
// messages"): each message by seq; an `edit` replaces its text and marks it edited; a `delete`
// makes it a tombstone; `react` / `unreact` add or remove the sender under that emoji. The rules
// give the same result whatever suffix of the log is replayed over a state that already holds part
// of it, so a page can start from a `view=messages` page and apply every entry after its last_seq.
//
// Messages have the `view=messages` shape: {seq, sender, body, attachments, ts, reply_to, edited,
// deleted, reactions: [{emoji, count, users}]}. Pure functions over a Map (seq -> message): no I/O.

import { isMessage } from './protocol.js';

/** A message as the view shows it (a live entry or a history entry brought to the view shape). */
export function asViewMessage(entry) {
  return { reply_to: null, edited: null, deleted: null, reactions: [], attachments: [], ...entry };
}

/**
 * Apply log entries (in seq order) to ``messages``; returns a new Map when anything changed, else
 * the same one. A change whose target is not in the map (older than what is loaded) is skipped:
 * the target arrives from the view with the change already applied.
 */
export function applyEntries(messages, entries) {
  let next = messages;
  const edit = (seq, fn) => {
    const target = next.get(seq);
    if (!target) return;
    const changed = fn(target);
    if (changed === target) return;
    if (next === messages) next = new Map(messages);
    next.set(seq, changed);
  };
  for (const entry of entries) {
    if (isMessage(entry)) {
      if (!next.has(entry.seq)) {
        if (next === messages) next = new Map(messages);
        next.set(entry.seq, asViewMessage(entry));
      }
      continue;
    }
    switch (entry.kind) {
      case 'edit':
        edit(entry.target, (m) => (m.deleted || (m.edited && m.edited.seq >= entry.seq) ? m
          : { ...m, body: entry.body, edited: { seq: entry.seq, ts: entry.ts } }));
        break;
      case 'delete':
        edit(entry.target, (m) => (m.deleted ? m : { ...m, body: '', attachments: [], reactions: [],
          deleted: { seq: entry.seq, by: entry.sender, ts: entry.ts } }));
        break;
      case 'react':
        edit(entry.target, (m) => (m.deleted ? m : withReaction(m, entry.emoji, entry.sender, true)));
        break;
      case 'unreact':
        edit(entry.target, (m) => withReaction(m, entry.emoji, entry.sender, false));
        break;
      default: // a kind this library does not know: it keeps its seq, nothing to show
    }
  }
  return next;
}

function withReaction(message, emoji, user, add) {
  const reactions = message.reactions ?? [];
  const found = reactions.find((r) => r.emoji === emoji);
  const has = Boolean(found?.users.includes(user));
  if (has === add) return message;
  let updated;
  if (add) {
    updated = found
      ? reactions.map((r) => (r === found ? { ...r, count: r.count + 1, users: [...r.users, user] } : r))
      : [...reactions, { emoji, count: 1, users: [user] }];
  } else {
    updated = reactions
      .map((r) => (r === found ? { ...r, count: r.count - 1, users: r.users.filter((u) => u !== user) } : r))
      .filter((r) => r.count > 0);
  }
  return { ...message, reactions: updated };
}
