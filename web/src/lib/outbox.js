// Sends not acked yet, persisted before they are published and retried with the same
// client_msg_id until the server acks or rejects them. The server makes a resend idempotent
// (same conversation, sender and client_msg_id: acked with the original seq, never stored twice),
// so the rule here is simple: when in doubt, send again. Same rules as chatmq/clients/outbox.py.

import { TRANSIENT_REFUSAL } from './protocol.js';

/**
 * @typedef {import('./storage.js').QueuedSend} QueuedSend
 * @typedef {{client_msg_id: string, conv: string, status: 'received'|'rejected', seq?: number, ts?: number,
 *            error?: {code: string, message: string}}} Ack
 */

export class Outbox {
  /**
   * @param {{store: import('./storage.js').LocalStore, owner: string,
   *          publish: (item: QueuedSend) => boolean, resendAfterMs?: number, now?: () => number}} options
   *   ``publish`` puts one send on the wire and says whether it could (false while disconnected)
   */
  constructor({ store, owner, publish, resendAfterMs = 10_000, now = () => Date.now() }) {
    Object.assign(this, { store, owner, publish, resendAfterMs, now });
    /** @type {Map<string, {item: QueuedSend, sentAt: number}>} */
    this.pending = new Map();
    /** @type {Map<string, Promise<QueuedSend>>} adds still being persisted */
    this.adding = new Map();
  }

  /** Load what an earlier page or worker left unacked; it goes out on the next flush. */
  async restore() {
    for (const item of await this.store.queuedSends(this.owner)) {
      if (!this.pending.has(item.client_msg_id)) this.pending.set(item.client_msg_id, { item, sentAt: 0 });
    }
    return this.items();
  }

  /** Persist first, then publish: a reload or crash in between loses nothing. */
  add(conv, payload) {
    const id = payload.client_msg_id;
    const existing = this.pending.get(id);
    if (existing) return Promise.resolve(existing.item);
    if (!this.adding.has(id)) {
      const item = { owner: this.owner, client_msg_id: id, conv, payload, created: this.now() };
      const persisted = this.store.queueSend(item).then(() => {
        const entry = { item, sentAt: 0 };
        this.pending.set(id, entry);
        this.#send(entry);
        return item;
      }).finally(() => this.adding.delete(id));
      this.adding.set(id, persisted);
    }
    return this.adding.get(id);
  }

  /**
   * Settle a send with its ack. Returns the settled item, or null when the ack is not ours (another
   * device of the same user) or is a transient refusal (the send stays queued and goes out later).
   * @param {Ack} ack
   */
  async settle(ack) {
    const entry = this.pending.get(ack.client_msg_id);
    if (!entry) return null;
    if (ack.status === 'rejected' && ack.error?.code === TRANSIENT_REFUSAL) return null;
    this.pending.delete(ack.client_msg_id);
    await this.store.removeSend(this.owner, ack.client_msg_id);
    return entry.item;
  }

  /**
   * Send again what needs it: after a (re)connect everything, else what is unacked for
   * ``resendAfterMs``. Returns how many went out.
   */
  flush({ reconnected = false } = {}) {
    const now = this.now();
    let sent = 0;
    for (const entry of this.pending.values()) {
      if (reconnected || entry.sentAt === 0 || now - entry.sentAt >= this.resendAfterMs) {
        if (this.#send(entry)) sent += 1;
      }
    }
    return sent;
  }

  #send(entry) {
    const published = this.publish(entry.item);
    entry.sentAt = published ? this.now() : 0;
    return published;
  }

  /** @returns {QueuedSend[]} oldest first */
  items() {
    return [...this.pending.values()].map((e) => e.item).sort((a, b) => a.created - b.created);
  }

  get size() {
    return this.pending.size;
  }
}
