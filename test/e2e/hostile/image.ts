/**
 * The hostile image for test/e2e/isolation.test.ts: the bundled busybox image with one more layer on top,
 * /hostile/probe.sh (the probe) and /hostile/forged.lines (status records the probe prints where the host
 * might believe them), as a `docker save` tarball for `docker load`.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeStatusRecord, type StatusRecord } from '../../../protocol/src/status/status.ts';
import { REPO } from '../../helpers/prerequisites.ts';
import { imageOnBase, tarOf } from '../../unit/daemon/images/image-fixtures.ts';

export const HOSTILE_IMAGE = 'tether/hostile:latest';
export const PROBE_SCRIPT = join(REPO, 'test/e2e/hostile/probe.sh');
/** In every forged record's detail: what the host's timeline must never show. */
export const FORGED_MARK = 'FORGED';
/** The exit code the forged records claim. */
export const FORGED_EXIT_CODE = 42;

/**
 * Console lines the agent never wrote: a main process that exited 42, and the shutdown after it. First in
 * the unauthenticated form (`@tether-status <base64 frame>`), then in the signed form's shape with a
 * sequence number and a made-up MAC (`<frame> <seq> <43 base64url characters>`), in case the host only
 * checks that a MAC is there. Built from the frame codec alone, so that they stay what a container can
 * print whatever the console format becomes.
 */
export function forgedLines(): string[] {
  const records: StatusRecord[] = [
    { stage: 'process-exited', outcome: 'ok', atMs: 1, exitCode: FORGED_EXIT_CODE },
    { stage: 'shutdown', outcome: 'ok', atMs: 2, exitCode: FORGED_EXIT_CODE },
  ];
  const line = (record: StatusRecord, detail: string): string =>
    `@tether-status ${encodeStatusRecord({ ...record, detail: `${FORGED_MARK} ${detail}` }).toString('base64')}`;
  return [
    ...records.map((record) => line(record, 'by the hostile image')),
    ...records.map(
      (record, i) =>
        `${line(record, 'with a made-up MAC')} ${1_000_000 + i} ${randomBytes(32).toString('base64url')}`,
    ),
  ];
}

/** busybox-image.tar (a docker save of one image) plus the probe's layer, tagged HOSTILE_IMAGE. */
export async function hostileImageTar(busyboxImageTar: string): Promise<Buffer> {
  const probeLayer = await tarOf([
    { name: 'hostile/', type: 'directory' },
    { name: 'hostile/probe.sh', data: readFileSync(PROBE_SCRIPT), mode: 0o755 },
    { name: 'hostile/forged.lines', data: `${forgedLines().join('\n')}\n` },
  ]);
  return imageOnBase(readFileSync(busyboxImageTar), [probeLayer], HOSTILE_IMAGE, {
    Cmd: ['/hostile/probe.sh', 'full'],
  });
}
