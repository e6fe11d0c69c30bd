/**
 * Isolation inside the VM, tried by a hostile image (issue 9): tetherd with the QEMU driver and the real
 * docker CLI run a container whose main process is test/e2e/hostile/probe.sh. From inside, the probe tries
 * to read the agent's SSH host key (fw_cfg, a new sysfs, /proc, agent memory, /dev/mem, raw disks), see
 * and open the agent's processes and virtio ports, mount, load modules, use capabilities beyond Docker's,
 * print forged status records where the host reads them, allocate all memory, fork without end and kill
 * PID 1, printing a REACHED/BLOCKED line per attempt. The container must reach nothing, survive all of it,
 * still answer exec, and the host must believe none of the forged records (timeline, exit code) while it
 * does report the real OOM kill. One boot carries every assertion; the `it`s run in order on it.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { REPO, need } from '../helpers/prerequisites.ts';
import {
  BUSYBOX_IMAGE_TAR,
  startTetherd,
  tetherdPrerequisites,
  type DockerResult,
  type Tetherd,
} from '../helpers/tetherd.ts';
import { vmPrerequisites } from '../helpers/vm.ts';
import { FORGED_EXIT_CODE, FORGED_MARK, HOSTILE_IMAGE, hostileImageTar } from './hostile/image.ts';

const NAME = 'hostile';
/** The probe's own exit code once the test lets it end (probe.sh), not the forged records' 42. */
const REAL_EXIT_CODE = 7;
/** Under TCG the whole probe takes a minute or two; a VM wedged by it must not hang the suite. */
const PROBE_TIMEOUT_MS = 240_000;
const EXEC_TIMEOUT_MS = 120_000;
/** The kernel's fixed inode number of the initial PID namespace (include/linux/proc_ns.h): the agent's. */
const INITIAL_PID_NAMESPACE = 4026531836;

/** Attempts the probe must have made (each as REACHED or BLOCKED), so that a probe cut short fails too. */
const EXPECTED_CHECKS = [
  'pid namespace',
  'pid 1',
  'agent processes',
  'agent fds',
  'host key via fw_cfg in /sys',
  'host key via a new sysfs mount',
  'host key via a sysfs mount in a new user namespace',
  'host key via /proc/1/environ',
  '/dev',
  'masked path /sys/firmware',
  'mount tmpfs',
  'insmod',
  'capabilities',
];
const EXPECTED_FULL_CHECKS = [...EXPECTED_CHECKS, 'memory hog', 'fork bomb', 'kill -TERM 1'];

interface ProbeReport {
  text: string;
  /** `VERDICT what: evidence` lines, in order. */
  findings: Array<{ verdict: string; what: string; line: string }>;
  reached: string[];
  done: boolean;
}

function parseProbe(text: string): ProbeReport {
  const findings = [...text.matchAll(/^(REACHED|BLOCKED|INFO) ([^:\n]+): ?(.*)$/gm)].map((match) => ({
    verdict: match[1]!,
    what: match[2]!,
    line: match[0],
  }));
  return {
    text,
    findings,
    reached: findings.filter((f) => f.verdict === 'REACHED').map((f) => f.line),
    done: /^PROBE DONE$/m.test(text),
  };
}

/** Everything wrong with a probe's report, the REACHED lines first; empty when it is clean. */
function problemsOf(report: ProbeReport, expected: readonly string[]): string[] {
  const problems = [...report.reached];
  if (!report.done) problems.push('the probe did not finish: no "PROBE DONE" line');
  for (const what of expected)
    if (!report.findings.some((finding) => finding.what === what))
      problems.push(`no line for the check "${what}"`);
  return problems;
}

function assertClean(report: ProbeReport, expected: readonly string[], who: string): void {
  const problems = problemsOf(report, expected);
  if (problems.length === 0) return;
  const rest = report.text
    .split('\n')
    .filter((line) => !line.startsWith('REACHED '))
    .join('\n');
  assert.fail(
    `${who}: ${report.reached.length} REACHED line(s), ${problems.length} problem(s):\n  ${problems.join('\n  ')}\n` +
      `--- the rest of the probe's output (BLOCKED, INFO, anything else) ---\n${rest}`,
  );
}

