/**
 * Reads a container's logs from its LogStore: everything kept, or from now on, optionally following the
 * files as the hypervisor writes them (through rotations and new boots) until the container stops.
 *
 * Follow is woken by inotify (fs.watch on the file being read, through /proc/self/fd so that it is the
 * open file whatever its name becomes, or on the directory while the live file does not exist yet) and by
 * the store's own change events; nothing polls. Memory stays bounded: the files are read in chunks of
 * `chunkBytes` (a frame larger than that gets a buffer of its size, at most 1 MiB + 14), frames are views
 * into those chunks, and `tail` keeps N lines (each at most MAX_LINE_BYTES): views into the current chunk
 * while it is being walked, copied out of it only if they are still among the last N when it is done.
 */
import { watch, type FSWatcher } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { basename } from 'node:path';
import { LOG_HEADER_BYTES, type LogFrame, type StreamId } from '../../../../protocol/src/logs/log-frame.ts';
import { headerAt, walkFrames } from './frame-scan.ts';
import { LineSplitter } from './line-splitter.ts';
import type { LogFileRef, LogStore, LogStoreView } from './log-store.ts';

export interface LogEntry {
  stream: StreamId;
  /** When the agent read the bytes (a line: when the frame that ended it was read). */
  timestampMs: number;
  /** A frame's payload (raw mode) or one line with its `\n` (lines mode); may view a shared chunk. */
  data: Buffer;
}

export interface ReadLogsOptions {
  /** Keep reading as the logs grow, until the container stops (everything read) or `signal` aborts. */
  follow: boolean;
  /** Only entries at or after this time (ms since the epoch). */
  since?: number;
  /** Stop at the first entry after this time; a follow also ends once this time has passed. */
  until?: number;
  /** The last N lines (implies `lines`), then whatever follows; 'all' is the same as leaving it out. */
  tail?: number | 'all';
  /** Entries are lines (Docker's json-file granularity) instead of the frames as written. */
  lines?: boolean;
  signal?: AbortSignal;
  /** Start at the current end: only what is written from now on (attach without a replay). */
  fromEnd?: boolean;
  /**
   * Follow: a stop that happened before the read began does not end it; it ends at the next stop
   * (attach before `docker start`). Without it, a follow of a stopped container reads what is there.
   */
  waitForRun?: boolean;
  /** Read size; 1 MiB by default (the largest frame fits in one read). */
  chunkBytes?: number;
}

export const DEFAULT_CHUNK_BYTES = 1024 * 1024;

/** Coalesces wake-ups: a wake() before wait() is not lost. */
class Waker {
  #dirty = false;
  #resolve: (() => void) | undefined;

  wake(): void {
    this.#dirty = true;
    const resolve = this.#resolve;
    this.#resolve = undefined;
    resolve?.();
  }

