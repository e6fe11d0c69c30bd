/** How a process ended, in the two forms users meet: a shell-style code and the signal's name. */
import { constants } from 'node:os';

export interface ExitStatus {
  /** 0–255; 128+n for death by signal n, as shells and Docker report it. */
  exitCode: number;
  /** The signal's name (e.g. SIGKILL) when the process was killed by one. */
  signal?: string;
}

const signalNumbers = constants.signals as Record<string, number>;

export function signalNumber(name: string): number | undefined {
  const upper = name.toUpperCase();
  return signalNumbers[upper.startsWith('SIG') ? upper : `SIG${upper}`];
}

export function signalName(signal: number): string | undefined {
  return Object.keys(signalNumbers).find((name) => signalNumbers[name] === signal);
}

/** From what Node or node-pty report (code, signal as a name or a number). */
export function exitStatusFrom(
  code: number | null | undefined,
  signal: string | number | null | undefined,
): ExitStatus {
  if (signal !== null && signal !== undefined && signal !== 0) {
    const number = typeof signal === 'number' ? signal : signalNumber(signal);
    const name = typeof signal === 'string' ? signal : signalName(signal);
    return { exitCode: 128 + (number ?? 0), ...(name ? { signal: name } : {}) };
  }
  return { exitCode: code ?? 0 };
}