describe('isolation: a hostile image reaches nothing of the agent', { timeout: 1_200_000 }, () => {
  let daemon: Tetherd | undefined;
  let probe: ProbeReport | undefined;

  const docker = (args: string[], timeoutMs?: number): Promise<DockerResult> =>
    daemon!.docker(args, timeoutMs === undefined ? {} : { timeoutMs });
  const inspectState = async (): Promise<Record<string, unknown>> => {
    const result = await docker(['inspect', '-f', '{{json .State}}', NAME]);
    assert.equal(result.code, 0, `docker inspect: ${result.stderr}`);
    return JSON.parse(result.stdout) as Record<string, unknown>;
  };
  const health = (): Promise<string> =>
    new Promise((resolve) =>
      execFile(
        join(REPO, 'bin/tetherctl'),
        ['health', '--socket', daemon!.socket, NAME],
        { timeout: 30_000 },
        (error, stdout, stderr) =>
          resolve(error ? `${stdout}\n(tetherctl health failed: ${stderr})` : stdout),
      ),
    );
  const skipUnlessReady = (t: { skip(message?: string): void }): boolean => {
    if (daemon) return false;
    t.skip('no tetherd');
    return true;
  };

  before(async (t) => {
    if (!need(t as never, { ...vmPrerequisites(), ...tetherdPrerequisites() })) return;
    daemon = await startTetherd({ driver: 'qemu' });
  });

  after(async () => {
    if (daemon) await daemon.dispose();
  });

  it('builds the hostile image on the busybox one and loads it with docker load', async (t) => {
    if (skipUnlessReady(t)) return;
    const archive = join(daemon!.dir, 'hostile-image.tar');
    writeFileSync(archive, await hostileImageTar(BUSYBOX_IMAGE_TAR));
    const loaded = await docker(['load', '-i', archive]);
    assert.equal(loaded.code, 0, loaded.stderr);
    assert.match(loaded.stdout, new RegExp(`Loaded image: ${HOSTILE_IMAGE}`));
  });

  it('the probe, as the main process, reaches nothing and survives its own memory hog and fork bomb', async (t) => {
    if (skipUnlessReady(t)) return;
    const run = await docker(['run', '-d', '--name', NAME, HOSTILE_IMAGE]);
    assert.equal(run.code, 0, `docker run: ${run.stderr}`);
    const deadline = Date.now() + PROBE_TIMEOUT_MS;
    let text = '';
    for (;;) {
      text = (await docker(['logs', NAME])).stdout;
      if (/^PROBE DONE$/m.test(text)) break;
      const state = await inspectState();
      if (state['Status'] !== 'running') {
        text = (await docker(['logs', NAME])).stdout;
        text += `\n(the container is ${String(state['Status'])}, exit code ${String(state['ExitCode'])})`;
        break;
      }
      if (Date.now() > deadline) {
        text += `\n(no PROBE DONE after ${PROBE_TIMEOUT_MS / 1000} s)`;
        break;
      }
      await sleep(1000);
    }
    probe = parseProbe(text);
    const count = (verdict: string) => probe!.findings.filter((f) => f.verdict === verdict).length;
    t.diagnostic(
      `probe: ${count('REACHED')} reached, ${count('BLOCKED')} blocked, ${count('INFO')} info, ` +
        `${probe.done ? 'done' : 'not done'}`,
    );
    for (const finding of probe.findings.filter((f) => f.verdict === 'INFO')) t.diagnostic(finding.line);
    assertClean(probe, EXPECTED_FULL_CHECKS, 'the main process');
  });

  it('the VM still answers exec after the probe, in the container’s own PID namespace', async (t) => {
    if (skipUnlessReady(t)) return;
    const alive = await docker(['exec', NAME, 'echo', 'alive'], EXEC_TIMEOUT_MS);
    assert.deepEqual([alive.code, alive.stdout], [0, 'alive\n'], `docker exec: ${alive.stderr}`);
    // Exec sessions join the main process's namespaces: the probe is in view, the agent is not. (NSpid
    // cannot tell: it counts from the PID namespace of the /proc in view, the container's own.)
    const ps = await docker(
      [
        'exec',
        NAME,
        'sh',
        '-c',
        'readlink /proc/self/ns/pid; readlink /proc/1/ns/pid; for f in /proc/[0-9]*/cmdline; do tr "\\0" " " < $f; echo; done | grep .',
      ],
      EXEC_TIMEOUT_MS,
    );
    assert.equal(ps.code, 0, ps.stderr);
    const [own, pid1] = ps.stdout.split('\n');
    assert.ok(
      own !== undefined &&
        /^pid:\[\d+\]$/.test(own) &&
        own !== `pid:[${INITIAL_PID_NAMESPACE}]` &&
        own === pid1,
      `the exec session is in the container's PID namespace (its PID 1's), not the VM's:\n${ps.stdout}`,
    );
    assert.match(ps.stdout, /hostile\/probe\.sh full/, `and the main process is in view:\n${ps.stdout}`);
  });

  it('an exec session reaches nothing either', async (t) => {
    if (skipUnlessReady(t)) return;
    const exec = await docker(['exec', NAME, '/hostile/probe.sh', 'passive'], PROBE_TIMEOUT_MS);
    const report = parseProbe(`${exec.stdout}${exec.stderr ? `\n(stderr: ${exec.stderr})` : ''}`);
    assertClean(report, EXPECTED_CHECKS, `docker exec (exit ${exec.code})`);
    assert.equal(exec.code, 0);
  });

  it('the OOM kill of the memory hog is on the host timeline', async (t) => {
    if (skipUnlessReady(t)) return;
    let timeline = '';
    for (let i = 0; i < 30; i++) {
      timeline = await health();
      if (/ guest oom /.test(timeline)) break;
      await sleep(1000);
    }
    assert.ok(/ guest oom /.test(timeline), `no oom status record in the timeline:\n${timeline}`);
  });

  it('forged status records never reach the host: its real exit code, no forged record in the timeline', async (t) => {
    if (skipUnlessReady(t)) return;
    // The probe waits for this file, then exits with its real code.
    const finish = await docker(['exec', NAME, 'touch', '/tmp/probe-finish'], EXEC_TIMEOUT_MS);
    const waited = await docker(['wait', NAME], EXEC_TIMEOUT_MS);
    // A probe the first check gave up on may have gone on: what it printed since, for the reader.
    const seen = new Set(probe?.text.split('\n'));
    const later = (await docker(['logs', NAME])).stdout.split('\n').filter((l) => l && !seen.has(l));
    if (later.length > 0) t.diagnostic(`the probe's lines after the first check:\n${later.join('\n')}`);
    const timeline = await health();
    assert.ok(!timeline.includes(FORGED_MARK), `a forged record is in the host's timeline:\n${timeline}`);
    assert.ok(
      !new RegExp(`exit=${FORGED_EXIT_CODE}\\b`).test(timeline),
      `exit=${FORGED_EXIT_CODE}:\n${timeline}`,
    );
    assert.equal(finish.code, 0, `docker exec touch /tmp/probe-finish: ${finish.stderr}`);
    assert.equal(waited.stdout.trim(), String(REAL_EXIT_CODE), `docker wait: ${waited.stderr}`);
    const state = await inspectState();
    assert.deepEqual([state['Status'], state['ExitCode']], ['exited', REAL_EXIT_CODE]);
    assert.ok(
      new RegExp(`guest process-exited ok exit=${REAL_EXIT_CODE}\\b`).test(timeline),
      `no process-exited record with exit=${REAL_EXIT_CODE}:\n${timeline}`,
    );
  });

  it('docker inspect shows State.OOMKilled', async (t) => {
    if (skipUnlessReady(t)) return;
    const state = await inspectState();
    assert.equal(state['OOMKilled'], true, `State: ${JSON.stringify(state)}`);
  });
});