  async wait(): Promise<void> {
    if (!this.#dirty) await new Promise<void>((resolve) => (this.#resolve = resolve));
    this.#dirty = false;
  }
}

type ScanEvent =
  | { kind: 'frames'; frames: LogFrame[] }
  /** The byte stream breaks here (a new boot, or files pruned under a slow reader): flush partial lines. */
  | { kind: 'break' }
  /** First time at the end of the last file: what existed when the read began has been read. */
  | { kind: 'caught-up' };

interface ScanOptions {
  follow: boolean;
  fromEnd: boolean;
  waitForRun: boolean;
  signal: AbortSignal | undefined;
  until: number | undefined;
  chunkBytes: number;
}

/** Largest setTimeout delay. */
const MAX_TIMER_MS = 2 ** 31 - 1;

async function* scanStore(store: LogStore, options: ScanOptions): AsyncGenerator<ScanEvent> {
  const { follow, signal, chunkBytes } = options;
  const waker = new Waker();
  const wake = (): void => waker.wake();
  const unlisten = store.onChange(wake);
  signal?.addEventListener('abort', wake);
  let untilTimer: NodeJS.Timeout | undefined;
  if (follow && options.until !== undefined) {
    const delay = options.until - Date.now();
    if (delay < MAX_TIMER_MS) untilTimer = setTimeout(wake, Math.max(0, delay) + 1);
  }
  const startStops = store.view().stops;
  const ended = (view: LogStoreView): boolean =>
    view.removed ||
    signal?.aborted === true ||
    (options.until !== undefined && Date.now() > options.until) ||
    (!view.running && (!options.waitForRun || view.stops > startStops));

  let handle: FileHandle | undefined;
  let fileWatcher: FSWatcher | undefined;
  let dirWatcher: FSWatcher | undefined;
  const closeFile = async (): Promise<void> => {
    fileWatcher?.close();
    fileWatcher = undefined;
    await handle?.close();
    handle = undefined;
  };

  let view = store.view();
  let cur: LogFileRef | undefined;
  let pos = 0;
  /** Seq of the last file finished (when cur is undefined: wait for a file after it). */
  let lastSeq = 0;
  if (options.fromEnd) {
    cur = view.files.at(-1);
    if (cur) pos = await store.boundaryAtEnd(cur);
  } else {
    cur = view.files[0];
    pos = cur?.start ?? 0;
  }
  let rest: Buffer = Buffer.alloc(0);
  let spare: Buffer | undefined;
  let caughtUp = false;
  let sealedChecked = false;

  try {
    for (;;) {
      if (signal?.aborted || view.removed) return;
      if (!cur) {
        view = store.view();
        cur = view.files.find((file) => file.seq > lastSeq);
        if (cur) {
          pos = cur.start ?? 0;
          continue;
        }
        if (!caughtUp) {
          caughtUp = true;
          yield { kind: 'caught-up' };
        }
        if (!follow || ended(view)) return;
        await waker.wait();
        continue;
      }
      if (!handle) {
        try {
          handle = await open(cur.path, 'r');
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
          view = store.view();
          if (view.files.at(-1)?.seq === cur.seq) {
            // The live file of a boot that has not started writing yet.
            if (!caughtUp) {
              caughtUp = true;
              yield { kind: 'caught-up' };
            }
            if (!follow || ended(view)) return;
            const name = basename(cur.path);
            try {
              dirWatcher ??= watch(store.dir, (_event, file) => {
                if (file === null || file === name) wake();
              });
            } catch {
              // The directory is gone (docker rm): the store's change event ends the read.
            }
            await waker.wait();
            continue;
          }
          // Pruned before this reader got to it: go on with the oldest file still there.
          lastSeq = cur.seq;
          cur = undefined;
          rest = Buffer.alloc(0);
          yield { kind: 'break' };
          continue;
        }
        dirWatcher?.close();
        dirWatcher = undefined;
        sealedChecked = false;
      }

      // Read the next chunk after the partial frame held in `rest`.
      let want = chunkBytes;
      const header = rest.length >= LOG_HEADER_BYTES ? headerAt(rest, 0) : undefined;
      if (header && typeof header === 'object') want = Math.max(want, LOG_HEADER_BYTES + header.length);
      const buffer = spare && spare.length >= want ? spare : Buffer.allocUnsafe(want);
      spare = undefined;
      rest.copy(buffer, 0);
      const { bytesRead } = await handle.read(buffer, rest.length, buffer.length - rest.length, pos);
      if (bytesRead > 0) {
        pos += bytesRead;
        sealedChecked = false;
        let data = buffer.subarray(0, rest.length + bytesRead);
        if (data.length < buffer.length / 2) {
          // A small read (following a slow writer): copy it out and keep the big buffer, so that frames
          // handed out do not each pin a whole chunk.
          data = Buffer.from(data);
          spare = buffer;
        }
        const walked = walkFrames(data);
        rest = data.subarray(walked.consumed);
        if (walked.frames.length > 0) yield { kind: 'frames', frames: walked.frames };
        continue;
      }
      spare = buffer;

      // At the end of cur.
      view = store.view();
      const isLast = view.files.at(-1)?.seq === cur.seq;
      const inView = view.files.find((file) => file.seq === cur!.seq);
      const written = view.running && ((inView?.live ?? false) || cur.seq === view.rotatingSeq);
      if (written) {
        if (isLast && !caughtUp) {
          caughtUp = true;
          yield { kind: 'caught-up' };
        }
        if (isLast && (!follow || ended(view))) return;
        if (!fileWatcher) {
          fileWatcher = watchOpenFile(handle, cur.path, wake);
          continue; // read once more: bytes may have come before the watch
        }
        await waker.wait();
        continue;
      }
      if (!sealedChecked) {
        // Nothing writes it now; bytes may have landed between the read and this look: read again.
        sealedChecked = true;
        continue;
      }
      const next = view.files.find((file) => file.seq > cur!.seq);
      if (!next) {
        if (!caughtUp) {
          caughtUp = true;
          yield { kind: 'caught-up' };
        }
        if (!follow || ended(view)) return;
        if (!fileWatcher) fileWatcher = watchOpenFile(handle, cur.path, wake);
        await waker.wait();
        sealedChecked = false;
        continue;
      }
      const size = (await handle.stat()).size;
      await closeFile();
      if (next.continues && next.seq === cur.seq + 1) {
        // The same byte stream: `rest` holds the start of a frame that goes on in `next`. A position past
        // the end (a kept file whose `start` lies beyond it: all of it is the middle of one frame) carries
        // on into the next file.
        pos = Math.max(0, pos - size);
      } else {
        rest = Buffer.alloc(0);
        pos = next.start ?? 0;
        yield { kind: 'break' };
      }
      lastSeq = cur.seq;
      cur = next;
    }
  } finally {
    unlisten();
    signal?.removeEventListener('abort', wake);
    clearTimeout(untilTimer);
    dirWatcher?.close();
    await closeFile();
  }
}

/** inotify on the open file itself (its name may change under rotation), falling back to the path. */
function watchOpenFile(handle: FileHandle, path: string, wake: () => void): FSWatcher | undefined {
  for (const target of [`/proc/self/fd/${handle.fd}`, path]) {
    try {
      return watch(target, wake);
    } catch {
      // Not on Linux, or the file is gone: try the next way; the store's events still wake us.
    }
  }
  return undefined;
}

/**
 * The container's logs as entries, oldest first. Raw mode gives the frames as written (attach, plain
 * `docker logs`); lines mode (`-t`, `--tail`) gives one entry per line per stream, a final partial line
 * included at the end of a read that does not follow, or when its boot ended.
 */
export async function* readLogs(store: LogStore, options: ReadLogsOptions): AsyncGenerator<LogEntry> {
  const tail = typeof options.tail === 'number' ? Math.max(0, Math.floor(options.tail)) : undefined;
  const lines = options.lines === true || tail !== undefined;
  const { since, until, follow } = options;
  const splitters = new Map<StreamId, LineSplitter>([
    [1, new LineSplitter()],
    [2, new LineSplitter()],
  ]);
  const lastTimestamp = new Map<StreamId, number>();
  const ring = new TailRing(tail ?? 0);
  let inHistory = tail !== undefined;
  let stop = false;

  /** Entries that pass the time filters, held back in the ring while in the tail's history. */
  const admit = (entries: LogEntry[], entry: LogEntry): void => {
    if (until !== undefined && entry.timestampMs > until) {
      stop = true;
      return;
    }
    if (since !== undefined && entry.timestampMs < since) return;
    if (inHistory) ring.push(entry);
    else entries.push(entry);
  };
  const flushLines = (entries: LogEntry[]): void => {
    const partial: LogEntry[] = [];
    for (const [stream, splitter] of splitters) {
      const data = splitter.flush();
      if (data) partial.push({ stream, timestampMs: lastTimestamp.get(stream) ?? 0, data });
    }
    partial.sort((a, b) => a.timestampMs - b.timestampMs);
    for (const entry of partial) admit(entries, entry);
  };

  const scan = scanStore(store, {
    follow,
    fromEnd: options.fromEnd ?? false,
    waitForRun: options.waitForRun ?? false,
    signal: options.signal,
    until,
    chunkBytes: options.chunkBytes ?? DEFAULT_CHUNK_BYTES,
  });
  for await (const event of scan) {
    const entries: LogEntry[] = [];
    if (event.kind === 'frames') {
      for (const frame of event.frames) {
        if (!lines) {
          admit(entries, frame);
        } else {
          lastTimestamp.set(frame.stream, frame.timestampMs);
          for (const data of splitters.get(frame.stream)!.push(frame.data))
            admit(entries, { stream: frame.stream, timestampMs: frame.timestampMs, data });
        }
        if (stop) break;
      }
    } else if (event.kind === 'break') {
      if (lines) flushLines(entries);
    } else if (follow && inHistory) {
      entries.push(...ring.drain());
      inHistory = false;
    }
    ring.detach(); // the next chunk is another buffer: let this one go
    for (const entry of entries) yield entry;
    if (stop) break;
  }
  // The end of a read: partial lines count as lines (Docker stores them as messages too).
  const entries: LogEntry[] = [];
  if (lines && !stop) flushLines(entries);
  if (inHistory) entries.push(...ring.drain());
  for (const entry of entries) yield entry;
}

/**
 * The last `capacity` entries pushed. Entries come in as views into the chunk being walked; detach()
 * copies the ones pushed since the last call that are still kept, so the ring never pins an old chunk
 * and each entry is copied at most once (for tail 100 over 1 MiB chunks: 100 copies per chunk).
 */
class TailRing {
  readonly #capacity: number;
  #items: LogEntry[] = [];
  #head = 0;
  /** How many of the newest entries are still views. */
  #views = 0;

  constructor(capacity: number) {
    this.#capacity = capacity;
  }

  push(entry: LogEntry): void {
    if (this.#capacity === 0) return;
    if (this.#items.length < this.#capacity) {
      this.#items.push(entry);
    } else {
      this.#items[this.#head] = entry;
      this.#head = (this.#head + 1) % this.#capacity;
    }
    this.#views = Math.min(this.#views + 1, this.#items.length);
  }

  detach(): void {
    const length = this.#items.length;
    for (let k = 1; k <= this.#views; k++) {
      // The newest entry sits just before head (or at the end while the ring fills).
      const index = (((this.#head - k) % length) + length) % length;
      const entry = this.#items[index]!;
      this.#items[index] = { ...entry, data: Buffer.from(entry.data) };
    }
    this.#views = 0;
  }

  drain(): LogEntry[] {
    const out = [...this.#items.slice(this.#head), ...this.#items.slice(0, this.#head)];
    this.#items = [];
    this.#head = 0;
    this.#views = 0;
    return out;
  }
}
