/**
 * Boot health: one record per boot stage, plus the main process's start and exit. Records are msgpack
 * inside a length-prefixed frame on the channel, and also one line each on the console
 * (`@tether-status <base64 frame>`), which works even when the channel never comes up.
 */
import { pack, unpack } from 'msgpackr';
import { TetherError } from '../errors/errors.ts';
import { LengthPrefixedDecoder, MAX_FRAME_BYTES, encodeLengthPrefixed } from '../framing/length-prefixed.ts';

export const BOOT_STAGES = [
  'kernel',
  'agent',
  'modules',
  'config',
  'storage',
  'network',
  'channel',
  'process-started',
  'process-exited',
  'shutdown',
] as const;
export type BootStage = (typeof BOOT_STAGES)[number];

export type StageOutcome = 'ok' | 'failed' | 'skipped';

export interface StatusRecord {
  stage: BootStage;
  outcome: StageOutcome;
  /** Milliseconds since the kernel started (CLOCK_BOOTTIME in the VM; since agent start in --dev mode). */
  atMs: number;
  detail?: string;
  pid?: number;
  exitCode?: number;
  signal?: string;
}

const OUTCOMES: readonly string[] = ['ok', 'failed', 'skipped'];
const OPTIONAL_FIELDS = { detail: 'string', pid: 'number', exitCode: 'number', signal: 'string' } as const;

function invalid(why: string): TetherError {
  return new TetherError('TETHER_FRAME_INVALID', `status record: ${why}`);
}

export function checkStatusRecord(value: unknown): StatusRecord {
  if (typeof value !== 'object' || value === null) throw invalid('not a map');
  const record = value as Record<string, unknown>;
  if (!(BOOT_STAGES as readonly unknown[]).includes(record['stage']))
    throw invalid(`unknown stage ${String(record['stage'])}`);
  if (!OUTCOMES.includes(record['outcome'] as string))
    throw invalid(`unknown outcome ${String(record['outcome'])}`);
  if (typeof record['atMs'] !== 'number' || !Number.isFinite(record['atMs']))
    throw invalid('atMs is not a number');
  const out: StatusRecord = {
    stage: record['stage'] as BootStage,
    outcome: record['outcome'] as StageOutcome,
    atMs: record['atMs'],
  };
  for (const [key, type] of Object.entries(OPTIONAL_FIELDS)) {
    const field = record[key];
    if (field === undefined) continue;
    if (typeof field !== type) throw invalid(`${key} is not a ${type}`);
    (out as unknown as Record<string, unknown>)[key] = field;
  }
  return out;
}

export function encodeStatusRecord(record: StatusRecord): Buffer {
  return encodeLengthPrefixed(pack(checkStatusRecord(record)));
}

function unpackBody(body: Buffer): StatusRecord {
  let value: unknown;
  try {
    value = unpack(body);
  } catch (error) {
    throw new TetherError('TETHER_FRAME_INVALID', 'status record: not msgpack', { cause: error });
  }
  return checkStatusRecord(value);
}

/** Incremental decoder for a stream of status frames. */
export class StatusDecoder {
  // The same limit encodeStatusRecord() enforces: whatever the agent can send, the host can read.
  readonly #frames = new LengthPrefixedDecoder(MAX_FRAME_BYTES);

  push(chunk: Uint8Array): StatusRecord[] {
    return this.#frames.push(chunk).map(unpackBody);
  }

  end(): void {
    this.#frames.end();
  }
}

export const CONSOLE_STATUS_PREFIX = '@tether-status ';

export function encodeStatusConsoleLine(record: StatusRecord): string {
  return CONSOLE_STATUS_PREFIX + encodeStatusRecord(record).toString('base64') + '\n';
}

/** The record on a console line, or undefined for any other line (kernel messages, program output). */
export function decodeStatusConsoleLine(line: string): StatusRecord | undefined {
  const at = line.indexOf(CONSOLE_STATUS_PREFIX);
  if (at === -1) return undefined;
  const frame = Buffer.from(line.slice(at + CONSOLE_STATUS_PREFIX.length).trim(), 'base64');
  const records = new StatusDecoder().push(frame);
  return records[0];
}

/** A human line for the console and `tetherctl status`, e.g. `[   1.234] storage ok  root /dev/vdb`. */
export function formatStatusRecord(record: StatusRecord): string {
  const time = (record.atMs / 1000).toFixed(3).padStart(8);
  const parts = [`[${time}]`, record.stage, record.outcome];
  if (record.pid !== undefined) parts.push(`pid=${record.pid}`);
  if (record.exitCode !== undefined) parts.push(`exit=${record.exitCode}`);
  if (record.signal !== undefined) parts.push(`signal=${record.signal}`);
  if (record.detail !== undefined) parts.push(record.detail);
  return parts.join(' ');
}
