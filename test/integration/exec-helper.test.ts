/**
 * The exec helper (bin/tether-exec) run for real, as root on this host and outside any VM: the container's
 * walls (its own PID namespace, Docker's /dev and capabilities, /sys read-only, nodev everywhere), the init
 * and the relay (exit codes and signals handed back, signals forwarded once, orphans reaped), exec sessions
 * that join a container, and the PR_SET_PDEATHSIG chain that takes a --dev container down with its helper.
 * No --cgroup here: the hosts that run these tests may have cgroup v1 only.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import * as pty from 'node-pty';
import { REPO, isRoot, need } from '../helpers/prerequisites.ts';

const HELPER = join(REPO, 'bin/tether-exec');
/** The real-time signal by which the agent asks the helper for a SIGKILL it can pass on (tether-exec.h). */
const FORWARD_SIGKILL = 64;
/** Docker's default capability set, as CapEff of a root process under Docker shows it. */
const DOCKER_CAPS = '00000000a80425fb';
const DOCKER_DEV = 'core fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero';

/** The helper's modes, by the options the agent passes for each. */
const PLAIN: string[] = [];
const DEV_INIT = ['--init'];
const CONTAINER_NO_INIT = ['--new-container'];
const CONTAINER = ['--new-container', '--init'];
const ALL_MODES = [PLAIN, DEV_INIT, CONTAINER_NO_INIT, CONTAINER];
const label = (mode: string[]): string => (mode.length ? mode.join(' ') : '(plain)');

function canRun(t: TestContext): boolean {
  return need(t, { root: isRoot(), 'bin/tether-exec (make bin/tether-exec)': existsSync(HELPER) });
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

interface Helper {
  pid: number;
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves with stdout once it matches; rejects when the helper ends first or time runs out. */
  waitFor(pattern: RegExp, ms?: number): Promise<string>;
  /** Once the helper itself has ended, whoever still holds its stdout. */
  ended: Promise<void>;
  /** Once it has ended and its output is drained. */
  exited: Promise<Exit>;
}

/** Every process the tests start or find, killed (by pid) after the run if still there. */
const helpers: Helper[] = [];
const ptyPids = new Set<number>();

function start(args: string[]): Helper {
  const child = spawn(HELPER, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  let status: Pick<Exit, 'code' | 'signal'> | undefined;
  // The exit status from 'exit' (what the agent sees), the output once the pipes are drained.
  const ended = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      status = { code, signal };
      resolve();
    }),
  );
  const exited = new Promise<Exit>((resolve) =>
    child.once('close', (code, signal) => resolve({ ...(status ?? { code, signal }), stdout, stderr })),
  );
  const waitFor = async (pattern: RegExp, ms = 3000): Promise<string> => {
    for (const deadline = Date.now() + ms; Date.now() < deadline; await sleep(20)) {
      if (pattern.test(stdout)) return stdout;
      if (status) break;
    }
    throw new Error(
      `helper ${label(args)}: no ${pattern} on stdout; stdout ${JSON.stringify(stdout)}, stderr ${JSON.stringify(stderr)}`,
    );
  };
  const helper: Helper = {
    pid: child.pid!,
    child,
    stdout: () => stdout,
    stderr: () => stderr,
    waitFor,
    ended,
    exited,
  };
  helpers.push(helper);
  return helper;
}

/** Runs the helper to its end, killing it if it takes longer than `ms`. */
async function run(args: string[], ms = 5000): Promise<Exit> {
  const helper = start(args);
  const timer = setTimeout(() => helper.child.kill('SIGKILL'), ms);
  try {
    return await helper.exited;
  } finally {
    clearTimeout(timer);
  }
}

const sh = (mode: string[], script: string): string[] => [...mode, '--', '/bin/sh', '-c', script];

