/**
 * Turns an exec request into a running Session with the container's defaults: its environment, user
 * and working directory apply unless the request overrides them, as `docker exec` behaves.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ExecParams } from '../../../protocol/src/requests/requests.ts';
import { Session, mergeEnv, type SpawnContext } from './session.ts';
import { parseGroup, parsePasswd, resolveUser, type ResolvedUser } from './users.ts';

export interface ContainerDefaults {
  env: string[];
  user?: string;
  cwd?: string;
  /** The container's root filesystem as the agent sees it (`/` after pivot_root, and in --dev mode). */
  rootDir: string;
}

export const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

function readOptional(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

export function lookupUser(spec: string, rootDir: string): ResolvedUser {
  return resolveUser(
    spec,
    parsePasswd(readOptional(join(rootDir, 'etc/passwd'))),
    parseGroup(readOptional(join(rootDir, 'etc/group'))),
  );
}

export class ExecFactory {
  readonly defaults: ContainerDefaults;
  readonly #context: SpawnContext;
  /** Sessions started here whose process has not ended yet. */
  readonly #running = new Set<Session>();

  constructor(defaults: ContainerDefaults, context: SpawnContext) {
    this.defaults = defaults;
    this.#context = context;
  }

  /** The user's identity and HOME; a request's user replaces the container's. */
  identity(userSpec: string | undefined): { user?: ResolvedUser; home: string } {
    const spec = userSpec ?? this.defaults.user;
    if (spec === undefined) {
      return { home: lookupUser(String(process.getuid?.() ?? 0), this.defaults.rootDir).home };
    }
    const user = lookupUser(spec, this.defaults.rootDir);
    return { user, home: user.home };
  }

  /** `/bin/sh -c`, as sshd runs a command through the user's shell; plain words when the image has no shell. */
  commandArgv(command: string): string[] {
    // Commands run in `/` (the container's root after pivot_root; the host's in --dev mode, where rootDir
    // only supplies the users), so that is where the shell must be.
    if (existsSync('/bin/sh')) return ['/bin/sh', '-c', command];
    return command.split(/\s+/).filter(Boolean);
  }

  start(params: ExecParams): Session {
    const { user, home } = this.identity(params.user);
    const env = mergeEnv(
      [DEFAULT_PATH, `HOME=${home}`],
      this.defaults.env,
      params.tty ? ['TERM=xterm'] : [],
      params.env ?? [],
    );
    const cwd = params.cwd ?? this.defaults.cwd;
    const isolation = this.#context.execIsolation?.();
    const session = new Session(
      {
        ...(isolation ? { isolation } : {}),
        argv: params.argv,
        env,
        stdin: params.stdin,
        ...(cwd ? { cwd } : {}),
        ...(user ? { user } : {}),
        ...(params.tty ? { tty: params.tty } : {}),
      },
      this.#context,
    );
    this.#running.add(session);
    session.once('exit', () => this.#running.delete(session));
    return session;
  }

  /** How many sessions started here are still running. */
  get running(): number {
    return this.#running.size;
  }

  /**
   * Stops every session started here, as the agent stops: SIGTERM to each one's process group, then
   * SIGKILL to the groups of those still running after `graceMs` (and to the groups of those that ended,
   * for descendants they left). Resolves once every session has ended, or after the SIGKILL.
   */
  async stopAll(graceMs: number): Promise<void> {
    const sessions = [...this.#running];
    if (sessions.length === 0) return;
    for (const session of sessions) session.killGroup('SIGTERM');
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, graceMs);
      const check = (): void => {
        if (sessions.every((session) => session.exitStatus !== undefined)) {
          clearTimeout(timer);
          resolve();
        }
      };
      for (const session of sessions) session.once('exit', check);
      check();
    });
    for (const session of sessions) session.killGroup('SIGKILL');
  }
}
