/**
 * Channel resync: finds a clean starting point on a byte stream that has no connection semantics.
 *
 * A serial line (virtio-serial, UART) keeps no notion of "a new connection": stale bytes from an earlier
 * host client, a half-written SSH packet, or line noise may sit in either direction. Before SSH starts,
 * the host (client) and the agent (server) exchange four short messages; each side scans the incoming
 * bytes for the one message it expects and ignores everything else, so garbage before or between
 * messages is harmless. Every attempt uses a fresh random nonce, so replies to an earlier attempt are
 * recognised as stale and skipped.
 *
 *   host                                               agent
 *    |  SYN    16 'T' 'S' 'Y'  nonce:u32                 |   host retries with a new nonce until it
 *    | ------------------------------------------------> |   sees a matching SYNACK
 *    |  SYNACK 06 'T' 'S' 'A'  nonce+1:u32  token:u32    |   agent answers the latest SYN of each
 *    |                                                   |   read, with a new token each time
 *    | <------------------------------------------------ |
 *    |  ACK    06 'T' 'A' 'K'  token+1:u32               |   only the latest token is accepted
 *    | ------------------------------------------------> |
 *    |  READY  06 'T' 'R' 'D'  token+2:u32               |   the last byte before SSH
 *    | <------------------------------------------------ |
 *    |  SSH version exchange (RFC 4253 §4.2) follows on both sides                     |
 *
 * All integers are big-endian. The state machines here are pure: they take bytes and return bytes to
 * send; timers and retries belong to the I/O layer that drives them.
 *
 * A peer that floods the agent with SYNs costs it one 12-byte answer per push, not one per SYN: a newer
 * SYN supersedes the token of any earlier one, so earlier answers could never complete a handshake. And
 * the agent counts every byte before the handshake, SYNs included, against RESYNC_GARBAGE_LIMIT.
 */
import { TetherError } from '../errors/errors.ts';

const MESSAGE_BYTES = { SYN: 8, SYNACK: 12, ACK: 8, READY: 8 } as const;
const MAGIC = {
  SYN: Buffer.from([0x16, 0x54, 0x53, 0x59]),
  SYNACK: Buffer.from([0x06, 0x54, 0x53, 0x41]),
  ACK: Buffer.from([0x06, 0x54, 0x41, 0x4b]),
  READY: Buffer.from([0x06, 0x54, 0x52, 0x44]),
} as const;
type MessageKind = keyof typeof MAGIC;

/** How much unmatched input a side keeps while scanning: enough for one message split across chunks. */
const SCAN_KEEP_BYTES = 16;
/**
 * A side that sees this much garbage without a match gives up, so a wrong peer cannot hold it forever. The
 * host counts from its last matching SYNACK; the agent counts every byte before the handshake completes.
 */
export const RESYNC_GARBAGE_LIMIT = 1 << 20;

function add32(value: number, delta: number): number {
  return (value + delta) >>> 0;
}

function message(kind: MessageKind, ...words: number[]): Buffer {
  const out = Buffer.alloc(MESSAGE_BYTES[kind]);
  MAGIC[kind].copy(out, 0);
  words.forEach((word, index) => out.writeUInt32BE(word >>> 0, 4 + index * 4));
  return out;
}

export const encodeSyn = (nonce: number): Buffer => message('SYN', nonce);
export const encodeSynAck = (nonce: number, token: number): Buffer =>
  message('SYNACK', add32(nonce, 1), token);
export const encodeAck = (token: number): Buffer => message('ACK', add32(token, 1));
export const encodeReady = (token: number): Buffer => message('READY', add32(token, 2));

interface Found {
  kind: MessageKind;
  words: number[];
  /** Bytes after the message, which belong to whatever comes next. */
  rest: Buffer;
}

/** Scans `buffer` for the first complete message of one of `kinds`; returns it, or what to keep for later. */
function scan(buffer: Buffer, kinds: readonly MessageKind[]): { found?: Found; keep: Buffer } {
  for (let at = 0; at < buffer.length; at++) {
    for (const kind of kinds) {
      const magic = MAGIC[kind];
      const size = MESSAGE_BYTES[kind];
      if (buffer[at] !== magic[0]) continue;
      const available = buffer.length - at;
      const compare = Math.min(available, 4);
      if (!buffer.subarray(at, at + compare).equals(magic.subarray(0, compare))) continue;
      if (available < size) return { keep: buffer.subarray(at) };
      const words: number[] = [];
      for (let offset = 4; offset < size; offset += 4) words.push(buffer.readUInt32BE(at + offset));
      return { found: { kind, words, rest: buffer.subarray(at + size) }, keep: Buffer.alloc(0) };
    }
  }
  return { keep: buffer.subarray(Math.max(0, buffer.length - SCAN_KEEP_BYTES + 1)) };
}

