/**
 * VM templates for the benches (issue 12's spike; nothing here is product code yet): a VM whose RAM lives
 * in a file, saved over QMP with the migration capability x-ignore-shared (the RAM stays in the file, the
 * state file holds only the devices), and clones started from it: the same file mapped privately, so each
 * clone's writes stay its own, and `-incoming` reading the saved device state.
 *
 * QEMU 7.2 has no `file:` migration URI, so the state goes through `exec:cat`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { ChannelClient, type ChannelCredentials } from '../../hostside/src/channel/client.ts';
import { QmpClient } from '../../hostside/src/vm/qemu/qmp-client.ts';

export const MEMORY_BACKEND_ID = 'tether-mem';

export interface FileMemory {
  /** The guest RAM's file: the template's, shared by every clone. */
  path: string;
  sizeMiB: number;
  /** on: writes reach the file (the template); off: a private copy-on-write mapping (a clone). */
  share: boolean;
}

/** A shell word for exec: URIs, which QEMU hands to /bin/sh -c. */
function shellQuote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

/**
 * `args` with the guest's RAM from a file-backed memory backend: the machine option names the backend
 * (`memory-backend=`), whose size must equal `-m`.
 */
export function withFileMemory(args: readonly string[], memory: FileMemory): string[] {
  const out = [...args];
  const at = out.findIndex((arg) => arg === '-machine' || arg === '-M');
  if (at === -1 || out[at + 1] === undefined) throw new Error('no -machine in the QEMU arguments');
  out[at + 1] = `${out[at + 1]},memory-backend=${MEMORY_BACKEND_ID}`;
  const mem = out.indexOf('-m');
  if (mem === -1 || Number(out[mem + 1]) !== memory.sizeMiB)
    throw new Error(`-m must be ${memory.sizeMiB} to match the memory backend`);
  out.push(
    '-object',
    `memory-backend-file,id=${MEMORY_BACKEND_ID},size=${memory.sizeMiB}M,` +
      `mem-path=${memory.path.replaceAll(',', ',,')},share=${memory.share ? 'on' : 'off'}`,
  );
  return out;
}

/**
 * A clone's extra argument: wait for the saved state, which restoreClone() then feeds in. The capability
 * x-ignore-shared must be on at the receiving end before the stream is read (without it QEMU 7.2 exits:
 * "Capability x-ignore-shared is off, but received capability is on"), and 7.2 has no command-line form
 * of it (no migration.x-ignore-shared global): so `-incoming defer`, then QMP.
 */
export function cloneArgs(args: readonly string[]): string[] {
  return [...args, '-incoming', 'defer'];
}

/**
 * Loads a clone's state over QMP (capability, then migrate-incoming from `exec:cat STATE`) and waits until
 * QEMU reports the guest running (it resumes by itself: the template was running when saved).
 */
export async function restoreClone(qmpSocket: string, stateFile: string, timeoutMs = 60_000): Promise<void> {
  const qmp = await connectQmp(qmpSocket, timeoutMs);
  try {
    await qmp.execute('migrate-set-capabilities', {
      capabilities: [{ capability: 'x-ignore-shared', state: true }],
    });
    await qmp.execute('migrate-incoming', { uri: `exec:cat ${shellQuote(stateFile)}` });
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const status = await qmp.execute<{ status: string }>('query-status');
      if (status.status === 'running') return;
      if (Date.now() > deadline) throw new Error(`QEMU still ${status.status} after ${timeoutMs} ms`);
      await sleep(5);
    }
  } finally {
    qmp.close();
  }
}

export interface SaveResult {
  /** From the migrate command to QEMU reporting it completed. */
  ms: number;
  status: string;
}

