/**
 * tetherd with the dev driver, driven by the real docker CLI as a user would: version negotiation, load,
 * run (attached, -d, --rm, --name), ps, inspect, logs, exec, wait, kill, stop, restart, rm, events, cp.
 * Raw HTTP only where the point is the API's own answer (status and message).
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { numberedLines } from '../helpers/docker-streams.ts';
import { need } from '../helpers/prerequisites.ts';
import {
  BUSYBOX_IMAGE,
  BUSYBOX_IMAGE_TAR,
  startTetherdWithBusybox,
  tetherdPrerequisites,
  type Tetherd,
} from '../helpers/tetherd.ts';

const IMG = BUSYBOX_IMAGE;
const RFC3339_NANO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z /;

describe('tetherd (dev driver): docker CLI flows', () => {
  let d: Tetherd | undefined;
  let scratch = '';
  const ready = (t: TestContext): Tetherd | undefined => (need(t, tetherdPrerequisites()) ? d : undefined);
  /** docker ARGS that must succeed; returns trimmed stdout. */
  const ok = async (args: string[], input?: string): Promise<string> => {
    const result = await d!.docker(args, input === undefined ? {} : { input });
    assert.equal(result.code, 0, `docker ${args.join(' ')}: ${result.stderr}`);
    return result.stdout.trim();
  };
  const inspect = async (id: string, format: string): Promise<string> => ok(['inspect', '-f', format, id]);

  before(async () => {
    if (Object.values(tetherdPrerequisites()).includes(false)) return;
    d = await startTetherdWithBusybox({ driver: 'dev' });
    scratch = mkdtempSync(join(tmpdir(), 'tetherd-docker-'));
  });
  after(async () => {
    await d?.dispose();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it('negotiates the API version: server 1.47, /v1.99 refused as too new, /v1.24 served', async (t) => {
    const daemon = ready(t);
    if (!daemon) return;
    assert.equal(await ok(['version', '--format', '{{.Server.APIVersion}}']), '1.47');
    const tooNew = await daemon.http('GET', '/v1.99/info');
    assert.equal(tooNew.status, 400);
    assert.match(
      (JSON.parse(tooNew.body) as { message: string }).message,
      /^client version 1\.99 is too new\. Maximum supported API version is 1\.47$/,
    );
    const old = await daemon.http('GET', '/v1.24/info');
    assert.equal(old.status, 200);
    assert.equal(typeof (JSON.parse(old.body) as { Containers: unknown }).Containers, 'number');
  });

  it('loads the bundled image (again: the same tag, no duplicate), and lists it', async (t) => {
    if (!ready(t)) return;
    assert.match(await ok(['load', '-i', BUSYBOX_IMAGE_TAR]), /^Loaded image: tether\/busybox:latest$/m);
    const images = await ok(['images', '--format', '{{.Repository}}:{{.Tag}} {{.ID}}']);
    assert.match(images, /^tether\/busybox:latest [0-9a-f]{12}$/);
  });

  it('run attached keeps stdout and stderr apart and exits with the command’s code', async (t) => {
    if (!ready(t)) return;
    const both = await d!.docker(['run', IMG, 'sh', '-c', 'echo out; echo err >&2']);
    assert.deepEqual(both, { code: 0, stdout: 'out\n', stderr: 'err\n' });
    const failed = await d!.docker(['run', IMG, 'sh', '-c', 'echo bye; exit 3']);
    assert.deepEqual(failed, { code: 3, stdout: 'bye\n', stderr: '' });
  });

  it('run -d prints the id; --rm removes the container once it has exited', async (t) => {
    if (!ready(t)) return;
    const id = await ok(['run', '-d', IMG, 'sleep', '30']);
    assert.match(id, /^[0-9a-f]{64}$/);
    assert.equal(await inspect(id, '{{.State.Status}}'), 'running');
    await ok(['rm', '-f', id]);

    const name = 'tdk-rm';
    const ran = await d!.docker(['run', '--rm', '--name', name, IMG, 'sh', '-c', 'echo gone; exit 4']);
    assert.deepEqual(ran, { code: 4, stdout: 'gone\n', stderr: '' });
    assert.equal(await ok(['ps', '-a', '-q', '--filter', `name=${name}`]), '', 'removed when run returned');
    const missing = await d!.docker(['inspect', name]);
    assert.equal(missing.code, 1);
  });

  it('a taken --name is a 409 conflict; the CLI exits 125 with Docker’s message', async (t) => {
    const daemon = ready(t);
    if (!daemon) return;
    const id = await ok(['create', '--name', 'tdk-dup', IMG, 'true']);
    const cli = await daemon.docker(['run', '--name', 'tdk-dup', IMG, 'true']);
    assert.equal(cli.code, 125);
    assert.match(
      cli.stderr,
      new RegExp(
        `Conflict\\. The container name "/tdk-dup" is already in use by container "${id}"\\. You have to remove \\(or rename\\) that container to be able to reuse that name\\.`,
      ),
    );
    const raw = await daemon.http(
      'POST',
      '/v1.47/containers/create?name=tdk-dup',
      JSON.stringify({ Image: IMG, Cmd: ['true'] }),
      { 'Content-Type': 'application/json' },
    );
    assert.equal(raw.status, 409);
    assert.match((JSON.parse(raw.body) as { message: string }).message, /is already in use by container/);
    await ok(['rm', id]);
  });

  it('ps lists running containers, ps -a the exited ones too, --filter narrows', async (t) => {
    if (!ready(t)) return;
    const up = await ok(['run', '-d', '--name', 'tdk-ps-up', '--label', 'tdk=ps', IMG, 'sleep', '30']);
    const done = await ok([
      'run',
      '-d',
      '--name',
      'tdk-ps-done',
      '--label',
      'tdk=ps',
      IMG,
      'sh',
      '-c',
      'exit 5',
    ]);
    assert.equal(await ok(['wait', done]), '5');
    const running = (await ok(['ps', '--no-trunc', '-q'])).split('\n');
    assert.ok(running.includes(up) && !running.includes(done), `ps: ${running.join(' ')}`);
    const all = await ok(['ps', '-a', '--filter', 'label=tdk=ps', '--format', '{{.Names}}|{{.Status}}']);
    const lines = all.split('\n').sort();
    assert.equal(lines.length, 2, all);
    assert.match(lines[0]!, /^tdk-ps-done\|Exited \(5\) /);
    assert.match(lines[1]!, /^tdk-ps-up\|Up /);
    assert.equal(
      await ok([
        'ps',
        '-a',
        '--filter',
        'status=exited',
        '--filter',
        'label=tdk=ps',
        '--format',
        '{{.Names}}',
      ]),
      'tdk-ps-done',
    );
    assert.equal(await ok(['ps', '--filter', 'name=tdk-ps-', '--format', '{{.Names}}']), 'tdk-ps-up');
    // Docker matches the name pattern with and without the leading slash.
    for (const exact of ['^/tdk-ps-done$', '^tdk-ps-done$', '/tdk-ps-done'])
      assert.equal(
        await ok(['ps', '-a', '--filter', `name=${exact}`, '--format', '{{.Names}}']),
        'tdk-ps-done',
        exact,
      );
    assert.equal(
      await ok(['ps', '-a', '--filter', `id=${done.slice(0, 12)}`, '--format', '{{.Names}}']),
      'tdk-ps-done',
    );
    await ok(['rm', '-f', up, done]);
  });

  it('inspect shows the state, times, environment and name', async (t) => {
    if (!ready(t)) return;
    const before = Date.now();
    const id = await ok([
      'run',
      '-d',
      '--name',
      'tdk-insp',
      '-e',
      'FOO=bar',
      '-e',
      'EMPTY=',
      IMG,
      'sh',
      '-c',
      'sleep 0.3; exit 6',
    ]);
    const running = JSON.parse(await inspect(id, '{{json .}}')) as {
      Name: string;
      State: { Status: string; Running: boolean; StartedAt: string; FinishedAt: string; ExitCode: number };
      Config: { Env: string[]; Cmd: string[]; Image: string };
    };
    assert.equal(running.Name, '/tdk-insp');
    assert.equal(running.State.Status, 'running');
    assert.equal(running.State.Running, true);
    assert.equal(running.State.FinishedAt, '0001-01-01T00:00:00Z');
    assert.ok(
      running.Config.Env.some((entry) => /^PATH=\/.*bin/.test(entry)),
      running.Config.Env.join(' '),
    );
    assert.ok(running.Config.Env.includes('FOO=bar') && running.Config.Env.includes('EMPTY='));
    assert.deepEqual(running.Config.Cmd, ['sh', '-c', 'sleep 0.3; exit 6']);
    assert.equal(running.Config.Image, IMG);
    assert.equal(await ok(['wait', id]), '6');
    const state = JSON.parse(await inspect(id, '{{json .State}}')) as typeof running.State;
    assert.equal(state.Status, 'exited');
    assert.equal(state.ExitCode, 6);
    const started = Date.parse(state.StartedAt);
    const finished = Date.parse(state.FinishedAt);
    assert.ok(started >= before - 1000 && started <= finished, `${state.StartedAt} .. ${state.FinishedAt}`);
    assert.ok(finished - started >= 250, `ran ${finished - started} ms for a 0.3 s sleep`);
    assert.ok(finished <= Date.now() + 1000);
    await ok(['rm', id]);
  });

  it('logs -f follows a container that is still printing and ends when it exits', async (t) => {
    if (!ready(t)) return;
    const id = await ok([
      'run',
      '-d',
      IMG,
      'sh',
      '-c',
      'i=1; while [ $i -le 40 ]; do echo $i; i=$((i+1)); sleep 0.03; done',
    ]);
    const started = Date.now();
    const followed = await d!.docker(['logs', '-f', id], { timeoutMs: 20_000 });
    assert.equal(followed.code, 0, followed.stderr);
    assert.equal(followed.stdout, numberedLines(1, 40));
    assert.equal(await inspect(id, '{{.State.Status}}'), 'exited', 'the follow ended with the container');
    assert.ok(Date.now() - started > 500, 'it followed live output rather than reading a finished log');
    await ok(['rm', id]);
  });

  it('logs -t, --tail, --since and --until pick the right lines', async (t) => {
    if (!ready(t)) return;
    const id = await ok([
      'run',
      '-d',
      IMG,
      'sh',
      '-c',
      'for i in 1 2 3 4 5; do echo l$i; echo e$i >&2; sleep 0.4; done',
    ]);
    assert.equal(await ok(['wait', id]), '0');
    const stamped = await d!.docker(['logs', '-t', id]);
    const outLines = stamped.stdout.trimEnd().split('\n');
    assert.equal(outLines.length, 5, stamped.stdout);
    for (const [i, line] of outLines.entries()) {
      assert.match(line, RFC3339_NANO);
      assert.ok(line.endsWith(` l${i + 1}`), line);
    }
    assert.equal(stamped.stderr.trimEnd().split('\n').length, 5, 'stderr lines keep their stream');
    const times = outLines.map((line) => Date.parse(line.slice(0, line.indexOf(' '))));
    const mid = (a: number, b: number): string => new Date((times[a]! + times[b]!) / 2).toISOString();

    // --tail counts lines of both streams together, as Docker's does.
    const tail = await d!.docker(['logs', '--tail', '3', id]);
    assert.deepEqual([tail.stdout, tail.stderr], ['l5\n', 'e4\ne5\n']);
    const ranged = await d!.docker(['logs', '--since', mid(0, 1), '--until', mid(3, 4), id]);
    assert.deepEqual([ranged.stdout, ranged.stderr], ['l2\nl3\nl4\n', 'e2\ne3\ne4\n']);
    const since = await d!.docker(['logs', '--since', mid(2, 3), id]);
    assert.equal(since.stdout, 'l4\nl5\n');
    // Docker's unix-seconds form, fractional.
    const unix = ((times[0]! + times[1]!) / 2000).toFixed(3);
    const until = await d!.docker(['logs', '--until', unix, id]);
    assert.equal(until.stdout, 'l1\n');
    await ok(['rm', id]);
  });

  it('exec: -e, -u root, -w, exit codes 0 and 7, 127 for a missing command, piped stdin with -i', async (t) => {
    if (!ready(t)) return;
    const id = await ok(['run', '-d', IMG, 'sleep', '60']);
    assert.deepEqual(
      await d!.docker([
        'exec',
        '-e',
        'GREETING=hi there',
        '-u',
        'root',
        '-w',
        '/tmp',
        id,
        'sh',
        '-c',
        'echo "$GREETING"; id -u; pwd',
      ]),
      { code: 0, stdout: 'hi there\n0\n/tmp\n', stderr: '' },
    );
    assert.deepEqual(await d!.docker(['exec', id, 'sh', '-c', 'echo to-err >&2; exit 7']), {
      code: 7,
      stdout: '',
      stderr: 'to-err\n',
    });
    const missing = await d!.docker(['exec', id, 'tdk-no-such-command']);
    assert.equal(missing.code, 127);
    assert.match(missing.stderr, /tdk-no-such-command/);
    const piped = await d!.docker(['exec', '-i', id, 'sh', '-c', 'wc -l; cat'], { input: '' });
    assert.equal(piped.stdout.trim(), '0');
    const echoed = await d!.docker(['exec', '-i', id, 'cat'], { input: numberedLines(1, 500) });
    assert.deepEqual(echoed, { code: 0, stdout: numberedLines(1, 500), stderr: '' });
    await ok(['rm', '-f', id]);
  });

  it('kill gives 137; kill -s TERM delivers TERM; stop ends a shell loop with 143', async (t) => {
    if (!ready(t)) return;
    const killed = await ok(['run', '-d', IMG, 'sleep', '60']);
    await ok(['kill', killed]);
    assert.equal(await ok(['wait', killed]), '137');
    assert.equal(await inspect(killed, '{{.State.ExitCode}}'), '137');

    // Right after `run -d`, as a script would: the signal must reach the process, not fail or be dropped.
    const termed = await ok(['run', '-d', IMG, 'sleep', '60']);
    await ok(['kill', '-s', 'TERM', termed]);
    assert.equal(await ok(['wait', termed]), '143');

    const looped = await ok(['run', '-d', IMG, 'sh', '-c', 'echo up; while true; do sleep 0.1; done']);
    await sleep(300);
    const t0 = Date.now();
    await ok(['stop', looped]);
    assert.ok(Date.now() - t0 < 5000, 'a shell loop stops on TERM, long before the grace runs out');
    assert.equal(await inspect(looped, '{{.State.ExitCode}}'), '143');

    // One that ignores TERM: stop -t 1 kills it after about a second.
    const stubborn = await ok(['run', '-d', IMG, 'sh', '-c', 'trap "" TERM; while true; do sleep 0.1; done']);
    const t1 = Date.now();
    await ok(['stop', '-t', '1', stubborn]);
    const took = Date.now() - t1;
    assert.ok(took >= 900 && took < 8000, `stop -t 1 took ${took} ms`);
    assert.equal(await inspect(stubborn, '{{.State.ExitCode}}'), '137');
    await ok(['rm', killed, termed, looped, stubborn]);
  });

  it('restart counts, runs the command again, and the logs keep both boots', async (t) => {
    if (!ready(t)) return;
    const id = await ok(['run', '-d', IMG, 'sh', '-c', 'echo "boot at $$"; while true; do sleep 0.1; done']);
    await sleep(300);
    await ok(['restart', '-t', '2', id]);
    assert.equal(await inspect(id, '{{.RestartCount}} {{.State.Status}}'), '1 running');
    await sleep(300);
    const logs = await ok(['logs', id]);
    const boots = logs.split('\n').filter((line) => line.startsWith('boot at '));
    assert.equal(boots.length, 2, logs);
    assert.notEqual(boots[0], boots[1], 'a new process');
    await ok(['rm', '-f', id]);
  });

  it('rm refuses a running container, rm -f removes it and its agent', async (t) => {
    if (!ready(t)) return;
    const id = await ok(['run', '-d', IMG, 'sleep', '60']);
    const pid = Number(await inspect(id, '{{.State.Pid}}'));
    const refused = await d!.docker(['rm', id]);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /stop the container before removing|cannot remove a running container/i);
    await ok(['rm', '-f', id]);
    assert.equal(await ok(['ps', '-a', '-q', '--no-trunc', '--filter', `id=${id}`]), '');
    assert.ok(pid > 0);
    assert.throws(() => process.kill(pid, 0), 'the container’s process is gone');
  });

  it('events --since --until show create, start, die and destroy of a container', async (t) => {
    if (!ready(t)) return;
    const since = Math.floor(Date.now() / 1000) - 1;
    const id = await ok(['create', IMG, 'sh', '-c', 'exit 2']);
    await ok(['start', id]);
    assert.equal(await ok(['wait', id]), '2');
    await ok(['rm', id]);
    const until = Math.ceil(Date.now() / 1000) + 1;
    const events = await ok([
      'events',
      '--since',
      String(since),
      '--until',
      String(until),
      '--filter',
      `container=${id}`,
      '--format',
      '{{.Type}} {{.Action}} {{.Actor.ID}} {{index .Actor.Attributes "exitCode"}}',
    ]);
    const actions = events.split('\n').map((line) => line.split(' '));
    assert.ok(
      actions.every(([type, , actor]) => type === 'container' && actor === id),
      events,
    );
    const order = actions.map(([, action]) => action);
    for (const action of ['create', 'start', 'die', 'destroy'])
      assert.ok(order.includes(action), `${action} in ${order.join(',')}`);
    assert.ok(order.indexOf('create') < order.indexOf('start'));
    assert.ok(order.indexOf('start') < order.indexOf('die'));
    assert.ok(order.indexOf('die') < order.indexOf('destroy'));
    assert.equal(actions.find(([, action]) => action === 'die')?.[3], '2');
  });

  it('cp copies a file and a directory in and out of a running container', async (t) => {
    if (!ready(t)) return;
    // Dev-driver containers see the host's filesystem: the paths "inside" are under scratch.
    const id = await ok(['run', '-d', IMG, 'sleep', '60']);
    const src = join(scratch, 'src');
    mkdirSync(join(src, 'tree/sub'), { recursive: true });
    writeFileSync(join(src, 'one.txt'), 'one file\n');
    writeFileSync(join(src, 'tree/sub/deep.txt'), 'deep file\n');
    const inside = join(scratch, 'inside');
    mkdirSync(inside);
    await ok(['cp', join(src, 'one.txt'), `${id}:${inside}/copied.txt`]);
    await ok(['cp', join(src, 'tree'), `${id}:${inside}/tree`]);
    assert.equal(
      await ok(['exec', id, 'cat', `${inside}/copied.txt`, `${inside}/tree/sub/deep.txt`]),
      'one file\ndeep file',
    );
    await ok(['exec', id, 'sh', '-c', `echo made inside > ${inside}/tree/sub/new.txt`]);

    const out = join(scratch, 'out');
    mkdirSync(out);
    await ok(['cp', `${id}:${inside}/tree`, out]);
    assert.equal(readFileSync(join(out, 'tree/sub/deep.txt'), 'utf8'), 'deep file\n');
    assert.equal(readFileSync(join(out, 'tree/sub/new.txt'), 'utf8'), 'made inside\n');
    await ok(['cp', `${id}:${inside}/copied.txt`, join(out, 'back.txt')]);
    assert.equal(readFileSync(join(out, 'back.txt'), 'utf8'), 'one file\n');
    const missing = await d!.docker(['cp', `${id}:${inside}/nope`, out]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /(no such file|could not find the file).*inside\/nope/i);
    await ok(['rm', '-f', id]);
  });
});
