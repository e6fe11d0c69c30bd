/** From the validated config to what the supervisor needs: session spec and stop/restart policy. */
import type { ProcessConfig } from '../../../protocol/src/config/config.ts';
import type { MainProcessOptions } from '../process/main-process.ts';
import { DEFAULT_PATH, type ExecFactory } from '../process/exec-factory.ts';
import { mergeEnv, type SessionSpec } from '../process/session.ts';

export const DEFAULT_STOP_TIMEOUT_SECONDS = 10;
export const DEFAULT_TERMINAL = { cols: 80, rows: 24 };

/** Throws TETHER_USER_UNKNOWN when the configured user does not exist in the root filesystem. */
export function mainSessionSpec(config: ProcessConfig, exec: ExecFactory): SessionSpec {
  const { user, home } = exec.identity(config.user);
  return {
    argv: config.argv,
    env: mergeEnv([DEFAULT_PATH, `HOME=${home}`], config.tty ? ['TERM=xterm'] : [], config.env ?? []),
    stdin: config.openStdin ?? false,
    ...(config.cwd ? { cwd: config.cwd } : {}),
    ...(user ? { user } : {}),
    ...(config.tty ? { tty: DEFAULT_TERMINAL } : {}),
  };
}

export function stopPolicy(
  config: ProcessConfig,
): Pick<MainProcessOptions, 'restart' | 'stopSignal' | 'stopTimeoutMs' | 'stdinOnce'> {
  return {
    stdinOnce: config.stdinOnce ?? false,
    restart: config.restart ?? 'no',
    stopSignal: config.stopSignal ?? 'SIGTERM',
    stopTimeoutMs: (config.stopTimeoutSeconds ?? DEFAULT_STOP_TIMEOUT_SECONDS) * 1000,
  };
}
