/**
 * The agent's status records as they appear on the VM console (`@tether-status <base64>` lines among
 * kernel and stage0 output), and what they tell the host when the channel cannot: whether boot failed for
 * good, and the main process's exit code. Pure: bytes in, records out.
 */
import { StringDecoder } from 'node:string_decoder';
import { decodeStatusConsoleLine, type StatusRecord } from '../../../protocol/src/status/status.ts';

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

/** The record on a console line, or undefined for other output and for a line the VM cut short. */
export function statusFromConsoleLine(line: string): StatusRecord | undefined {
  try {
    return decodeStatusConsoleLine(line);
  } catch {
    return undefined;
  }
}

export function statusRecordsIn(consoleText: string): StatusRecord[] {
  return consoleText
    .split('\n')
    .map(statusFromConsoleLine)
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
}

/** The main process's exit as the console last reported it (process-exited, else the shutdown record). */
export function exitFromRecords(records: readonly StatusRecord[]): RecordedExit | undefined {
  for (const stage of ['process-exited', 'shutdown'] as const) {
    const record = records.findLast((r) => r.stage === stage && r.exitCode !== undefined);
    if (record) return { exitCode: record.exitCode!, ...(record.signal ? { signal: record.signal } : {}) };
  }
  return undefined;
}