export interface ResyncStep {
  /** Bytes to write to the peer, in order. */
  send: Buffer[];
  /** True once the handshake is complete; `rest` then holds the first bytes of the SSH stream. */
  done: boolean;
  rest: Buffer;
}

abstract class ResyncSide {
  protected pending: Buffer = Buffer.alloc(0);
  #garbage = 0;

  protected accumulate(chunk: Uint8Array): void {
    this.#garbage += chunk.length;
    if (this.#garbage > RESYNC_GARBAGE_LIMIT) {
      throw new TetherError(
        'TETHER_RESYNC_FAILED',
        `no resync handshake in the first ${RESYNC_GARBAGE_LIMIT} bytes: the peer is not a tether channel client`,
      );
    }
    this.pending = this.pending.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.pending, chunk]);
  }

  protected matched(): void {
    this.#garbage = 0;
  }
}

/**
 * The agent's side: answers SYNs, waits for the ACK of its latest token, then says READY. Each push answers
 * at most one SYN, the last one in it: an answer to an earlier SYN carries a token that the later one
 * replaces at once, so sending it would only feed a peer that floods SYNs and never reads.
 */
export class ResyncServer extends ResyncSide {
  #token: number | undefined;
  #done = false;
  readonly #nextToken: () => number;

  /** `nextToken` supplies a fresh random u32 per SYN (injected so tests can script it). */
  constructor(nextToken: () => number) {
    super();
    this.#nextToken = nextToken;
  }

  get done(): boolean {
    return this.#done;
  }

  push(chunk: Uint8Array): ResyncStep {
    if (this.#done) return { send: [], done: true, rest: Buffer.from(chunk) };
    this.accumulate(chunk);
    /** The nonce of the latest SYN in this push, answered once the whole push is scanned. */
    let answer: number | undefined;
    for (;;) {
      const { found, keep } = scan(this.pending, ['SYN', 'ACK']);
      if (!found) {
        this.pending = keep;
        break;
      }
      this.pending = found.rest;
      const [word = 0] = found.words;
      if (found.kind === 'SYN') {
        // Every earlier token is void from here on, as it was when each SYN got its own fresh token.
        answer = word;
        this.#token = undefined;
      } else if (this.#token !== undefined && word === add32(this.#token, 1)) {
        this.#done = true;
        const rest = this.pending;
        this.pending = Buffer.alloc(0);
        return { send: [encodeReady(this.#token)], done: true, rest };
      }
      // An ACK for an older token is stale: skip it and keep scanning.
    }
    if (answer === undefined) return { send: [], done: false, rest: Buffer.alloc(0) };
    this.#token = this.#nextToken() >>> 0;
    return { send: [encodeSynAck(answer, this.#token)], done: false, rest: Buffer.alloc(0) };
  }
}

/** The host's side: one attempt per nonce. The driver calls start() again (new nonce) on timeout. */
export class ResyncClient extends ResyncSide {
  #nonce: number | undefined;
  #token: number | undefined;
  #done = false;

  get done(): boolean {
    return this.#done;
  }

  /** Begins (or restarts) an attempt; returns the SYN to send. */
  start(nonce: number): Buffer {
    this.#nonce = nonce >>> 0;
    this.#token = undefined;
    return encodeSyn(this.#nonce);
  }

  push(chunk: Uint8Array): ResyncStep {
    if (this.#done) return { send: [], done: true, rest: Buffer.from(chunk) };
    if (this.#nonce === undefined) {
      throw new TetherError('TETHER_RESYNC_FAILED', 'resync client received bytes before start() was called');
    }
    this.accumulate(chunk);
    const send: Buffer[] = [];
    for (;;) {
      const { found, keep } = scan(this.pending, ['SYNACK', 'READY']);
      if (!found) {
        this.pending = keep;
        return { send, done: false, rest: Buffer.alloc(0) };
      }
      this.pending = found.rest;
      const [first = 0, second = 0] = found.words;
      if (found.kind === 'SYNACK' && first === add32(this.#nonce, 1)) {
        this.#token = second;
        send.push(encodeAck(second));
        this.matched();
      } else if (found.kind === 'READY' && this.#token !== undefined && first === add32(this.#token, 2)) {
        this.#done = true;
        const rest = this.pending;
        this.pending = Buffer.alloc(0);
        return { send, done: true, rest };
      }
    }
  }
}