/** Saves a running VM's device state to `stateFile` (its RAM stays in the shared file); QEMU is then paused. */
export async function saveTemplate(
  qmp: QmpClient,
  stateFile: string,
  timeoutMs = 60_000,
): Promise<SaveResult> {
  await qmp.execute('migrate-set-capabilities', {
    capabilities: [{ capability: 'x-ignore-shared', state: true }],
  });
  const started = performance.now();
  await qmp.execute('migrate', { uri: `exec:cat > ${shellQuote(stateFile)}` });
  for (;;) {
    const info = await qmp.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
    const status = info.status ?? 'none';
    if (status === 'completed') return { ms: performance.now() - started, status };
    if (status === 'failed' || status === 'cancelled')
      throw new Error(`migration ${status}: ${info['error-desc'] ?? 'no reason given'}`);
    if (performance.now() - started > timeoutMs)
      throw new Error(`migration still ${status} after ${timeoutMs} ms`);
    await sleep(10);
  }
}

/** QEMU processes started by a bench: every one is killed on the way out, whatever happened. */
export class QemuProcesses {
  readonly #children = new Set<ChildProcess>();

  constructor() {
    process.once('exit', () => this.killAll());
  }

  /** Spawns QEMU with its stdout and stderr appended to `logFile` (stdio: 'pipe' keeps them). */
  spawn(args: readonly string[], log: string | 'pipe', cwd?: string): ChildProcess {
    const fd = log === 'pipe' ? undefined : openSync(log, 'a');
    try {
      const child = spawn('qemu-system-x86_64', args, {
        stdio: fd === undefined ? ['pipe', 'pipe', 'pipe'] : ['ignore', fd, fd],
        ...(cwd ? { cwd } : {}),
      });
      this.#children.add(child);
      child.once('exit', () => this.#children.delete(child));
      return child;
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  }

  async kill(child: ChildProcess): Promise<void> {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  }

  killAll(): void {
    for (const child of this.#children) if (child.exitCode === null) child.kill('SIGKILL');
  }

  async killAllAndWait(): Promise<void> {
    await Promise.all([...this.#children].map((child) => this.kill(child)));
  }
}

/** Connects to QEMU's QMP socket once it exists. */
export async function connectQmp(path: string, timeoutMs = 30_000): Promise<QmpClient> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (existsSync(path)) {
      try {
        return await QmpClient.connect(path, 2000);
      } catch (error) {
        if (Date.now() > deadline) throw error;
      }
    }
    if (Date.now() > deadline) throw new Error(`no QMP socket ${path} after ${timeoutMs} ms`);
    await sleep(10);
  }
}

/** Waits until `file` has a line matching `pattern` (a console log QEMU writes); returns the text. */
export async function waitForLine(
  file: string,
  pattern: RegExp,
  timeoutMs: number,
  alive: () => boolean,
): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
    if (pattern.test(text)) return text;
    if (!alive()) throw new Error(`QEMU exited before ${pattern} appeared in ${file}:\n${text.slice(-2000)}`);
    if (Date.now() > deadline)
      throw new Error(`no ${pattern} in ${file} after ${timeoutMs} ms:\n${text.slice(-2000)}`);
    await sleep(20);
  }
}

export interface ChannelConnection {
  client: ChannelClient;
  /** Every byte the agent sent on this connection, for reading what it drew at random (the SSH KEXINIT). */
  received: Buffer[];
  /** Connections tried (more than 1: the agent gave up on a handshake that the loaded host made too slow). */
  attempts: number;
}

/** The agent closes a connection whose resync, SSH handshake and auth take longer than this. */
const AGENT_HANDSHAKE_MS = 10_000;

function connectSocket(path: string): Promise<Socket | undefined> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => resolve(s));
    s.once('error', () => resolve(undefined));
  });
}

/**
 * Connects to a VM's channel socket as soon as QEMU made it and the agent answers, the resync SYN repeated
 * every 500 ms as connectVmChannel does. A booting agent still answers at once when it opens its port (the
 * SYNs wait in the port's queue and it answers the latest), so a cold boot is not penalised against a
 * clone. Not faster: the host re-sends a SYN 3 retry periods after its ACK if READY has not come, and on a
 * loaded host (16 clones at once) an agent that has moved on to SSH then reads that SYN as its peer's SSH
 * banner and drops the connection (seen with 50 ms). Once the agent answers, the SSH handshake gets a
 * little more than the agent's own deadline; past it the agent has closed, and a new connection is tried
 * (as connectVmChannel does): many VMs starting at once on two cores do run past it.
 */
