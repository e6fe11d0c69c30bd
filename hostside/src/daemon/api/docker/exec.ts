/**
 * docker exec: a session is created (its config kept), started over the container's shared channel (the
 * agent's exec@tether, RFC 4254 semantics), streamed over a hijacked connection, and inspected for its
 * exit code, which the docker CLI turns into its own (126/127 from the agent's exec helper, 128+n).
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { describeError, TetherError } from '../../../../../protocol/src/errors/errors.ts';
import type { ExecHandle } from '../../../channel/client.ts';
import { DetachKeyScanner, parseDetachKeys } from '../../../cli/detach-keys.ts';
import type { ContainerManager } from '../../containers/manager.ts';
import { DOCKER_STDERR, DOCKER_STDOUT, encodeDockerFrame } from '../../logs/index.ts';
import type { Router } from '../http/router.ts';
import { DEFAULT_DETACH_KEYS, socketPeer, type AttachPeer } from './attach.ts';
import { execCreateSchema, execStartSchema, parseBody } from './schemas.ts';

interface ExecSession {
  id: string;
  containerId: string;
  argv: string[];
  env: string[];
  user?: string;
  workingDir?: string;
  tty: boolean;
  attachStdin: boolean;
  attachStdout: boolean;
  attachStderr: boolean;
  detachKeys: string;
  consoleSize?: { rows: number; cols: number };
  running: boolean;
  started: boolean;
  exitCode: number | null;
  pid: number;
  handle?: ExecHandle;
}

export class ExecSessions {
  readonly #sessions = new Map<string, ExecSession>();

  add(session: ExecSession): void {
    this.#sessions.set(session.id, session);
  }

  get(id: string): ExecSession {
    const session = this.#sessions.get(id);
    if (!session) throw new TetherError('TETHER_NO_SUCH_EXEC', `No such exec instance: ${id}`);
    return session;
  }

  idsOf(containerId: string): string[] {
    return [...this.#sessions.values()].filter((s) => s.containerId === containerId).map((s) => s.id);
  }

  /** Forget the sessions of a removed container. */
  prune(exists: (containerId: string) => boolean): void {
    for (const [id, session] of this.#sessions) if (!exists(session.containerId)) this.#sessions.delete(id);
  }
}

function sizeFrom(value: readonly number[] | null | undefined): { rows: number; cols: number } | undefined {
  if (!value || value.length !== 2 || !(value[0]! > 0) || !(value[1]! > 0)) return undefined;
  return { rows: value[0]!, cols: value[1]! };
}

