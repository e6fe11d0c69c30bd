/**
 * Status records as console lines, authenticated. The console (ttyS0) takes bytes from anything in the VM
 * that reaches /dev/console, /dev/kmsg or the serial port, so a line there proves nothing by itself: a
 * container could print an exit code or a boot failure of its own making. Each line the agent writes is
 * therefore signed with the config's status key, which only the host and the agent know:
 *
 *   @tether-status <frame> <seq> <mac>
 *
 *   frame  base64 (RFC 4648 §4, padded) of the record's length-prefixed msgpack frame, as on the channel
 *   seq    decimal, 1 for the boot's first line and one more for each line after it; the host believes a
 *          line only if its seq is above the last one it believed, so a copy printed again is dropped
 *   mac    base64url (RFC 4648 §5, unpadded) of HMAC-SHA256(statusKey, "tether-status/1" 0x00 ‖ seq as
 *          u64 big-endian ‖ frame bytes): the seq is covered, so a line cannot be renumbered
 *
 * An agent whose config has no status key writes `@tether-status <frame>` alone. A host that put a key in
 * the config never believes such a line; only a host that gave no key (a VM booted by an older host)
 * reads it, with the trust that implies. The key is per boot, so a line from an earlier boot does not
 * verify either. Pure: no I/O; node:crypto only computes.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { TetherError } from '../errors/errors.ts';
import { decodeStatusFrame, encodeStatusRecord, type StatusRecord } from './status.ts';

export const CONSOLE_STATUS_PREFIX = '@tether-status ';
/** The status key's length: HMAC-SHA256's block-size limit is 64, its output (and our key) 32. */
export const STATUS_KEY_BYTES = 32;

const MAC_LABEL = Buffer.from('tether-status/1\0', 'latin1');
const MAC_BYTES = 32;
/** 32 bytes in unpadded base64url. */
const MAC_CHARS = 43;
/** Padded base64: whole quads, the last one possibly padded. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
/** After the prefix: the frame, then optionally the seq (canonical decimal, no leading zero) and the MAC. */
const LINE = new RegExp(`^(\\S+)(?: ([1-9][0-9]{0,15}) ([A-Za-z0-9_-]{${MAC_CHARS}}))?$`);

function keyBytes(key: Uint8Array): Buffer {
  if (key.length !== STATUS_KEY_BYTES)
    throw new TetherError(
      'TETHER_CONFIG_INVALID',
      `a status key has ${STATUS_KEY_BYTES} bytes, this one ${key.length}`,
    );
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength);
}

/** The key from its config form (channel.statusKey: base64 of 32 bytes). */
export function decodeStatusKey(text: string): Buffer {
  if (!BASE64.test(text))
    throw new TetherError('TETHER_CONFIG_INVALID', 'channel.statusKey: expected base64 text');
  return keyBytes(Buffer.from(text, 'base64'));
}

/** The MAC of one line: over the label, the seq and the frame bytes (see the header). */
export function statusLineMac(key: Uint8Array, seq: number, frame: Uint8Array): Buffer {
  if (!Number.isSafeInteger(seq) || seq < 1)
    throw new TetherError('TETHER_FRAME_INVALID', `status line seq ${seq}: expected an integer ≥ 1`);
  const seqBytes = Buffer.alloc(8);
  seqBytes.writeBigUInt64BE(BigInt(seq));
  return createHmac('sha256', keyBytes(key)).update(MAC_LABEL).update(seqBytes).update(frame).digest();
}

/** The unsigned line (with its newline), for an agent without a status key. */
export function encodeStatusConsoleLine(record: StatusRecord): string {
  return CONSOLE_STATUS_PREFIX + encodeStatusRecord(record).toString('base64') + '\n';
}

/** The signed line (with its newline) for `record` as line number `seq` of this boot. */
export function signStatusConsoleLine(record: StatusRecord, key: Uint8Array, seq: number): string {
  const frame = encodeStatusRecord(record);
  const mac = statusLineMac(key, seq, frame).toString('base64url');
  return `${CONSOLE_STATUS_PREFIX}${frame.toString('base64')} ${seq} ${mac}\n`;
}

