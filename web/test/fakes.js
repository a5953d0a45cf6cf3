// Test doubles for what the engine reaches outside itself: an MQTT connection (mqtt.js's client
// surface the engine uses) and the HTTP API (fetch).

import { EventEmitter } from 'node:events';

export class FakeMqtt extends EventEmitter {
  constructor(url, options, broker) {
    super();
    Object.assign(this, { url, options, broker, connected: false, published: [], subscriptions: [] });
  }

  subscribe(topic, { qos }, callback) {
    this.subscriptions.push(topic);
    const refused = this.broker.refuse.has(topic);
    queueMicrotask(() => callback(null, [{ topic, qos: refused ? 128 : qos }]));
  }

  publish(topic, payload, options, callback) {
    this.published.push({ topic, payload: JSON.parse(payload), qos: options.qos });
    this.broker.onPublish?.(this, topic, JSON.parse(payload));
    if (callback) queueMicrotask(callback);
  }

  end(force, _options, callback) {
    const was = this.connected;
    this.connected = false;
    this.ended = true;
    if (was) queueMicrotask(() => this.emit('close'));
    if (callback) queueMicrotask(callback);
  }

  // --- test controls ------------------------------------------------------------------------
  accept() {
    this.connected = true;
    this.emit('connect', { returnCode: 0 });
  }

  refuse(code = 5) {
    this.emit('error', Object.assign(new Error('Connection refused: Not authorized'), { code }));
    this.emit('close');
  }

  drop() {
    this.connected = false;
    this.emit('close');
  }

  deliver(topic, payload) {
    this.emit('message', topic, new TextEncoder().encode(JSON.stringify(payload)));
  }

  sent(prefix) {
    return this.published.filter((p) => p.topic.startsWith(prefix));
  }
}

export class FakeBroker {
  constructor() {
    this.clients = [];
    this.refuse = new Set();
    this.connect = (url, options) => {
      const client = new FakeMqtt(url, options, this);
      this.clients.push(client);
      return client;
    };
  }

  get last() {
    return this.clients[this.clients.length - 1];
  }
}

/** A history API over in-memory conversations: {id: {members, messages: [...]}} */
export class FakeApi {
  constructor(conversations, { me = 'alice' } = {}) {
    Object.assign(this, { conversations, me, requests: [], down: false });
    this.fetch = async (url, init = {}) => this.#answer(new URL(url), init);
  }

  async #answer(url, init) {
    this.requests.push(`${init.method ?? 'GET'} ${url.pathname}${url.search}`);
    if (this.down === true || (typeof this.down === 'function' && this.down(url.pathname))) throw new TypeError('Failed to fetch');
    const json = (status, body) => ({ ok: status < 400, status, json: async () => body });
    let m;
    if (url.pathname === '/v1/auth/token') return json(200, { token: `token-of-${JSON.parse(init.body).username}`, expires_at: Date.now() + 3_600_000 });
    if (url.pathname === '/v1/auth/logout') {
      this.loggedOut = [...(this.loggedOut ?? []), init.headers.Authorization];
      return { ok: true, status: 204, json: async () => null };
    }
    if (url.pathname === '/v1/conversations') return json(200, { conversations: Object.keys(this.conversations).map((c) => this.summary(c)) });
    if ((m = url.pathname.match(/^\/v1\/conversations\/([^/]+)$/))) return json(200, this.summary(m[1]));
    if ((m = url.pathname.match(/^\/v1\/conversations\/([^/]+)\/messages$/))) {
      const all = this.conversations[m[1]].messages;
      const after = Number(url.searchParams.get('after') ?? 0);
      const limit = Number(url.searchParams.get('limit') ?? 50);
      const page = all.filter((msg) => msg.seq > after).slice(0, limit);
      return json(200, { messages: page, has_more: all.filter((msg) => msg.seq > after).length > limit });
    }
    return json(404, { error: { code: 'not_found', message: url.pathname } });
  }

  summary(conv) {
    const { members, messages, read_seq = 0 } = this.conversations[conv];
    const last = messages[messages.length - 1];
    return { id: conv, title: conv, members, last_seq: last?.seq ?? 0, read_seq, delivered_seq: read_seq,
      unread: messages.filter((msg) => msg.seq > read_seq && msg.sender !== this.me).length,
      last_message: last ? { seq: last.seq, sender: last.sender, body: last.body, ts: last.ts } : null };
  }

  /** Store a message as the server would (next seq), and return it. */
  add(conv, sender, body, extra = {}) {
    const messages = this.conversations[conv].messages;
    const message = { conv, seq: messages.length + 1, id: `id${messages.length + 1}`, sender,
      client_msg_id: `c${messages.length + 1}`, body, attachments: [], ts: 1_700_000_000_000 + messages.length, ...extra };
    messages.push(message);
    return message;
  }
}

export const tick = (ms = 0) => new Promise((resolve) => setTimeout(resolve, ms));

/** Wait until ``check()`` is truthy (the engine works through promise chains and timers). */
export async function until(check, timeoutMs = 2_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms: ${check}`);
    await tick(5);
  }
}
