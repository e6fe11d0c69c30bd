/** Raw mode and resize forwarding for interactive terminal sessions, always restored afterwards. */
import type { TerminalSize } from '../../../protocol/src/requests/requests.ts';

export async function withTerminal<T>(
  interactiveTty: boolean,
  onResize: (size: TerminalSize) => void,
  body: () => Promise<T>,
): Promise<T> {
  const raw = interactiveTty && process.stdin.isTTY;
  const resize = (): void =>
    onResize({ cols: process.stdout.columns || 80, rows: process.stdout.rows || 24 });
  if (raw) process.stdin.setRawMode(true);
  if (interactiveTty && process.stdout.isTTY) process.stdout.on('resize', resize);
  try {
    return await body();
  } finally {
    if (raw) process.stdin.setRawMode(false);
    process.stdout.off('resize', resize);
  }
}
