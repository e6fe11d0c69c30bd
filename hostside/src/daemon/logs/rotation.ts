/**
 * Rotates a container's live log file by size while its VM runs: watches the live file with inotify
 * (fs.watch, no timer), and when it has grown past maxBytes renames it away, has the hypervisor reopen,
 * and prunes old segments. One check runs at a time; growth seen during a check triggers one more.
 */
import { watch, type FSWatcher } from 'node:fs';
import { basename } from 'node:path';
import { DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, type LogStore } from './log-store.ts';

export interface RotationOptions {
  maxBytes?: number;
  maxFiles?: number;
  /** A failed rotation or prune (it is tried again on the next growth). */
  onError?: (error: unknown) => void;
}

export interface Rotation {
  /** Stops watching; resolves after a rotation in progress has finished. */
  stop(): Promise<void>;
  /** Resolves when the checks queued so far have run (for tests). */
  settled(): Promise<void>;
}

export function startRotation(
  store: LogStore,
  vmReopen: () => Promise<void>,
  options: RotationOptions = {},
): Rotation {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
  const maxFiles = options.maxFiles ?? DEFAULT_MAX_FILES;
  const onError = options.onError ?? (() => {});
  const liveName = basename(store.livePath);
  let stopped = false;
  let fileWatcher: FSWatcher | undefined;
  let dirWatcher: FSWatcher | undefined;
  let running: Promise<void> = Promise.resolve();
  let busy = false;
  let again = false;

  const check = async (): Promise<void> => {
    if (store.pendingReopen) {
      // A crash left a rotation owed: the hypervisor still writes the renamed file.
      await store.rotate(vmReopen);
      await store.prune(maxBytes, maxFiles);
    }
    if ((await store.liveSize()) >= maxBytes) {
      fileWatcher?.close();
      fileWatcher = undefined;
      if (await store.rotate(vmReopen)) await store.prune(maxBytes, maxFiles);
    }
    arm();
  };

  const trigger = (): void => {
    if (stopped) return;
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    running = (async () => {
      do {
        again = false;
        try {
          await check();
        } catch (error) {
          onError(error);
        }
      } while (again && !stopped);
      busy = false;
    })();
  };

  /** Watches the live file (its inode: re-armed after each rotation), or the directory until it exists. */
  const arm = (): void => {
    if (stopped || fileWatcher) return;
    try {
      fileWatcher = watch(store.livePath, trigger);
      fileWatcher.on('error', () => {
        fileWatcher?.close();
        fileWatcher = undefined;
        trigger();
      });
      dirWatcher?.close();
      dirWatcher = undefined;
    } catch {
      try {
        dirWatcher ??= watch(store.dir, (_event, name) => {
          if (name === null || name === liveName) trigger();
        });
      } catch {
        // No directory yet either: the store's next change (a boot) arms again.
      }
    }
  };

  const unlisten = store.onChange(() => {
    // A boot or a rotation made a new live file: watch that one.
    fileWatcher?.close();
    fileWatcher = undefined;
    trigger();
  });
  trigger();

  return {
    stop: async () => {
      stopped = true;
      unlisten();
      fileWatcher?.close();
      dirWatcher?.close();
      await running;
    },
    settled: async () => {
      while (busy) await running;
    },
  };
}
