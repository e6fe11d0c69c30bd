/**
 * tetherd end to end, with the dev driver (each container is `bin/tether --dev` on this host; QEMU under
 * TCG is too slow and noisy for these). Four parts, each against a baseline measured in the same run:
 *
 *   logs     a container writes 256 MiB to stdout: start until `docker logs -f` (the CLI, or a raw HTTP
 *            follow) has it all, against a reader following the container's log file itself; then the
 *            stored bytes read again through `docker logs` against straight from the files
 *   fanout   attach to 0, 1, 8 and 64 raw clients while a container writes 64 MiB: tetherd's CPU seconds
 *            (/proc/PID/stat) per byte delivered, against 1 client
 *   idle     tetherd's RSS per idle container (100 x `sleep 3600`) against its RSS with none
 *   ps       `docker ps` and GET /containers/json with 100 containers against 1
 *
 * BENCH_PARTS (e.g. "logs,ps") runs a subset; `idle` and `ps` share one set of 100 containers.
 */
import { createReadStream, existsSync, readdirSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describeMachine, fixed, median, printTable, ratio } from './lib/harness.ts';
import {
  agentPids,
  countStream,
  cpuSeconds,
  memoryKiB,
  rawAttach,
  requireTetherd,
  startDaemon,
  type BenchDaemon,
} from './lib/tetherd.ts';

const MIB = 1024 * 1024;
const LOG_BYTES = Number(process.env['BENCH_BYTES'] ?? 256 * MIB);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
const FANOUT_BYTES = Number(process.env['BENCH_FANOUT_BYTES'] ?? 64 * MIB);
const FANOUT_CLIENTS = (process.env['BENCH_FANOUT_CLIENTS'] ?? '1,8,64').split(',').map(Number);
const FANOUT_ROUNDS = Number(process.env['BENCH_FANOUT_ROUNDS'] ?? 2);
const FANOUT_PAUSE = process.env['BENCH_FANOUT_PAUSE'] ?? '0.02';
const IDLE_CONTAINERS = Number(process.env['BENCH_IDLE_CONTAINERS'] ?? 100);
const PS_RUNS = Number(process.env['BENCH_PS_RUNS'] ?? 20);
const PARTS = new Set((process.env['BENCH_PARTS'] ?? 'logs,fanout,idle,ps').split(','));

/** Nothing is rotated or pruned at this size (the default, 20 MiB x 5 files, would prune most of it). */
const NO_ROTATION = { LogConfig: { Type: 'json-file', Config: { 'max-size': '1g' } } };

const seconds = (from: number): number => (performance.now() - from) / 1000;

async function startContainer(d: BenchDaemon, id: string): Promise<void> {
  const reply = await d.http('POST', `/containers/${id}/start`);
  if (reply.status !== 204) throw new Error(`start: ${reply.status} ${reply.body.toString()}`);
}

