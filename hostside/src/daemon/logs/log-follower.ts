/**
 * Fan-out of one container's live output to many attach clients: one reader decodes each new frame
 * once and hands it to every subscriber. Each subscriber has its own bounded queue. When one is full the
 * shared reader waits for it (the file keeps the bytes meanwhile: the container is never slowed, and a
 * client that reads slower than the container writes still gets every byte, as with Docker); one that
 * makes no progress for `stallMs` is cut loose (told why), so a client that stops reading never holds
 * memory without bound nor the other clients for long.
 */
import type { LogStore } from './log-store.ts';
import { readLogs, type LogEntry } from './log-reader.ts';

export const DEFAULT_QUEUE_BYTES = 4 * 1024 * 1024;
/** A full subscriber that takes nothing for this long has stopped reading. */
export const DEFAULT_STALL_MS = 10_000;

/**
 * Why a subscription ended: the container stopped and everything was delivered; the subscriber fell
 * too far behind; it closed itself; the container's logs were removed; the reader failed (see `error`).
 */
export type SubscriptionEnd = 'stopped' | 'overflow' | 'closed' | 'removed' | 'error';

export interface SubscribeOptions {
  /** Bytes of payload queued for this subscriber before the shared reader waits for it. */
  queueBytes?: number;
  /** Told once, when the subscription ends for any reason. */
  onEnd?: (reason: SubscriptionEnd, error?: unknown) => void;
}

/** One subscriber's view: an async iterator over the entries written since it subscribed. */
export class LogSubscription implements AsyncIterableIterator<LogEntry> {
  readonly #limit: number;
  readonly #onEnd: ((reason: SubscriptionEnd, error?: unknown) => void) | undefined;
  readonly #detach: (subscription: LogSubscription) => void;
  #queue: LogEntry[] = [];
  #head = 0;
  #queuedBytes = 0;
  #endReason: SubscriptionEnd | undefined;
  #error: unknown;
  #waiter: ((result: IteratorResult<LogEntry>) => void) | undefined;
  #onDrained: (() => void) | undefined;
  /** Date.now() when it last took an entry. */
  lastProgress = Date.now();

  /** @internal Made by LogFollower.subscribe(). */
  constructor(
    limit: number,
    onEnd: SubscribeOptions['onEnd'],
    detach: (subscription: LogSubscription) => void,
  ) {
    this.#limit = limit;
    this.#onEnd = onEnd;
    this.#detach = detach;
  }

  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  /** Why it ended, once it has (entries may still be queued for 'stopped' / 'removed'). */
  get endReason(): SubscriptionEnd | undefined {
    return this.#endReason;
  }

  next(): Promise<IteratorResult<LogEntry>> {
    if (this.#head < this.#queue.length) {
      const entry = this.#queue[this.#head]!;
      this.#queue[this.#head++] = undefined as unknown as LogEntry;
      if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
        this.#queue = this.#queue.slice(this.#head);
        this.#head = 0;
      }
      this.#queuedBytes -= entry.data.length;
      this.lastProgress = Date.now();
      if (this.#onDrained && this.#queuedBytes <= this.#limit / 2) {
        const drained = this.#onDrained;
        this.#onDrained = undefined;
        drained();
      }
      return Promise.resolve({ value: entry, done: false });
    }
    if (this.#endReason !== undefined) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => (this.#waiter = resolve));
  }

