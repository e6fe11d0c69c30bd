/**
 * Detach keys as Docker spells them (`ctrl-p,ctrl-q`, `ctrl-a`, `a`): a sequence that, typed in full,
 * detaches the attach client instead of reaching the container. A partial match is held back and sent
 * on if the next byte breaks the sequence, so ordinary input is never lost.
 */
import { TetherError } from '../../../protocol/src/errors/errors.ts';

export function parseDetachKeys(spec: string): Buffer {
  const bytes = spec.split(',').map((key) => {
    const trimmed = key.trim().toLowerCase();
    const ctrl = /^ctrl-([a-z@[\\\]^_])$/.exec(trimmed);
    if (ctrl) return ctrl[1]!.charCodeAt(0) & 0x1f;
    if (key.length === 1) return key.charCodeAt(0);
    throw new TetherError(
      'TETHER_USAGE',
      `detach keys: "${key}" is not a key; use letters or ctrl-<letter>, comma-separated (e.g. ctrl-p,ctrl-q)`,
    );
  });
  if (bytes.length === 0) throw new TetherError('TETHER_USAGE', 'detach keys: empty sequence');
  return Buffer.from(bytes);
}

export class DetachKeyScanner {
  readonly #sequence: Buffer;
  #matched = 0;

  constructor(sequence: Buffer) {
    this.#sequence = sequence;
  }

  push(chunk: Buffer): { forward: Buffer; detach: boolean } {
    const forward: number[] = [];
    for (const byte of chunk) {
      if (byte === this.#sequence[this.#matched]) {
        this.#matched++;
        if (this.#matched === this.#sequence.length) return { forward: Buffer.from(forward), detach: true };
        continue;
      }
      // The sequence broke: what was held back is ordinary input after all.
      forward.push(...this.#sequence.subarray(0, this.#matched));
      this.#matched = 0;
      if (byte === this.#sequence[0]) this.#matched = 1;
      else forward.push(byte);
    }
    return { forward: Buffer.from(forward), detach: false };
  }
}
