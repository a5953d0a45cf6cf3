// Pure helpers of the web app (no DOM): unit-tested with node (web/test/app.test.js).

/**
 * How far one of my messages got: 'sent' (stored: ✓), 'delivered' (to every other member: ✓✓),
 * 'read' (by every other member: ✓✓ in colour). ``markers`` maps user -> {delivered_seq, read_seq}
 * as GET /v1/conversations/{conv}/receipts and chat/{conv}/receipts give them.
 */
export function deliveryStatus(seq, me, members, markers) {
  const others = members.filter((m) => m !== me);
  if (!others.length) return 'sent';
  const marker = (user) => markers[user] ?? { delivered_seq: 0, read_seq: 0 };
  if (others.every((u) => marker(u).read_seq >= seq)) return 'read';
  if (others.every((u) => Math.max(marker(u).delivered_seq, marker(u).read_seq) >= seq)) return 'delivered';
  return 'sent';
}

export const STATUS_MARK = { pending: '◷', sent: '✓', delivered: '✓✓', read: '✓✓', failed: '!' };

/** Merge a live receipt into the markers (they only move forward; read implies delivered). */
export function applyReceipt(markers, { user, seq, status }) {
  const current = markers[user] ?? { delivered_seq: 0, read_seq: 0 };
  const next = { ...current, delivered_seq: Math.max(current.delivered_seq, seq) };
  if (status === 'read') next.read_seq = Math.max(current.read_seq, seq);
  return { ...markers, [user]: next };
}

/** The messages of a view, ascending by seq, from a seq -> message map. */
export const ordered = (bySeq) => [...bySeq.values()].sort((a, b) => a.seq - b.seq);

/** Outbox messages still to show under the conversation: not yet back from the server (changes never show). */
export function pendingFor(conv, outbox, messages, me) {
  const arrived = new Set(messages.filter((m) => m.sender === me).map((m) => m.client_msg_id));
  return outbox.filter((item) => item.conv === conv && !item.payload.kind && !arrived.has(item.client_msg_id));
}

/** The quick reactions offered on a message. */
export const QUICK_REACTIONS = ['👍', '❤️', '😂', '🎉', '😮', '😢'];

/** A one-line snippet of a message for a reply quote or a preview. */
export function snippet(message, length = 80) {
  if (!message) return '';
  if (message.deleted) return '[deleted]';
  const text = message.body || (message.attachments?.length ? `[${message.attachments.length} attachment(s)]` : '');
  return text.length > length ? `${text.slice(0, length - 1)}…` : text;
}

export function timeOf(ts, now = Date.now()) {
  const date = new Date(ts);
  const sameDay = new Date(now).toDateString() === date.toDateString();
  return sameDay
    ? date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : date.toLocaleDateString([], { month: 'short', day: 'numeric' });
}

export function sizeOf(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** "bob is typing…", "bob and carol are typing…", "3 people are typing…" */
export function typingLine(users) {
  if (!users.length) return '';
  if (users.length === 1) return `${users[0]} is typing…`;
  if (users.length === 2) return `${users[0]} and ${users[1]} are typing…`;
  return `${users.length} people are typing…`;
}

/** The name a conversation shows: its title, else the other members (by ``nameOf``). */
export function conversationName(conv, me, nameOf = (id) => id) {
  if (conv.title) return conv.title;
  const others = (conv.members ?? []).filter((m) => m !== me);
  return others.length ? others.map(nameOf).join(', ') : conv.id;
}

/** The WebSocket URL of the broker, from the app's config and the page's own address. */
export function brokerUrl(config, location) {
  if (config.ws_url) return config.ws_url;
  const secure = location.protocol === 'https:' && config.wss_port;
  return `${secure ? 'wss' : 'ws'}://${location.hostname}:${secure ? config.wss_port : config.ws_port}${config.ws_path}`;
}

/** A word folded the way search compares words: accents dropped, case ignored (`Café` → `cafe`). */
export const foldWord = (word) => word.normalize('NFKD').replace(/\p{M}/gu, '').toLowerCase();

/**
 * ``text`` cut into parts, the words a search for ``query`` matched marked: [{text, match}]. Words
 * are runs of letters and digits, compared whole and folded, as GET /v1/search compares them. With
 * ``lead``, text more than ``lead`` characters before the first match is left out (an ellipsis
 * instead), so a match far into a long message is still on its one line.
 */
export function highlight(text, query, lead = Infinity) {
  const wanted = new Set((query.match(/[\p{L}\p{N}]+/gu) ?? []).map(foldWord));
  const parts = [];
  let at = 0;
  for (const found of text.matchAll(/[\p{L}\p{N}]+/gu)) {
    if (!wanted.has(foldWord(found[0]))) continue;
    if (found.index > at) parts.push({ text: text.slice(at, found.index), match: false });
    parts.push({ text: found[0], match: true });
    at = found.index + found[0].length;
  }
  if (at < text.length) parts.push({ text: text.slice(at), match: false });
  const first = parts[0];
  if (first && !first.match && parts.length > 1 && first.text.length > lead) {
    const cut = first.text.slice(first.text.length - lead);
    first.text = `…${cut.slice(cut.search(/\s/) + 1 || 0)}`; // from a word's start when one is near
  }
  return parts;
}
