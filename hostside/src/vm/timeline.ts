/**
 * The boot timeline of one run: the agent's status records (guest time since kernel start, and when the
 * host saw them on the console) merged with what the host itself did (QEMU up, channel up, exit, VM gone).
 */
import { formatStatusRecord, type StatusRecord } from '../../../protocol/src/status/status.ts';

export type TimelineEntry =
  | { source: 'host'; hostMs: number; text: string }
  | { source: 'guest'; hostMs: number; record: StatusRecord };

function seconds(ms: number): string {
  return (ms / 1000).toFixed(3).padStart(8);
}

/** Pure: one line per entry in host-time order; guest records keep their own time in the second column. */
export function formatTimeline(entries: readonly TimelineEntry[]): string {
  const lines = [
    'timeline: host s since the VM start was asked | guest s since its kernel started',
    ...[...entries]
      .sort((a, b) => a.hostMs - b.hostMs)
      .map((entry) =>
        entry.source === 'host'
          ? `${seconds(entry.hostMs)} |          host  ${entry.text}`
          : `${seconds(entry.hostMs)} | ${seconds(entry.record.atMs)} guest ${formatStatusRecord(entry.record).replace(/^\[\s*[0-9.]+\] /, '')}`,
      ),
  ];
  return lines.join('\n') + '\n';
}
