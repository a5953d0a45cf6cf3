// The browser's local state in IndexedDB: unacked sends (the outbox), per-conversation cursors,
// and small settings (the signed-in session, the browser's device id). Every tab of the origin and
// the SharedWorker see the same database; writes are transactions, so a reload or a crash between
// "queued" and "acked" never loses or half-writes an entry.

import { openDB } from '../vendor/idb.js';

export const DB_NAME = 'chatmq';
const DB_VERSION = 1;

/**
 * @typedef {{owner: string, client_msg_id: string, conv: string, payload: object, created: number}} QueuedSend
 */

export class LocalStore {
  /** @param {import('../vendor/idb.js').IDBPDatabase} db */
  constructor(db) {
    this.db = db;
  }

  /** @param {string} name a database per app (tests use their own) */
  static async open(name = DB_NAME) {
    const db = await openDB(name, DB_VERSION, {
      upgrade(database) {
        const outbox = database.createObjectStore('outbox', { keyPath: ['owner', 'client_msg_id'] });
        outbox.createIndex('byOwner', ['owner', 'created']);
        database.createObjectStore('cursors', { keyPath: ['owner', 'conv'] });
        database.createObjectStore('meta');
      },
      blocking() {
        db.close(); // a newer version of the app wants to upgrade: let it
      },
    });
    return new LocalStore(db);
  }

  // --- outbox -------------------------------------------------------------------------------
  /** Insert once: a second queue of the same client_msg_id keeps the first (like INSERT OR IGNORE). */
  async queueSend(item) {
    const tx = this.db.transaction('outbox', 'readwrite');
    if ((await tx.store.getKey([item.owner, item.client_msg_id])) === undefined) await tx.store.add(item);
    await tx.done;
  }

  async removeSend(owner, clientMsgId) {
    await this.db.delete('outbox', [owner, clientMsgId]);
  }

  /** @returns {Promise<QueuedSend[]>} oldest first */
  async queuedSends(owner) {
    const range = IDBKeyRange.bound([owner, -Infinity], [owner, Infinity]);
    return this.db.getAllFromIndex('outbox', 'byOwner', range);
  }

  // --- cursors: the last seq handed to the UI, per conversation ---------------------------------
  async cursor(owner, conv) {
    return (await this.db.get('cursors', [owner, conv]))?.seq ?? null;
  }

  /** Only moves forward. */
  async setCursor(owner, conv, seq) {
    const tx = this.db.transaction('cursors', 'readwrite');
    const current = await tx.store.get([owner, conv]);
    if (!current || seq > current.seq) await tx.store.put({ owner, conv, seq });
    await tx.done;
  }

  // --- settings -------------------------------------------------------------------------------
  async get(key) {
    return this.db.get('meta', key);
  }

  async set(key, value) {
    await this.db.put('meta', value, key);
  }

  async delete(key) {
    await this.db.delete('meta', key);
  }

  close() {
    this.db.close();
  }
}
