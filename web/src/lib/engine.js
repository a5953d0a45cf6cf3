// ChatEngine: the one place that owns a browser's MQTT connection (in the SharedWorker, or in a tab
// where SharedWorker is missing) and gets the wire contract right for every tab it serves:
//
// - the presence last will with a fresh `conn` per connection, and heartbeats;
// - the subscriptions every conversation needs, again after each reconnect;
// - an outbox in IndexedDB: a send is persisted before it is published, resent with the same
//   client_msg_id after a reconnect or a timeout, and settled by the server's ack;
// - in-order, exactly-once delivery: per conversation a Sequencer; a seq gap, a reconnect or a
//   fan-out-on-read notice is caught up from the history API; the cursor is kept in IndexedDB;
// - delivered receipts as messages arrive, read receipts on request; others' markers, typing and
//   presence relayed to the tabs.
//
// It does no DOM work: tabs (client.js) render what it emits. Everything with a side effect outside
// the worker (MQTT, HTTP, IndexedDB, timers) comes in through the constructor, so the unit tests run
// it against fakes.

import { Backoff } from './retry.js';
import { HistoryApi, ApiError } from './history.js';
import { Outbox } from './outbox.js';
import { CHANGE_KINDS, QOS, decode, isMessage, parseTopic, randomId, requireId, topics } from './protocol.js';
import { Sequencer } from './sequencer.js';

const HISTORY_PAGE = 200;
const TICK_MS = 1_000;
const RECEIPT_DELAY_MS = 200; // delivered receipts of a burst go out as one (they are cumulative)
const SUBSCRIBE_RETRY_MS = 1_000; // the broker learns a new membership within its refresh interval
const OFFLINE_PUBLISH_TIMEOUT_MS = 1_000;
const LOGOUT_TIMEOUT_MS = 2_000;

/** @typedef {'signed-out'|'connecting'|'online'|'offline'} ConnectionState */

export class ChatEngine {
  /**
   * @param {{store: import('./storage.js').LocalStore, mqttConnect: Function, wsUrl: string, apiUrl?: string,
   *          device: string, heartbeatMs?: number, resendAfterMs?: number, backoff?: Backoff,
   *          fetch?: typeof fetch, log?: (line: string) => void}} options
   */
  constructor({ store, mqttConnect, wsUrl, apiUrl = '', device, heartbeatMs = 30_000, resendAfterMs = 10_000,
    maxBodyBytes = 4096, backoff = new Backoff(), listBackoff = new Backoff({ min: 1_000, max: 30_000 }), fetch: fetcher,
    log = () => {} }) {
    Object.assign(this, { store, mqttConnect, wsUrl, heartbeatMs, resendAfterMs, maxBodyBytes, backoff, listBackoff, log });
    this.device = requireId(device, 'device');
    this.api = new HistoryApi({ baseUrl: apiUrl, ...(fetcher ? { fetch: fetcher } : {}) });
    /** @type {{user: string, token: string, expires_at: number}|null} */
    this.session = null;
    /** @type {ConnectionState} */
    this.state = 'signed-out';
    this.reason = null;
    this.listeners = new Set();
    this.#reset();
  }

