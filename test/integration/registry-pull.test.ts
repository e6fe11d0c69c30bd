/**
 * docker pull from Debian's docker-registry into tetherd (dev driver), with the real docker CLI: anonymous
 * pulls, up to date, docker run of an image not yet here, docker login against htpasswd basic auth (and a
 * wrong password), a missing tag, and a blob corrupted in the registry's storage, which is refused and
 * leaves the store as it was.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { need } from '../helpers/prerequisites.ts';
import { registryPrerequisites, startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { BUSYBOX_IMAGE_TAR, startTetherd, tetherdPrerequisites, type Tetherd } from '../helpers/tetherd.ts';
import { dockerSave, tarOf } from '../unit/daemon/images/image-fixtures.ts';

const USER = 'tether';
const PASSWORD = 'pull-me';

describe('docker pull from a registry (dev driver)', () => {
  let anonymous: TestRegistry | undefined;
  let private_: TestRegistry | undefined;
  let d: Tetherd | undefined;
  let scratch = '';
  const savedDockerConfig = process.env['DOCKER_CONFIG'];
  const prerequisites = (): Record<string, boolean> => ({
    ...tetherdPrerequisites(),
    ...registryPrerequisites(),
  });
  const ready = (t: TestContext): Tetherd | undefined => (need(t, prerequisites()) ? d : undefined);
  const images = async (): Promise<string[]> => {
    const listed = await d!.docker(['images', '--format', '{{.Repository}}:{{.Tag}} {{.ID}}']);
    assert.equal(listed.code, 0, listed.stderr);
    return listed.stdout.trim().split('\n').filter(Boolean).sort();
  };

  before(async () => {
    if (Object.values(prerequisites()).includes(false)) return;
    scratch = mkdtempSync(join(tmpdir(), 'registry-pull-'));
    // The CLI keeps logins in DOCKER_CONFIG: a directory of this test's, never the user's.
    process.env['DOCKER_CONFIG'] = join(scratch, 'docker-config');
    try {
      anonymous = await startRegistry();
      private_ = await startRegistry({ user: USER, password: PASSWORD });
      await anonymous.push(`docker-archive:${BUSYBOX_IMAGE_TAR}`, 'busybox:latest');
      await anonymous.push(`docker-archive:${BUSYBOX_IMAGE_TAR}`, 'team/busybox:run');
      await private_.push(`docker-archive:${BUSYBOX_IMAGE_TAR}`, 'busybox:secret');
      d = await startTetherd({ driver: 'dev' });
    } catch (error) {
      await anonymous?.stop();
      await private_?.stop();
      throw error;
    }
  });
  after(async () => {
    await d?.dispose();
    await anonymous?.stop();
    await private_?.stop();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
    if (savedDockerConfig === undefined) delete process.env['DOCKER_CONFIG'];
    else process.env['DOCKER_CONFIG'] = savedDockerConfig;
  });

  it('pulls anonymously with progress, lists the image, and says up to date the second time', async (t) => {
    const daemon = ready(t);
    if (!daemon) return;
    const name = `${anonymous!.host}/busybox`;
    const pull = await daemon.docker(['pull', `${name}:latest`]);
    assert.equal(pull.code, 0, pull.stderr);
    assert.match(pull.stdout, /^latest: Pulling from busybox$/m);
    assert.match(pull.stdout, /^[0-9a-f]{12}: Pull complete$/m);
    assert.match(pull.stdout, /^Digest: sha256:[0-9a-f]{64}$/m);
    assert.match(pull.stdout, new RegExp(`^Status: Downloaded newer image for ${name}:latest$`, 'm'));
    assert.ok((await images()).some((line) => line.startsWith(`${name}:latest `)));

    const again = await daemon.docker(['pull', name]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, new RegExp(`^Status: Image is up to date for ${name}:latest$`, 'm'));
    assert.doesNotMatch(again.stdout, /Pull complete/);
  });

  it('docker run of an image not yet here pulls it first (its layer already exists)', async (t) => {
    const daemon = ready(t);
    if (!daemon) return;
    const image = `${anonymous!.host}/team/busybox:run`;
    const run = await daemon.docker(['run', '--rm', image, 'echo', 'pulled and ran']);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, 'pulled and ran\n');
    assert.match(run.stderr, new RegExp(`Unable to find image '${image}' locally`));
    assert.match(run.stderr, /^[0-9a-f]{12}: Already exists$/m);
    assert.match(run.stderr, new RegExp(`Status: Downloaded newer image for ${image}`));
  });

  it("refuses a missing tag with the registry's words", async (t) => {
    const daemon = ready(t);
    if (!daemon) return;
    const pull = await daemon.docker(['pull', `${anonymous!.host}/busybox:nope`]);
    assert.equal(pull.code, 1);
    assert.match(
      pull.stderr,
      new RegExp(`manifest for ${anonymous!.host}/busybox:nope not found: manifest unknown`),
    );
  });

  it('pulls from an htpasswd registry after docker login, and refuses a wrong password or none', async (t) => {
    const daemon = ready(t);
    if (!daemon) return;
    const host = private_!.host;
    const denied = await daemon.docker(['pull', `${host}/busybox:secret`]);
    assert.equal(denied.code, 1);
    assert.match(
      denied.stderr,
      new RegExp(
        `pull access denied for ${host}/busybox, repository does not exist or may require 'docker login'`,
      ),
    );

    const wrong = await daemon.docker(['login', '-u', USER, '--password-stdin', host], { input: 'not-it\n' });
    assert.notEqual(wrong.code, 0);
    assert.match(
      wrong.stderr,
      new RegExp(`login attempt to http://${host}/v2/ failed with status: 401 Unauthorized`),
    );

    const login = await daemon.docker(['login', '-u', USER, '--password-stdin', host], {
      input: `${PASSWORD}\n`,
    });
    assert.equal(login.code, 0, login.stderr);
    assert.match(login.stdout, /Login Succeeded/);

    const pull = await daemon.docker(['pull', `${host}/busybox:secret`]);
    assert.equal(pull.code, 0, pull.stderr);
    assert.match(pull.stdout, new RegExp(`Status: Downloaded newer image for ${host}/busybox:secret`));
    assert.ok((await images()).some((line) => line.startsWith(`${host}/busybox:secret `)));
    await daemon.docker(['logout', host]);
  });

  it('refuses a layer corrupted in the registry and leaves the images as they were', async (t) => {
    const daemon = ready(t);
    if (!daemon) return;
    // An image of its own, so its layer is one tetherd has not got and must download.
    const layer = await tarOf([
      { name: 'etc/', type: 'directory' },
      { name: 'etc/corrupt-me', data: 'x'.repeat(4096) },
    ]);
    const { archive } = await dockerSave({ layers: [layer], repoTags: ['corrupt:1'] });
    const file = join(scratch, 'corrupt.tar');
    writeFileSync(file, archive);
    await anonymous!.push(`docker-archive:${file}`, 'corrupt:1');
    const manifest = (await (
      await fetch(`http://${anonymous!.host}/v2/corrupt/manifests/1`, {
        headers: { Accept: 'application/vnd.docker.distribution.manifest.v2+json' },
      })
    ).json()) as { layers: { digest: string }[] };
    const blob = anonymous!.blobPath(manifest.layers[0]!.digest);
    const bytes = readFileSync(blob);
    bytes[bytes.length - 10] = bytes[bytes.length - 10]! ^ 0xff;
    writeFileSync(blob, bytes);

    const before = await images();
    const pull = await daemon.docker(['pull', `${anonymous!.host}/corrupt:1`]);
    assert.equal(pull.code, 1);
    assert.match(pull.stderr, new RegExp(`${manifest.layers[0]!.digest}.*digest mismatch`));
    assert.deepEqual(await images(), before);
    const tmp = join(daemon.root, 'images', 'tmp');
    assert.deepEqual(
      readdirSync(tmp).filter((name) => name.startsWith('pull-') && name !== 'pull-downloads'),
      [],
      'no pull work directory is left',
    );
  });
});