/** `key=value` lines of a command's output: the values of `key`, in order. */
function values(stdout: string, key: string): string[] {
  return stdout
    .split('\n')
    .filter((line) => line.startsWith(`${key}=`))
    .map((line) => line.slice(key.length + 1));
}

function value(stdout: string, key: string): string | undefined {
  return values(stdout, key)[0];
}

interface Stat {
  comm: string;
  state: string;
  ppid: number;
  pgrp: number;
  tpgid: number;
}

/** /proc/PID/stat as this (host) process sees it, or undefined when the pid is gone. */
function stat(pid: number): Stat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  const close = text.lastIndexOf(')');
  const fields = text.slice(close + 2).split(' ');
  return {
    comm: text.slice(text.indexOf('(') + 1, close),
    state: fields[0]!,
    ppid: Number(fields[1]),
    pgrp: Number(fields[2]),
    tpgid: Number(fields[5]),
  };
}

/** A zombie has ended; only its parent's wait is missing. */
function alive(pid: number): boolean {
  const state = stat(pid)?.state;
  return state !== undefined && state !== 'Z' && state !== 'X';
}

/** Every descendant of `pid`, parents before children (this kernel may lack /proc/PID/task/TID/children). */
function descendants(pid: number): number[] {
  const parents = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const entry = stat(Number(name));
    if (entry) parents.set(entry.ppid, [...(parents.get(entry.ppid) ?? []), Number(name)]);
  }
  const found: number[] = [];
  const walk = (parent: number): void => {
    for (const child of parents.get(parent) ?? []) {
      found.push(child);
      walk(child);
    }
  };
  walk(pid);
  return found;
}

/** The pids of `pids` still alive after up to `ms`. */
async function survivors(pids: number[], ms = 2000): Promise<number[]> {
  for (const deadline = Date.now() + ms; Date.now() < deadline; await sleep(50)) {
    if (!pids.some(alive)) return [];
  }
  return pids.filter(alive);
}

function describeProcesses(pids: number[]): string {
  return pids.map((pid) => `${pid} ${stat(pid)?.comm ?? '?'}`).join(', ');
}

const INIT_ARGV = (mode: string[], script: string): string => [HELPER, ...sh(mode, script)].join(' ');

