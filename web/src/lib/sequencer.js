// Per-conversation ordering: deliver messages in seq order, exactly once, and say what is missing.
// Pure bookkeeping, no I/O (the same rules as chatmq/clients/catchup.py): seqs are gapless from 1 per
// conversation, so a jump means loss, to be fetched from history.

export class Sequencer {
  /** @param {number|null} last the highest seq handed on; null until the start point is known */
  constructor(last = null) {
    this.last = last;
    /** @type {Map<number, object>} */
    this.buffer = new Map();
  }

  /** Set the start point (the seq already seen); returns what became deliverable. */
  start(last) {
    if (this.last === null || last > this.last) this.last = last;
    return this.#drain();
  }

  /** Take one message (live or from history); returns the messages now deliverable, in order. */
  offer(message) {
    const seq = message?.seq;
    if (!Number.isInteger(seq) || seq < 1) return [];
    if (this.last !== null && seq <= this.last) return []; // delivered already
    if (!this.buffer.has(seq)) this.buffer.set(seq, message);
    return this.last === null ? [] : this.#drain();
  }

  /** If messages wait behind a gap (or the start is known and a notice said more exist), the seq to fetch after. */
  missingAfter() {
    return this.last === null || this.buffer.size === 0 ? null : this.last;
  }

  #drain() {
    const ready = [];
    for (const seq of this.buffer.keys()) if (seq <= this.last) this.buffer.delete(seq);
    let next;
    while ((next = this.buffer.get(this.last + 1)) !== undefined) {
      this.buffer.delete(this.last + 1);
      ready.push(next);
      this.last += 1;
    }
    return ready;
  }
}
