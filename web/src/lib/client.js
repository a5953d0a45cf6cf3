// ChatClient: what a page uses. It talks to the browser's one ChatEngine in the SharedWorker
// (worker.js), or, where SharedWorker is missing, runs an engine of its own in this tab (then each
// tab is its own device with its own connection). Either way the page sees the same API: calls that
// return promises, and events.
//
//   const client = await ChatClient.connect({ wsUrl: 'ws://host:8083/mqtt' });
//   client.on('messages', ({ conv, messages }) => render(conv, messages));
//   if (!client.session) await client.signIn('alice', 'secret');
//   await client.send('team', 'hello');
//
// Events: state ({state: 'signed-out'|'connecting'|'online'|'offline', reason}), session, conversations
// (the list, newest first, with unread and last_message), messages ({conv, messages}: in seq order,
// each once), outbox (unacked sends), ack, receipt ({conv, user, seq, status}), typing ({conv, user,
// typing}), presence ({user, status, last_seen}), event (user/{me}/events as they come), listing
// ({loaded, error, retryAt}: whether the conversation list came from the API, and while it cannot, why).

import { HistoryApi } from './history.js';
import { randomId } from './protocol.js';
import { TAB_CALLS, tabLockName } from './hub.js';
import { SESSION_CHANNEL, shareSession } from './tabsync.js';

const WORKER_URL = new URL('./worker.js', import.meta.url);
/** The events that change ``client.snapshot`` (and ``client.version``). */
export const SNAPSHOT_EVENTS = new Set(['snapshot', 'state', 'session', 'conversations', 'outbox', 'listing', 'presence']);

export class ChatClient {
  /**
   * @param {{wsUrl: string, apiUrl?: string, heartbeatMs?: number, shared?: boolean, dbName?: string,
   *          workerUrl?: string|URL}} config ``shared`` false forces one connection for this tab
   */
  static async connect(config) {
    const client = new ChatClient(config);
    await client.#open(config.shared ?? typeof SharedWorker !== 'undefined', config.workerUrl ?? WORKER_URL);
    return client;
  }

  constructor(config) {
    this.config = { apiUrl: '', ...config };
    this.tab = randomId().slice(0, 16);
    this.api = new HistoryApi({ baseUrl: this.config.apiUrl });
    this.listeners = new Map();
    this.snapshot = null;
    /** Counts the changes to ``snapshot``: a view that starts listening late sees whether it missed one. */
    this.version = 0;
    this.calls = new Map();
    this.nextCall = 1;
    /** @type {Map<string, {id: string, display_name?: string|null}>} profiles loaded so far */
    this.profiles = new Map();
    this.profilesAsked = new Set();
  }

  /** 'shared' (one connection for every tab, in the SharedWorker) or 'tab' (this tab's own). */
  get mode() {
    return this.link ? 'tab' : 'shared';
  }

  get session() {
    return this.snapshot?.session ?? null;
  }

  async #open(shared, workerUrl) {
    const config = { wsUrl: this.config.wsUrl, apiUrl: this.config.apiUrl, heartbeatMs: this.config.heartbeatMs,
      maxBodyBytes: this.config.maxBodyBytes, dbName: this.config.dbName };
    if (shared) {
      const locked = await this.#holdTabLock();
      const worker = new SharedWorker(workerUrl, { type: 'module', name: 'chatmq' });
      this.port = worker.port;
      const welcome = new Promise((resolve, reject) => {
        this.welcome = { resolve, reject };
      });
      this.port.addEventListener('message', (event) => this.#onPortMessage(event.data));
      this.port.start();
      this.port.postMessage({ type: 'hello', tab: this.tab, config, locked });
      globalThis.addEventListener?.('pagehide', () => this.port.postMessage({ type: 'bye', tab: this.tab }));
      // the page hears first when the network is back: no need to wait for the worker's back-off
      globalThis.addEventListener?.('online', () => this.reconnectNow().catch(() => {}));
      this.#apply('snapshot', await welcome);
    } else {
      const [{ default: mqtt }, { createEngine }] = await Promise.all([
        import('../vendor/mqtt.esm.js'), import('./setup.js')]);
      const engine = await createEngine({ ...config, deviceSuffix: tabDevice() }, mqtt.connect);
      engine.listen((name, data) => this.#apply(name, data));
      // this tab's engine is one of several: signing in or out reaches the others' too
      if (typeof BroadcastChannel !== 'undefined') {
        shareSession(engine, new BroadcastChannel(SESSION_CHANNEL), (snapshot) => this.#apply('snapshot', snapshot));
      }
      globalThis.addEventListener?.('online', () => engine.reconnectNow());
      globalThis.addEventListener?.('pagehide', () => engine.stop({ clean: true }));
      this.link = engine;
      this.#apply('snapshot', await engine.resume());
    }
  }

  /** A Web Lock held for this page's life: the worker learns from it when the tab is gone. */
  #holdTabLock() {
    if (!globalThis.navigator?.locks) return Promise.resolve(false);
    return new Promise((held) => {
      navigator.locks.request(tabLockName(this.tab), () => {
        held(true);
        return new Promise(() => {}); // never released while the page lives
      });
    });
  }

  #onPortMessage(message) {
    if (message.type === 'welcome') {
      if (message.error) this.welcome.reject(asError(message.error));
      else this.welcome.resolve(message.snapshot);
    } else if (message.type === 'event') {
      this.#apply(message.name, message.data);
    } else if (message.type === 'result') {
      const call = this.calls.get(message.id);
      this.calls.delete(message.id);
      if (message.error) call?.reject(asError(message.error));
      else call?.resolve(message.value);
    }
  }

