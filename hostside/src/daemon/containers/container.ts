/**
 * One container while tetherd knows it: its record (persisted on every change), and while a VM runs, that
 * VM, the one channel connection every client of the container shares, the console watcher that gives boot
 * health, and the exit of the current boot.
 */
import { join } from 'node:path';
import type { StatusRecord } from '../../../../protocol/src/status/status.ts';
import type { AttachHandle, ChannelClient, ExitResult } from '../../channel/client.ts';
import type { ChannelKeys } from '../../vm/channel-keys.ts';
import type { ConsoleWatcher } from '../../vm/console-watcher.ts';
import type { Vm } from '../../vm/driver.ts';
import type { TimelineEntry } from '../../vm/timeline.ts';
import { LogFollower, type LogStore, type Rotation } from '../logs/index.ts';
import { writeJsonAtomic } from '../state/atomic-file.ts';
import type { ContainerRecord } from './record.ts';

export const RECORD_FILE = 'container.json';

/** What the current (or last) boot of a container has been through. */
export interface Boot {
  number: number;
  /** performance.now() when the VM start was asked: the timeline's zero. */
  t0: number;
  timeline: TimelineEntry[];
  /**
   * The key this boot's console status lines are signed with; undefined for a VM whose config had none
   * (booted by an older tetherd), whose unsigned lines are then believed.
   */
  statusKey: Buffer | undefined;
  vm?: Vm;
  console?: ConsoleWatcher;
  /** The main process's exit as the agent reported it over the channel. */
  exit?: ExitResult;
  /** A boot stage that failed for good (bad config, process could not start). */
  fatal?: StatusRecord;
  /** Set when tetherd itself killed the VM (docker kill/stop/rm -f), so a missing exit status means 137. */
  killedByHost?: boolean;
  channelState: 'connecting' | 'up' | 'down' | 'none';
  rotation?: Rotation;
  /** The exit monitor's output-less attach; signals to the main process go through it. */
  monitor?: AttachHandle | undefined;
  /** docker stop or kill: the restart policy does not apply to this boot's end. */
  stoppedByUser?: boolean;
  /** The most recent terminal size any client asked for. */
  terminalSize?: { rows: number; cols: number };
  ended: boolean;
  /** Resolves once the end of this boot is recorded (state, waiters, events). */
  settled: Promise<void>;
  markSettled: () => void;
}

export class Container {
  record: ContainerRecord;
  readonly dir: string;
  readonly keys: ChannelKeys;
  readonly #logs: LogStore | undefined;
  #follower: LogFollower | undefined;
  boot: Boot | undefined;
  /** Restarts by policy in a row that ended quickly (for the backoff). */
  policyRestarts?: number;
  #channel: Promise<ChannelClient> | undefined;
  /** Serialises start/stop/kill/remove on this container. */
  #queue: Promise<unknown> = Promise.resolve();

  /** `logs` is absent only for the record being prepared at create. */
  constructor(record: ContainerRecord, dir: string, keys: ChannelKeys, logs: LogStore | undefined) {
    this.record = record;
    this.dir = dir;
    this.keys = keys;
    this.#logs = logs;
  }

  get logs(): LogStore {
    if (!this.#logs) throw new Error(`container ${this.id}: no log store`);
    return this.#logs;
  }

  /** One reader of the log file for every attach client (fan-out with a bounded queue each). */
  get follower(): LogFollower {
    this.#follower ??= new LogFollower(this.logs);
    return this.#follower;
  }

  /** The follower if one was made (closing must not make one). */
  get existingFollower(): LogFollower | undefined {
    return this.#follower;
  }

  get id(): string {
    return this.record.id;
  }

  get running(): boolean {
    return this.record.state.status === 'running' || this.record.state.status === 'restarting';
  }

  persist(): void {
    writeJsonAtomic(join(this.dir, RECORD_FILE), this.record);
  }

  update(change: (record: ContainerRecord) => void): void {
    const next = structuredClone(this.record);
    change(next);
    this.record = next;
    this.persist();
  }

  /** Runs `task` after every earlier lifecycle task of this container has settled. */
  serialize<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(task, task);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  get channel(): Promise<ChannelClient> | undefined {
    return this.#channel;
  }

  set channel(client: Promise<ChannelClient> | undefined) {
    this.#channel = client;
  }

  hostNote(text: string): void {
    const boot = this.boot;
    if (boot) boot.timeline.push({ source: 'host', hostMs: performance.now() - boot.t0, text });
  }
}
