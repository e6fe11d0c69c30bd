/** The host CLI as a user runs it, and a stock OpenSSH client through `tetherctl agent proxy`. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { collect, startDevAgent, type DevAgent } from '../helpers/dev-agent.ts';
import { REPO, hasCommand, need } from '../helpers/prerequisites.ts';

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runCommand(command: string, args: string[], stdin?: string): Promise<Ran> {
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin.end(stdin ?? '');
  return Promise.all([
    collect(child.stdout),
    collect(child.stderr),
    new Promise<number | null>((resolve) => child.on('exit', resolve)),
  ]).then(([stdout, stderr, code]) => ({ stdout, stderr, code }));
}

describe('tetherctl agent', () => {
  let agent: DevAgent;
  const tetherctl = (args: string[], stdin?: string): Promise<Ran> =>
    runCommand(
      join(REPO, 'bin/tetherctl'),
      ['agent', '--socket', agent.socket, '--state', agent.state, ...args],
      stdin,
    );

  before(async () => {
    agent = await startDevAgent({
      args: ['--rootfs', `${REPO}test/fixtures/rootfs`],
      command: ['sh', '-c', 'echo main-out; echo main-err >&2; exit 9'],
    });
  });
  after(async () => agent.stop());

  it('exec passes stdio through and exits with the command’s code', async () => {
    const result = await tetherctl(['exec', '--', 'sh', '-c', 'echo out; echo err >&2; exit 7']);
    assert.deepEqual(result, { code: 7, stdout: 'out\n', stderr: 'err\n' });
  });

  it('exec -i sends stdin; -e, -w apply', async () => {
    const result = await tetherctl(
      [
        'exec',
        '-i',
        '-e',
        'GREETING=hi',
        '-w',
        '/tmp',
        '--',
        'sh',
        '-c',
        'read line; echo "$GREETING $line $PWD"',
      ],
      'there\n',
    );
    assert.equal(result.stdout, 'hi there /tmp\n');
    assert.equal(result.code, 0);
  });

  it('exec of a missing command gives 127 and Docker’s message', async () => {
    const result = await tetherctl(['exec', '--', 'no-such-thing']);
    assert.equal(result.code, 127);
    assert.match(result.stderr, /"no-such-thing": executable file not found in \$PATH/);
  });

  it('attach --no-stdin replays the main process’s output and exits with its code', async () => {
    const result = await tetherctl(['attach', '--no-stdin']);
    assert.equal(result.code, 9);
    assert.equal(result.stdout, 'main-out\n');
    assert.match(result.stderr, /main-err/);
  });

  it('status prints the boot records', async () => {
    const result = await tetherctl(['status']);
    assert.equal(result.code, 0);
    assert.match(result.stdout, /agent ok/);
    assert.match(result.stdout, /process-started ok pid=\d+ sh -c/);
    assert.match(result.stdout, /process-exited ok exit=9/);
  });

  it("stats prints the agent's own memory and CPU, and --reset-peak restarts the peak", async () => {
    const result = await tetherctl(['stats', '--reset-peak']);
    assert.equal(result.code, 0, result.stderr);
    const stats = JSON.parse(result.stdout) as { agent: Record<string, number>; container?: unknown };
    assert.ok(stats.agent['rssBytes']! > 10 * 1024 * 1024, `an agent of ${stats.agent['rssBytes']} bytes`);
    assert.ok(stats.agent['peakRssBytes']! >= stats.agent['rssBytes']!);
    assert.ok(
      stats.agent['heapUsedBytes']! > 0 && stats.agent['cpuMicros']! > 0 && stats.agent['threads']! >= 1,
    );
    // --dev mode gives the container no cgroup, so the reply says nothing of it rather than zeros.
    assert.equal(stats.container, undefined);
    const after = JSON.parse((await tetherctl(['stats'])).stdout) as { agent: Record<string, number> };
    assert.ok(after.agent['peakRssBytes']! <= stats.agent['peakRssBytes']! + 4 * 1024 * 1024);
  });

  it('a usage error exits 2 and says what was wrong', async () => {
    const result = await tetherctl(['frobnicate']);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /usage|unknown/i);
  });

  it('a stock OpenSSH client runs commands through `proxy`', async (t) => {
    if (!need(t, { 'ssh (openssh-client)': hasCommand('ssh') })) return;
    const proxy = `${join(REPO, 'bin/tetherctl')} agent --socket ${agent.socket} --state ${agent.state} proxy`;
    const ssh = (options: string[], command: string): Promise<Ran> =>
      runCommand('ssh', [
        ...options,
        '-o',
        `ProxyCommand=${proxy}`,
        '-o',
        `UserKnownHostsFile=${join(agent.state, 'known_hosts')}`,
        '-o',
        'StrictHostKeyChecking=yes',
        '-o',
        'BatchMode=yes',
        '-i',
        join(agent.state, 'id_client'),
        'root@tether',
        command,
      ]);
    const plain = await ssh([], 'echo hi; echo oops >&2; exit 5');
    assert.equal(plain.code, 5, plain.stderr);
    assert.equal(plain.stdout, 'hi\n');
    assert.match(plain.stderr, /oops/);
    const tty = await ssh(['-tt'], 'tty; exit 3');
    assert.equal(tty.code, 3, tty.stderr);
    assert.match(tty.stdout, /\/dev\/pts\/\d+/);
  });
});
