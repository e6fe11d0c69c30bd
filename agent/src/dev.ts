/**
 * --dev mode: the agent as an ordinary unprivileged process on the host. It skips everything that only
 * makes sense as PID 1 in a VM (mounts, modules, pivot_root) and serves the same channel on a unix socket.
 *
 * With --log-file and --console-file it stands in for a whole VM (hostside's DevDriver): the framed output
 * goes to a file as the log port's does (reopened on SIGHUP, for rotation), the status records to a file
 * as console lines, and with the config's powerOffOnExit it exits 0 once the main process has ended and its
 * output is in the file, as a VM powers off. SIGTERM stops the main process gracefully first, as the
 * power button does in a VM.
 */
import { openSync, readFileSync, writeSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { decodeConfig, type AgentConfig } from '../../protocol/src/config/config.ts';
import { describeError, TetherError } from '../../protocol/src/errors/errors.ts';
import { formatStatusRecord, type StatusRecord } from '../../protocol/src/status/status.ts';
import { ensureStateKeys } from './channel/keys.ts';
import { ChannelServer } from './channel/server.ts';
import { listenUnix } from './channel/unix-listener.ts';
import { mainSessionSpec, stopPolicy } from './config/process-spec.ts';
import { LogPortWriter } from './init/ports/log-port.ts';
import { ExecFactory } from './process/exec-factory.ts';
import { LogFile } from './process/log-file.ts';
import { MainProcess } from './process/main-process.ts';
import { OutputLog } from './process/output-log.ts';
import { ConsoleStatusLines } from './status/console-lines.ts';
import { StatusReporter } from './status/reporter.ts';

export const DEV_USAGE = `usage: tether --dev --socket PATH --state DIR [--config FILE] [--buffer-bytes N]
                    [--log-file PATH] [--console-file PATH] [--rootfs DIR] [-- CMD ARGS...]

  --socket PATH       unix socket to serve the channel on
  --state DIR         keeps ssh_host_key, authorized_keys (and id_client, known_hosts when generated)
  --config FILE       agent config (JSON, see docs/config.md); -- CMD overrides its process.argv
  --buffer-bytes N    output kept for attach clients before the process is paused (default 16 MiB)
  --rootfs DIR        root filesystem whose /etc/passwd and /etc/group resolve users, and under which
                      docker cp paths resolve (default /; --dev mode does not chroot into it)
  --log-file PATH     append the main process's output there as log frames, as a VM's log port does;
                      SIGHUP reopens PATH (rename it away first to rotate)
  --console-file PATH append every status record there as a console line (@tether-status), as a VM's
                      console shows them`;

const DEFAULT_BUFFER_BYTES = 16 * 1024 * 1024;
/** As in a VM: how long the output may take to reach the log file before the agent exits anyway. */
const LOG_FLUSH_MS = 10_000;
/** Time for a final exit-status to cross the channel to attached clients before the agent exits. */
const CHANNEL_LINGER_MS = 200;
/** How long exec sessions have between SIGTERM and SIGKILL when the agent stops. */
const EXEC_STOP_GRACE_MS = 2000;

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
      'log-file': { type: 'string' },
      'console-file': { type: 'string' },
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
  // Read before the first record: the console lines are signed with its status key from the start.
  const given = values.config ? decodeConfig(readFileSync(values.config), values.config) : undefined;
  const sinks = [(record: StatusRecord) => logger(formatStatusRecord(record))];
  const consoleFile = values['console-file'];
  if (consoleFile) {
    const fd = openSync(consoleFile, 'a', 0o600);
    const lines = ConsoleStatusLines.withKey(given?.channel?.statusKey);
    // The same two lines a VM's console shows for each record: the host's ConsoleWatcher reads either.
    sinks.push((record) => writeSync(fd, `tether: ${formatStatusRecord(record)}\n${lines.linesFor(record)}`));
  }
  const status = new StatusReporter(() => performance.now() - started, sinks);
  status.report('agent', 'ok', { pid: process.pid, detail: 'dev mode' });

  let config: AgentConfig = given ?? { version: 1, id: 'dev' };
  if (values.config) status.report('config', 'ok', { detail: values.config });
  if (command.length > 0) config = { ...config, process: { ...config.process, argv: command } };

  const keys = ensureStateKeys(values.state);
  const log = new OutputLog(bufferBytes);
  let logWriter: LogPortWriter | undefined;
  const logFilePath = values['log-file'];
  if (logFilePath) {
    const file = new LogFile(logFilePath);
    logWriter = new LogPortWriter(log, file, logger);
    logWriter.start();
    process.on('SIGHUP', () => {
      try {
        file.reopen();
        logger(`SIGHUP: reopened ${logFilePath}`);
      } catch (error) {
        logger(`SIGHUP: cannot reopen ${logFilePath}: ${describeError(error)}; still writing the old file`);
      }
    });
  }
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
      // No namespaces on the host, but the small init (a subreaper here) between the agent and the process,
      // so whatever it starts is reaped, and killed with it if the agent is killed.
      spec = {
        ...mainSessionSpec(config.process, exec),
        isolation: { kind: 'none' as const, init: config.process.init !== false },
      };
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
    { main, log, status, exec, logger, rootDir: values.rootfs },
  );
  const listener = await listenUnix(values.socket, server, logger);
  status.report('channel', 'ok', {
    detail: `${values.socket}${logFilePath ? `; log file ${logFilePath}` : ''}`,
  });

  let stopping = false;
  /** As a VM powers off: the main process stopped, its output in the log file, a shutdown record, exit 0. */
  const shutdown = async (why: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    logger(`shutting down: ${why}`);
    // Unlike in a VM, nothing powers off under the processes: stop them all, execs and leftovers included.
    const [exit] = await Promise.all([main?.stop(), exec.stopAll(EXEC_STOP_GRACE_MS)]);
    main?.killRemaining();
    const flushed = (await logWriter?.flushed(LOG_FLUSH_MS)) ?? true;
    status.report('shutdown', flushed ? 'ok' : 'failed', {
      detail: `${why}${flushed ? '' : `; the log file did not take all output within ${LOG_FLUSH_MS} ms`}`,
      ...(exit ? { exitCode: exit.exitCode, ...(exit.signal ? { signal: exit.signal } : {}) } : {}),
    });
    await sleep(CHANNEL_LINGER_MS);
    listener.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  // Unlike in a VM, only on request: a dev agent otherwise stays up after its process, for tests to inspect.
  if (config.powerOffOnExit === true) main?.on('final', () => void shutdown('the main process ended'));
  main?.start();
}
