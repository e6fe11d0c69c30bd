/** exec sessions over the channel against a real `tether --dev`: codes, stdio, env, cwd, users, ttys. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ChannelClient } from '../../hostside/src/channel/client.ts';
import { collect, run, startDevAgent, type DevAgent } from '../helpers/dev-agent.ts';
import { REPO, isRoot, need } from '../helpers/prerequisites.ts';

describe('exec sessions', () => {
  let agent: DevAgent;
  let client: ChannelClient;
  before(async () => {
    agent = await startDevAgent({ args: ['--rootfs', `${REPO}test/fixtures/rootfs`] });
    client = await agent.connect();
  });
  after(async () => {
    client.close();
    await agent.stop();
  });

  it('reports exit codes as Docker does: 0, 7, 127 not found, 126 not executable, 128+n for a signal', async () => {
    assert.equal((await run(client, ['true'])).exitCode, 0);
    assert.equal((await run(client, ['sh', '-c', 'exit 7'])).exitCode, 7);
    const missing = await run(client, ['no-such-command-xyz']);
    assert.equal(missing.exitCode, 127);
    assert.match(missing.stderr, /"no-such-command-xyz": executable file not found in \$PATH/);
    const notExecutable = await run(client, [`${REPO}package.json`]);
    assert.equal(notExecutable.exitCode, 126);
    assert.match(notExecutable.stderr, /permission denied/i);
    const killed = await run(client, ['sh', '-c', 'kill -KILL $$']);
    assert.equal(killed.exitCode, 137);
    assert.equal(killed.signal, 'SIGKILL');
  });

  it('keeps stdout and stderr apart and passes stdin through', async () => {
    const result = await run(client, ['sh', '-c', 'cat; echo to-err >&2'], { stdin: 'line one\nline two\n' });
    assert.equal(result.stdout, 'line one\nline two\n');
    assert.equal(result.stderr, 'to-err\n');
    assert.equal(result.exitCode, 0);
  });

  it('without -i the process sees stdin closed', async () => {
    const result = await run(client, ['sh', '-c', 'cat; echo done']);
    assert.equal(result.stdout, 'done\n');
  });

  it('applies env and working directory', async () => {
    const result = await run(client, ['sh', '-c', 'echo "$GREETING $PWD"'], {
      env: ['GREETING=hello'],
      cwd: '/tmp',
    });
    assert.equal(result.stdout, 'hello /tmp\n');
    const badCwd = await run(client, ['true'], { cwd: '/no/such/dir' });
    assert.equal(badCwd.exitCode, 126);
    assert.match(badCwd.stderr, /chdir to cwd "\/no\/such\/dir"/);
  });

  it('resolves users through the root filesystem, supplementary groups included', async (t) => {
    if (!need(t, { 'root (to switch users)': isRoot() })) return;
    const tester = await run(client, ['sh', '-c', 'id -u; id -g; id -G'], { user: 'tester' });
    assert.deepEqual(tester.stdout.trim().split('\n'), ['1000', '1000', '1000 10 29']);
    const numeric = await run(client, ['sh', '-c', 'id -u; id -g'], { user: '4321:99' });
    assert.deepEqual(numeric.stdout.trim().split('\n'), ['4321', '99']);
    const named = await run(client, ['sh', '-c', 'id -u; id -G'], { user: 'tester:audio' });
    assert.deepEqual(named.stdout.trim().split('\n'), ['1000', '29']);
    await assert.rejects(client.exec({ argv: ['true'], stdin: false, user: 'ghost' }), {
      code: 'TETHER_USER_UNKNOWN',
      message: /unable to find user ghost/,
    });
  });

  it('runs many sessions at once, each with its own result', async () => {
    const results = await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        run(client, ['sh', '-c', `sleep 0.$((RANDOM % 3)); echo ${i}; exit ${i}`]),
      ),
    );
    results.forEach((result, i) => {
      assert.equal(result.stdout, `${i}\n`);
      assert.equal(result.exitCode, i);
    });
  });

  it('gives a tty session a terminal of the asked size and resizes it', async () => {
    const handle = await client.exec({
      argv: ['sh', '-c', 'tty; stty size; read line; stty size'],
      stdin: true,
      tty: { cols: 91, rows: 17 },
    });
    const output = collect(handle.stdout);
    await sleep(300);
    handle.resize({ cols: 120, rows: 40 });
    await sleep(200);
    handle.stdin.write('go\r');
    const exit = await handle.exit;
    const text = await output;
    assert.match(text, /\/dev\/pts\/\d+/);
    assert.match(text, /17 91/);
    assert.match(text, /40 120/);
    assert.equal(exit?.exitCode, 0);
  });

  it('forwards signals to the session', async () => {
    const handle = await client.exec({ argv: ['sleep', '30'], stdin: false });
    await sleep(200);
    handle.signal('TERM');
    const exit = await handle.exit;
    assert.equal(exit?.exitCode, 143);
    assert.equal(exit?.signal, 'SIGTERM');
  });
});
