/**
 * Whether a QEMU process we did not necessarily start is still the one we mean. A pid alone can be reused
 * after QEMU exits, and an exited child stays a zombie until reaped; so check that the pid's command line
 * still names this VM's QMP socket (a zombie's command line is empty).
 */
import { readFileSync } from 'node:fs';

/** Pure: does a NUL-separated /proc/PID/cmdline name `marker` in one of its words? */
export function cmdlineMentions(cmdline: string, marker: string): boolean {
  return cmdline.split('\0').some((word) => word.includes(marker));
}

export function isProcessAlive(pid: number, marker: string): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  let cmdline: string;
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    // No /proc (or gone in between): trust the signal check above.
    return true;
  }
  return cmdlineMentions(cmdline, marker);
}
