// TabHub: the SharedWorker's side of "one connection per browser". It serves every tab of the
// origin from one ChatEngine: each tab's MessagePort gets the engine's events, and the tab's calls
// are run on the engine. A tab that goes away (closed, reloaded, crashed) is noticed two ways: its
// `bye` on pagehide, and a Web Lock the tab holds for its whole life (the browser releases it even
// when the page dies without a word). When the last tab is gone the connection ends cleanly after
// ``lingerMs`` (a reload within that time keeps it), and the hub tells its owner it is idle.

/** What a tab may call on the engine; anything else is refused. */
export const TAB_CALLS = new Set(['resume', 'signIn', 'signOut', 'snapshot', 'send', 'change', 'typing', 'markRead',
  'adoptConversation', 'reconnectNow', 'retryConversations']);

export const tabLockName = (tab) => `chatmq.tab.${tab}`;

export class TabHub {
  /**
   * @param {{createEngine: (config: object) => Promise<import('./engine.js').ChatEngine>,
   *          locks?: LockManager|null, lingerMs?: number, onIdle?: () => void}} options
   */
  constructor({ createEngine, locks = globalThis.navigator?.locks ?? null, lingerMs = 1_000, onIdle = () => {} }) {
    Object.assign(this, { createEngine, locks, lingerMs, onIdle });
    /** @type {Map<string, MessagePort>} */
    this.tabs = new Map();
    this.engine = null;
    this.enginePromise = null;
    this.idleTimer = null;
  }

  /** A new tab's port (SharedWorkerGlobalScope's connect event). */
  attach(port) {
    port.addEventListener('message', (event) => this.#onMessage(port, event.data));
    port.start();
  }

  async #onMessage(port, message) {
    if (!message || typeof message !== 'object') return;
    if (message.type === 'hello') return this.#hello(port, message);
    if (message.type === 'bye') return this.#gone(message.tab);
    if (message.type === 'call') return this.#call(port, message);
  }

  async #hello(port, { tab, config, locked = false }) {
    clearTimeout(this.idleTimer);
    this.enginePromise ??= this.createEngine(config).then((engine) => {
      this.engine = engine;
      engine.listen((name, data) => this.#broadcast({ type: 'event', name, data }));
      return engine;
    });
    let engine;
    try {
      engine = await this.enginePromise;
    } catch (exc) {
      this.enginePromise = null;
      port.postMessage({ type: 'welcome', error: describe(exc) });
      return;
    }
    this.tabs.set(tab, port);
    // granted only once the tab's own lock on this name is released: when the tab is gone
    if (locked) this.locks?.request(tabLockName(tab), async () => this.#gone(tab));
    port.postMessage({ type: 'welcome', snapshot: await engine.resume(), tabs: this.tabs.size });
  }

  async #call(port, { id, method, args = [] }) {
    try {
      if (!TAB_CALLS.has(method) || !this.engine) throw new Error(`unknown call ${method}`);
      const value = await this.engine[method](...args);
      port.postMessage({ type: 'result', id, value });
    } catch (exc) {
      port.postMessage({ type: 'result', id, error: describe(exc) });
    }
  }

  #broadcast(message) {
    for (const port of this.tabs.values()) port.postMessage(message);
  }

  #gone(tab) {
    if (!this.tabs.delete(tab) || this.tabs.size > 0) return;
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(async () => {
      if (this.tabs.size > 0) return;
      await this.engine?.stop({ clean: true });
      this.onIdle();
    }, this.lingerMs);
  }
}

/** An error as plain data (it crosses postMessage): name, message, and an API error's status and code. */
export function describe(exc) {
  return { name: exc?.name ?? 'Error', message: exc?.message ?? String(exc), status: exc?.status, code: exc?.code };
}
