/**
 * tetherd going away and coming back, with the dev driver: containers outlive a kill -9 and a SIGTERM of
 * tetherd, their output written meanwhile is all in `docker logs`, an exit that happened meanwhile is
 * recorded, and a kill -9 in the middle of a burst of creates leaves only whole containers on disk.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { demux, eventually, numberedLines, rawAttach } from '../helpers/docker-streams.ts';
import { need } from '../helpers/prerequisites.ts';
import {
  BUSYBOX_IMAGE,
  startTetherdWithBusybox,
  tetherdPrerequisites,
  type Tetherd,
} from '../helpers/tetherd.ts';

const IMG = BUSYBOX_IMAGE;
const COUNTER = 'i=0; while true; do echo $i; i=$((i+1)); sleep 0.01; done';

/** Running (a zombie waiting for its new parent to reap it counts as gone). */
function alive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/** Asserts `text` is "0\n1\n...\n(N-1)\n" and returns N. */
function assertGaplessCounter(text: string, what: string): number {
  const count = text.split('\n').length - 1;
  assert.ok(count > 0, `${what}: no output`);
  if (text !== numberedLines(0, count - 1)) {
    const lines = text.split('\n');
    const at = lines.findIndex((line, i) => i < count && line !== String(i));
    assert.fail(`${what}: line ${at} is ${JSON.stringify(lines[at])} (a gap or a repeat)`);
  }
  return count;
}

