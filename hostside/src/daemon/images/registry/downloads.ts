/**
 * Blob downloads in flight, shared: two pulls that need the same layer at the same time download it once.
 * The first asks starts the download into a file of its own here; later ones join it and hear the same
 * progress. When it completes, the file is hard-linked into each waiter's destination at once (in the same
 * turn of the event loop, so no waiter can be left without it), then the shared name is removed. A waiter
 * that gives up (its pull was cancelled) leaves; the download stops when no waiter is left.
 */
import { linkSync, mkdirSync, rmSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';

export type Download = (file: string, onBytes: (total: number) => void, signal: AbortSignal) => Promise<void>;

interface Waiter {
  dest: string;
  onBytes: (total: number) => void;
  resolve: () => void;
  reject: (error: unknown) => void;
}

interface Flight {
  waiters: Set<Waiter>;
  controller: AbortController;
}

export class SharedDownloads {
  readonly #dir: string;
  readonly #flights = new Map<string, Flight>();
  #count = 0;

  /** `dir` holds the downloads under way; it is created when first needed. */
  constructor(dir: string) {
    this.#dir = dir;
  }

  /** How many downloads run now (tests). */
  get inFlight(): number {
    return this.#flights.size;
  }

  /**
   * Puts the blob `key` names into `dest`, running `download` unless a download of the same key is under
   * way, which this call joins. `onBytes` hears the running total either way.
   */
  fetch(
    key: string,
    dest: string,
    download: Download,
    onBytes: (total: number) => void = () => undefined,
    signal?: AbortSignal,
  ): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const waiter: Waiter = { dest, onBytes, resolve, reject };
      let flight = this.#flights.get(key);
      if (!flight) {
        flight = { waiters: new Set(), controller: new AbortController() };
        this.#flights.set(key, flight);
        this.#start(key, flight, download);
      }
      flight.waiters.add(waiter);
      const current = flight;
      signal?.addEventListener(
        'abort',
        () => {
          if (!current.waiters.delete(waiter)) return;
          reject(signal.reason);
          if (current.waiters.size === 0) current.controller.abort(signal.reason);
        },
        { once: true },
      );
    });
  }

  #start(key: string, flight: Flight, download: Download): void {
    mkdirSync(this.#dir, { recursive: true });
    const file = join(this.#dir, `blob-${process.pid}-${this.#count++}`);
    const onBytes = (total: number): void => {
      for (const waiter of flight.waiters) waiter.onBytes(total);
    };
    download(file, onBytes, flight.controller.signal).then(
      () => {
        this.#flights.delete(key);
        for (const waiter of flight.waiters) {
          try {
            place(file, waiter.dest);
            waiter.resolve();
          } catch (error) {
            waiter.reject(error);
          }
        }
        rmSync(file, { force: true });
      },
      (error: unknown) => {
        this.#flights.delete(key);
        rmSync(file, { force: true });
        for (const waiter of flight.waiters) waiter.reject(error);
      },
    );
  }
}

/** A hard link where the file system allows one, else a copy. */
function place(file: string, dest: string): void {
  try {
    linkSync(file, dest);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EXDEV') throw error;
    copyFileSync(file, dest);
  }
}
