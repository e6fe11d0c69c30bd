/**
 * Log reading: 256 MiB of log frames (64 KiB payloads) in a container's live file, read back through
 * readLogs (raw mode, as plain `docker logs` and attach replay use it) against reading the same file with
 * an fs read stream that decodes nothing (the baseline), and in lines mode with tail 100 (`docker logs
 * --tail 100`). Each read runs in its own process so that its peak RSS is its own; cases alternate.
 */
import { spawn } from 'node:child_process';
import { createReadStream, closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeLogFrameHeader } from '../protocol/src/logs/log-frame.ts';
import { LogStore } from '../hostside/src/daemon/logs/log-store.ts';
import { DEFAULT_CHUNK_BYTES, readLogs } from '../hostside/src/daemon/logs/log-reader.ts';
import { describeMachine, fixed, median, peakRssKiB, printTable, ratio } from './lib/harness.ts';

const PAYLOAD_BYTES = 64 * 1024;
const TOTAL_BYTES = Number(process.env['BENCH_BYTES'] ?? 256 * 1024 * 1024);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
const TAIL = 100;
const LINE = 'a log line of about eighty bytes, as a service would print it: status=ok n=';

type Case = 'baseline' | 'raw' | 'tail';
interface Result {
  seconds: number;
  /** Payload bytes (raw), file bytes (baseline), or lines returned (tail). */
  count: number;
  peakKiB: number | undefined;
}

/** One payload: text lines ending in `\n` (what lines mode splits), exactly PAYLOAD_BYTES long. */
function payload(frameIndex: number): Buffer {
  let text = '';
  for (let line = 0; text.length < PAYLOAD_BYTES; line++) text += `${LINE}${frameIndex}.${line}\n`;
  const out = Buffer.from(text.slice(0, PAYLOAD_BYTES));
  out[PAYLOAD_BYTES - 1] = 0x0a;
  return out;
}

async function child(kind: Case, dir: string): Promise<void> {
  const started = performance.now();
  let count = 0;
  if (kind === 'baseline') {
    const path = join(dir, 'container.log');
    for await (const chunk of createReadStream(path, { highWaterMark: DEFAULT_CHUNK_BYTES }))
      count += (chunk as Buffer).length;
  } else {
    const store = await LogStore.open(dir);
    const options = kind === 'raw' ? { follow: false } : { follow: false, tail: TAIL };
    for await (const entry of readLogs(store, options)) count += kind === 'raw' ? entry.data.length : 1;
  }
  const seconds = (performance.now() - started) / 1000;
  const result: Result = { seconds, count, peakKiB: peakRssKiB(process.pid) };
  process.stdout.write(JSON.stringify(result));
}

function runChild(kind: Case, dir: string): Promise<Result> {
  return new Promise((resolve, reject) => {
    const proc = spawn(
      process.execPath,
      ['--import', 'tsx', new URL(import.meta.url).pathname, '--child', kind, dir],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    let out = '';
    proc.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    proc.on('error', reject);
    proc.on('exit', (code) =>
      code === 0 ? resolve(JSON.parse(out) as Result) : reject(new Error(`${kind} child exited ${code}`)),
    );
  });
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'tether-bench-logs-'));
  try {
    const store = await LogStore.open(dir);
    await store.beginBoot();
    const frames = Math.ceil(TOTAL_BYTES / PAYLOAD_BYTES);
    const fd = openSync(store.livePath, 'w');
    let lines = 0;
    for (let i = 0; i < frames; i++) {
      const data = payload(i);
      lines += data.toString().split('\n').length - 1;
      writeSync(fd, encodeLogFrameHeader(1, Date.now(), data.length));
      writeSync(fd, data);
    }
    closeSync(fd);
    const payloadBytes = frames * PAYLOAD_BYTES;
    const fileBytes = payloadBytes + frames * 14;
    console.log(`logs bench: ${describeMachine()}`);
    console.log(
      `${frames} frames of ${PAYLOAD_BYTES} B (${fixed(fileBytes / 2 ** 20, 1)} MiB file, ${lines} lines), ${ROUNDS} rounds`,
    );

    const cases: Case[] = ['baseline', 'raw', 'tail'];
    const results: Record<Case, Result[]> = { baseline: [], raw: [], tail: [] };
    const expected: Record<Case, number> = { baseline: fileBytes, raw: payloadBytes, tail: TAIL };
    for (let round = 0; round < ROUNDS; round++) {
      for (let k = 0; k < cases.length; k++) {
        const kind = cases[(k + round) % cases.length]!;
        const result = await runChild(kind, dir);
        if (result.count !== expected[kind])
          throw new Error(`${kind}: got ${result.count}, expected ${expected[kind]}`);
        results[kind].push(result);
      }
    }

    const mib = fileBytes / 2 ** 20;
    const names: Record<Case, string> = {
      baseline: 'fs read stream, no decoding',
      raw: 'readLogs raw (frames)',
      tail: `readLogs lines, tail ${TAIL}`,
    };
    printTable(
      'each round',
      ['case', 'round', 's', 'MiB/s', 'peak RSS MiB'],
      cases.flatMap((kind) =>
        results[kind].map((r, i) => [
          names[kind],
          String(i + 1),
          fixed(r.seconds, 3),
          fixed(mib / r.seconds, 0),
          r.peakKiB === undefined ? '?' : fixed(r.peakKiB / 1024, 1),
        ]),
      ),
    );
    const base = median(results.baseline.map((r) => r.seconds));
    printTable(
      'median of the rounds (ratio: the case’s MiB/s over the baseline’s)',
      ['case', 's', 'MiB/s', 'ratio', 'max peak RSS MiB'],
      cases.map((kind) => {
        const seconds = median(results[kind].map((r) => r.seconds));
        const peak = Math.max(...results[kind].map((r) => r.peakKiB ?? 0));
        return [
          names[kind],
          fixed(seconds, 3),
          fixed(mib / seconds, 0),
          ratio(base, seconds),
          fixed(peak / 1024, 1),
        ];
      }),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--child') {
  await child(process.argv[3] as Case, process.argv[4]!);
} else {
  await main();
}