describe('tetherd (dev driver): restart and re-adoption', () => {
  let d: Tetherd | undefined;
  const ready = (t: TestContext): Tetherd | undefined => (need(t, tetherdPrerequisites()) ? d : undefined);
  const ok = async (args: string[]): Promise<string> => {
    const result = await d!.docker(args);
    assert.equal(result.code, 0, `docker ${args.join(' ')}: ${result.stderr}`);
    return result.stdout.trim();
  };
  const agentPid = (id: string): number =>
    Number(readFileSync(join(d!.root, 'containers', id.slice(0, 12), 'dev.pid'), 'utf8').trim());

  before(async () => {
    if (Object.values(tetherdPrerequisites()).includes(false)) return;
    d = await startTetherdWithBusybox({ driver: 'dev' });
  });
  after(async () => d?.dispose());

  it('after kill -9 of tetherd: still running, no output lost, attach works; an exit meanwhile is recorded', async (t) => {
    if (!ready(t)) return;
    const counter = await ok(['run', '-d', IMG, 'sh', '-c', COUNTER]);
    const exits = await ok(['run', '-d', IMG, 'sh', '-c', 'echo bye; sleep 1; exit 42']);
    await eventually(
      'the counter to count',
      async () => (await d!.docker(['logs', counter])).stdout.length > 20,
    );
    const before = assertGaplessCounter((await d!.docker(['logs', counter])).stdout, 'before the kill');

    await d!.stop('SIGKILL');
    await sleep(2000);
    d = await d!.restart();

    assert.equal(await ok(['inspect', '-f', '{{.State.Status}}', counter]), 'running');
    assert.match(
      await ok(['ps', '--no-trunc', '--format', '{{.ID}} {{.Status}}']),
      new RegExp(`^${counter} Up `, 'm'),
    );
    const after = assertGaplessCounter((await d!.docker(['logs', counter])).stdout, 'after the restart');
    // 2 s down at up to 100 lines a second: the lines written meanwhile are there.
    assert.ok(after > before + 20, `${before} lines before the kill, ${after} after the restart`);

    const attach = await rawAttach(d!.socket, counter, 'stream=1&stdout=1');
    await eventually(
      'live output on a new attach',
      () => demux(attach.received()).stdout.split('\n').length > 5,
    );
    const live = demux(attach.received()).stdout.split('\n');
    const first = Number(live[1]);
    assert.ok(first >= after - 1, `the attach carries new output (${first} after ${after} logged)`);
    assert.equal(Number(live[2]), first + 1);

    assert.equal(await ok(['inspect', '-f', '{{.State.Status}} {{.State.ExitCode}}', exits]), 'exited 42');
    assert.match(
      await ok(['ps', '-a', '--no-trunc', '--format', '{{.ID}} {{.Status}}']),
      new RegExp(`^${exits} Exited \\(42\\) `, 'm'),
    );
    assert.equal(await ok(['wait', exits]), '42');
    assert.equal(await ok(['logs', exits]), 'bye');

    await ok(['kill', counter]);
    await attach.ended;
    assert.equal(await ok(['wait', counter]), '137');
    assertGaplessCounter((await d!.docker(['logs', counter])).stdout, 'after the kill');
    await ok(['rm', counter, exits]);
  });

  it('SIGTERM of tetherd leaves the containers and their agents running', async (t) => {
    if (!ready(t)) return;
    const id = await ok(['run', '-d', IMG, 'sh', '-c', COUNTER]);
    await eventually('the counter', async () => (await d!.docker(['logs', id])).stdout.length > 10);
    // State.Pid is the VM's (here the dev agent's): the container's process lives inside it.
    const agent = agentPid(id);
    assert.equal(Number(await ok(['inspect', '-f', '{{.State.Pid}}', id])), agent);
    const before = assertGaplessCounter((await d!.docker(['logs', id])).stdout, 'before');

    await d!.stop('SIGTERM');
    assert.ok(alive(agent), 'the dev agent is alive with tetherd gone');
    await sleep(1000);
    assert.ok(alive(agent), 'and stays alive');
    d = await d!.restart();
    assert.equal(await ok(['inspect', '-f', '{{.State.Status}} {{.State.Pid}}', id]), `running ${agent}`);
    const count = assertGaplessCounter((await d!.docker(['logs', id])).stdout, 'after a SIGTERM restart');
    assert.ok(count > before + 10, `the process kept counting while tetherd was gone (${before} → ${count})`);
    await ok(['rm', '-f', id]);
    await eventually('rm -f to take the agent down', () => !alive(agent), 5000);
  });

  it('kill -9 during 20 parallel creates leaves only whole, listed containers on disk', async (t) => {
    if (!ready(t)) return;
    const creates = Array.from({ length: 20 }, (_, i) =>
      d!.docker(['create', '--name', `burst-${i}`, IMG, 'sh', '-c', 'exit 0'], { timeoutMs: 30_000 }),
    );
    const daemon = d!;
    // Kill once a few have answered, while the rest are in flight.
    let answered = 0;
    for (const create of creates) void create.then((result) => (answered += result.code === 0 ? 1 : 0));
    await eventually('a few creates', () => answered >= 3, 20_000, 5);
    await daemon.stop('SIGKILL');
    const results = await Promise.all(creates);
    const created = results.filter((result) => result.code === 0).map((result) => result.stdout.trim());
    assert.ok(created.length >= 3 && created.length < 20, `${created.length} of 20 created before the kill`);

    const next = await daemon.restart();
    d = next;
    const listed = (await ok(['ps', '-a', '--no-trunc', '-q', '--filter', 'name=burst-']))
      .split('\n')
      .filter(Boolean);
    for (const id of created)
      assert.ok(listed.includes(id), `${id} was created (answered) and must be listed`);
    for (const id of listed) {
      const record = JSON.parse(
        readFileSync(join(next.root, 'containers', id.slice(0, 12), 'container.json'), 'utf8'),
      ) as {
        id: string;
      };
      assert.equal(record.id, id);
      assert.match(await ok(['inspect', '-f', '{{.Name}} {{.State.Status}}', id]), /^\/burst-\d+ created$/);
    }
    const all = (await ok(['ps', '-a', '--no-trunc', '-q'])).split('\n').filter(Boolean);
    const dirs = readdirSync(join(next.root, 'containers'));
    assert.deepEqual(
      dirs.filter((entry) => entry.startsWith('.')),
      [],
      'no .new- or .trash- directory is left after the restart',
    );
    assert.deepEqual(
      dirs.sort(),
      all.map((id) => id.slice(0, 12)).sort(),
      'every directory is a listed container',
    );

    // The names of creates that never finished are free again.
    for (let i = 0; i < 20; i++) {
      const name = `burst-${i}`;
      const taken = (await ok(['ps', '-a', '-q', '--filter', `name=^/${name}$`])) !== '';
      const again = await next.docker(['create', '--name', name, IMG, 'true']);
      if (taken) assert.match(again.stderr, /Conflict\. The container name "\/burst-\d+" is already in use/);
      else assert.equal(again.code, 0, `${name} is free again: ${again.stderr}`);
    }
    const leftover = (await ok(['ps', '-a', '-q', '--filter', 'name=burst-'])).split('\n').filter(Boolean);
    assert.equal(leftover.length, 20);
    await ok(['rm', ...leftover]);
  });
});