export function registerExecRoutes(router: Router, manager: ContainerManager, sessions: ExecSessions): void {
  router.add('POST', '/containers/{id}/exec', async (ctx) => {
    const container = manager.find(ctx.params['id']!);
    const body = parseBody(execCreateSchema, await ctx.json(), 'exec config');
    if (!container.running || container.boot?.exit)
      throw new TetherError('TETHER_NOT_RUNNING', `container ${container.id} is not running`);
    const detachKeys = body.DetachKeys || DEFAULT_DETACH_KEYS;
    parseDetachKeys(detachKeys);
    const id = randomBytes(32).toString('hex');
    const consoleSize = sizeFrom(body.ConsoleSize);
    sessions.add({
      id,
      containerId: container.id,
      argv: body.Cmd,
      env: body.Env ?? [],
      ...(body.User ? { user: body.User } : {}),
      ...(body.WorkingDir ? { workingDir: body.WorkingDir } : {}),
      tty: body.Tty ?? false,
      attachStdin: body.AttachStdin ?? false,
      attachStdout: body.AttachStdout ?? false,
      attachStderr: body.AttachStderr ?? false,
      detachKeys,
      ...(consoleSize ? { consoleSize } : {}),
      running: false,
      started: false,
      exitCode: null,
      pid: 0,
    });
    ctx.log.info({ container: container.id, exec: id, argv: body.Cmd }, 'exec created');
    manager.events.publish('container', `exec_create: ${body.Cmd.join(' ')}`, container.id, {
      name: container.record.name,
      image: container.record.image,
      execID: id,
    });
    ctx.send(201, { Id: id });
  });

  router.add('POST', '/exec/{id}/start', async (ctx) => {
    const session = sessions.get(ctx.params['id']!);
    const body = parseBody(execStartSchema, await ctx.json(), 'exec start');
    if (session.started)
      throw new TetherError('TETHER_NAME_CONFLICT', `exec ${session.id} has already started`);
    const container = manager.find(session.containerId);
    if (!container.running || container.boot?.exit)
      throw new TetherError('TETHER_NOT_RUNNING', `container ${container.id} is not running`);
    session.started = true;
    const size = sizeFrom(body.ConsoleSize) ?? session.consoleSize;
    const client = await manager.channel(container);
    let handle: ExecHandle;
    try {
      handle = await client.exec({
        argv: session.argv,
        env: session.env,
        ...(session.workingDir ? { cwd: session.workingDir } : {}),
        ...(session.user ? { user: session.user } : {}),
        ...(session.tty ? { tty: size ?? { rows: 24, cols: 80 } } : {}),
        stdin: session.attachStdin,
      });
    } catch (error) {
      session.exitCode = 126;
      throw new TetherError('TETHER_SPAWN_FAILED', `exec failed: ${describeError(error)}`, { cause: error });
    }
    session.handle = handle;
    session.pid = handle.pid;
    session.running = true;
    manager.events.publish('container', `exec_start: ${session.argv.join(' ')}`, container.id, {
      name: container.record.name,
      image: container.record.image,
      execID: session.id,
    });
    const finished = handle.exit.then((exit) => {
      session.running = false;
      session.exitCode = exit?.exitCode ?? 137;
      ctx.log.info({ container: container.id, exec: session.id, exitCode: session.exitCode }, 'exec exited');
      manager.events.publish('container', 'exec_die', container.id, {
        name: container.record.name,
        execID: session.id,
        exitCode: String(session.exitCode),
      });
    });
    if (body.Detach) {
      handle.stdin.end();
      handle.stdout.resume();
      handle.stderr.resume();
      ctx.send(200, '');
      return;
    }
    const { stream } = ctx.hijack(
      session.tty ? 'application/vnd.docker.raw-stream' : 'application/vnd.docker.multiplexed-stream',
    );
    await pumpExec(session, handle, socketPeer(stream), ctx.log);
    await finished;
  });

  router.add('POST', '/exec/{id}/resize', (ctx) => {
    const session = sessions.get(ctx.params['id']!);
    const rows = Number(ctx.query.get('h'));
    const cols = Number(ctx.query.get('w'));
    if (!(rows > 0 && cols > 0))
      throw new TetherError(
        'TETHER_INVALID_PARAMETER',
        `invalid terminal size h=${ctx.query.get('h')} w=${ctx.query.get('w')}`,
      );
    if (session.handle) session.handle.resize({ rows, cols });
    else session.consoleSize = { rows, cols };
    ctx.send(201, '');
  });

  router.add('GET', '/exec/{id}/json', (ctx) => {
    const session = sessions.get(ctx.params['id']!);
    ctx.send(200, {
      ID: session.id,
      ContainerID: session.containerId,
      Running: session.running,
      ExitCode: session.exitCode,
      Pid: session.pid,
      OpenStdin: session.attachStdin,
      OpenStdout: session.attachStdout,
      OpenStderr: session.attachStderr,
      CanRemove: !session.running && session.started,
      DetachKeys: session.detachKeys,
      ProcessConfig: {
        tty: session.tty,
        entrypoint: session.argv[0],
        arguments: session.argv.slice(1),
        privileged: false,
        user: session.user ?? '',
      },
    });
  });
}

/** Output of both streams to the peer (framed without a tty), input from it, until the process ends. */
async function pumpExec(
  session: ExecSession,
  handle: ExecHandle,
  peer: AttachPeer,
  log: Logger,
): Promise<void> {
  const frame = (stream: 1 | 2, chunk: Buffer): Buffer =>
    session.tty ? chunk : encodeDockerFrame(stream, chunk);
  const pipe = async (source: NodeJS.ReadableStream, stream: 1 | 2, wanted: boolean): Promise<void> => {
    for await (const chunk of source as AsyncIterable<Buffer>)
      if (wanted) await peer.write(frame(stream, chunk));
  };
  if (session.attachStdin) {
    const scanner = new DetachKeyScanner(parseDetachKeys(session.detachKeys));
    peer.onInput(
      (chunk) => {
        const { forward, detach } = session.tty ? scanner.push(chunk) : { forward: chunk, detach: false };
        if (forward.length && !handle.stdin.write(forward)) {
          peer.pauseInput();
          handle.stdin.once('drain', () => peer.resumeInput());
        }
        if (detach) peer.close('detached');
      },
      () => handle.stdin.end(),
    );
  } else {
    handle.stdin.end();
  }
  // A client that leaves closes the process's input and output: it gets EOF/EPIPE, as with Docker.
  void peer.closed.then(() => {
    if (session.running) handle.stdin.end();
  });
  try {
    await Promise.all([
      pipe(handle.stdout, DOCKER_STDOUT, session.attachStdout || session.tty),
      pipe(handle.stderr, DOCKER_STDERR, session.attachStderr),
    ]);
  } catch (error) {
    log.warn({ exec: session.id, err: describeError(error) }, 'exec stream failed');
  } finally {
    await handle.exit;
    peer.close();
  }
}
