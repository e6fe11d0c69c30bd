/**
 * Docker's own clients against one tetherd on the QEMU driver: docker-py (Debian's python3-docker, 5.x)
 * through test/e2e/clients/sdk_flow.py, which prints what each step saw as JSON, and docker-compose v1 (1.29)
 * on test/e2e/clients/compose/docker-compose.yml. Four boots: docker-py's attached run, its detached
 * container and that container's restart, and the compose service.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { REPO, hasCommand, need } from '../helpers/prerequisites.ts';
import { BUSYBOX_IMAGE_TAR, startTetherd, tetherdPrerequisites, type Tetherd } from '../helpers/tetherd.ts';
import { vmPrerequisites } from '../helpers/vm.ts';

const CLIENTS = join(REPO, 'test/e2e/clients');
const COMPOSE_DIR = join(CLIENTS, 'compose');
const PROJECT = 'tethertest';

/** Debian's python3 first (python3-docker 5.x); a `python3` earlier on PATH may carry another docker-py. */
function pythonWithDocker(): string | undefined {
  for (const python of ['/usr/bin/python3', 'python3'])
    try {
      execFileSync(python, ['-c', 'import docker'], { stdio: 'ignore' });
      return python;
    } catch {
      // try the next one
    }
  return undefined;
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}) {
  return new Promise<Run>((resolve) =>
    execFile(
      command,
      args,
      { timeout: 150_000, maxBuffer: 64 * 1024 * 1024, ...options },
      (error, stdout, stderr) =>
        resolve({
          code: error ? (typeof error.code === 'number' ? error.code : 1) : 0,
          stdout: stdout.toString(),
          stderr: stderr.toString(),
        }),
    ),
  );
}

type Step = { ok: boolean; error?: string; trace?: string } & Record<string, unknown>;

