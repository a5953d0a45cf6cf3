// The wire contract v1 as a browser sees it (docs/protocol.md): topic names, QoS, payload builders.
// Mirrors chatmq/core/protocol.py; tests/web/test_js_protocol.py checks the two agree.

export const PROTOCOL_VERSION = 1;
// 1 to 64 of [A-Za-z0-9_.-], but never '.' or '..' (URL path segments that clients rewrite away)
export const ID_PATTERN = /^(?:[A-Za-z0-9_.-]{3,64}|[A-Za-z0-9_-][A-Za-z0-9_.-]?|\.[A-Za-z0-9_-])$/;
export const MAX_CLIENT_MSG_ID_CHARS = 64;

export const QOS = Object.freeze({
  send: 1, msg: 1, ack: 1, typing: 0, presence: 1, receipt: 1, receipts: 1, events: 1,
});

/** @param {string} value @param {string} what */
export function requireId(value, what) {
  if (typeof value !== 'string' || !ID_PATTERN.test(value)) {
    throw new TypeError(`${JSON.stringify(value)} is not a valid ${what} id (1 to 64 of A-Z a-z 0-9 _ . -, not . or ..)`);
  }
  return value;
}

export const topics = Object.freeze({
  send: (conv, user) => `chat/${conv}/send/${user}`,
  msg: (conv) => `chat/${conv}/msg`,
  typing: (conv, user) => `chat/${conv}/typing/${user}`,
  typingFilter: (conv) => `chat/${conv}/typing/+`,
  receipt: (conv, user) => `chat/${conv}/receipt/${user}`,
  receipts: (conv) => `chat/${conv}/receipts`,
  ack: (user) => `user/${user}/ack`,
  events: (user) => `user/${user}/events`,
  devicePresence: (user, device) => `presence/${user}/${device}`,
  presence: (user) => `presence/${user}`,
});

/**
 * @typedef {{kind: 'send'|'msg'|'typing'|'receipt'|'receipts'|'ack'|'events'|'device_presence'|'user_presence',
 *            conv?: string, user?: string, device?: string}} Topic
 */

/** @param {string} topic @returns {Topic|null} */
export function parseTopic(topic) {
  const p = topic.split('/');
  if (!p.every((level) => ID_PATTERN.test(level))) return null;
  if (p[0] === 'chat' && p.length === 3 && p[2] === 'msg') return { kind: 'msg', conv: p[1] };
  if (p[0] === 'chat' && p.length === 3 && p[2] === 'receipts') return { kind: 'receipts', conv: p[1] };
  if (p[0] === 'chat' && p.length === 4) {
    const kind = { send: 'send', typing: 'typing', receipt: 'receipt' }[p[2]];
    return kind ? { kind, conv: p[1], user: p[3] } : null;
  }
  if (p[0] === 'user' && p.length === 3 && (p[2] === 'ack' || p[2] === 'events')) return { kind: p[2], user: p[1] };
  if (p[0] === 'presence' && p.length === 2) return { kind: 'user_presence', user: p[1] };
  if (p[0] === 'presence' && p.length === 3) return { kind: 'device_presence', user: p[1], device: p[2] };
  return null;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/** @param {object} payload */
export const encode = (payload) => encoder.encode(JSON.stringify(payload));

/** A JSON object from a payload, or null for anything else (the server's payloads are all objects). */
export function decode(bytes) {
  try {
    const value = JSON.parse(typeof bytes === 'string' ? bytes : decoder.decode(bytes));
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? value : null;
  } catch {
    return null;
  }
}

/** A fresh random id: client_msg_id, conn, device (hex, 32 characters). */
export function randomId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Changes to an earlier message (docs/protocol.md, "Changing messages"). */
export const CHANGE_KINDS = Object.freeze(['edit', 'delete', 'react', 'unreact']);

/** The only rejection that means "later", not "never": the message stays queued. */
export const TRANSIENT_REFUSAL = 'rate_limited';

/**
 * Whether a log entry is a message to show (rather than a change to an earlier one: an edit, a
 * delete or a reaction carries a `kind` and a `target`). Entries of kinds this library does not
 * know are not shown and not counted as unread; they still take their seq in the log.
 */
export const isMessage = (entry) => entry.kind === undefined || entry.kind === null || entry.kind === 'message';