describe('bin/tether-exec on this host', () => {
  after(() => {
    for (const helper of helpers) {
      if (helper.child.exitCode === null && helper.child.signalCode === null) helper.child.kill('SIGKILL');
    }
    for (const pid of ptyPids) {
      if (alive(pid)) process.kill(pid, 'SIGKILL');
    }
  });

  describe('--new-container --init: the container walls', () => {
    it('runs the command as pid 2 under the helper as pid 1, seeing only its own processes, Docker /dev, caps and /sys, with mounts and device nodes refused, and leaves the host mounts alone', async (t) => {
      if (!canRun(t)) return;
      const hostMounts = readFileSync('/proc/self/mountinfo', 'utf8');
      const script = [
        'echo "pid=$$"',
        `echo "init=$(tr '\\0' '\\n' </proc/1/cmdline | head -4 | tr '\\n' ' ')"`,
        // The glob is expanded once, before any child runs: the container's processes at that moment.
        'cd /proc && for p in [0-9]*; do echo "proc=$p $(cat $p/comm)"; done; cd /',
        `echo "dev=$(ls /dev | tr '\\n' ' ')"`,
        `echo "eff=$(awk '$1 == "CapEff:" { print $2 }' /proc/self/status)"`,
        `echo "bnd=$(awk '$1 == "CapBnd:" { print $2 }' /proc/self/status)"`,
        `echo "sys=$(awk '$5 == "/sys" { print $6 }' /proc/self/mountinfo)"`,
        '[ -w /sys/kernel ] && echo sys-writable=yes || echo sys-writable=no',
        'echo "firmware=$(ls -A /sys/firmware | wc -l)"',
        'mount -t tmpfs x /mnt; echo "mount=$?"',
        `echo "mnt=$(awk '$5 == "/mnt" { print $9 }' /proc/self/mountinfo)"`,
        'mknod /dev/m c 1 1; echo "mknod=$?"',
        'head -c1 /dev/m >/dev/null; echo "head=$?"',
      ].join('\n');
      const result = await run(sh(CONTAINER, script));
      assert.equal(result.code, 0, result.stderr);
      const out = result.stdout;
      assert.equal(value(out, 'pid'), '2');
      assert.equal(value(out, 'init'), `${HELPER} --new-container --init -- `);
      assert.deepEqual(values(out, 'proc'), ['1 tether-exec', '2 sh']);
      assert.equal(value(out, 'dev'), `${DOCKER_DEV} `);
      assert.equal(value(out, 'eff'), DOCKER_CAPS);
      assert.equal(value(out, 'bnd'), DOCKER_CAPS);
      assert.match(value(out, 'sys') ?? '', /^ro,/);
      assert.equal(value(out, 'sys-writable'), 'no');
      assert.equal(value(out, 'firmware'), '0');
      assert.notEqual(value(out, 'mount'), '0');
      assert.match(result.stderr, /mount: .*permission denied/i); // EPERM: no CAP_SYS_ADMIN
      assert.equal(value(out, 'mnt'), '', 'nothing was mounted on /mnt');
      assert.equal(value(out, 'mknod'), '0', 'CAP_MKNOD is kept, as under Docker');
      assert.notEqual(value(out, 'head'), '0');
      assert.match(result.stderr, /head: cannot open '\/dev\/m' for reading: Permission denied/);
      assert.equal(readFileSync('/proc/self/mountinfo', 'utf8'), hostMounts, 'the host mounts are unchanged');
    });
  });

  describe('--new-container without --init', () => {
    it('runs the command as pid 1, where a shell with no trap ignores SIGTERM, and FORWARD_SIGKILL kills it', async (t) => {
      if (!canRun(t)) return;
      const helper = start(sh(CONTAINER_NO_INIT, 'echo "pid=$$"; while :; do sleep 0.1; done'));
      await helper.waitFor(/^pid=\d+$/m);
      assert.equal(value(helper.stdout(), 'pid'), '1');
      process.kill(helper.pid, 'SIGTERM');
      await sleep(500);
      assert.equal(helper.child.exitCode, null, 'still running after SIGTERM');
      assert.equal(helper.child.signalCode, null, 'still running after SIGTERM');
      process.kill(helper.pid, FORWARD_SIGKILL);
      const result = await helper.exited;
      assert.equal(result.signal, 'SIGKILL');
    });
  });

  describe('the relay hands back the command exit', () => {
    it('exit 3 gives exit code 3', async (t) => {
      if (!canRun(t)) return;
      for (const mode of ALL_MODES) {
        const result = await run(sh(mode, 'exit 3'));
        assert.deepEqual([result.code, result.signal], [3, null], label(mode));
      }
    });

    it('a command killed by SIGTERM gives signal SIGTERM (as pid 1 without --init, the shell ignores it)', async (t) => {
      if (!canRun(t)) return;
      for (const mode of [PLAIN, DEV_INIT, CONTAINER]) {
        const result = await run(sh(mode, 'kill -TERM $$; echo survived'));
        assert.deepEqual([result.code, result.signal], [null, 'SIGTERM'], label(mode));
        assert.equal(result.stdout, '', label(mode));
      }
      const pidOne = await run(sh(CONTAINER_NO_INIT, 'kill -TERM $$; echo survived'));
      assert.deepEqual([pidOne.code, pidOne.signal, pidOne.stdout], [0, null, 'survived\n']);
    });

    it('a missing command gives 127 and says so on stderr', async (t) => {
      if (!canRun(t)) return;
      for (const mode of ALL_MODES) {
        const result = await run([...mode, '--', 'no-such-command-xyz']);
        assert.equal(result.code, 127, label(mode));
        assert.match(
          result.stderr,
          /tether: exec: "no-such-command-xyz": executable file not found in \$PATH/,
          label(mode),
        );
      }
    });

    it('a directory as the command gives 126', async (t) => {
      if (!canRun(t)) return;
      for (const mode of ALL_MODES) {
        const result = await run([...mode, '--', '/']);
        assert.equal(result.code, 126, label(mode));
        assert.match(result.stderr, /tether: exec: "\/": permission denied/i, label(mode));
      }
    });
  });

  describe('signals forwarded through the relay and the init', () => {
    it('SIGTERM sent to the helper reaches a trap in the command, whose exit code comes back', async (t) => {
      if (!canRun(t)) return;
      for (const mode of ALL_MODES) {
        const helper = start(
          sh(mode, `trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done`),
        );
        await helper.waitFor(/^ready$/m);
        process.kill(helper.pid, 'SIGTERM');
        const result = await helper.exited;
        assert.deepEqual(
          [result.code, result.signal, result.stdout],
          [7, null, 'ready\ngot TERM\n'],
          label(mode),
        );
      }
    });

    it('with --tty, ctrl-c on the terminal reaches the command once, not twice, and FORWARD_SIGKILL ends the session', async (t) => {
      if (!canRun(t)) return;
      const modes = [
        ['--new-container', '--init', '--tty'],
        ['--init', '--tty'],
        ['--new-container', '--tty'],
      ];
      for (const mode of modes) {
        const terminal = pty.spawn(
          HELPER,
          sh(mode, `trap 'echo got INT' INT; echo ready; while :; do sleep 1; done`),
          {
            cols: 80,
            rows: 24,
          },
        );
        ptyPids.add(terminal.pid);
        let output = '';
        terminal.onData((data) => (output += data));
        const exited = new Promise<{ exitCode: number; signal?: number }>((resolve) =>
          terminal.onExit(resolve),
        );
        for (let i = 0; i < 150 && !output.includes('ready'); i++) await sleep(20);
        assert.match(output, /ready/, `${label(mode)}: ${JSON.stringify(output)}`);

        // Only the command's group is in the terminal's foreground: the relay and the init above it never get
        // the terminal's SIGINT, so they never forward a second one.
        const relay = terminal.pid;
        const below = descendants(relay).filter((pid) => stat(pid)?.comm !== 'sleep');
        const command = below.find((pid) => stat(pid)?.comm === 'sh');
        assert.ok(command, `${label(mode)}: the command under the helper (${describeProcesses(below)})`);
        const foreground = stat(command)!.tpgid;
        assert.equal(
          foreground,
          stat(command)!.pgrp,
          `${label(mode)}: the command leads the foreground group`,
        );
        for (const helperPid of [relay, ...below.filter((pid) => pid !== command)]) {
          assert.notEqual(
            stat(helperPid)?.pgrp,
            foreground,
            `${label(mode)}: helper ${helperPid} in the foreground`,
          );
        }

        terminal.write('\x03');
        await sleep(800);
        assert.equal(output.match(/got INT/g)?.length ?? 0, 1, `${label(mode)}: ${JSON.stringify(output)}`);
        process.kill(relay, FORWARD_SIGKILL);
        const exit = await exited;
        assert.equal(exit.signal, 9, `${label(mode)}: ended by SIGKILL`);
      }
    });
  });

  describe('orphans are reaped by the init', () => {
    // 50 grandchildren that exit at once, orphaned: only the init can reap them.
    const orphans = (zombieFilter: string) =>
      [
        'for i in $(seq 50); do ( true & ); done',
        'sleep 1',
        `echo "zombies=$(cat /proc/[0-9]*/stat 2>/dev/null | awk -v init="$PPID" '$3 == "Z" && ${zombieFilter} { print $1 }' | tr '\\n' ' ')"`,
      ].join('\n');

    it('in a container (the init is pid 1): no zombie anywhere in its /proc', async (t) => {
      if (!canRun(t)) return;
      const result = await run(sh(CONTAINER, orphans('1')));
      assert.equal(result.code, 0, result.stderr);
      assert.equal(value(result.stdout, 'zombies'), '');
    });

    it('in --dev style (--init, no namespaces; the init is a child subreaper): no zombie among its children', async (t) => {
      if (!canRun(t)) return;
      // The host's /proc: only the init's children are the container's.
      const result = await run(sh(DEV_INIT, orphans('$4 == init')));
      assert.equal(result.code, 0, result.stderr);
      assert.equal(value(result.stdout, 'zombies'), '');
    });
  });

  describe('--join: exec sessions in a running container', () => {
    it('sees the container PID namespace and its processes, has its namespaces and capabilities, and relays the exit code', async (t) => {
      if (!canRun(t)) return;
      const mainScript = 'echo ready; while :; do sleep 1; done';
      const main = start([...sh(CONTAINER, mainScript), 'main-marker']);
      await main.waitFor(/^ready$/m);
      const script = [
        `echo "init=$(tr '\\0' ' ' </proc/1/cmdline)"`,
        `echo "main=$(tr '\\0' ' ' </proc/2/cmdline)"`,
        'for ns in pid mnt ipc uts cgroup; do echo "ns=$ns $(readlink /proc/self/ns/$ns)"; done',
        `for p in self 2; do echo "caps=$p $(grep -E '^Cap(Prm|Eff|Bnd):' /proc/$p/status | awk '{ print $2 }' | tr '\\n' ' ')"; done`,
        'exit 5',
      ].join('\n');
      const result = await run(sh(['--join', String(main.pid)], script));
      assert.equal(result.code, 5, result.stderr);
      const out = result.stdout;
      assert.equal(value(out, 'init'), `${INIT_ARGV(CONTAINER, mainScript)} main-marker `);
      assert.equal(value(out, 'main'), `/bin/sh -c ${mainScript} main-marker `);
      const expected = ['pid_for_children', 'mnt', 'ipc', 'uts', 'cgroup'].map(
        (ns) => `${ns.replace('_for_children', '')} ${readlinkSync(`/proc/${main.pid}/ns/${ns}`)}`,
      );
      assert.deepEqual(values(out, 'ns'), expected);
      const caps = values(out, 'caps');
      assert.equal(caps[0], `self ${DOCKER_CAPS} ${DOCKER_CAPS} ${DOCKER_CAPS} `);
      assert.equal(caps[1], `2 ${DOCKER_CAPS} ${DOCKER_CAPS} ${DOCKER_CAPS} `);
      process.kill(main.pid, FORWARD_SIGKILL);
      assert.equal((await main.exited).signal, 'SIGKILL');
    });

    it('fails with 126 and a clear message when the pid is gone', async (t) => {
      if (!canRun(t)) return;
      const gone = spawn('true');
      await new Promise((resolve) => gone.once('exit', resolve));
      const result = await run(['--join', String(gone.pid), '--', 'true']);
      assert.equal(result.code, 126);
      assert.match(
        result.stderr,
        new RegExp(`tether: the container is not running \\(/proc/${gone.pid}/mountinfo`),
      );
    });

    // The helper cannot tell a container still being made from a process that is none: it waits for the
    // container's view as long as an early exec may need (READY_WAIT_MS, 10 s) before it gives up.
    it(
      'fails with 126 and a clear message when the pid is not a container helper',
      { timeout: 20_000 },
      async (t) => {
        if (!canRun(t)) return;
        const result = await run(['--join', String(process.pid), '--', 'true'], 15_000);
        assert.equal(result.code, 126);
        assert.match(result.stderr, /tether: the container did not finish starting within 10 s/);
      },
    );
  });

  describe('the helper killed outright takes what it runs with it (PR_SET_PDEATHSIG)', () => {
    const script = [
      'sleep 30 >/dev/null 2>&1 & echo "grandchild=$!"',
      // A grandchild that left the command's process group and session: nothing is expected to reach it.
      'setsid sleep 30 >/dev/null 2>&1 & echo "away=$!"',
      'echo "command=$$"',
      'wait',
    ].join('\n');

    interface Killed {
      stdout: string;
      /** What was below the helper when it was killed: pid, name, parent and group. */
      below: Map<number, Stat>;
    }
    /** Processes the helper left behind, killed after each test (if their pid still names them). */
    const killed: Killed[] = [];
    afterEach(() => {
      for (const { below } of killed.splice(0)) {
        for (const [pid, was] of below)
          if (alive(pid) && stat(pid)?.comm === was.comm) process.kill(pid, 'SIGKILL');
      }
    });

    async function killHelper(mode: string[]): Promise<Killed> {
      const helper = start(sh(mode, script));
      await helper.waitFor(/^command=\d+$/m);
      const found: Killed = {
        stdout: helper.stdout(),
        below: new Map(descendants(helper.pid).map((pid) => [pid, stat(pid)!])),
      };
      killed.push(found);
      process.kill(helper.pid, 'SIGKILL');
      await helper.ended; // not its output's end: a survivor may hold the pipe
      return found;
    }

    const show = ({ below }: Killed, pids: number[]): string =>
      pids.map((pid) => `${pid} ${below.get(pid)?.comm} (pgrp ${below.get(pid)?.pgrp})`).join(', ');

    it('--init without namespaces (--dev): the init and the command die with the helper', async (t) => {
      if (!canRun(t)) return;
      const found = await killHelper(DEV_INIT);
      const command = Number(value(found.stdout, 'command'));
      const init = found.below.get(command)?.ppid;
      assert.ok(
        init !== undefined,
        `the command ${command} was below the helper: ${show(found, [...found.below.keys()])}`,
      );
      assert.equal(found.below.get(init)?.comm, 'tether-exec');
      assert.equal(show(found, await survivors([init, command])), '');
    });

    it(
      '--init without namespaces (--dev): a grandchild in the command process group dies with the helper',
      // The init's parent-death signal is one it acts on: it kills the command's group, then exits.
      async (t) => {
        if (!canRun(t)) return;
        const found = await killHelper(DEV_INIT);
        const command = Number(value(found.stdout, 'command'));
        const grandchild = Number(value(found.stdout, 'grandchild'));
        assert.equal(found.below.get(grandchild)?.pgrp, command, 'the grandchild is in the command group');
        assert.equal(show(found, await survivors([grandchild])), '');
      },
    );

    it(
      'a command run as another user (--uid) dies with the helper too, with --init (--dev) or as pid 1',
      // The helper arms the parent-death signal again after changing ids (the kernel clears it then).
      async (t) => {
        if (!canRun(t)) return;
        const left: string[] = [];
        for (const mode of [DEV_INIT, CONTAINER_NO_INIT]) {
          const found = await killHelper([...mode, '--uid', '65534', '--gid', '65534']);
          const command = [...found.below].find(([, entry]) => entry.comm === 'sh')?.[0];
          assert.ok(
            command,
            `${label(mode)}: the command below the helper: ${show(found, [...found.below.keys()])}`,
          );
          const survivor = show(found, await survivors([command]));
          if (survivor) left.push(`${label(mode)}: ${survivor}`);
        }
        assert.deepEqual(left, []);
      },
    );

    it('--new-container --init: nothing of the container survives, not even a grandchild that left its group', async (t) => {
      if (!canRun(t)) return;
      const found = await killHelper(CONTAINER);
      const all = [...found.below.keys()];
      assert.equal(all.length, 4, `init, command and two grandchildren: ${show(found, all)}`);
      assert.equal(show(found, await survivors(all)), '');
    });
  });
});