/** Signs one boot's lines in order, numbering them 1, 2, 3... */
export class StatusLineSigner {
  readonly #key: Buffer;
  #seq = 0;

  constructor(key: Uint8Array) {
    this.#key = keyBytes(key);
  }

  line(record: StatusRecord): string {
    this.#seq += 1;
    return signStatusConsoleLine(record, this.#key, this.#seq);
  }
}

export interface StatusLineParts {
  frame: Buffer;
  /** Both present on a signed line, both absent on an unsigned one. */
  seq?: number;
  mac?: Buffer;
}

/**
 * The parts of a status line, without checking or decoding anything: undefined for any other console
 * line (kernel messages, program output), 'malformed' for a line with the prefix and something else
 * after it (cut short, or made up). The last prefix on the line counts: text that something else printed
 * before the agent's line, without a newline of its own, does not spoil the line.
 */
export function splitStatusConsoleLine(line: string): StatusLineParts | 'malformed' | undefined {
  const at = line.lastIndexOf(CONSOLE_STATUS_PREFIX);
  if (at === -1) return undefined;
  const match = LINE.exec(line.slice(at + CONSOLE_STATUS_PREFIX.length).trimEnd());
  if (!match || !BASE64.test(match[1]!)) return 'malformed';
  const frame = Buffer.from(match[1]!, 'base64');
  if (match[2] === undefined) return { frame };
  const seq = Number(match[2]);
  if (!Number.isSafeInteger(seq)) return 'malformed';
  return { frame, seq, mac: Buffer.from(match[3]!, 'base64url') };
}

/** Why a status line was not believed. */
export type StatusLineDropReason =
  /** Not a whole status line: cut short by the VM's end, or made up. */
  | 'malformed'
  /** No seq and MAC, from a VM the host gave a key. */
  | 'unsigned'
  /** The MAC does not match: another key (another boot), or altered or forged. */
  | 'bad-mac'
  /** A genuine line again: its seq is not above the last one believed. */
  | 'replayed'
  /** Authentic, but not a record this host reads (e.g. a stage a newer agent added). */
  | 'invalid-record';

export type StatusLineVerdict =
  | { kind: 'other' }
  | { kind: 'believed'; record: StatusRecord; seq?: number }
  | { kind: 'dropped'; reason: StatusLineDropReason };

/**
 * The host's check of one boot's console lines, in the order the console has them. With the key the host
 * put in the VM's config, only signed lines with a matching MAC and a rising seq are believed. Without one
 * (`undefined`: the config had no key, so the VM's agent signs nothing), every well-formed line is
 * believed, as before lines were signed: use that only for a VM whose config the host did not give a key.
 */
export class StatusLineVerifier {
  readonly #key: Buffer | undefined;
  #lastSeq = 0;

  constructor(key: Uint8Array | undefined) {
    this.#key = key === undefined ? undefined : keyBytes(key);
  }

  /** The seq of the last line believed (0 before the first). */
  get lastSeq(): number {
    return this.#lastSeq;
  }

  check(line: string): StatusLineVerdict {
    const parts = splitStatusConsoleLine(line);
    if (parts === undefined) return { kind: 'other' };
    if (parts === 'malformed') return { kind: 'dropped', reason: 'malformed' };
    if (this.#key) {
      if (parts.seq === undefined || parts.mac === undefined) return { kind: 'dropped', reason: 'unsigned' };
      const expected = statusLineMac(this.#key, parts.seq, parts.frame);
      // Compared in constant time: how far a guess matched must not show in how long the check took.
      if (parts.mac.length !== MAC_BYTES || !timingSafeEqual(parts.mac, expected))
        return { kind: 'dropped', reason: 'bad-mac' };
      if (parts.seq <= this.#lastSeq) return { kind: 'dropped', reason: 'replayed' };
      this.#lastSeq = parts.seq;
    }
    let record: StatusRecord;
    try {
      record = decodeStatusFrame(parts.frame);
    } catch {
      return { kind: 'dropped', reason: 'invalid-record' };
    }
    return { kind: 'believed', record, ...(parts.seq !== undefined ? { seq: parts.seq } : {}) };
  }
}
