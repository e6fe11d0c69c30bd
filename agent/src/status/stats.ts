/**
 * The stats@tether snapshot: what the agent itself costs (RSS, peak, V8 heap, CPU) and what the container
 * uses (its cgroup). Parsers are pure over the files' text; readAgentStats and readContainerStats do the
 * reading. The agent's own memory is the figure that matters in a VM sized for the container.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AgentProcessStats, ContainerStats } from '../../../protocol/src/requests/requests.ts';

/** The `Name: value` fields of /proc/PID/status; sizes stay as written ("1234 kB"). */
export function parseProcStatus(text: string): Map<string, string> {
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) fields.set(line.slice(0, colon), line.slice(colon + 1).trim());
  }
  return fields;
}

/** A `1234 kB` field as bytes; 0 when absent (kernel threads have no Vm* fields). */
export function kibField(fields: Map<string, string>, name: string): number {
  const match = /^(\d+)\s*kB$/.exec(fields.get(name) ?? '');
  return match ? Number(match[1]) * 1024 : 0;
}

export function agentStatsFrom(
  procStatus: string,
  memory: NodeJS.MemoryUsage,
  cpu: NodeJS.CpuUsage,
): AgentProcessStats {
  const fields = parseProcStatus(procStatus);
  return {
    rssBytes: kibField(fields, 'VmRSS'),
    peakRssBytes: kibField(fields, 'VmHWM'),
    heapUsedBytes: memory.heapUsed,
    heapTotalBytes: memory.heapTotal,
    externalBytes: memory.external,
    cpuMicros: cpu.user + cpu.system,
    cpuSystemMicros: cpu.system,
    threads: Number(fields.get('Threads') ?? 0),
  };
}

/** The agent's own figures. With resetPeak, VmHWM starts again from the current RSS after the reading. */
export function readAgentStats(resetPeak = false): AgentProcessStats {
  const stats = agentStatsFrom(
    readFileSync('/proc/self/status', 'utf8'),
    process.memoryUsage(),
    process.cpuUsage(),
  );
  // "5" in clear_refs resets the peak RSS (proc(5)); a kernel without it leaves the peak as it was.
  if (resetPeak) {
    try {
      writeFileSync('/proc/self/clear_refs', '5');
    } catch {
      // Best effort: the reply still says what the peak was.
    }
  }
  return stats;
}

/** `usage_usec N` from cpu.stat; 0 when absent. */
export function cpuUsageMicros(cpuStat: string): number {
  const match = /^usage_usec (\d+)$/m.exec(cpuStat);
  return match ? Number(match[1]) : 0;
}

/** The container's figures from the text of its cgroup's files (memory.max "max" means no limit). */
export function containerStatsFrom(files: {
  memoryCurrent: string;
  memoryMax: string;
  pidsCurrent: string;
  cpuStat: string;
}): ContainerStats {
  const limit = files.memoryMax.trim();
  return {
    memoryBytes: Number(files.memoryCurrent.trim()),
    ...(limit === 'max' ? {} : { memoryLimitBytes: Number(limit) }),
    pids: Number(files.pidsCurrent.trim()),
    cpuMicros: cpuUsageMicros(files.cpuStat),
  };
}

/** The container cgroup at `path`; undefined when its files cannot be read (then stats say nothing of it). */
export function readContainerStats(path: string): ContainerStats | undefined {
  try {
    const read = (file: string): string => readFileSync(join(path, file), 'utf8');
    return containerStatsFrom({
      memoryCurrent: read('memory.current'),
      memoryMax: read('memory.max'),
      pidsCurrent: read('pids.current'),
      // cpu.stat exists even without the cpu controller enabled (usage_usec is always there).
      cpuStat: read('cpu.stat'),
    });
  } catch {
    return undefined;
  }
}
