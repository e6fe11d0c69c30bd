/**
 * tether: the agent. As PID 1 in a VM it boots the VM and runs the container; with --dev it runs as an
 * ordinary host process serving the same channel on a unix socket. One top-level catch: in --dev mode an
 * error exits with a message; as PID 1 nothing may exit (that panics the kernel).
 */
import { describeError, isTetherError } from '../../protocol/src/errors/errors.ts';
import { DEV_USAGE, runDev } from './dev.ts';
import { runInit } from './init/init.ts';

async function main(argv: string[]): Promise<void> {
  if (process.pid === 1) return runInit();
  if (argv.includes('--dev')) return runDev(argv);
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(DEV_USAGE + '\n');
    return;
  }
  process.stderr.write(
    `tether: not PID 1 and no --dev given: refusing to act as a VM's init here\n${DEV_USAGE}\n`,
  );
  process.exitCode = 2;
}

main(process.argv.slice(2)).catch((error: unknown) => {
  if (process.pid === 1) {
    process.stderr.write(`tether: ${describeError(error)} (PID 1: staying up)\n`);
    setInterval(() => {}, 1 << 30); // never let the loop empty: PID 1 exiting panics the kernel
    return;
  }
  process.stderr.write(`tether: ${describeError(error)}\n`);
  process.exitCode = isTetherError(error, 'TETHER_USAGE') ? 2 : 1;
});
