/**
 * QMP (the QEMU Machine Protocol) on the wire: one JSON object per line in each direction. Pure functions
 * over Buffers; the socket lives in qmp-client.ts. The server sends a greeting, then for each command a
 * return or error carrying the command's id, and events at any time in between.
 */
import { TetherError } from '../../../../protocol/src/errors/errors.ts';

export type QmpMessage =
  | { kind: 'greeting'; version: string; capabilities: string[] }
  | { kind: 'return'; id: string | undefined; value: unknown }
  | { kind: 'error'; id: string | undefined; errorClass: string; description: string }
  | { kind: 'event'; event: string; data: Record<string, unknown>; timestampMs: number | undefined };

/** A line longer than this is not QMP from a QEMU we talk to (replies here are small). */
export const MAX_QMP_LINE_BYTES = 16 * 1024 * 1024;

function invalid(why: string): TetherError {
  return new TetherError('TETHER_VM_FAILED', `QMP: ${why}`);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function idOf(record: Record<string, unknown>): string | undefined {
  const id = record['id'];
  return typeof id === 'string' ? id : id === undefined ? undefined : JSON.stringify(id);
}

export function parseQmpMessage(line: string): QmpMessage {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (error) {
    throw invalid(`not JSON: ${(error as Error).message}: ${line.slice(0, 200)}`);
  }
  if (!isRecord(value)) throw invalid(`not a JSON object: ${line.slice(0, 200)}`);
  const greeting = value['QMP'];
  if (isRecord(greeting)) {
    const version = isRecord(greeting['version']) ? greeting['version'] : {};
    const qemu = isRecord(version['qemu']) ? version['qemu'] : {};
    const capabilities = Array.isArray(greeting['capabilities'])
      ? greeting['capabilities'].filter((c): c is string => typeof c === 'string')
      : [];
    return {
      kind: 'greeting',
      version: `${String(qemu['major'] ?? '?')}.${String(qemu['minor'] ?? '?')}.${String(qemu['micro'] ?? '?')}`,
      capabilities,
    };
  }
  if ('return' in value) return { kind: 'return', id: idOf(value), value: value['return'] };
  const error = value['error'];
  if (isRecord(error))
    return {
      kind: 'error',
      id: idOf(value),
      errorClass: typeof error['class'] === 'string' ? error['class'] : 'GenericError',
      description: typeof error['desc'] === 'string' ? error['desc'] : JSON.stringify(error),
    };
  if (typeof value['event'] === 'string') {
    const timestamp = value['timestamp'];
    const timestampMs =
      isRecord(timestamp) && typeof timestamp['seconds'] === 'number'
        ? timestamp['seconds'] * 1000 +
          (typeof timestamp['microseconds'] === 'number' ? timestamp['microseconds'] / 1000 : 0)
        : undefined;
    return {
      kind: 'event',
      event: value['event'],
      data: isRecord(value['data']) ? value['data'] : {},
      timestampMs,
    };
  }
  throw invalid(`unknown message: ${line.slice(0, 200)}`);
}

/** Splits the server's byte stream into messages, whatever the chunking. */
export class QmpDecoder {
  #pending: Buffer[] = [];
  #pendingBytes = 0;

  push(chunk: Buffer): QmpMessage[] {
    const messages: QmpMessage[] = [];
    let start = 0;
    for (let newline = chunk.indexOf(0x0a); newline !== -1; newline = chunk.indexOf(0x0a, start)) {
      const line = Buffer.concat([...this.#pending, chunk.subarray(start, newline)]).toString('utf8');
      this.#pending = [];
      this.#pendingBytes = 0;
      start = newline + 1;
      if (line.trim() !== '') messages.push(parseQmpMessage(line));
    }
    if (start < chunk.length) {
      this.#pending.push(chunk.subarray(start));
      this.#pendingBytes += chunk.length - start;
      if (this.#pendingBytes > MAX_QMP_LINE_BYTES)
        throw invalid(`a line longer than ${MAX_QMP_LINE_BYTES} bytes`);
    }
    return messages;
  }
}

export function encodeQmpCommand(execute: string, args?: Record<string, unknown>, id?: string): Buffer {
  const command: Record<string, unknown> = { execute };
  if (args !== undefined) command['arguments'] = args;
  if (id !== undefined) command['id'] = id;
  return Buffer.from(JSON.stringify(command) + '\n');
}
