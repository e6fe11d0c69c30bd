/**
 * The agent's status records as they appear on the VM console (`@tether-status` lines among kernel and
 * stage0 output), and what they tell the host when the channel cannot: whether boot failed for good, the
 * main process's exit code, whether the OOM killer struck. Anything in the VM can print on the console, so
 * only lines signed with the boot's status key are believed (protocol/src/status/console-line.ts); the
 * rest are dropped before they reach a timeline, an exit code or a boot-failure decision. Pure: bytes in,
 * records out.
 */
import { StringDecoder } from 'node:string_decoder';
import { StatusLineVerifier, type StatusLineDropReason } from '../../../protocol/src/status/console-line.ts';
import type { StatusRecord } from '../../../protocol/src/status/status.ts';

/** Splits console bytes into lines, whatever the chunking (a UTF-8 character may straddle two chunks). */
export class LineSplitter {
  readonly #decoder = new StringDecoder('utf8');
  #partial = '';

  push(chunk: Buffer): string[] {
    const lines = (this.#partial + this.#decoder.write(chunk)).split('\n');
    this.#partial = lines.pop()!;
    return lines.map((line) => line.replace(/\r$/, ''));
  }
}

export interface DroppedStatusLine {
  reason: StatusLineDropReason;
  /** The line as the console has it (possibly long: whatever was printed). */
  line: string;
}

/**
 * One boot's console, line by line in order: the records the host believes, and a count of the status
 * lines it did not. `statusKey` is the key the host put in this boot's config; undefined only for a VM
 * whose config had none (booted by an older host), whose unsigned lines are then believed as they are.
 */
export class ConsoleStatusReader {
  readonly #verifier: StatusLineVerifier;
  readonly #onDropped: ((dropped: DroppedStatusLine) => void) | undefined;
  #dropped = 0;

  constructor(statusKey: Uint8Array | undefined, onDropped?: (dropped: DroppedStatusLine) => void) {
    this.#verifier = new StatusLineVerifier(statusKey);
    this.#onDropped = onDropped;
  }

  /** Status lines seen and not believed (forged, replayed, unsigned, cut short). */
  get dropped(): number {
    return this.#dropped;
  }

  /** The record on `line` if the host believes it; undefined for other output and dropped lines. */
  read(line: string): StatusRecord | undefined {
    const verdict = this.#verifier.check(line);
    if (verdict.kind === 'believed') return verdict.record;
    if (verdict.kind === 'dropped') {
      this.#dropped += 1;
      this.#onDropped?.({ reason: verdict.reason, line });
    }
    return undefined;
  }
}

/** The believed records of one boot's console text (see ConsoleStatusReader for `statusKey`). */
export function statusRecordsIn(consoleText: string, statusKey: Uint8Array | undefined): StatusRecord[] {
  const reader = new ConsoleStatusReader(statusKey);
  return consoleText
    .split('\n')
    .map((line) => reader.read(line))
    .filter((record): record is StatusRecord => record !== undefined);
}

/**
 * The record saying the container's process will never run in this boot: no usable config (the agent
 * then stays up, running nothing) or a process that could not start (e.g. no root filesystem).
 */
export function fatalBootRecord(records: readonly StatusRecord[]): StatusRecord | undefined {
  return records.find(
    (record) =>
      record.outcome === 'failed' &&
      (record.stage === 'config' || (record.stage === 'process-started' && record.exitCode === undefined)),
  );
}

export interface RecordedExit {
  exitCode: number;
  signal?: string;
  /** The kernel's OOM killer struck in the container during this boot (Docker's State.OOMKilled). */
  oomKilled?: true;
}

/**
 * Whether the OOM killer ended a process of the container in this boot: an `oom` record, or an exit
 * record marked oomKilled. As Docker's State.OOMKilled, any process counts, not only the main one.
 */
export function oomKilledIn(records: readonly StatusRecord[]): boolean {
  return records.some((record) => record.stage === 'oom' || record.oomKilled === true);
}

/** The main process's exit as the console last reported it (process-exited, else the shutdown record). */
export function exitFromRecords(records: readonly StatusRecord[]): RecordedExit | undefined {
  for (const stage of ['process-exited', 'shutdown'] as const) {
    const record = records.findLast((r) => r.stage === stage && r.exitCode !== undefined);
    if (record)
      return {
        exitCode: record.exitCode!,
        ...(record.signal ? { signal: record.signal } : {}),
        ...(oomKilledIn(records) ? { oomKilled: true as const } : {}),
      };
  }
  return undefined;
}
