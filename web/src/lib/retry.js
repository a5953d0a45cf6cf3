// Reconnect back-off as an object (redis-py's habit), not a loop written again in each caller.

export class Backoff {
  /**
   * @param {{min?: number, max?: number, factor?: number, jitter?: number, random?: () => number}} options
   *   delays in ms; ``jitter`` is the fraction of each delay drawn at random (spreads a reconnect storm)
   */
  constructor({ min = 500, max = 30_000, factor = 2, jitter = 0.5, random = Math.random } = {}) {
    Object.assign(this, { min, max, factor, jitter, random });
    this.attempts = 0;
  }

  /** The delay before the next attempt; each call counts one more failure. */
  next() {
    const base = Math.min(this.max, this.min * this.factor ** this.attempts);
    this.attempts += 1;
    return Math.round(base * (1 - this.jitter * this.random()));
  }

  reset() {
    this.attempts = 0;
  }
}