  /** Keep the local snapshot current, then tell the page. */
  #apply(name, data) {
    if (name !== 'snapshot' && !this.snapshot) return; // before the welcome: its snapshot is newer
    if (name === 'snapshot') {
      this.snapshot = data;
      this.api.token = data.session?.token ?? null;
    } else if (name === 'state') Object.assign(this.snapshot, data);
    else if (name === 'session') {
      this.snapshot.session = data;
      this.api.token = data?.token ?? null;
    } else if (name === 'conversations') this.snapshot.conversations = data;
    else if (name === 'outbox') this.snapshot.outbox = data;
    else if (name === 'listing') this.snapshot.listing = data;
    else if (name === 'presence') this.snapshot.presence[data.user] = data;
    if (SNAPSHOT_EVENTS.has(name)) this.version += 1;
    for (const listener of this.listeners.get(name) ?? []) listener(data);
    for (const listener of this.listeners.get('*') ?? []) listener(name, data);
  }

  /** @param {string} name an event name, or '*' for all (called with name and data) @returns {() => void} */
  on(name, listener) {
    if (!this.listeners.has(name)) this.listeners.set(name, new Set());
    this.listeners.get(name).add(listener);
    return () => this.listeners.get(name).delete(listener);
  }

  #call(method, ...args) {
    if (!TAB_CALLS.has(method)) throw new Error(`unknown call ${method}`);
    if (this.link) return Promise.resolve().then(() => this.link[method](...args));
    const id = this.nextCall++;
    return new Promise((resolve, reject) => {
      this.calls.set(id, { resolve, reject });
      this.port.postMessage({ type: 'call', id, method, args });
    });
  }

  // --- the engine's side: session, sending, receipts ------------------------------------------
  async signIn(user, password) {
    this.#apply('snapshot', await this.#call('signIn', user, password));
    return this.session;
  }

  signOut() {
    return this.#call('signOut');
  }

  /**
   * Queue a message: resolves once it is safe in the outbox (it is sent now, or after a reconnect).
   * ``replyTo``: the seq of the message this one answers.
   */
  send(conv, body, { attachments = [], replyTo = null, clientMsgId } = {}) {
    return this.#call('send', conv, body, { attachments, replyTo, ...(clientMsgId ? { clientMsgId } : {}) });
  }

  /** Replace the text of one of my messages. */
  edit(conv, seq, body) {
    return this.#call('change', conv, 'edit', seq, { body });
  }

  /** Erase a message (mine, or any in a conversation I own). */
  delete(conv, seq) {
    return this.#call('change', conv, 'delete', seq);
  }

  react(conv, seq, emoji) {
    return this.#call('change', conv, 'react', seq, { emoji });
  }

  unreact(conv, seq, emoji) {
    return this.#call('change', conv, 'unreact', seq, { emoji });
  }

  typing(conv, typing = true) {
    return this.#call('typing', conv, typing);
  }

  markRead(conv, seq) {
    return this.#call('markRead', conv, seq);
  }

  reconnectNow() {
    return this.#call('reconnectNow');
  }

  /** Load the conversation list again now (after it could not be loaded: ``snapshot.listing.error``). */
  retryConversations() {
    return this.#call('retryConversations');
  }

  // --- the HTTP side, straight from this tab ------------------------------------------------
  /**
   * A page of history: {messages, has_more, last_seq}; ``before`` walks back, ``after`` catches up.
   * ``view: 'messages'`` gives messages as they stand now (edits, tombstones, reactions) instead of
   * the log's entries.
   */
  history(conv, { before, after, limit = 50, view } = {}) {
    return this.api.messages(conv, { before, after, limit, view });
  }

  receipts(conv) {
    return this.api.receipts(conv);
  }

  /**
   * Full-text search over the caller's conversations (GET /v1/search): {results (messages as they
   * stand now, newest first), next}; pass ``next`` as ``before`` for older results.
   */
  search(q, { conv, sender, before, limit } = {}) {
    return this.api.search(q, { conv, sender, before, limit });
  }

  /** Upload a File or Blob: the attachment to pass to send(). */
  upload(file, name) {
    return this.api.upload(file, name);
  }

  media(url) {
    return this.api.media(url);
  }

  /** Load the profiles (display names) of ``ids`` not asked for yet; a 'profiles' event follows. */
  async loadProfiles(ids) {
    const wanted = [...new Set(ids)].filter((id) => !this.profilesAsked.has(id));
    for (let i = 0; i < wanted.length; i += 100) {
      const batch = wanted.slice(i, i + 100);
      batch.forEach((id) => this.profilesAsked.add(id));
      try {
        for (const profile of await this.api.users(batch)) this.profiles.set(profile.id, profile);
      } catch {
        batch.forEach((id) => this.profilesAsked.delete(id)); // asked again next time
        return;
      }
    }
    if (wanted.length) this.#apply('profiles', this.profiles);
  }

  /** What to call a user: the display name, else the id. */
  nameOf(id) {
    return this.profiles.get(id)?.display_name || id;
  }

  async createConversation({ members, title, id }) {
    const conversation = await this.api.createConversation({ members, title, id });
    await this.#call('adoptConversation', conversation.id);
    return conversation;
  }
}

function asError({ name, message, status, code }) {
  return Object.assign(new Error(message), { name, status, code });
}

/** This tab's own device suffix (no SharedWorker): kept across reloads of the tab, not shared with other tabs. */
function tabDevice() {
  const key = 'chatmq.tab-device';
  let id = globalThis.sessionStorage?.getItem(key);
  if (!id) {
    id = `t${randomId().slice(0, 8)}`;
    globalThis.sessionStorage?.setItem(key, id);
  }
  return id;
}
