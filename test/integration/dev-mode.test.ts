/**
 * `tether --dev` as a stand-in VM: output framed into --log-file (rotated on SIGHUP without losing or
 * repeating a byte), status records as console lines in --console-file, powerOffOnExit, graceful SIGTERM.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { decodeLogBytes } from '../../hostside/src/vm/log-file.ts';
import { statusRecordsIn } from '../../hostside/src/vm/console-status.ts';
import { generateStatusKey } from '../../hostside/src/vm/status-key.ts';
import { decodeStatusKey } from '../../protocol/src/status/console-line.ts';
import { STREAM_STDERR, STREAM_STDOUT } from '../../protocol/src/logs/log-frame.ts';
import type { StatusRecord } from '../../protocol/src/status/status.ts';
import { REPO } from '../helpers/prerequisites.ts';

interface Agent {
  dir: string;
  child: ChildProcess;
  logFile: string;
  consoleFile: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const dirs: string[] = [];
/** The config's channel.statusKey: the agent signs its console lines with it. */
const STATUS_KEY = generateStatusKey();

/** The records of a console file that the host believes. */
function consoleRecords(agent: Agent): StatusRecord[] {
  return statusRecordsIn(readFileSync(agent.consoleFile, 'utf8'), decodeStatusKey(STATUS_KEY));
}

async function startAgent(config: object): Promise<Agent> {
  const dir = mkdtempSync(join(tmpdir(), 'tether-devvm-'));
  dirs.push(dir);
  writeFileSync(
    join(dir, 'config.json'),
    JSON.stringify({ version: 1, id: 'devvm', channel: { statusKey: STATUS_KEY }, ...config }),
  );
  const logFile = join(dir, 'container.log');
  const consoleFile = join(dir, 'console.log');
  const socket = join(dir, 'channel.sock');
  const child = spawn(
    join(REPO, 'bin/tether'),
    [
      '--dev',
      '--socket',
      socket,
      '--state',
      join(dir, 'state'),
      '--config',
      join(dir, 'config.json'),
      '--log-file',
      logFile,
      '--console-file',
      consoleFile,
    ],
    { stdio: ['ignore', 'ignore', 'ignore'] },
  );
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  for (let i = 0; i < 400 && !existsSync(socket); i++) await sleep(25);
  return { dir, child, logFile, consoleFile, exited };
}

function text(bytes: Buffer, stream = STREAM_STDOUT): string {
  return Buffer.concat(
    decodeLogBytes(bytes)
      .filter((frame) => frame.stream === stream)
      .map((frame) => frame.data),
  ).toString();
}

describe('tether --dev as a stand-in VM', () => {
  after(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it('frames the output into the log file, reports on the console file, and exits 0 with powerOffOnExit', async () => {
    const agent = await startAgent({
      powerOffOnExit: true,
      process: { argv: ['sh', '-c', 'echo one; echo two >&2; echo three; exit 3'] },
    });
    assert.deepEqual(await agent.exited, { code: 0, signal: null }, 'exits 0, as a VM powers off');
    const bytes = readFileSync(agent.logFile);
    const frames = decodeLogBytes(bytes);
    assert.equal(text(bytes), 'one\nthree\n');
    assert.equal(text(bytes, STREAM_STDERR), 'two\n');
    assert.ok(frames.every((frame) => frame.timestampMs > Date.now() - 60_000));
    const records = consoleRecords(agent);
    assert.deepEqual(
      records.map((record) => record.stage),
      ['agent', 'config', 'channel', 'process-started', 'process-exited', 'shutdown'],
    );
    assert.equal(records[4]!.exitCode, 3);
    assert.equal(records[5]!.outcome, 'ok');
    assert.equal(records[5]!.exitCode, 3);
  });

  it('stays up after its process without powerOffOnExit; SIGTERM then exits 0', async () => {
    const agent = await startAgent({ process: { argv: ['true'] } });
    await sleep(500);
    assert.equal(agent.child.exitCode, null, 'still up');
    agent.child.kill('SIGTERM');
    assert.deepEqual(await agent.exited, { code: 0, signal: null });
  });

  it('SIGTERM stops the main process gracefully (its trap runs) before exiting', async () => {
    const agent = await startAgent({
      process: { argv: ['sh', '-c', 'trap "echo bye; exit 7" TERM; echo up; while :; do sleep 0.1; done'] },
    });
    for (let i = 0; i < 200 && !text(readFileSync(agent.logFile)).includes('up'); i++) await sleep(25);
    agent.child.kill('SIGTERM');
    assert.deepEqual(await agent.exited, { code: 0, signal: null });
    assert.equal(text(readFileSync(agent.logFile)), 'up\nbye\n');
    const shutdown = consoleRecords(agent).at(-1);
    assert.equal(shutdown?.stage, 'shutdown');
    assert.equal(shutdown?.exitCode, 7);
  });

  it('SIGHUP reopens the log file: rotated pieces concatenate to exactly the output', async () => {
    const lines = 30_000;
    const agent = await startAgent({
      powerOffOnExit: true,
      process: {
        argv: [
          'sh',
          '-c',
          `i=0; while [ $i -lt ${lines} ]; do echo "line $i"; i=$((i+1)); [ $((i % 1000)) -eq 0 ] && sleep 0.05; done; exit 0`,
        ],
      },
    });
    const pieces: string[] = [];
    while (agent.child.exitCode === null && agent.child.signalCode === null) {
      await sleep(30);
      if (!existsSync(agent.logFile)) continue;
      const piece = `${agent.logFile}.${pieces.length + 1}`;
      renameSync(agent.logFile, piece);
      pieces.push(piece);
      agent.child.kill('SIGHUP');
      for (let i = 0; i < 100 && !existsSync(agent.logFile); i++) await sleep(5);
    }
    assert.deepEqual(await agent.exited, { code: 0, signal: null });
    assert.ok(pieces.length >= 5, `rotated ${pieces.length} times`);
    const all = Buffer.concat([...pieces, agent.logFile].filter(existsSync).map((p) => readFileSync(p)));
    const expected = Array.from({ length: lines }, (_, i) => `line ${i}\n`).join('');
    const got = text(all);
    assert.equal(got.length, expected.length);
    assert.equal(got, expected);
  });
});
