/**
 * The host's TSC frequency, for microvm guests under TCG (see command-line.ts). TCG hands the guest the
 * host's TSC, so the host's rate is the guest's. /proc/cpuinfo's "cpu MHz" is what boot-smoke.sh uses too.
 */
import { readFileSync } from 'node:fs';

/** The first "cpu MHz" in /proc/cpuinfo text, in kHz; undefined when absent or unreadable. */
export function parseCpuinfoTscKhz(cpuinfo: string): number | undefined {
  const match = /^cpu MHz\s*:\s*([0-9]+(?:\.[0-9]+)?)\s*$/m.exec(cpuinfo);
  if (!match) return undefined;
  const khz = Math.floor(Number(match[1]) * 1000);
  return khz > 0 ? khz : undefined;
}

export function hostTscKhz(): number | undefined {
  try {
    return parseCpuinfoTscKhz(readFileSync('/proc/cpuinfo', 'utf8'));
  } catch {
    return undefined;
  }
}