/** POST wait?condition=next-exit; resolves once tetherd has begun the wait (its headers came). */
function waitNextExit(d: BenchDaemon, id: string): Promise<{ exited: Promise<number> }> {
  return new Promise((began, reject) => {
    const req = request(
      {
        socketPath: d.socket,
        method: 'POST',
        path: `/v1.47/containers/${id}/wait?condition=next-exit`,
        agent: false,
      },
      (res) => {
        let body = '';
        const exited = new Promise<number>((resolve, fail) => {
          res.on('data', (chunk: Buffer) => (body += chunk.toString()));
          res.on('end', () => resolve((JSON.parse(body) as { StatusCode: number }).StatusCode));
          res.on('error', fail);
        });
        began({ exited });
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** The container's log files in order: rotated segments (logs/NNNNNN.log), then the live file. */
function logFiles(d: BenchDaemon, id: string): string[] {
  const dir = d.containerDir(id);
  const segments = readdirSync(join(dir, 'logs'))
    .filter((name) => /^\d+\.log$/.test(name))
    .sort()
    .map((name) => join(dir, 'logs', name));
  const live = join(dir, 'container.log');
  return existsSync(live) ? [...segments, live] : segments;
}

// ---------------------------------------------------------------------------------------------- logs

type FollowCase = 'cli logs -f' | 'http logs follow' | 'file follow';
type StoredCase = 'cli logs' | 'http logs' | 'fs read stream' | 'cat';
const FOLLOW_CASES: FollowCase[] = ['file follow', 'cli logs -f', 'http logs follow'];
const STORED_CASES: StoredCase[] = ['fs read stream', 'cli logs', 'http logs', 'cat'];

interface FollowResult {
  /** Start until the reader had every byte. */
  toAll: number;
  /** Start until the exit was recorded (the agent has written and flushed everything by then). */
  toExit: number;
  /** tetherd's CPU seconds from the start until the reader had every byte. */
  cpu: number;
}

/** Reads the live file as it grows until the container has exited and the file has no more. */
async function followFile(path: string, exited: Promise<number>): Promise<number> {
  let done = false;
  void exited.then(() => (done = true));
  let handle;
  for (;;) {
    try {
      handle = await open(path, 'r');
      break;
    } catch {
      await sleep(1);
    }
  }
  const buffer = Buffer.allocUnsafe(MIB);
  let position = 0;
  try {
    for (;;) {
      const finished = done; // read once more after the exit: the agent flushed before it exited
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, position);
      position += bytesRead;
      if (bytesRead === 0) {
        if (finished) return position;
        await sleep(1);
      }
    }
  } finally {
    await handle.close();
  }
}

async function followRound(d: BenchDaemon, kind: FollowCase): Promise<{ result: FollowResult; id: string }> {
  const id = await d.create(['head', '-c', String(LOG_BYTES), '/dev/zero'], NO_ROTATION);
  const { exited } = await waitNextExit(d, id);
  const cpuBefore = cpuSeconds(d.pid);
  const started = performance.now();
  let toExit = 0;
  const exit = exited.then((code) => {
    toExit = seconds(started);
    if (code !== 0) throw new Error(`container exited ${code}`);
  });
  await startContainer(d, id);
  if (kind === 'cli logs -f') {
    const run = await d.docker(['logs', '-f', id]);
    if (run.code !== 0) throw new Error(`docker logs -f: ${run.code} ${run.stderr}`);
  } else if (kind === 'http logs follow') {
    const counter = await countStream(d.socket, `/containers/${id}/logs?follow=1&stdout=1&stderr=1`);
    if (counter.stdout !== LOG_BYTES || counter.other !== 0)
      throw new Error(`logs follow got ${counter.stdout} (+${counter.other}), expected ${LOG_BYTES}`);
  } else {
    const bytes = await followFile(join(d.containerDir(id), 'container.log'), exited);
    if (bytes < LOG_BYTES) throw new Error(`file follow read ${bytes} bytes, fewer than ${LOG_BYTES}`);
  }
  const toAll = seconds(started);
  const cpu = cpuSeconds(d.pid) - cpuBefore;
  await exit;
  const files = logFiles(d, id);
  if (files.length !== 1) throw new Error(`expected one log file with max-size=1g, found ${files.join(' ')}`);
  return { result: { toAll, toExit, cpu }, id };
}

/** Seconds, and tetherd's CPU seconds over the same time. */
async function storedRead(
  d: BenchDaemon,
  id: string,
  kind: StoredCase,
): Promise<{ seconds: number; cpu: number }> {
  const files = logFiles(d, id);
  const cpuBefore = cpuSeconds(d.pid);
  const started = performance.now();
  if (kind === 'cli logs') {
    const run = await d.docker(['logs', id]);
    if (run.code !== 0) throw new Error(`docker logs: ${run.code} ${run.stderr}`);
  } else if (kind === 'http logs') {
    const counter = await countStream(d.socket, `/containers/${id}/logs?stdout=1&stderr=1`);
    if (counter.stdout !== LOG_BYTES)
      throw new Error(`http logs got ${counter.stdout}, expected ${LOG_BYTES}`);
  } else if (kind === 'fs read stream') {
    let bytes = 0;
    for (const file of files)
      for await (const chunk of createReadStream(file, { highWaterMark: MIB }))
        bytes += (chunk as Buffer).length;
    if (bytes < LOG_BYTES) throw new Error(`fs read ${bytes} bytes, fewer than ${LOG_BYTES}`);
  } else {
    const code = await new Promise<number | null>((resolve) =>
      spawn('cat', files, { stdio: ['ignore', 'ignore', 'inherit'] }).on('close', resolve),
    );
    if (code !== 0) throw new Error(`cat exited ${code}`);
  }
  return { seconds: seconds(started), cpu: cpuSeconds(d.pid) - cpuBefore };
}

async function logsPart(): Promise<void> {
  const d = await startDaemon();
  try {
    const follow: Record<FollowCase, FollowResult[]> = {
      'file follow': [],
      'cli logs -f': [],
      'http logs follow': [],
    };
    const stored: Record<StoredCase, { seconds: number; cpu: number }[]> = {
      'fs read stream': [],
      'cli logs': [],
      'http logs': [],
      cat: [],
    };
    for (let round = 0; round < ROUNDS; round++) {
      // Rotate the order each round so that no case always runs on a warmer (or busier) machine.
      const ids: string[] = [];
      for (let k = 0; k < FOLLOW_CASES.length; k++) {
        const kind = FOLLOW_CASES[(k + round) % FOLLOW_CASES.length]!;
        const { result, id } = await followRound(d, kind);
        follow[kind].push(result);
        ids.push(id);
      }
      const id = ids[0]!;
      for (let k = 0; k < STORED_CASES.length; k++) {
        const kind = STORED_CASES[(k + round) % STORED_CASES.length]!;
        stored[kind].push(await storedRead(d, id, kind));
      }
      for (const each of ids) await d.http('DELETE', `/containers/${each}?force=1`);
    }

    const mib = LOG_BYTES / MIB;
    const baseAll = median(follow['file follow'].map((r) => r.toAll));
    printTable(
      `logs, live: a container writes ${mib} MiB to stdout (head -c ${LOG_BYTES} /dev/zero, --log-opt max-size=1g so nothing is rotated or pruned); median of ${ROUNDS}; ratio = the case's time to all bytes / the file follower's`,
      [
        'reader (started right after start)',
        'start→all s',
        'MiB/s',
        'ratio',
        'start→exit s',
        'exit→all s',
        'tetherd CPU s',
      ],
      FOLLOW_CASES.map((kind) => {
        const toAll = median(follow[kind].map((r) => r.toAll));
        return [
          kind === 'file follow' ? 'file follow (baseline: container.log read as it grows)' : kind,
          fixed(toAll, 3),
          fixed(mib / toAll, 0),
          ratio(toAll, baseAll),
          fixed(median(follow[kind].map((r) => r.toExit)), 3),
          fixed(median(follow[kind].map((r) => r.toAll - r.toExit)), 3),
          fixed(median(follow[kind].map((r) => r.cpu)), 2),
        ];
      }),
    );
    const exitTimes = FOLLOW_CASES.flatMap((kind) => follow[kind].map((r) => r.toExit));
    console.log(
      `agent-side write time (start → exit recorded; the dev agent flushes its log file before it exits): median ${fixed(median(exitTimes), 3)} s over all ${exitTimes.length} runs, ${fixed(mib / median(exitTimes), 0)} MiB/s; with the file follower only: ${fixed(median(follow['file follow'].map((r) => r.toExit)), 3)} s`,
    );

    const baseStored = median(stored['fs read stream'].map((r) => r.seconds));
    printTable(
      `logs, stored: the same ${mib} MiB read again after the exit; median of ${ROUNDS}; ratio = the case's time / the fs read stream's`,
      ['reader', 's', 'MiB/s', 'ratio', 'tetherd CPU s'],
      STORED_CASES.map((kind) => {
        const s = median(stored[kind].map((r) => r.seconds));
        const name =
          kind === 'fs read stream'
            ? 'fs read stream (baseline: the log files, 1 MiB chunks, in the bench)'
            : kind === 'cat'
              ? 'cat FILES >/dev/null'
              : kind === 'cli logs'
                ? 'docker logs >/dev/null'
                : 'GET /containers/ID/logs (raw, counted)';
        return [
          name,
          fixed(s, 3),
          fixed(mib / s, 0),
          ratio(s, baseStored),
          fixed(median(stored[kind].map((r) => r.cpu)), 2),
        ];
      }),
    );
  } finally {
    await d.dispose();
  }
}

// -------------------------------------------------------------------------------------------- fanout

interface FanoutResult {
  clients: number;
  cpu: number;
  wall: number;
  delivered: number;
  /** Clients that got fewer than all the bytes (cut loose: it stopped reading). */
  short: number;
}

/** 256 KiB at a time with a pause between, well under the 4 MiB a subscriber may fall behind. */
const PACE_PIECE = 256 * 1024;

/**
 * Paced: FANOUT_BYTES in 256 KiB pieces, `sleep PAUSE` between them (about 10 MiB/s here with the fork and
 * exec of each piece), slow enough that 64 clients in one process can keep up. Unpaced: as fast as `head`.
 */
function fanoutCommand(paced: boolean): string[] {
  if (!paced) return ['head', '-c', String(FANOUT_BYTES), '/dev/zero'];
  const pieces = Math.ceil(FANOUT_BYTES / PACE_PIECE);
  return [
    'sh',
    '-c',
    `n=$1; while [ "$n" -gt 0 ]; do head -c ${PACE_PIECE} /dev/zero; sleep ${FANOUT_PAUSE}; n=$((n-1)); done`,
    'sh',
    String(pieces),
  ];
}

async function fanoutRound(d: BenchDaemon, clients: number, paced: boolean): Promise<FanoutResult> {
  const id = await d.create(fanoutCommand(paced), NO_ROTATION);
  const attached = await Promise.all(
    Array.from({ length: clients }, () => rawAttach(d.socket, id, 'stream=1&stdout=1')),
  );
  const { exited } = await waitNextExit(d, id);
  await sleep(200); // let tetherd settle after the attaches
  const cpuBefore = cpuSeconds(d.pid);
  const started = performance.now();
  await startContainer(d, id);
  const code = await exited;
  await Promise.all(attached.map((client) => client.ended));
  const wall = seconds(started);
  const cpu = cpuSeconds(d.pid) - cpuBefore;
  if (code !== 0) throw new Error(`fan-out container exited ${code}`);
  const expected = paced ? Math.ceil(FANOUT_BYTES / PACE_PIECE) * PACE_PIECE : FANOUT_BYTES;
  const delivered = attached.reduce((sum, client) => sum + client.counter.stdout, 0);
  const short = attached.filter((client) => client.counter.stdout !== expected).length;
  await d.http('DELETE', `/containers/${id}?force=1`);
  return { clients, cpu, wall, delivered, short };
}

async function fanoutPart(): Promise<void> {
  const d = await startDaemon();
  try {
    const counts = [0, ...FANOUT_CLIENTS];
    const results = new Map<number, FanoutResult[]>(counts.map((n) => [n, []]));
    await fanoutRound(d, 1, true); // warm-up: the first boot and attach pay for loading code
    for (let round = 0; round < FANOUT_ROUNDS; round++) {
      const order = round % 2 === 0 ? counts : [...counts].reverse();
      for (const n of order) results.get(n)!.push(await fanoutRound(d, n, true));
    }
    const fixedCpu = median(results.get(0)!.map((r) => r.cpu));
    const perByte = (r: FanoutResult): number => r.cpu / r.delivered;
    const netPerByte = (r: FanoutResult): number => Math.max(0, r.cpu - fixedCpu) / r.delivered;
    const one = results.get(1)!;
    const baseGross = median(one.map(perByte));
    const baseNet = median(one.map(netPerByte));
    const nsPerKiB = (v: number): string => fixed(v * 1e9 * 1024, 0);
    printTable(
      `attach fan-out: a container writes ${FANOUT_BYTES / MIB} MiB paced (${PACE_PIECE / 1024} KiB, sleep ${FANOUT_PAUSE}, repeat), N raw attach clients (stream=1&stdout=1) in the bench process; median of ${FANOUT_ROUNDS}; tetherd CPU = utime+stime from /proc/PID/stat (10 ms ticks), start until every client's stream ended; net = minus the 0-client run's CPU (boot, exit, the log store's watching); ratio = CPU per byte delivered / 1 client's`,
      [
        'clients',
        'CPU s',
        'wall s',
        'MiB delivered',
        'cut short',
        'CPU ns/KiB',
        'ratio',
        'net ns/KiB',
        'net ratio',
      ],
      counts.map((n) => {
        const rs = results.get(n)!;
        const row = [
          String(n),
          fixed(median(rs.map((r) => r.cpu)), 2),
          fixed(median(rs.map((r) => r.wall)), 2),
          fixed(median(rs.map((r) => r.delivered)) / MIB, 0),
          rs.map((r) => r.short).join('+'),
        ];
        if (n === 0) return [...row, '-', '-', '-', '-'];
        const gross = median(rs.map(perByte));
        const net = median(rs.map(netPerByte));
        return [...row, nsPerKiB(gross), ratio(gross, baseGross), nsPerKiB(net), ratio(net, baseNet)];
      }),
    );

    const unpaced: FanoutResult[] = [];
    for (const n of FANOUT_CLIENTS) unpaced.push(await fanoutRound(d, n, false));
    printTable(
      `attach fan-out, unpaced: the same ${FANOUT_BYTES / MIB} MiB as fast as head writes it (one run each); every client must get every byte (a slow one is waited for; only one that stops reading is cut)`,
      ['clients', 'CPU s', 'wall s', 'MiB delivered', 'of MiB', 'cut short'],
      unpaced.map((r) => [
        String(r.clients),
        fixed(r.cpu, 2),
        fixed(r.wall, 2),
        fixed(r.delivered / MIB, 0),
        fixed((r.clients * FANOUT_BYTES) / MIB, 0),
        String(r.short),
      ]),
    );
  } finally {
    await d.dispose();
  }
}

// ---------------------------------------------------------------------------------------- idle and ps

/** The median of a few samples a little apart: RSS moves with each GC. */
async function settledRssKiB(pid: number): Promise<number> {
  const samples: number[] = [];
  for (let i = 0; i < 5; i++) {
    samples.push(memoryKiB(pid).rss);
    await sleep(300);
  }
  return median(samples);
}

interface PsTimes {
  cli: number[];
  http: number[];
}

async function psLatency(d: BenchDaemon, expected: number): Promise<PsTimes> {
  const times: PsTimes = { cli: [], http: [] };
  for (let i = -2; i < PS_RUNS; i++) {
    // Alternate which goes first; the first two of each are a warm-up.
    const both = [
      async () => {
        const run = await d.docker(['ps']);
        if (run.code !== 0) throw new Error(`docker ps: ${run.stderr}`);
        if (i >= 0) times.cli.push(run.seconds);
      },
      async () => {
        const started = performance.now();
        const reply = await d.http('GET', '/containers/json');
        const s = seconds(started);
        const count = (JSON.parse(reply.body.toString()) as unknown[]).length;
        if (count !== expected) throw new Error(`/containers/json listed ${count}, expected ${expected}`);
        if (i >= 0) times.http.push(s);
      },
    ];
    if (i % 2 !== 0) both.reverse();
    for (const run of both) await run();
  }
  return times;
}

async function runIdle(d: BenchDaemon): Promise<string> {
  const id = await d.create(['sleep', '3600']);
  await startContainer(d, id);
  return id;
}

async function idleAndPsPart(): Promise<void> {
  const d = await startDaemon();
  try {
    await sleep(1000);
    const rssNone = await settledRssKiB(d.pid);
    await runIdle(d);
    await sleep(500);
    const psOne = PARTS.has('ps') ? await psLatency(d, 1) : undefined;

    const started = performance.now();
    let next = 1;
    // A few at a time, as a script starting many containers would.
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (next < IDLE_CONTAINERS) {
          next++;
          await runIdle(d);
        }
      }),
    );
    const startSeconds = seconds(started);
    await sleep(3000);
    const rssMany = await settledRssKiB(d.pid);
    const agents = agentPids(d.root);
    if (agents.length !== IDLE_CONTAINERS)
      throw new Error(`found ${agents.length} agents, expected ${IDLE_CONTAINERS}`);
    const agentMemory = agents.map(memoryKiB);
    const psMany = PARTS.has('ps') ? await psLatency(d, IDLE_CONTAINERS) : undefined;

    if (PARTS.has('idle')) {
      const perContainer = (rssMany - rssNone) / IDLE_CONTAINERS;
      const agentRss = agentMemory.reduce((sum, m) => sum + m.rss, 0);
      const agentPss = agentMemory.reduce((sum, m) => sum + m.pss, 0);
      printTable(
        `idle containers: tetherd RSS (median of 5 samples, 0.3 s apart) with none and with ${IDLE_CONTAINERS} dev containers running \`sleep 3600\` (started ${fixed(startSeconds, 1)} s, 4 at a time)`,
        ['case', 'tetherd RSS MiB', 'per container KiB', 'ratio'],
        [
          ['no container (baseline: the idle daemon)', fixed(rssNone / 1024, 1), '-', '1.00x'],
          [
            `${IDLE_CONTAINERS} idle containers`,
            fixed(rssMany / 1024, 1),
            fixed(perContainer, 0),
            `${fixed(perContainer / rssNone, 4)}x (${fixed((100 * perContainer) / rssNone, 2)}% of the idle daemon each)`,
          ],
        ],
      );
      console.log(
        `for context, the ${agents.length} dev agents themselves (not tetherd): RSS ${fixed(agentRss / 1024, 0)} MiB total (${fixed(agentRss / agents.length / 1024, 1)} MiB each), PSS ${fixed(agentPss / 1024, 0)} MiB total (${fixed(agentPss / agents.length / 1024, 1)} MiB each)`,
      );
    }
    if (psOne && psMany) {
      const ms = (v: number): string => fixed(v * 1000, 1);
      printTable(
        `ps latency: median of ${PS_RUNS} runs each (a fresh connection per request, as the CLI makes); ratio = ${IDLE_CONTAINERS} containers / 1`,
        ['client', '1 container ms', `${IDLE_CONTAINERS} containers ms`, 'ratio'],
        [
          [
            'docker ps (CLI, >/dev/null)',
            ms(median(psOne.cli)),
            ms(median(psMany.cli)),
            ratio(median(psMany.cli), median(psOne.cli)),
          ],
          [
            'GET /containers/json (raw)',
            ms(median(psOne.http)),
            ms(median(psMany.http)),
            ratio(median(psMany.http), median(psOne.http)),
          ],
        ],
      );
    }
  } finally {
    await d.dispose();
  }
}

async function main(): Promise<void> {
  requireTetherd();
  console.log(`tetherd bench (dev driver): ${availableParallelism()} cpus, ${describeMachine()}`);
  if (PARTS.has('logs')) await logsPart();
  if (PARTS.has('fanout')) await fanoutPart();
  if (PARTS.has('idle') || PARTS.has('ps')) await idleAndPsPart();
}

await main();
