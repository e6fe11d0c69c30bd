/**
 * Boot health: one record per boot stage, plus the main process's start and exit, and the kernel's OOM
 * kills in the container. Records are msgpack inside a length-prefixed frame on the channel, and also one
 * line each on the console, which works even when the channel never comes up (the line's form and its
 * authentication are in console-line.ts).
 */
import { pack, unpack } from 'msgpackr';
import { TetherError } from '../errors/errors.ts';
import { LengthPrefixedDecoder, MAX_FRAME_BYTES, encodeLengthPrefixed } from '../framing/length-prefixed.ts';

export const BOOT_STAGES = [
  'kernel',
  'agent',
  'modules',
  'config',
  'network',
  /** The container's root disk (an image's layers and its writable layer, one disk) found and mounted. */
  'root-disk',
  /** Its volume disks found and mounted at their paths ('skipped' when it has none). */
  'volumes',
  /** The container's files written and the switch into its root. */
  'storage',
  /** The container's namespaces, cgroup and limits (native/tether-exec, agent/src/container). */
  'isolation',
  'channel',
  'process-started',
  /** The kernel's OOM killer ended a process of the container (detail, and pid when known). */
  'oom',
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
  /** On process-exited: the kernel's OOM killer ended the main process (Docker's State.OOMKilled). */
  oomKilled?: boolean;
}

const OUTCOMES: readonly string[] = ['ok', 'failed', 'skipped'];
const OPTIONAL_FIELDS = {
  detail: 'string',
  pid: 'number',
  exitCode: 'number',
  signal: 'string',
  oomKilled: 'boolean',
} as const;

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

/** The record in exactly one whole frame (a console line's); throws TETHER_FRAME_* for anything else. */
export function decodeStatusFrame(frame: Uint8Array): StatusRecord {
  const bytes = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
  if (bytes.length < 4 || bytes.readUInt32BE(0) !== bytes.length - 4)
    throw new TetherError(
      'TETHER_FRAME_TRUNCATED',
      `status frame: ${bytes.length} bytes is not one whole frame`,
    );
  if (bytes.length - 4 > MAX_FRAME_BYTES)
    throw new TetherError(
      'TETHER_FRAME_TOO_LARGE',
      `status frame of ${bytes.length - 4} bytes exceeds ${MAX_FRAME_BYTES}`,
    );
  return unpackBody(bytes.subarray(4));
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

/** A human line for the console and `tetherctl status`, e.g. `[   1.234] storage ok  root /dev/vdb`. */
export function formatStatusRecord(record: StatusRecord): string {
  const time = (record.atMs / 1000).toFixed(3).padStart(8);
  const parts = [`[${time}]`, record.stage, record.outcome];
  if (record.pid !== undefined) parts.push(`pid=${record.pid}`);
  if (record.exitCode !== undefined) parts.push(`exit=${record.exitCode}`);
  if (record.signal !== undefined) parts.push(`signal=${record.signal}`);
  if (record.oomKilled === true) parts.push('oom-killed');
  if (record.detail !== undefined) parts.push(record.detail);
  return parts.join(' ');
}