export async function connectChannelSocket(
  path: string,
  credentials: ChannelCredentials,
  timeoutMs: number,
): Promise<ChannelConnection> {
  const deadline = Date.now() + timeoutMs;
  let attempts = 0;
  let lastError: Error | undefined;
  while (Date.now() < deadline) {
    const socket = existsSync(path) ? await connectSocket(path) : undefined;
    if (!socket) {
      await sleep(5);
      continue;
    }
    attempts += 1;
    const received: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => received.push(chunk));
    try {
      const client = await ChannelClient.connect(socket, credentials, {
        retryMs: 500,
        timeoutMs: Math.max(1000, deadline - Date.now()),
        readyTimeoutMs: AGENT_HANDSHAKE_MS + 2000,
      });
      return { client, received, attempts };
    } catch (error) {
      socket.destroy();
      lastError = error as Error;
    }
  }
  throw new Error(
    `no channel on ${path} within ${timeoutMs} ms after ${attempts} attempts` +
      (lastError ? ` (last: ${lastError.message})` : ''),
  );
}

/**
 * The 16-byte cookie of the agent's first SSH packet (KEXINIT, drawn by ssh2 with crypto.randomFillSync,
 * i.e. from Node's OpenSSL generator), read off the bytes it sent in clear before the keys were agreed.
 */
export function kexinitCookie(received: Buffer[]): string | undefined {
  const bytes = Buffer.concat(received);
  const banner = bytes.indexOf('SSH-2.0-');
  if (banner === -1) return undefined;
  const end = bytes.indexOf('\r\n', banner);
  if (end === -1) return undefined;
  const packet = end + 2;
  // uint32 packet_length, byte padding_length, byte SSH_MSG_KEXINIT (20), byte[16] cookie
  if (bytes.length < packet + 22 || bytes[packet + 5] !== 20) return undefined;
  return bytes.subarray(packet + 6, packet + 22).toString('hex');
}

/** The proportional set size of a process in KiB (/proc/PID/smaps_rollup), or undefined if gone. */
export function pssKiB(pid: number): number | undefined {
  try {
    const match = /^Pss:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** MemAvailable in KiB: what the host could still give, page cache of the template file included. */
export function memAvailableKiB(): number {
  const match = /^MemAvailable:\s+(\d+) kB$/m.exec(readFileSync('/proc/meminfo', 'utf8'));
  return match ? Number(match[1]) : 0;
}

/**
 * Where two QEMU command lines differ, argument by argument (same length expected: the same options in
 * the same order), each as [template, clone].
 */
export function differingArgs(template: readonly string[], clone: readonly string[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i < Math.max(template.length, clone.length); i++)
    if (template[i] !== clone[i]) out.push([template[i] ?? '(none)', clone[i] ?? '(none)']);
  return out;
}

export interface MappingMemory {
  rssKiB: number;
  pssKiB: number;
  /** Pages this process wrote (anonymous, or a private file mapping's copied-on-write pages). */
  privateDirtyKiB: number;
}

/**
 * The guest RAM's mapping in a QEMU process (/proc/PID/smaps): the one mapping of `sizeMiB` (up to 4 MiB
 * more, for QEMU's alignment), the template file's in a clone, anonymous memory in a cold-booted VM.
 */
export function guestRamMapping(pid: number, sizeMiB: number): MappingMemory | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/smaps`, 'utf8');
  } catch {
    return undefined;
  }
  const field = (block: string, name: string): number =>
    Number(new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(block)?.[1] ?? 0);
  const blocks = text.split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/);
  const matching = blocks.filter((block) => {
    const size = field(block, 'Size');
    return size >= sizeMiB * 1024 && size <= (sizeMiB + 4) * 1024;
  });
  const best = matching.sort((a, b) => field(b, 'Rss') - field(a, 'Rss'))[0];
  if (!best) return undefined;
  return {
    rssKiB: field(best, 'Rss'),
    pssKiB: field(best, 'Pss'),
    privateDirtyKiB: field(best, 'Private_Dirty'),
  };
}