  return(): Promise<IteratorResult<LogEntry>> {
    this.close();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** Stops receiving; queued entries are dropped. */
  close(): void {
    this.#queue = [];
    this.#head = 0;
    this.#queuedBytes = 0;
    this.end('closed');
  }

  /** @internal From the follower: queue one entry (the follower keeps the queue near its limit). */
  deliver(entry: LogEntry): void {
    if (this.#endReason !== undefined) return;
    const waiter = this.#waiter;
    if (waiter) {
      this.#waiter = undefined;
      this.lastProgress = Date.now();
      waiter({ value: entry, done: false });
      return;
    }
    this.#queue.push(entry);
    this.#queuedBytes += entry.data.length;
  }

  /** @internal Whether the follower must wait for this subscriber before reading on. */
  get full(): boolean {
    return this.#endReason === undefined && this.#queuedBytes > this.#limit;
  }

  /** @internal Resolves when the queue is down to half its limit, or the subscription ended. */
  drained(): Promise<void> {
    if (!this.full) return Promise.resolve();
    return new Promise((resolve) => (this.#onDrained = resolve));
  }

  /** @internal The subscriber stopped reading: drop its queue and let it go. */
  cut(): void {
    this.#queue = [];
    this.#head = 0;
    this.#queuedBytes = 0;
    this.end('overflow');
  }

  /** @internal Ends the subscription once (queued entries still come out, except after overflow/close). */
  end(reason: SubscriptionEnd, error?: unknown): void {
    if (this.#endReason !== undefined) return;
    this.#endReason = reason;
    this.#error = error;
    this.#detach(this);
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.({ value: undefined, done: true });
    const drained = this.#onDrained;
    this.#onDrained = undefined;
    drained?.();
    this.#onEnd?.(reason, this.#error);
  }
}

export class LogFollower {
  readonly #store: LogStore;
  readonly #queueBytes: number;
  readonly #stallMs: number;
  readonly #subscribers = new Set<LogSubscription>();
  #abort: AbortController | undefined;

  constructor(store: LogStore, options: { queueBytes?: number; stallMs?: number } = {}) {
    this.#store = store;
    this.#queueBytes = options.queueBytes ?? DEFAULT_QUEUE_BYTES;
    this.#stallMs = options.stallMs ?? DEFAULT_STALL_MS;
  }

  get subscriberCount(): number {
    return this.#subscribers.size;
  }

  /**
   * Everything the container writes from now on, until it stops. Subscribing while it is stopped waits
   * for the next boot (docker start -a attaches first), and ends when that boot stops.
   */
  subscribe(options: SubscribeOptions = {}): LogSubscription {
    const subscription = new LogSubscription(options.queueBytes ?? this.#queueBytes, options.onEnd, (s) =>
      this.#unsubscribe(s),
    );
    this.#subscribers.add(subscription);
    if (!this.#abort) this.#start();
    return subscription;
  }

  /** Ends every subscription ('closed') and the reader. */
  close(): void {
    for (const subscription of [...this.#subscribers]) subscription.close();
  }

  /** Reads on once every full subscriber has room again; one that took nothing for stallMs is cut. */
  async #waitForFullSubscribers(signal: AbortSignal, aborted: Promise<void>): Promise<void> {
    for (;;) {
      const full = [...this.#subscribers].filter((subscription) => subscription.full);
      if (full.length === 0 || signal.aborted) return;
      const now = Date.now();
      for (const subscription of full)
        if (now - subscription.lastProgress >= this.#stallMs) subscription.cut();
      const waiting = full.filter((subscription) => subscription.full);
      if (waiting.length === 0) continue;
      const nextStall = Math.min(...waiting.map((s) => s.lastProgress)) + this.#stallMs - now;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.all(waiting.map((subscription) => subscription.drained())),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, Math.max(1, nextStall)))),
        aborted,
      ]);
      clearTimeout(timer);
    }
  }

  #unsubscribe(subscription: LogSubscription): void {
    this.#subscribers.delete(subscription);
    if (this.#subscribers.size === 0) {
      this.#abort?.abort();
      this.#abort = undefined;
    }
  }

  #start(): void {
    const abort = new AbortController();
    this.#abort = abort;
    const aborted = new Promise<void>((resolve) =>
      abort.signal.addEventListener('abort', () => resolve(), { once: true }),
    );
    const entries = readLogs(this.#store, {
      follow: true,
      fromEnd: true,
      waitForRun: true,
      signal: abort.signal,
    });
    const pump = async (): Promise<void> => {
      for await (const entry of entries) {
        for (const subscription of [...this.#subscribers]) subscription.deliver(entry);
        await this.#waitForFullSubscribers(abort.signal, aborted);
      }
    };
    pump().then(
      () => {
        if (abort.signal.aborted) return;
        const reason = this.#store.view().removed ? 'removed' : 'stopped';
        this.#abort = undefined;
        for (const subscription of [...this.#subscribers]) subscription.end(reason);
      },
      (error: unknown) => {
        this.#abort = undefined;
        for (const subscription of [...this.#subscribers]) subscription.end('error', error);
      },
    );
  }
}
