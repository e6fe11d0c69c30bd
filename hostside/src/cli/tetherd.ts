/**
 * tetherd: the host daemon that serves the Docker Engine API (and its own) on a unix socket and runs each
 * container as a VM. `tetherd [--root DIR] [--socket PATH]`; SIGTERM stops it and leaves containers running.
 */
import { parseArgs } from 'node:util';
import pino from 'pino';
import { describeError, isTetherError, TetherError } from '../../../protocol/src/errors/errors.ts';
import { Daemon } from '../daemon/daemon.ts';
import { defaultDaemonPaths } from '../daemon/state/daemon-paths.ts';
import { DevDriver } from '../vm/dev/dev-driver.ts';
import type { VmDriver } from '../vm/driver.ts';
import { bootImagePaths, defaultImageDir, tarToExt4Script } from '../vm/paths.ts';
import { parseAccel, parseMachine, QemuDriver } from '../vm/qemu/qemu-driver.ts';

const defaults = defaultDaemonPaths(process.getuid?.() ?? 0, process.env);

export const TETHERD_USAGE = `usage: tetherd [--root DIR] [--socket PATH] [options]

  --root DIR          state: containers, images, logs (default ${defaults.root})
  --socket PATH       API socket, mode 0660 (default ${defaults.socket});
                      use it with: docker -H unix://PATH ...
  --driver NAME       qemu (default): each container is a QEMU VM; dev: each container is an agent in
                      --dev mode on this host (no isolation; for tests and benchmarks)
  --image-dir DIR     the boot image: vmlinuz, initramfs.cpio.gz, runtime.img (default build/image)
  --machine TYPE      QEMU machine type: microvm (default) or pc
  --accel NAME        tcg (default here) or kvm; also TETHER_QEMU_ACCEL
  --boot-timeout S    seconds a VM may take to run its process before its boot is a failure (default 180)
  --log-level LEVEL   fatal, error, warn, info (default), debug, trace`;

function usage(message: string): TetherError {
  return new TetherError('TETHER_USAGE', `${message}\n${TETHERD_USAGE}`);
}

async function main(argv: string[]): Promise<void> {
  let parsed;
  try {
    parsed = parseTetherdArgs(argv);
  } catch (error) {
    throw usage((error as Error).message);
  }
  const { values } = parsed;
  if (values.help) {
    process.stdout.write(TETHERD_USAGE + '\n');
    return;
  }
  await serve(values);
}

const TETHERD_OPTIONS = {
  root: { type: 'string', default: defaults.root },
  socket: { type: 'string', default: defaults.socket },
  driver: { type: 'string', default: 'qemu' },
  'image-dir': { type: 'string' },
  machine: { type: 'string' },
  accel: { type: 'string' },
  'boot-timeout': { type: 'string' },
  'log-level': { type: 'string', default: 'info' },
  help: { type: 'boolean', short: 'h' },
} as const;

function parseTetherdArgs(argv: string[]): ParsedTetherdArgs {
  return parseArgs({ args: argv, options: TETHERD_OPTIONS, strict: true });
}

type ParsedTetherdArgs = ReturnType<
  typeof parseArgs<{ args: string[]; options: typeof TETHERD_OPTIONS; strict: true }>
>;

async function serve(values: ParsedTetherdArgs['values']): Promise<void> {
  const logger = pino(
    { level: values['log-level'], base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime },
    pino.destination({ dest: 2, sync: true }),
  );
  let driver: VmDriver;
  if (values.driver === 'qemu')
    driver = new QemuDriver({
      ...(values.machine ? { machine: parseMachine(values.machine) } : {}),
      ...(values.accel ? { accel: parseAccel(values.accel) } : {}),
    });
  else if (values.driver === 'dev') driver = new DevDriver();
  else throw usage(`--driver must be qemu or dev, got "${values.driver}"`);
  const bootTimeout = values['boot-timeout'] !== undefined ? Number(values['boot-timeout']) : undefined;
  if (bootTimeout !== undefined && !(bootTimeout > 0))
    throw usage('--boot-timeout must be a positive number of seconds');

  // A bug in one request must not take every container's daemon down: log it and keep serving.
  process.on('uncaughtException', (error) =>
    logger.error({ err: describeError(error) }, 'uncaught exception'),
  );
  process.on('unhandledRejection', (error) =>
    logger.error({ err: describeError(error) }, 'unhandled rejection'),
  );

  const daemon = await Daemon.start({
    root: values.root,
    socket: values.socket,
    driver,
    bootImage: bootImagePaths(values['image-dir'] ?? defaultImageDir()),
    logger,
    tarToExt4Script: tarToExt4Script(),
    ...(bootTimeout !== undefined ? { bootTimeoutMs: bootTimeout * 1000 } : {}),
  });
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping');
    void daemon.close().then(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main(process.argv.slice(2)).catch((error: unknown) => {
  process.stderr.write(`tetherd: ${describeError(error)}\n`);
  process.exitCode = isTetherError(error, 'TETHER_USAGE') ? 2 : 1;
});
