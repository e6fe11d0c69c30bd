/**
 * --dev mode: the agent as an ordinary unprivileged process on the host. It skips everything that only
 * makes sense as PID 1 in a VM (mounts, modules, pivot_root) and serves the same channel on a unix socket.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { decodeConfig, type AgentConfig } from '../../protocol/src/config/config.ts';
import { describeError, TetherError } from '../../protocol/src/errors/errors.ts';
import { formatStatusRecord } from '../../protocol/src/status/status.ts';
import { ensureStateKeys } from './channel/keys.ts';
import { ChannelServer } from './channel/server.ts';
import { listenUnix } from './channel/unix-listener.ts';
import { mainSessionSpec, stopPolicy } from './config/process-spec.ts';
import { ExecFactory } from './process/exec-factory.ts';
import { MainProcess } from './process/main-process.ts';
import { OutputLog } from './process/output-log.ts';
import { StatusReporter } from './status/reporter.ts';

export const DEV_USAGE = `usage: tether --dev --socket PATH --state DIR [--config FILE] [--buffer-bytes N] [-- CMD ARGS...]

  --socket PATH       unix socket to serve the channel on
  --state DIR         keeps ssh_host_key, authorized_keys (and id_client, known_hosts when generated)
  --config FILE       agent config (JSON, see docs/config.md); -- CMD overrides its process.argv
  --buffer-bytes N    output kept for attach clients before the process is paused (default 16 MiB)
  --rootfs DIR        root filesystem whose /etc/passwd and /etc/group resolve users (default /;
                      --dev mode does not chroot into it)`;

const DEFAULT_BUFFER_BYTES = 16 * 1024 * 1024;

function usage(message: string): TetherError {
  return new TetherError('TETHER_USAGE', `${message}\n${DEV_USAGE}`);
}

export function helperPath(): string {
  return process.env['TETHER_EXEC_HELPER'] ?? resolve(dirname(process.argv[1] ?? '.'), '../bin/tether-exec');
}

export async function runDev(argv: string[]): Promise<void> {
  const split = argv.indexOf('--');
  const command = split === -1 ? [] : argv.slice(split + 1);
  const { values } = parseArgs({
    args: split === -1 ? argv : argv.slice(0, split),
    options: {
      dev: { type: 'boolean' },
      socket: { type: 'string' },
      state: { type: 'string' },
      config: { type: 'string' },
      'buffer-bytes': { type: 'string' },
      rootfs: { type: 'string', default: '/' },
    },
    strict: true,
  });
  if (!values.socket) throw usage('--socket is required');
  if (!values.state) throw usage('--state is required');
  const bufferBytes = values['buffer-bytes'] ? Number(values['buffer-bytes']) : DEFAULT_BUFFER_BYTES;
  if (!Number.isSafeInteger(bufferBytes) || bufferBytes < 1024)
    throw usage('--buffer-bytes must be an integer ≥ 1024');

  const started = performance.now();
  const logger = (message: string): void => void process.stderr.write(`tether: ${message}\n`);
  const status = new StatusReporter(
    () => performance.now() - started,
    [(record) => logger(formatStatusRecord(record))],
  );
  status.report('agent', 'ok', { pid: process.pid, detail: 'dev mode' });

  let config: AgentConfig = { version: 1, id: 'dev' };
  if (values.config) {
    config = decodeConfig(readFileSync(values.config), values.config);
    status.report('config', 'ok', { detail: values.config });
  }
  if (command.length > 0) config = { ...config, process: { ...config.process, argv: command } };

  const keys = ensureStateKeys(values.state);
  const log = new OutputLog(bufferBytes);
  const exec = new ExecFactory(
    {
      env: config.process?.env ?? [],
      rootDir: values.rootfs,
      ...(config.process?.user ? { user: config.process.user } : {}),
      ...(config.process?.cwd ? { cwd: config.process.cwd } : {}),
    },
    { helperPath: helperPath() },
  );

  let main: MainProcess | undefined;
  if (config.process) {
    let spec;
    try {
      spec = mainSessionSpec(config.process, exec);
    } catch (error) {
      status.report('process-started', 'failed', { detail: describeError(error) });
    }
    if (spec)
      main = new MainProcess({
        spec,
        context: { helperPath: helperPath() },
        log,
        status,
        ...stopPolicy(config.process),
      });
  }

  const server = new ChannelServer(
    {
      hostKey: config.channel?.hostKey ?? keys.hostKey,
      authorizedKeys: [...(config.channel?.authorizedKeys ?? []), ...keys.authorizedKeys],
    },
    { main, log, status, exec, logger },
  );
  const listener = await listenUnix(values.socket, server, logger);
  status.report('channel', 'ok', { detail: values.socket });
  main?.start();

  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger(`${signal}: stopping`);
    void (main?.stop() ?? Promise.resolve()).then(() => {
      listener.close();
      process.exit(0);
    });
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}
