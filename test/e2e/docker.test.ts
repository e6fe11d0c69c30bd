/**
 * tetherd with real VMs (QEMU, TCG) and the real docker CLI, used as a person would: attached runs, an -it
 * shell driven through tmux, a long-running web server with a counter (ports, exec, attach from two
 * clients, cp, logs, stop, restart, kill, rm, events, memory), tetherd killed with -9 under a streaming
 * container and started again, and a VM killed from outside. Boots cost ~6 s each under TCG, so there are
 * few containers and each carries many assertions; the `it`s run in order and share the daemon.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { REPO, hasCommand, need } from '../helpers/prerequisites.ts';
import {
  BUSYBOX_IMAGE,
  BUSYBOX_IMAGE_TAR,
  startTetherd,
  tetherdPrerequisites,
  type DockerResult,
  type Tetherd,
} from '../helpers/tetherd.ts';
import { BUSYBOX_TAR, vmPrerequisites } from '../helpers/vm.ts';

const TMUX = ['-L', `tether-e2e-${process.pid}`];
const MIB = 1024 * 1024;

/** A port that was free a moment ago: bound by the kernel's choice, then let go. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

function tmux(...args: string[]): string {
  return execFileSync('tmux', [...TMUX, ...args], { encoding: 'utf8' });
}

/** The pane's visible text, trailing blank lines dropped. */
function pane(target: string): string {
  return tmux('capture-pane', '-p', '-t', target).replace(/\n+$/, '\n');
}