  #reset() {
    this.client = null;
    this.outbox = null;
    /** @type {Map<string, object>} conversation summaries, as GET /v1/conversations has them, kept live */
    this.conversations = new Map();
    /** @type {Map<string, Sequencer>} */
    this.sequencers = new Map();
    /** @type {Map<string, object>} presence/{user} payloads */
    this.presence = new Map();
    this.catchingUp = new Set();
    this.needsCatchup = new Set();
    this.subscribed = new Set();
    this.receiptTimers = new Map();
    this.timers = [];
    this.everConnected = false;
    /** Whether the conversation list came from the API: while it cannot, the error and when it is tried again */
    this.listing = { loaded: false, error: null, retryAt: null };
  }

  // --- listeners (the tabs) -------------------------------------------------------------------
  /** @param {(name: string, data: any) => void} listener @returns {() => void} unsubscribe */
  listen(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(name, data) {
    for (const listener of this.listeners) {
      try {
        listener(name, data);
      } catch (exc) {
        this.log(`a listener failed on ${name}: ${exc}`);
      }
    }
  }

  /** Everything a tab that just opened needs to render. */
  snapshot() {
    return {
      state: this.state,
      reason: this.reason,
      session: this.session && { user: this.session.user, token: this.session.token, expires_at: this.session.expires_at },
      device: this.device,
      conversations: this.conversationList(),
      presence: Object.fromEntries(this.presence),
      outbox: this.outbox ? this.outbox.items() : [],
      listing: this.listing,
    };
  }

  conversationList() {
    return [...this.conversations.values()].sort(
      (a, b) => (b.last_message?.ts ?? 0) - (a.last_message?.ts ?? 0) || a.id.localeCompare(b.id));
  }

  #setState(state, reason = null) {
    if (this.state === state && this.reason === reason) return;
    this.state = state;
    this.reason = reason;
    this.emit('state', { state, reason });
  }

  get owner() {
    return `${this.session.user}.${this.device}`;
  }

  // --- session --------------------------------------------------------------------------------
  /** Resume the session a tab signed in earlier (kept in IndexedDB), if it is still valid. */
  async resume() {
    const session = await this.store.get('session');
    if (session && session.expires_at > Date.now() && !this.session) await this.#begin(session);
    return this.snapshot();
  }

  async signIn(username, password) {
    requireId(username, 'user');
    const { token, expires_at } = await this.api.signIn(username, password);
    await this.stop({ clean: true });
    const session = { user: username, token, expires_at };
    await this.store.set('session', session);
    await this.#begin(session);
    return this.snapshot();
  }

  /**
   * End the session: the connection, the kept session, and (``revoke``, what signing out means) the
   * token itself on the server (POST /v1/auth/logout), so a copy of it is worth nothing. A session the
   * server already ended (``reason``) has nothing to revoke.
   */
  async signOut(reason = null, { revoke = reason === null } = {}) {
    const token = this.session?.token;
    await this.stop({ clean: true });
    await this.store.delete('session');
    this.emit('session', null);
    this.#setState('signed-out', reason);
    if (revoke && token) await this.#revoke(token);
  }

  async #revoke(token) {
    const api = new HistoryApi({ baseUrl: this.api.baseUrl, token, fetch: this.api.fetch });
    let timer;
    const timeout = new Promise((resolve) => {
      timer = setTimeout(resolve, LOGOUT_TIMEOUT_MS, new Error('no answer'));
    });
    const done = api.request('POST', '/v1/auth/logout', { json: { device: this.device } }).catch((exc) => exc);
    const failed = await Promise.race([done, timeout]);
    clearTimeout(timer);
    if (failed) this.log(`the token was not revoked (${failed.message}); it expires on its own`);
  }

  async #begin(session) {
    this.session = session;
    this.api.token = session.token;
    this.outbox = new Outbox({ store: this.store, owner: this.owner, publish: (item) => this.#publishSend(item),
      resendAfterMs: this.resendAfterMs });
    await this.outbox.restore();
    if (this.session !== session) return; // stopped (signed out, or another session) meanwhile
    this.emit('session', { user: session.user, token: session.token, expires_at: session.expires_at });
    this.emit('outbox', this.outbox.items());
    this.#setState('connecting');
    this.#every(TICK_MS, () => this.#tick());
    this.#every(this.heartbeatMs, () => this.#publishPresence('online'));
    this.#connect();
    // the list over HTTP at once: the broker may be out of reach while the API is not
    this.#loadConversations();
  }

  /** End the session's connection: an offline presence and a DISCONNECT when ``clean``, else just the socket. */
  async stop({ clean = true } = {}) {
    const client = this.client;
    for (const timer of this.timers) clearInterval(timer);
    for (const timer of this.receiptTimers.values()) clearTimeout(timer);
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.listTimer);
    this.#reset();
    this.session = null;
    this.api.token = null;
    if (!client) return;
    if (clean && client.connected) {
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, OFFLINE_PUBLISH_TIMEOUT_MS);
        client.publish(topics.devicePresence(client.chatmq.user, this.device),
          JSON.stringify({ status: 'offline', conn: client.chatmq.conn }), { qos: QOS.presence }, () => {
            clearTimeout(timer);
            resolve();
          });
      });
      await new Promise((resolve) => client.end(false, {}, resolve));
    } else {
      client.end(true);
    }
  }

  #every(ms, fn) {
    this.timers.push(setInterval(fn, ms));
  }

  // --- connection -----------------------------------------------------------------------------
  #connect() {
    clearTimeout(this.reconnectTimer);
    if (!this.session) return;
    const { user, token } = this.session;
    const conn = randomId(); // this connection's id: a late will of an older connection cannot hurt it
    const client = this.mqttConnect(this.wsUrl, {
      protocolVersion: 4,
      clientId: `${user}.${this.device}`,
      username: user,
      password: token,
      clean: true,
      keepalive: 30,
      reconnectPeriod: 0, // reconnects are ours: a fresh conn id and will each time, with back-off
      connectTimeout: 10_000,
      resubscribe: false,
      will: { topic: topics.devicePresence(user, this.device), payload: JSON.stringify({ status: 'offline', conn }),
        qos: QOS.presence, retain: false },
    });
    client.chatmq = { user, conn };
    this.client = client;
    this.subscribed = new Set();
    client.on('connect', () => client === this.client && this.#onConnect(client));
    client.on('message', (topic, payload) => client === this.client && this.#onMessage(topic, payload));
    client.on('error', (error) => client === this.client && this.#onError(client, error));
    client.on('close', () => client === this.client && this.#onClose(client));
  }

  /** Connect again now (the browser says it is back online), unless connected or signed out. */
  reconnectNow() {
    if (this.session && this.state === 'offline') {
      this.backoff.reset();
      this.client?.end(true);
      this.#connect();
    }
  }

  async #onConnect(client) {
    this.backoff.reset();
    this.log(`connected as ${client.chatmq.user}.${this.device}`);
    await this.#loadConversations();
    if (client !== this.client) return;
    const { user } = this.session;
    this.#subscribe(topics.ack(user), QOS.ack);
    this.#subscribe(topics.events(user), QOS.events);
    for (const conv of this.conversations.keys()) this.#subscribeConversation(conv);
    this.#watchMembersPresence();
    this.#publishPresence('online');
    this.outbox.flush({ reconnected: true });
    this.#setState('online');
    this.everConnected = true;
    for (const conv of this.sequencers.keys()) this.#scheduleCatchup(conv);
  }

  #onError(client, error) {
    // A refused CONNACK: the token expired, was revoked, or the user was disabled.
    if (error?.code === 4 || error?.code === 5) {
      this.log(`login refused (${error.message})`);
      this.signOut('The server refused this session; sign in again.', { revoke: false });
      return;
    }
    this.log(`connection error: ${error?.message ?? error}`);
  }

  #onClose(client) {
    if (!this.session) return;
    this.#setState('offline');
    client.end(true);
    const delay = this.backoff.next();
    this.log(`connection lost; reconnecting in ${delay} ms`);
    this.reconnectTimer = setTimeout(() => this.#connect(), delay);
  }

  get connected() {
    return this.state === 'online' && Boolean(this.client?.connected);
  }

  #publish(topic, payload, qos) {
    if (!this.client?.connected) return false;
    this.client.publish(topic, JSON.stringify(payload), { qos, retain: false });
    return true;
  }

  #publishPresence(status) {
    if (!this.session) return;
    this.#publish(topics.devicePresence(this.session.user, this.device), { status, conn: this.client?.chatmq.conn }, QOS.presence);
  }

  #publishSend(item) {
    return this.#publish(topics.send(item.conv, this.session.user), item.payload, QOS.send);
  }

  #subscribe(topic, qos, { retries = 5 } = {}) {
    const client = this.client;
    if (!client?.connected || this.subscribed.has(topic)) return;
    this.subscribed.add(topic);
    client.subscribe(topic, { qos }, (error, granted) => {
      if (client !== this.client) return;
      const refused = error || !granted?.length || granted.some((g) => g.qos === 128);
      if (!refused) return;
      this.subscribed.delete(topic);
      this.log(`subscription to ${topic} refused`);
      if (retries > 0) setTimeout(() => this.#subscribe(topic, qos, { retries: retries - 1 }), SUBSCRIBE_RETRY_MS);
    });
  }

  #subscribeConversation(conv) {
    this.#subscribe(topics.msg(conv), QOS.msg);
    this.#subscribe(topics.typingFilter(conv), QOS.typing);
    this.#subscribe(topics.receipts(conv), QOS.receipts);
  }

  #watchMembersPresence() {
    const me = this.session.user;
    for (const summary of this.conversations.values()) {
      for (const member of summary.members ?? []) if (member !== me) this.#subscribe(topics.presence(member), QOS.presence);
    }
  }

  #tick() {
    if (!this.connected) return;
    this.outbox.flush();
    for (const [conv, seqr] of this.sequencers) {
      if (this.needsCatchup.has(conv) || seqr.missingAfter() !== null) this.#scheduleCatchup(conv);
    }
  }

  #sessionEnded(exc) {
    if (exc instanceof ApiError && exc.status === 401) {
      this.signOut('Your session has expired; sign in again.', { revoke: false });
      return true;
    }
    return false;
  }

  // --- conversations --------------------------------------------------------------------------
  /**
   * The conversation list from the API; while it cannot be had (the API is unreachable or failing),
   * the tabs are told why and it is tried again with back-off (``retryConversations`` tries now).
   * When a retry brings it while connected, its conversations are subscribed and caught up (on
   * connect, #onConnect subscribes what the list holds once it is in). Resolves true when it is in.
   */
  async #loadConversations({ retry = false } = {}) {
    clearTimeout(this.listTimer);
    const session = this.session;
    let brought;
    try {
      brought = await this.#refreshConversations();
    } catch (exc) {
      if (this.session !== session || this.#sessionEnded(exc)) return false;
      const delay = this.listBackoff.next();
      this.log(`conversations not loaded (${exc.message}); trying again in ${delay} ms`);
      clearTimeout(this.listTimer);
      this.listTimer = setTimeout(() => this.#loadConversations({ retry: true }), delay);
      this.#setListing({ loaded: this.listing.loaded, error: exc.message, retryAt: Date.now() + delay });
      return false;
    }
    if (this.session !== session) return false;
    this.listBackoff.reset();
    this.#setListing({ loaded: true, error: null, retryAt: null });
    if (retry && this.connected) {
      for (const conv of this.conversations.keys()) this.#subscribeConversation(conv);
      this.#watchMembersPresence();
      for (const conv of brought) this.#scheduleCatchup(conv);
    }
    return true;
  }

  #setListing(listing) {
    this.listing = listing;
    this.emit('listing', listing);
  }

  /** Load the conversation list now (the user pressed Retry), not at the back-off's next turn. */
  async retryConversations() {
    if (!this.session) return false;
    this.listBackoff.reset();
    return this.#loadConversations({ retry: true });
  }

  /** The list from the API, adopted: resolves to the conversations new to the engine. */
  async #refreshConversations() {
    const list = await this.api.conversations();
    const seen = new Set();
    const brought = [];
    for (const summary of list) {
      seen.add(summary.id);
      if (await this.#adopt(summary)) brought.push(summary.id);
    }
    for (const conv of [...this.conversations.keys()]) if (!seen.has(conv)) this.#forget(conv);
    this.emit('conversations', this.conversationList());
    return brought;
  }

  /**
   * Take a conversation's summary from the API; a new one gets a sequencer starting at its cursor.
   * Resolves true for a conversation new to the engine.
   */
  async #adopt(summary) {
    const known = this.conversations.get(summary.id);
    // live updates may be ahead of the API's answer (it was read before they arrived): keep the newer
    if (known && known.last_seq > summary.last_seq) {
      Object.assign(summary, { last_seq: known.last_seq, last_message: known.last_message, unread: known.unread });
    }
    this.conversations.set(summary.id, summary);
    if (this.sequencers.has(summary.id)) return false;
    const seqr = new Sequencer(); // set before the await: live messages wait in it meanwhile
    this.sequencers.set(summary.id, seqr);
    const cursor = await this.store.cursor(this.owner, summary.id);
    if (this.sequencers.get(summary.id) !== seqr) return false;
    // a conversation new to this browser starts at its newest message: older ones are history
    this.#deliver(summary.id, seqr.start(cursor ?? summary.last_seq));
    this.needsCatchup.add(summary.id);
    return true;
  }

  #forget(conv) {
    this.conversations.delete(conv);
    this.sequencers.delete(conv);
    this.needsCatchup.delete(conv);
  }

  async #refreshConversation(conv) {
    try {
      await this.#adopt(await this.api.conversation(conv));
    } catch (exc) {
      if (exc instanceof ApiError && (exc.status === 403 || exc.status === 404)) this.#forget(conv);
      else if (!this.#sessionEnded(exc)) throw exc;
    }
    if (this.conversations.has(conv)) {
      this.#subscribeConversation(conv);
      this.#watchMembersPresence();
      this.#scheduleCatchup(conv);
    }
    this.emit('conversations', this.conversationList());
  }

  // --- receiving ------------------------------------------------------------------------------
  #onMessage(topic, bytes) {
    const parsed = parseTopic(topic);
    const payload = decode(bytes);
    if (!parsed || !payload) return;
    switch (parsed.kind) {
      case 'msg': return this.#onChatMessage(parsed.conv, payload);
      case 'ack': return this.#onAck(payload);
      case 'typing':
        if (parsed.user !== this.session.user) this.emit('typing', { conv: parsed.conv, user: parsed.user, typing: payload.typing === true });
        return;
      case 'receipts': return this.#onReceipt(parsed.conv, payload);
      case 'user_presence':
        this.presence.set(parsed.user, payload);
        this.emit('presence', payload);
        return;
      case 'events': return this.#onEvent(payload);
      default:
    }
  }

  #onChatMessage(conv, message) {
    const seqr = this.sequencers.get(conv);
    if (!seqr) return;
    if (message.notice) {
      // fan-out on read: the body is in the history API
      if (seqr.last !== null && message.seq > seqr.last) this.#scheduleCatchup(conv);
      return;
    }
    this.#deliver(conv, seqr.offer(message));
    if (seqr.missingAfter() !== null) this.#scheduleCatchup(conv);
  }

  async #onAck(ack) {
    const item = await this.outbox?.settle(ack);
    if (!item) return;
    this.emit('ack', ack);
    this.emit('outbox', this.outbox.items());
  }

  #onReceipt(conv, receipt) {
    const summary = this.conversations.get(conv);
    if (!summary) return;
    this.emit('receipt', { conv, ...receipt });
    if (receipt.user !== this.session.user) return;
    // another of my devices (or this one) moved my markers: the unread count follows
    summary.delivered_seq = Math.max(summary.delivered_seq ?? 0, receipt.seq);
    if (receipt.status === 'read' && receipt.seq > (summary.read_seq ?? 0)) {
      summary.read_seq = receipt.seq;
      if (receipt.seq >= summary.last_seq) summary.unread = 0;
      else this.#refreshConversation(conv).catch(() => {});
    }
    this.emit('conversations', this.conversationList());
  }

  #onEvent(event) {
    this.emit('event', event);
    if (typeof event.conv !== 'string') return;
    if (event.event === 'conversation_removed') {
      this.#forget(event.conv);
      this.emit('conversations', this.conversationList());
    } else if (event.event === 'conversation_added' || event.event === 'conversation_updated') {
      this.#refreshConversation(event.conv).catch((exc) => this.log(`refreshing ${event.conv} failed: ${exc.message}`));
    }
  }

  #scheduleCatchup(conv) {
    this.needsCatchup.add(conv);
    if (this.catchingUp.has(conv) || !this.session) return;
    this.catchingUp.add(conv);
    this.#catchUp(conv)
      .catch((exc) => this.#sessionEnded(exc) || this.log(`catch-up of ${conv} failed (${exc.message}); retrying`))
      .finally(() => this.catchingUp.delete(conv));
  }

  /** Fetch everything after the last delivered seq, page by page, and deliver it in order. */
  async #catchUp(conv) {
    for (;;) {
      const seqr = this.sequencers.get(conv);
      if (!seqr || seqr.last === null) return;
      const page = await this.api.messages(conv, { after: seqr.last, limit: HISTORY_PAGE });
      if (this.sequencers.get(conv) !== seqr) return; // left meanwhile
      for (const message of page.messages) this.#deliver(conv, seqr.offer(message));
      if (!page.has_more) {
        this.needsCatchup.delete(conv);
        return;
      }
    }
  }

  /** Hand messages (in order, each once) to the tabs; keep the summary, the cursor and the receipt in step. */
  #deliver(conv, messages) {
    if (!messages.length) return;
    const summary = this.conversations.get(conv);
    const me = this.session.user;
    for (const message of messages) {
      if (summary && message.seq > summary.last_seq) {
        summary.last_seq = message.seq;
        if (!isMessage(message)) { // a change to an earlier message: not unread itself
          this.#previewChange(conv, summary, message);
          continue;
        }
        summary.last_message = { seq: message.seq, sender: message.sender, body: message.body, ts: message.ts };
        if (message.sender !== me && message.seq > (summary.read_seq ?? 0)) summary.unread = (summary.unread ?? 0) + 1;
      }
    }
    const last = messages[messages.length - 1].seq;
    this.emit('messages', { conv, messages });
    if (summary) this.emit('conversations', this.conversationList());
    this.store.setCursor(this.owner, conv, last).catch((exc) => this.log(`cursor not saved: ${exc.message}`));
    this.#scheduleDeliveredReceipt(conv);
  }

  /** An edit or a delete of the previewed message shows in the list; a deleted unread one is recounted. */
  #previewChange(conv, summary, change) {
    const preview = summary.last_message;
    if (preview && preview.seq === change.target) {
      if (change.kind === 'edit') summary.last_message = { ...preview, body: change.body, edited: true };
      if (change.kind === 'delete') summary.last_message = { ...preview, body: '', deleted: true };
    }
    if (change.kind === 'delete' && change.target > (summary.read_seq ?? 0)) {
      this.#refreshConversation(conv).catch(() => {});
    }
  }

  #scheduleDeliveredReceipt(conv) {
    if (this.receiptTimers.has(conv)) return;
    this.receiptTimers.set(conv, setTimeout(() => {
      this.receiptTimers.delete(conv);
      const summary = this.conversations.get(conv);
      const last = this.sequencers.get(conv)?.last;
      if (!summary || !last || last <= (summary.delivered_seq ?? 0)) return;
      if (this.#publish(topics.receipt(conv, this.session.user), { seq: last, status: 'delivered' }, QOS.receipt)) {
        summary.delivered_seq = last;
      }
    }, RECEIPT_DELAY_MS));
  }

  // --- what tabs ask for ----------------------------------------------------------------------
  /** Queue a message; resolves once it is persisted in the outbox (it goes out now or on reconnect). */
  async send(conv, body, { attachments = [], replyTo = null, clientMsgId = randomId() } = {}) {
    const payload = { client_msg_id: clientMsgId, body };
    if (attachments.length) payload.attachments = attachments;
    if (replyTo !== null) payload.reply_to = replyTo;
    return this.#queue(conv, payload);
  }

  /**
   * Change an earlier message (its seq is ``target``): ``edit`` with a new ``body``, ``delete``,
   * ``react`` / ``unreact`` with an ``emoji``. Queued and acked like a send; the change reaches the
   * tabs as an entry of the log.
   */
  async change(conv, kind, target, { body, emoji, clientMsgId = randomId() } = {}) {
    if (!CHANGE_KINDS.includes(kind)) throw new TypeError(`kind must be one of ${CHANGE_KINDS.join(', ')}`);
    if (!Number.isInteger(target) || target < 1) throw new TypeError('target must be a seq (an integer >= 1)');
    const payload = { client_msg_id: clientMsgId, kind, target };
    if (kind === 'edit') payload.body = body;
    if (kind === 'react' || kind === 'unreact') payload.emoji = emoji;
    return this.#queue(conv, payload);
  }

  async #queue(conv, payload) {
    if (!this.session) throw new Error('not signed in');
    requireId(conv, 'conversation');
    const bytes = new TextEncoder().encode(payload.body ?? '').length;
    if (bytes > this.maxBodyBytes) {
      // refused here, never queued: the server would refuse it too, and a packet above the
      // broker's limit would close the connection again on every resend
      throw Object.assign(new Error(`the message is ${bytes} bytes of UTF-8; at most ${this.maxBodyBytes}`),
        { code: 'too_large' });
    }
    const item = await this.outbox.add(conv, payload);
    this.emit('outbox', this.outbox.items());
    return item;
  }

  typing(conv, typing = true) {
    if (!this.session) return false;
    return this.#publish(topics.typing(requireId(conv, 'conversation'), this.session.user), { typing }, QOS.typing);
  }

  /** The user has seen everything up to ``seq``: a read receipt, and the unread count drops. */
  markRead(conv, seq) {
    const summary = this.conversations.get(conv);
    if (!summary || !Number.isInteger(seq) || seq < 1 || seq > summary.last_seq || seq <= (summary.read_seq ?? 0)) return false;
    if (!this.#publish(topics.receipt(conv, this.session.user), { seq, status: 'read' }, QOS.receipt)) return false;
    summary.read_seq = seq;
    summary.delivered_seq = Math.max(summary.delivered_seq ?? 0, seq);
    if (seq >= summary.last_seq) summary.unread = 0;
    this.emit('conversations', this.conversationList());
    return true;
  }

  /** A conversation the user just created (or was added to): adopt it without waiting for the event. */
  async adoptConversation(conv) {
    await this.#refreshConversation(conv);
    return this.conversations.get(conv) ?? null;
  }
}
