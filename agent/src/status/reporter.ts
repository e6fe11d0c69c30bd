/**
 * Boot health as it happens: every stage becomes a status record, kept for late channel clients and
 * written at once to the sinks that work without the channel (the console, a status port).
 */
import { EventEmitter } from 'node:events';
import type { BootStage, StageOutcome, StatusRecord } from '../../../protocol/src/status/status.ts';

export type StatusSink = (record: StatusRecord) => void;

export class StatusReporter extends EventEmitter<{ record: [StatusRecord] }> {
  readonly #records: StatusRecord[] = [];
  readonly #sinks: StatusSink[];
  readonly #clockMs: () => number;

  /** `clockMs` gives milliseconds since kernel start (CLOCK_BOOTTIME) in the VM, since agent start in --dev. */
  constructor(clockMs: () => number, sinks: StatusSink[] = []) {
    super();
    this.#clockMs = clockMs;
    this.#sinks = sinks;
  }

  get records(): readonly StatusRecord[] {
    return this.#records;
  }

  report(
    stage: BootStage,
    outcome: StageOutcome,
    extra: Omit<StatusRecord, 'stage' | 'outcome' | 'atMs'> = {},
  ): StatusRecord {
    return this.reportAt(this.#clockMs(), stage, outcome, extra);
  }

  /** A stage that ended before the agent could report it (the kernel, stage0), at the time it ended. */
  reportAt(
    atMs: number,
    stage: BootStage,
    outcome: StageOutcome,
    extra: Omit<StatusRecord, 'stage' | 'outcome' | 'atMs'> = {},
  ): StatusRecord {
    const record: StatusRecord = {
      stage,
      outcome,
      atMs: Math.round(atMs * 1000) / 1000,
      ...extra,
    };
    this.#records.push(record);
    for (const sink of this.#sinks) {
      try {
        sink(record);
      } catch {
        // A broken sink (console gone) must not stop the boot or the other sinks.
      }
    }
    this.emit('record', record);
    return record;
  }
}