async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 60_000,
  describeLast: () => string = () => '',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline)
      assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}\n${describeLast()}`);
    await sleep(100);
  }
}

function waitForPane(target: string, pattern: RegExp, timeoutMs = 60_000): Promise<string> {
  return waitFor(
    `${pattern} in tmux pane ${target}`,
    () => {
      const text = pane(target);
      return pattern.test(text) ? text : undefined;
    },
    timeoutMs,
    () => `pane:\n${pane(target)}`,
  );
}

/** A docker CLI left running (attach, logs -f, events): its output so far, and a way to end it. */
interface Background {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exited: Promise<number | null>;
  kill(): Promise<void>;
}

const backgrounds = new Set<Background>();

function background(daemon: Tetherd, args: string[]): Background {
  const child = spawn('docker', ['-H', daemon.host, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (err += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const self: Background = {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    kill: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
      backgrounds.delete(self);
    },
  };
  backgrounds.add(self);
  return self;
}

/** The counter values in `tick N` lines, in order. */
function ticks(text: string): number[] {
  return [...text.matchAll(/^(?:\S+ )?tick (\d+)$/gm)].map((match) => Number(match[1]));
}

function assertConsecutive(values: number[], what: string): void {
  for (let i = 1; i < values.length; i++)
    assert.equal(values[i], values[i - 1]! + 1, `${what}: ${values[i - 1]} is followed by ${values[i]}`);
}

/** Exactly `tick FROM\n` … `tick TO\n`. */
function counterText(from: number, to: number): string {
  let text = '';
  for (let i = from; i <= to; i++) text += `tick ${i}\n`;
  return text;
}

function unixSeconds(ms = Date.now()): string {
  return (ms / 1000).toFixed(3);
}

describe('tetherd under QEMU, driven by the docker CLI', { timeout: 600_000 }, () => {
  let daemon: Tetherd | undefined;
  let root = '';
  const started = Date.now();

  const docker = (args: string[], options?: { input?: string | Buffer }): Promise<DockerResult> =>
    daemon!.docker(args, options);
  /** Runs docker and insists on exit 0; returns stdout. */
  const ok = async (args: string[], options?: { input?: string | Buffer }): Promise<string> => {
    const result = await docker(args, options);
    assert.equal(result.code, 0, `docker ${args.join(' ')} exited ${result.code}: ${result.stderr}`);
    return result.stdout;
  };
  const inspect = async (ref: string, format: string): Promise<string> =>
    (await ok(['inspect', '-f', format, ref])).trim();
  const inspectState = async (ref: string): Promise<Record<string, unknown>> =>
    JSON.parse(await inspect(ref, '{{json .State}}')) as Record<string, unknown>;
  const events = async (since: string, until: string, container: string): Promise<string[]> =>
    (
      await ok([
        'events',
        '--since',
        since,
        '--until',
        until,
        '--filter',
        `container=${container}`,
        '--format',
        '{{.Action}}',
      ])
    )
      .split('\n')
      .filter(Boolean);
  const skipUnlessReady = (t: { skip(message?: string): void }): boolean => {
    if (daemon) return false;
    t.skip('no tetherd');
    return true;
  };

  before(async (t) => {
    if (!need(t as never, { ...vmPrerequisites(), ...tetherdPrerequisites(), tmux: hasCommand('tmux') }))
      return;
    daemon = await startTetherd({ driver: 'qemu' });
    root = daemon.root;
  });

  after(async () => {
    for (const child of [...backgrounds]) await child.kill();
    try {
      tmux('kill-server');
    } catch {
      // no tmux server was started
    }
    if (!daemon) return;
    await daemon.dispose();
    // A SIGKILLed process lingers for a moment; a zombie has no command line left to match.
    const left = (): Promise<string> =>
      new Promise((resolve) => execFile('pgrep', ['-a', '-f', root], (_error, stdout) => resolve(stdout)));
    let running = await left();
    for (let i = 0; i < 50 && running !== ''; i++) {
      await sleep(200);
      running = await left();
    }
    assert.equal(running, '', 'no QEMU (or anything else) of this root is left running');
    process.stderr.write(`# docker.test.ts: ${((Date.now() - started) / 1000).toFixed(1)} s of wall time\n`);
  });

  it('loads the bundled image with docker load and lists it', async (t) => {
    if (skipUnlessReady(t)) return;
    assert.match(execFileSync('tar', ['tf', BUSYBOX_TAR], { encoding: 'utf8' }), /^\.\/bin\/httpd$/m);
    assert.match(await ok(['load', '-i', BUSYBOX_IMAGE_TAR]), /Loaded image: tether\/busybox:latest/);
    const images = await ok(['images', '--format', '{{.Repository}}:{{.Tag}} {{.ID}}']);
    assert.match(images, /^tether\/busybox:latest [0-9a-f]{12}$/m);
  });

  it('runs an attached container: stdout and stderr apart, its exit code, logs byte-identical, health', async (t) => {
    if (skipUnlessReady(t)) return;
    const before = Date.now();
    const run = await docker([
      'run',
      '--name',
      'r1',
      BUSYBOX_IMAGE,
      'sh',
      '-c',
      // The pauses order the two pipes' bytes in the log (it keeps each pipe's order, not their interleaving).
      'i=0; while [ $i -lt 300 ]; do echo "out $i"; i=$((i+1)); done; usleep 300000; echo "err 1" >&2; ' +
        'usleep 300000; echo last; printf "no newline"; exit 5',
    ]);
    const afterRun = Date.now();
    const expectedOut = `${Array.from({ length: 300 }, (_, i) => `out ${i}\n`).join('')}last\nno newline`;
    assert.equal(run.code, 5, `exit status is the command's: ${run.stderr}`);
    assert.equal(run.stdout, expectedOut);
    assert.equal(run.stderr, 'err 1\n');

    const logs = await docker(['logs', 'r1']);
    assert.equal(logs.code, 0);
    assert.equal(logs.stdout, run.stdout, 'docker logs gives the same stdout bytes');
    assert.equal(logs.stderr, run.stderr, 'and the same stderr bytes');

    const withTimes = await docker(['logs', '-t', 'r1']);
    const stamped = withTimes.stdout.split('\n').filter(Boolean);
    assert.equal(stamped.length, 302);
    assert.match(withTimes.stderr, /^\S+Z err 1\n$/);
    for (const line of [...stamped, withTimes.stderr.trim()]) {
      const match = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (.*)$/.exec(line);
      assert.ok(match, `a timestamp starts ${JSON.stringify(line)}`);
      const at = Date.parse(match[1]!);
      assert.ok(at >= before - 2000 && at <= afterRun + 2000, `${match[1]} lies within the run`);
    }
    assert.match(stamped[0]!, / out 0$/);
    assert.match(stamped[301]!, /Z no newline$/);
    const tail2 = await docker(['logs', '--tail', '2', 'r1']);
    assert.deepEqual([tail2.stdout, tail2.stderr], ['last\nno newline', '']);
    const tail3 = await docker(['logs', '--tail', '3', 'r1']);
    assert.deepEqual(
      [tail3.stdout, tail3.stderr],
      ['last\nno newline', 'err 1\n'],
      '--tail counts both streams',
    );

    assert.equal(await inspect('r1', '{{.State.Status}} {{.State.ExitCode}}'), 'exited 5');
    const health = execFileSync(join(REPO, 'bin/tetherctl'), ['health', '--socket', daemon!.socket, 'r1'], {
      encoding: 'utf8',
    });
    const stages = [
      'kernel ok',
      'agent ok',
      'modules ok',
      'config ok',
      'network ok',
      'storage ok',
      'channel ok',
      'process-started ok',
      'process-exited ok',
      'shutdown ok',
    ];
    let from = 0;
    for (const stage of stages) {
      const at = health.indexOf(` guest ${stage}`, from);
      assert.ok(at > from, `health shows "${stage}" after the stages before it:\n${health}`);
      from = at;
    }
    assert.match(health, /^r1 \([0-9a-f]{12}\): exited, boot 1/m);
    assert.match(health, /exit=5/);
  });

  it('runs docker run -it in tmux: prompt, terminal size, detach with ctrl-p ctrl-q, attach, exit 3', async (t) => {
    if (skipUnlessReady(t)) return;
    tmux(
      'new-session',
      '-d',
      '-s',
      'it',
      '-x',
      '120',
      '-y',
      '40',
      `docker -H ${daemon!.host} run -it --name it1 ${BUSYBOX_IMAGE}; echo CLI-EXIT=$?; sleep 3600`,
    );
    await waitForPane('it', /^\/ #$/m, 120_000);
    tmux('send-keys', '-t', 'it', 'stty size', 'Enter');
    await waitForPane('it', /^40 120$/m);
    tmux('send-keys', '-t', 'it', 'echo $((6*7)) > /tmp/answer; cat /tmp/answer', 'Enter');
    await waitForPane('it', /^42$/m);
    tmux('resize-window', '-t', 'it', '-x', '100', '-y', '30');
    await sleep(500);
    tmux('send-keys', '-t', 'it', 'clear; stty size', 'Enter');
    await waitForPane('it', /^30 100$/m);

    tmux('send-keys', '-t', 'it', 'C-p', 'C-q');
    await waitForPane('it', /CLI-EXIT=0$/m);
    assert.equal(
      await inspect('it1', '{{.State.Status}}'),
      'running',
      'a detach leaves the container running',
    );
    assert.match(await ok(['ps', '--format', '{{.Names}} {{.Status}}']), /^it1 Up /m);

    const attaches = (): number => daemon!.logs().split('"msg":"attach"').length - 1;
    const attachedBefore = attaches();
    tmux(
      'respawn-pane',
      '-k',
      '-t',
      'it',
      `docker -H ${daemon!.host} attach it1; echo CLI-EXIT=$?; sleep 3600`,
    );
    await waitFor('the second attach', () => (attaches() > attachedBefore ? true : undefined));
    await sleep(300); // the CLI puts its terminal in raw mode after the attach request
    tmux('send-keys', '-t', 'it', 'cat /tmp/answer; echo back-$((1+1))', 'Enter');
    await waitForPane('it', /^42\nback-2$/m);
    tmux('send-keys', '-t', 'it', 'exit 3', 'Enter');
    await waitForPane('it', /CLI-EXIT=3$/m);
    assert.equal(await inspect('it1', '{{.State.Status}} {{.State.ExitCode}}'), 'exited 3');
    tmux('kill-session', '-t', 'it');
  });

  describe('a long-running container: web server and counter', () => {
    let port = 0;
    let t0 = '';
    let scratch = '';
    const script =
      'trap "echo stopping; exit 42" TERM; mkdir -p /www; echo hello-from-httpd > /www/index.html; ' +
      'httpd -p 80 -h /www; i=0; while true; do echo "tick $i"; i=$((i+1)); usleep 100000; done';
    const page = async (): Promise<string | undefined> => {
      try {
        const response = await fetch(`http://127.0.0.1:${port}/`);
        return response.ok ? await response.text() : undefined;
      } catch {
        return undefined;
      }
    };
    const stdoutTicks = async (): Promise<number[]> => ticks((await docker(['logs', 'web'])).stdout);

    it('starts detached with a published port and 512 MiB; the host fetches its page', async (t) => {
      if (skipUnlessReady(t)) return;
      port = await freePort();
      scratch = daemon!.dir;
      t0 = unixSeconds();
      const id = (
        await ok([
          'run',
          '-d',
          '--name',
          'web',
          '-m',
          '512m',
          '-p',
          `127.0.0.1:${port}:80`,
          BUSYBOX_IMAGE,
          'sh',
          '-c',
          script,
        ])
      ).trim();
      assert.match(id, /^[0-9a-f]{64}$/);
      await waitFor(
        'the counter',
        async () => ((await stdoutTicks()).length > 0 ? true : undefined),
        120_000,
      );
      assert.equal(await waitFor('the page', page, 30_000), 'hello-from-httpd\n');

      assert.equal((await ok(['port', 'web'])).trim(), `80/tcp -> 127.0.0.1:${port}`);
      assert.equal((await ok(['port', 'web', '80'])).trim(), `127.0.0.1:${port}`);
      const ps = await ok(['ps', '--filter', 'name=web', '--format', '{{.Names}}|{{.Ports}}|{{.Status}}']);
      assert.match(ps, new RegExp(`^web\\|127\\.0\\.0\\.1:${port}->80/tcp\\|Up `, 'm'));

      assert.equal(await inspect('web', '{{.HostConfig.Memory}}'), String(512 * MIB));
      // As under Docker: the container's own cgroup holds the limit; the VM has room for the agent besides.
      assert.equal((await ok(['exec', 'web', 'cat', '/sys/fs/cgroup/memory.max'])).trim(), String(512 * MIB));
      const meminfo = await ok(['exec', 'web', 'grep', 'MemTotal', '/proc/meminfo']);
      const totalKib = Number(/MemTotal:\s+(\d+) kB/.exec(meminfo)?.[1]);
      assert.ok(
        totalKib > 512 * 1024 && totalKib <= (512 + 144) * 1024,
        `the VM has the limit and its overhead: ${meminfo}`,
      );
    });

    it('docker exec: exit codes, -e, -u, -w, stdin, stdout and stderr apart, 127 for a missing command', async (t) => {
      if (skipUnlessReady(t)) return;
      assert.equal((await docker(['exec', 'web', 'sh', '-c', 'exit 4'])).code, 4);
      assert.equal(
        await ok([
          'exec',
          '-e',
          'FOO=bar baz',
          '-u',
          'nobody',
          '-w',
          '/www',
          'web',
          'sh',
          '-c',
          'echo "$FOO|$(id -un)|$(pwd)"',
        ]),
        'bar baz|nobody|/www\n',
      );
      const split = await docker(['exec', 'web', 'sh', '-c', 'echo to-out; echo to-err >&2']);
      assert.deepEqual([split.code, split.stdout, split.stderr], [0, 'to-out\n', 'to-err\n']);
      assert.equal(
        await ok(['exec', '-i', 'web', 'sh', '-c', 'tr a-z A-Z'], { input: 'piped in\n' }),
        'PIPED IN\n',
      );
      const missing = await docker(['exec', 'web', 'no-such-command']);
      assert.equal(missing.code, 127, missing.stderr);
      assert.match(missing.stderr, /no-such-command/);
    });

    it('docker exec -it in tmux gets a terminal of the pane size', async (t) => {
      if (skipUnlessReady(t)) return;
      tmux(
        'new-session',
        '-d',
        '-s',
        'ex',
        '-x',
        '90',
        '-y',
        '20',
        `docker -H ${daemon!.host} exec -it -w /www web sh; echo CLI-EXIT=$?; sleep 3600`,
      );
      await waitForPane('ex', /^\/www #$/m, 60_000);
      tmux('send-keys', '-t', 'ex', 'stty size; cat index.html; tty', 'Enter');
      await waitForPane('ex', /^20 90\nhello-from-httpd\n\/dev\/pts\/\d+$/m);
      tmux('send-keys', '-t', 'ex', 'exit 6', 'Enter');
      await waitForPane('ex', /CLI-EXIT=6$/m);
      tmux('kill-session', '-t', 'ex');
    });

    it('two docker attach --no-stdin clients at once both see new output', async (t) => {
      if (skipUnlessReady(t)) return;
      const already = Math.max(...(await stdoutTicks()));
      const clients = [0, 1].map(() =>
        background(daemon!, ['attach', '--no-stdin', '--sig-proxy=false', 'web']),
      );
      await waitFor(
        'five ticks on both attach clients',
        () => (clients.every((client) => ticks(client.stdout()).length >= 5) ? true : undefined),
        30_000,
        () => clients.map((client) => `stdout ${client.stdout()} stderr ${client.stderr()}`).join('\n'),
      );
      for (const client of clients) {
        const seen = ticks(client.stdout());
        assertConsecutive(seen, 'an attach client');
        assert.ok(seen[seen.length - 1]! > already, 'it sees output written after it attached');
        await client.kill();
      }
      assert.equal(await inspect('web', '{{.State.Status}}'), 'running', 'clients leaving stop nothing');
    });

    it('docker cp copies a file in, and a file and a directory out', async (t) => {
      if (skipUnlessReady(t)) return;
      const dir = join(scratch, 'cp');
      mkdirSync(dir);
      const payload = randomBytes(300 * 1024);
      writeFileSync(join(dir, 'in.bin'), payload);
      await ok(['cp', join(dir, 'in.bin'), 'web:/tmp/in.bin']);
      const sum = await ok(['exec', 'web', 'md5sum', '/tmp/in.bin']);
      assert.equal(
        sum.split(' ')[0],
        createHash('md5').update(payload).digest('hex'),
        'the bytes arrive whole',
      );
      await ok(['cp', 'web:/www/index.html', join(dir, 'index.html')]);
      assert.equal(readFileSync(join(dir, 'index.html'), 'utf8'), 'hello-from-httpd\n');
      await ok(['cp', 'web:/www', join(dir, 'www')]);
      assert.equal(readFileSync(join(dir, 'www', 'index.html'), 'utf8'), 'hello-from-httpd\n');
      await ok(['cp', 'web:/tmp/in.bin', join(dir, 'back.bin')]);
      assert.ok(readFileSync(join(dir, 'back.bin')).equals(payload), 'and leave whole');
    });

    it('docker logs -f --since follows from that moment on', async (t) => {
      if (skipUnlessReady(t)) return;
      const sinceMs = Date.now() - 1000;
      const follower = background(daemon!, ['logs', '-f', '-t', '--since', unixSeconds(sinceMs), 'web']);
      const startedAt = Date.now();
      await waitFor(
        'followed lines written after logs -f started',
        () =>
          follower
            .stdout()
            .split('\n')
            .filter(Boolean)
            .some((line) => Date.parse(line.split(' ')[0]!) > startedAt + 1000)
            ? true
            : undefined,
        30_000,
        () => follower.stdout() + follower.stderr(),
      );
      await follower.kill();
      const lines = follower.stdout().split('\n').filter(Boolean);
      for (const line of lines)
        assert.ok(Date.parse(line.split(' ')[0]!) >= sinceMs, `${line} is not before --since`);
      const seen = ticks(lines.join('\n'));
      assert.ok(seen.length >= 10, `a second of history and a second followed: ${seen.length} ticks`);
      assertConsecutive(seen, 'logs -f');
    });

    it('survives tetherd killed with -9: the VM runs on, logs stay gapless, attach works again', async (t) => {
      if (skipUnlessReady(t)) return;
      const eventsBefore = await events(t0, unixSeconds(), 'web');
      for (const action of ['create', 'start'])
        assert.ok(eventsBefore.includes(action), `${action} in ${eventsBefore}`);
      assert.ok(
        eventsBefore.some((action) => action.startsWith('exec_start: md5sum')),
        'exec events too',
      );

      const vmPid = Number(await inspect('web', '{{.State.Pid}}'));
      const beforeKill = (await docker(['logs', 'web'])).stdout;
      const lastBefore = Math.max(...ticks(beforeKill));
      await daemon!.stop('SIGKILL');
      await sleep(2000);
      process.kill(vmPid, 0); // throws if the VM died with its daemon
      daemon = await startTetherd({ driver: 'qemu', dir: daemon!.dir });

      assert.equal(await inspect('web', '{{.State.Status}} {{.State.Pid}}'), `running ${vmPid}`);
      // Counted while no daemon watched: QEMU itself writes the log-port file.
      const afterRestart = (await docker(['logs', 'web'])).stdout;
      const last = Math.max(...ticks(afterRestart));
      assert.ok(
        last >= lastBefore + 10,
        `the counter went on while tetherd was down: ${lastBefore} → ${last}`,
      );
      assert.equal(afterRestart, counterText(0, last), 'byte-identical to a gapless counter');
      assert.ok(afterRestart.startsWith(beforeKill));

      const client = background(daemon!, ['attach', '--no-stdin', '--sig-proxy=false', 'web']);
      await waitFor(
        'attach after the restart',
        () => (ticks(client.stdout()).length >= 3 ? true : undefined),
        30_000,
      );
      assert.ok(ticks(client.stdout())[0]! > last);
      await client.kill();
      assert.equal(await ok(['exec', 'web', 'cat', '/www/index.html']), 'hello-from-httpd\n');
      assert.equal(await page(), 'hello-from-httpd\n', 'the published port still answers');
    });

    it('stop (its exit code), restart keeps the writable layer, kill gives 137, rm; events for each', async (t) => {
      if (skipUnlessReady(t)) return;
      const since = unixSeconds();
      await ok(['exec', 'web', 'sh', '-c', 'echo written-before > /kept.txt']);
      const stopStart = Date.now();
      assert.equal((await ok(['stop', 'web'])).trim(), 'web');
      assert.ok(Date.now() - stopStart < 9000, 'the TERM trap ended it before the 10 s grace');
      assert.equal(await inspect('web', '{{.State.Status}} {{.State.ExitCode}}'), 'exited 42');
      assert.match((await docker(['logs', '--tail', '1', 'web'])).stdout, /^stopping\n$/);
      assert.equal((await docker(['exec', 'web', 'true'])).code, 1, 'no exec in a stopped container');

      assert.equal((await ok(['restart', 'web'])).trim(), 'web');
      assert.equal(await ok(['exec', 'web', 'cat', '/kept.txt']), 'written-before\n');
      assert.equal(await waitFor('the page after the restart', page, 30_000), 'hello-from-httpd\n');
      await waitFor('the counter of the second boot', async () => {
        const out = (await docker(['logs', 'web'])).stdout;
        return /stopping\ntick 0\ntick 1\n/.test(out) ? true : undefined;
      });

      assert.equal((await ok(['kill', 'web'])).trim(), 'web');
      assert.equal((await ok(['wait', 'web'])).trim(), '137');
      const state = await inspectState('web');
      assert.deepEqual([state['Status'], state['ExitCode'], state['Error']], ['exited', 137, '']);
      const stdout = (await docker(['logs', 'web'])).stdout;
      const [first, second] = stdout.split('stopping\n');
      assert.ok(first !== undefined && second !== undefined);
      assert.equal(first, counterText(0, ticks(first).length - 1), 'the first boot counted without a gap');
      assert.equal(second, counterText(0, ticks(second).length - 1), 'and so did the second');

      assert.equal((await ok(['rm', 'web'])).trim(), 'web');
      const gone = await docker(['inspect', 'web']);
      assert.equal(gone.code, 1);
      assert.match(gone.stderr, /No such object: web/);
      await sleep(50);
      const seen = await events(since, unixSeconds(), 'web');
      // As Docker's: stop is a kill (TERM) then die then stop.
      const expected = ['kill', 'die', 'stop', 'start', 'restart', 'kill', 'die', 'destroy'];
      const lifecycle = seen.filter((action) => expected.includes(action));
      assert.deepEqual(lifecycle, expected, `events: ${seen.join(', ')}`);
    });
  });

  it('a VM killed from outside ends its container with an error, during and after the boot', async (t) => {
    if (skipUnlessReady(t)) return;
    const since = unixSeconds();
    await ok(['run', '-d', '--name', 'kq', BUSYBOX_IMAGE, 'sleep', '3600']);
    await waitFor(
      'the process in kq',
      async () => ((await docker(['exec', 'kq', 'true'])).code === 0 ? true : undefined),
      120_000,
    );
    const pid = Number(await inspect('kq', '{{.State.Pid}}'));
    assert.match(readFileSync(`/proc/${pid}/cmdline`, 'utf8'), /qemu-system/);
    process.kill(pid, 'SIGKILL');
    const state = await waitFor('kq to exit', async () => {
      const s = await inspectState('kq');
      return s['Status'] === 'exited' ? s : undefined;
    });
    assert.equal(state['ExitCode'], 137);
    assert.match(String(state['Error']), /the VM ended .*under the running container/);

    // Killed again, this time before the agent is up: a boot error, not a hang.
    await ok(['start', 'kq']);
    const second = Number(
      await waitFor('the second boot', async () => {
        const p = await inspect('kq', '{{.State.Pid}}');
        return p !== '0' && Number(p) !== pid ? p : undefined;
      }),
    );
    process.kill(second, 'SIGKILL');
    const failed = await waitFor(
      'kq to exit again',
      async () => {
        const s = await inspectState('kq');
        return s['Status'] === 'exited' ? s : undefined;
      },
      30_000,
    );
    assert.equal(failed['ExitCode'], 128);
    assert.match(String(failed['Error']), /the VM ended .*before the container process started/);
    const seen = await events(since, unixSeconds(), 'kq');
    assert.deepEqual(
      seen.filter((action) => ['create', 'start', 'die'].includes(action)),
      ['create', 'start', 'die', 'start', 'die'],
    );
    await ok(['rm', 'kq']);
  });
});