describe('docker-py and docker-compose against tetherd (QEMU)', { timeout: 300_000 }, () => {
  const python = pythonWithDocker();
  let daemon: Tetherd | undefined;
  let sdk: Record<string, Step> | undefined;

  before(async (t) => {
    const checks = {
      ...tetherdPrerequisites(),
      ...vmPrerequisites(),
      'python3 with the docker module (python3-docker)': python !== undefined,
      'docker-compose (v1)': hasCommand('docker-compose'),
    };
    if (!need(t as never, checks)) return;
    daemon = await startTetherd({ driver: 'qemu' });
  });
  after(async () => daemon?.dispose());

  const compose = (args: string[]) =>
    run('docker-compose', ['-p', PROJECT, ...args], {
      cwd: COMPOSE_DIR,
      env: { ...process.env, DOCKER_HOST: daemon!.host },
    });

  /** One step of the docker-py flow; its error and traceback are the failure message. */
  const step = (name: string): Step => {
    assert.ok(sdk, 'the docker-py flow did not run');
    const result = sdk[name];
    assert.ok(result, `sdk_flow.py printed no ${name} step`);
    assert.ok(result.ok, `${name}: ${result.error}\n${result.trace}`);
    return result;
  };

  it('docker-py runs its whole flow and prints a result for every step', async (t) => {
    if (!daemon) return t.skip('no tetherd');
    const result = await run(python!, [join(CLIENTS, 'sdk_flow.py'), daemon.host, BUSYBOX_IMAGE_TAR]);
    assert.equal(result.code, 0, `sdk_flow.py failed: ${result.stderr}`);
    sdk = JSON.parse(result.stdout) as Record<string, Step>;
    const slow = Object.entries(sdk).map(([name, s]) => `${name} ${String(s['seconds'])}s`);
    t.diagnostic(`step times: ${slow.join(', ')}`);
    assert.deepEqual(
      Object.entries(sdk)
        .filter(([, s]) => !s.ok)
        .map(([name, s]) => `${name}: ${s.error}`),
      [],
    );
  });

  it('negotiates the API: docker-py 5 asks /version by default and speaks 1.47', (t) => {
    if (!daemon) return t.skip('no tetherd');
    const version = step('version');
    t.diagnostic(`docker-py ${String(version['sdk'])}`);
    assert.equal(version['ping'], true);
    assert.equal(version['server_api'], '1.47');
    assert.equal(version['auto_api'], '1.47');
    assert.equal(version['default_api'], '1.47', 'version=None negotiates, no version="auto" needed');
  });

  it('images.load gives tether/busybox:latest', (t) => {
    if (!daemon) return t.skip('no tetherd');
    const load = step('load');
    assert.deepEqual(load['tags'], ['tether/busybox:latest']);
    assert.match(String(load['id']), /^sha256:[0-9a-f]{64}$/);
  });

  it('containers.run(detach=False) returns both streams as bytes and remove=True removes it', (t) => {
    if (!daemon) return t.skip('no tetherd');
    const once = step('run_attached');
    assert.equal(once['type'], 'bytes');
    assert.equal(once['output'], 'out-line\nerr-line\n');
    assert.equal(once['removed'], true);
  });

  it('containers.run(detach=True) gives a running container with its env and labels', (t) => {
    if (!daemon) return t.skip('no tetherd');
    const svc = step('run_detached');
    assert.equal(svc['status'], 'running');
    assert.equal(svc['name'], 'sdk-svc');
    assert.ok((svc['env'] as string[]).includes('FOO=from-run'));
    const list = step('list');
    assert.deepEqual(list['all'], ['sdk-svc']);
    assert.deepEqual(list['labeled'], ['sdk-svc']);
    const inspect = step('inspect');
    assert.equal(inspect['name'], '/sdk-svc');
    assert.equal(inspect['running'], true);
    assert.deepEqual(inspect['labels'], { 'tether.test': 'sdk' });
    assert.equal((inspect['cmd'] as string[])[0], 'sh');
  });

  it('logs(): whole, tail, timestamps, and stream=True follow=True', (t) => {
    if (!daemon) return t.skip('no tetherd');
    const logs = step('logs');
    assert.match(String(logs['logs']), /^tick 0\ntick 1\ntick 2\ntick 3\n/);
    assert.match(String(logs['tail']), /^tick \d+\ntick \d+\n$/);
    assert.match(String(logs['stamped']), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z tick \d+\n$/);
    const followed = String(step('logs_follow')['followed']);
    const numbers = [...followed.matchAll(/tick (\d+)/g)].map((m) => Number(m[1]));
    assert.ok(numbers.length >= 3, followed);
    numbers.forEach((n, i) => i > 0 && assert.equal(n, numbers[i - 1]! + 1, `consecutive: ${followed}`));
  });

  it('attach(stream=True) sees the running output', (t) => {
    if (!daemon) return t.skip('no tetherd');
    assert.match(String(step('attach')['attached']), /tick \d+\n(.|\n)*tick \d+\n/);
  });

  it('exec_run: environment, user, workdir, exit codes, demux and stream', (t) => {
    if (!daemon) return t.skip('no tetherd');
    const exec = step('exec_run');
    assert.equal(exec['exit_code'], 0);
    assert.equal(exec['output'], 'from-run from-exec\n/tmp\n65534\n');
    assert.equal(exec['failing_exit_code'], 3);
    assert.equal(exec['failing_output'], 'to-err\n');
    assert.deepEqual(exec['demux'], ['to-out\n', 'to-err\n']);
    assert.equal(exec['streamed'], 'a\nb\n');
  });

  it('put_archive then get_archive round-trips a file', (t) => {
    if (!daemon) return t.skip('no tetherd');
    const archive = step('archive');
    assert.equal(archive['put'], true);
    assert.equal(archive['cat'], 'put through docker-py\n');
    assert.deepEqual(archive['stat'], { name: 'sdk-put.txt', size: 22 });
    assert.deepEqual(archive['members'], ['sdk-put.txt']);
    assert.equal(archive['content'], 'put through docker-py\n');
  });

  it('top() lists the container process inside its VM', (t) => {
    if (!daemon) return t.skip('no tetherd');
    const top = step('top');
    const titles = top['titles'] as string[];
    assert.ok(titles.includes('PID'), titles.join(' '));
    const commands = (top['processes'] as string[][]).map((row) => row[row.length - 1]);
    t.diagnostic(`${titles.join(' ')} | ${commands.join(' | ')}`);
    assert.ok(
      commands.some((c) => c?.includes('tick')),
      commands.join('\n'),
    );
    assert.ok(!commands.some((c) => c?.startsWith('[')), 'no kernel threads');
  });

  it('kill() then wait() gives StatusCode 137; restart() boots it again; stop(); remove()', (t) => {
    if (!daemon) return t.skip('no tetherd');
    const kill = step('kill_wait');
    assert.deepEqual(kill['wait'], { StatusCode: 137 });
    assert.equal(kill['status'], 'exited');
    const restart = step('restart');
    assert.equal(restart['status'], 'running');
    assert.equal(restart['tick0_count'], 2, 'both boots in the one log');
    const stop = step('stop');
    assert.equal(stop['status'], 'exited');
    assert.ok([137, 143].includes((stop['wait'] as { StatusCode: number }).StatusCode));
    assert.equal(step('remove')['gone'], true);
    const missing = step('not_found');
    assert.equal(missing['raised'], 'NotFound');
    assert.equal(missing['status'], 404);
  });

  it('events(since, until) replays the lifecycle and ends', (t) => {
    if (!daemon) return t.skip('no tetherd');
    const events = step('events');
    const svc = (events['svc'] as string[]).filter((a) => !a.startsWith('exec_'));
    assert.deepEqual(svc, [
      'create',
      'start',
      'kill',
      'die',
      'start',
      'restart',
      'kill',
      'die',
      'stop',
      'destroy',
    ]);
    assert.ok((events['svc'] as string[]).includes('exec_die'));
    assert.deepEqual(events['once'], ['create', 'start', 'die', 'destroy']);
    assert.ok((events['types'] as string[]).includes('image'));
  });

  it('docker-compose up -d creates the project network and starts the service', async (t) => {
    if (!daemon) return t.skip('no tetherd');
    const up = await compose(['up', '-d']);
    assert.equal(up.code, 0, up.stderr);
    assert.match(up.stderr, /Creating network "tethertest_default"/);
    const networks = await daemon.docker(['network', 'ls', '--format', '{{.Name}}']);
    assert.ok(networks.stdout.split('\n').includes('tethertest_default'), networks.stdout);
    const inspect = await daemon.docker([
      'inspect',
      '--format',
      '{{json .Config.Labels}}',
      'tethertest_ticker_1',
    ]);
    const labels = JSON.parse(inspect.stdout) as Record<string, string>;
    assert.equal(labels['com.docker.compose.project'], PROJECT);
    assert.equal(labels['com.docker.compose.service'], 'ticker');
  });

  it('docker-compose ps (with -H) shows it up with its published port', async (t) => {
    if (!daemon) return t.skip('no tetherd');
    const ps = await run('docker-compose', ['-H', daemon.host, '-p', PROJECT, 'ps'], { cwd: COMPOSE_DIR });
    assert.equal(ps.code, 0, ps.stderr);
    assert.match(ps.stdout, /tethertest_ticker_1 .* Up +127\.0\.0\.1:\d+->8080\/tcp/);
    const again = await compose(['up', '-d']);
    assert.match(again.stderr, /tethertest_ticker_1 is up-to-date/);
  });

  it('docker-compose logs shows the lines', async (t) => {
    if (!daemon) return t.skip('no tetherd');
    let logs: Run | undefined;
    for (let i = 0; i < 120; i++) {
      logs = await compose(['logs', '--no-color']);
      if (/line 2\n/.test(logs.stdout)) break;
      await sleep(500);
    }
    assert.equal(logs!.code, 0, logs!.stderr);
    assert.match(
      logs!.stdout,
      /ticker_1 +\| greeting hello-from-compose\nticker_1 +\| line 0\nticker_1 +\| line 1\n/,
    );
  });

  it('docker-compose exec -T sees the environment; top lists the process', async (t) => {
    if (!daemon) return t.skip('no tetherd');
    const exec = await compose(['exec', '-T', 'ticker', 'sh', '-c', 'echo "$GREETING"; exit 5']);
    assert.equal(exec.stdout, 'hello-from-compose\n');
    assert.equal(exec.code, 5);
    const top = await compose(['top']);
    assert.equal(top.code, 0, top.stderr);
    assert.match(top.stdout, /tethertest_ticker_1[\s\S]*PID[\s\S]*while true/);
  });

  it('docker-compose down removes the container and the project network', async (t) => {
    if (!daemon) return t.skip('no tetherd');
    const down = await compose(['down', '-t', '2']);
    assert.equal(down.code, 0, down.stderr);
    assert.match(down.stderr, /Removing network tethertest_default/);
    const ps = await daemon.docker(['ps', '-a', '--format', '{{.Names}}']);
    assert.equal(ps.stdout, '');
    const networks = await daemon.docker(['network', 'ls', '--format', '{{.Name}}']);
    assert.ok(!networks.stdout.includes('tethertest'), networks.stdout);
  });
});
