/**
 * The machine-readable console lines of the status records, signed with the config's status key
 * (protocol/src/status/console-line.ts) so the host can tell them from lines anything else in the VM
 * prints. PID 1 reports its first stages (kernel, agent, modules) before it has read the config, and with
 * it the key: those records are held and written, signed and in order, once the key is settled, that is
 * when the config stage is reported (ok or failed). Their human lines go out at once regardless.
 *
 * A config without a key, or no valid config at all, settles on no key: the held and later lines are
 * written unsigned, which only a host that gave no key believes. A host that did give one then never
 * hears this boot's records on the console, and says so when its boot timer ends; the human lines still
 * say why.
 */
import {
  StatusLineSigner,
  decodeStatusKey,
  encodeStatusConsoleLine,
} from '../../../protocol/src/status/console-line.ts';
import type { StatusRecord } from '../../../protocol/src/status/status.ts';

export class ConsoleStatusLines {
  readonly #keyOf: () => string | undefined;
  /** Records waiting for the key; undefined once it is settled. */
  #held: StatusRecord[] | undefined;
  #signer: StatusLineSigner | undefined;

  private constructor(keyOf: () => string | undefined, hold: boolean) {
    this.#keyOf = keyOf;
    this.#held = hold ? [] : undefined;
    if (!hold) this.#settle();
  }

  /** For an agent that has its config before its first record (--dev): the key is settled now. */
  static withKey(statusKey: string | undefined): ConsoleStatusLines {
    return new ConsoleStatusLines(() => statusKey, false);
  }

  /**
   * For PID 1: `keyOf` gives the config's channel.statusKey once the config is read. Records are held
   * until it gives one, or until the config stage is reported.
   */
  static untilConfig(keyOf: () => string | undefined): ConsoleStatusLines {
    return new ConsoleStatusLines(keyOf, true);
  }

  /** The console text for `record`: '' while it is held, else its line after any held before it. */
  linesFor(record: StatusRecord): string {
    if (!this.#held) return this.#line(record);
    this.#held.push(record);
    if (this.#keyOf() === undefined && record.stage !== 'config') return '';
    const held = this.#held;
    this.#held = undefined;
    this.#settle();
    return held.map((r) => this.#line(r)).join('');
  }

  #settle(): void {
    const text = this.#keyOf();
    if (text === undefined) return;
    try {
      this.#signer = new StatusLineSigner(decodeStatusKey(text));
    } catch {
      // The config's schema admits only a well-formed key; should another get here, unsigned lines
      // (which a host with a key drops) are better than none for someone reading the console.
    }
  }

  #line(record: StatusRecord): string {
    return this.#signer ? this.#signer.line(record) : encodeStatusConsoleLine(record);
  }
}
