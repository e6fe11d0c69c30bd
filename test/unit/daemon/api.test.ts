/** The pure parts of tetherd's API edge: version paths, request mapping, filters, Docker's shapes. */
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { statHeader } from '../../../hostside/src/daemon/api/docker/archive.ts';
import { dockerFileMode } from '../../../protocol/src/requests/requests.ts';
import { encodeOutput } from '../../../hostside/src/daemon/api/docker/attach.ts';
import { humanDuration } from '../../../hostside/src/daemon/api/docker/container-json.ts';
import {
  createRequestFrom,
  parseFilters,
  parseSize,
} from '../../../hostside/src/daemon/api/docker/containers.ts';
import { createContainerSchema, parseBody } from '../../../hostside/src/daemon/api/docker/schemas.ts';
import { logOptionsFrom } from '../../../hostside/src/daemon/api/docker/streams.ts';
import { eventMatches } from '../../../hostside/src/daemon/api/docker/system.ts';
import { statusForError } from '../../../hostside/src/daemon/api/http/errors.ts';
import {
  compareVersions,
  readUpgradeBody,
  splitVersion,
} from '../../../hostside/src/daemon/api/http/router.ts';
import { formatVmTable } from '../../../hostside/src/cli/daemon-command.ts';
import type { DockerEvent } from '../../../hostside/src/daemon/containers/events.ts';
import { mergeEnv, normaliseSignal, restartWanted } from '../../../hostside/src/daemon/containers/manager.ts';
import { defaultDaemonPaths } from '../../../hostside/src/daemon/state/daemon-paths.ts';
import { TetherError, isTetherError } from '../../../protocol/src/errors/errors.ts';

const noNetworks = (): boolean => false;

function body(value: unknown): ReturnType<typeof parseBody<typeof createContainerSchema>> {
  return parseBody(createContainerSchema, value, 'container config');
}

void describe('the HTTP edge', () => {
  void it('splits Docker version prefixes off paths and compares versions numerically', () => {
    assert.deepEqual(splitVersion('/v1.43/containers/json'), { version: '1.43', path: '/containers/json' });
    assert.deepEqual(splitVersion('/containers/json'), { version: undefined, path: '/containers/json' });
    assert.ok(compareVersions('1.9', '1.24') < 0);
    assert.ok(compareVersions('1.47', '1.47') === 0);
    assert.ok(compareVersions('2.0', '1.99') > 0);
  });

  void it("maps error codes to Docker's statuses", () => {
    assert.equal(statusForError(new TetherError('TETHER_NO_SUCH_CONTAINER', 'x')), 404);
    assert.equal(statusForError(new TetherError('TETHER_NAME_CONFLICT', 'x')), 409);
    assert.equal(statusForError(new TetherError('TETHER_INVALID_PARAMETER', 'x')), 400);
    assert.equal(statusForError(new TetherError('TETHER_VM_FAILED', 'x')), 500);
    assert.equal(statusForError(new Error('bug')), 500);
  });

  void it('defaults its root and socket as DESIGN.md gives them', () => {
    assert.deepEqual(defaultDaemonPaths(0, {}), {
      root: '/var/lib/tether',
      socket: '/run/tether/tetherd.sock',
    });
    assert.deepEqual(defaultDaemonPaths(1000, { XDG_DATA_HOME: '/d', XDG_RUNTIME_DIR: '/r' }, '/h'), {
      root: '/d/tether',
      socket: '/r/tether/tetherd.sock',
    });
    assert.equal(defaultDaemonPaths(1000, {}, '/h').root, '/h/.local/share/tether');
  });
});

void describe('container create requests', () => {
  void it('maps the docker CLI body: command, env, tty, ports, memory, log options', () => {
    const request = createRequestFrom(
      body({
        Image: 'busybox',
        Cmd: ['sh', '-c', 'echo hi'],
        Env: ['A=1'],
        Tty: true,
        OpenStdin: true,
        StdinOnce: true,
        ExposedPorts: { '80/tcp': {} },
        HostConfig: {
          AutoRemove: true,
          Memory: 512 * 1024 * 1024,
          PortBindings: { '80/tcp': [{ HostIp: '', HostPort: '8080' }], '53/udp': [{ HostPort: '' }] },
          LogConfig: { Type: 'json-file', Config: { 'max-size': '10m', 'max-file': '3' } },
        },
      }),
      'web',
      noNetworks,
    );
    assert.equal(request.name, 'web');
    assert.deepEqual(request.cmd, ['sh', '-c', 'echo hi']);
    assert.equal(request.tty, true);
    assert.equal(request.stdinOnce, true);
    assert.deepEqual(request.hostConfig?.portBindings, [
      { containerPort: '80/tcp', hostIp: '127.0.0.1', hostPort: '8080' },
      { containerPort: '53/udp', hostIp: '127.0.0.1', hostPort: '' },
    ]);
    assert.equal(request.hostConfig?.memoryBytes, 512 * 1024 * 1024);
    assert.equal(request.hostConfig?.logMaxBytes, 10 * 1024 * 1024);
    assert.equal(request.hostConfig?.logMaxFiles, 3);
    assert.ok(request.exposedPorts?.includes('53/udp'));
  });

  void it('takes a string command as one argv word, as Docker does', () => {
    assert.deepEqual(createRequestFrom(body({ Image: 'x', Cmd: 'true' }), undefined, noNetworks).cmd, [
      'true',
    ]);
  });

  void it('refuses what a VM container cannot do, saying why', () => {
    const refusals: [unknown, RegExp][] = [
      [
        { Image: 'x', HostConfig: { Binds: ['/etc:/host'] } },
        /\/etc:\/host: a host directory cannot be mounted into a container here: each container is a VM/,
      ],
      [
        { Image: 'x', HostConfig: { Mounts: [{ Type: 'bind', Source: '/srv', Target: '/srv' }] } },
        /shares disks with the host, not folders/,
      ],
      [{ Image: 'x', HostConfig: { Privileged: true } }, /--privileged/],
      [
        { Image: 'x', HostConfig: { PortBindings: { '80/tcp': [{ HostPort: '70000' }] } } },
        /invalid host port 70000/,
      ],
      [
        { Image: 'x', HostConfig: { PortBindings: { '80/tcp': [{ HostIp: '::1', HostPort: '80' }] } } },
        /IPv4 only/,
      ],
      [{ Image: 'x', HostConfig: { LogConfig: { Type: 'syslog' } } }, /log driver syslog is not supported/],
      [{ Image: 'x', HostConfig: { NetworkMode: 'nosuch' } }, /network nosuch not found/],
    ];
    for (const [value, message] of refusals)
      assert.throws(() => createRequestFrom(body(value), undefined, noNetworks), message);
  });

  void it('names a field of the wrong type', () => {
    assert.throws(
      () => body({ Image: 'x', Cmd: 5 }),
      (error: unknown) => isTetherError(error, 'TETHER_INVALID_PARAMETER') && /Cmd/.test(error.message),
    );
    assert.throws(() => body({}), /Image/);
  });

  void it("parses Docker's sizes", () => {
    assert.equal(parseSize('10m', 'x'), 10 * 1024 * 1024);
    assert.equal(parseSize('1g', 'x'), 1024 ** 3);
    assert.equal(parseSize('512', 'x'), 512);
    assert.equal(parseSize('1.5k', 'x'), 1536);
    assert.throws(() => parseSize('lots', 'max-size'), /max-size: "lots" is not a size/);
  });

  void it('merges image and user env, the user winning per key', () => {
    assert.deepEqual(mergeEnv(['PATH=/bin', 'A=1'], ['A=2', 'B=3']), ['PATH=/bin', 'A=2', 'B=3']);
  });

  void it('names signals as the channel carries them and refuses the rest', () => {
    assert.equal(normaliseSignal('term'), 'SIGTERM');
    assert.equal(normaliseSignal('SIGKILL'), 'SIGKILL');
    assert.equal(normaliseSignal('9'), 'SIGKILL');
    assert.throws(() => normaliseSignal('CONT'), /RFC 4254/);
    assert.throws(() => normaliseSignal('x y'), /Invalid signal/);
  });
});

void describe("Docker's query parameters and shapes", () => {
  void it('parses filters in both of JSON forms Docker accepts', () => {
    assert.deepEqual(
      [...parseFilters('{"name":["a"],"status":{"running":true}}')],
      [
        ['name', ['a']],
        ['status', ['running']],
      ],
    );
    assert.throws(() => parseFilters('{'), /invalid filters/);
  });

  void it('maps logs options: -t and --tail read lines, since/until become ms', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    const options = logOptionsFrom(
      new URLSearchParams('follow=1&timestamps=1&tail=5&since=1767225590&until=1767225600.5'),
      now,
    );
    assert.equal(options.follow, true);
    assert.equal(options.timestamps, true);
    assert.equal(options.lines, true);
    assert.equal(options.tail, 5);
    assert.equal(options.since, 1767225590_000);
    assert.equal(options.until, 1767225600_500);
    assert.equal(logOptionsFrom(new URLSearchParams('tail=all')).lines, false);
    assert.throws(() => logOptionsFrom(new URLSearchParams('tail=x')), /invalid value for "tail"/);
  });

  void it("frames output as Docker's multiplexed stream without a tty, raw with one", () => {
    const entry = { stream: 2 as const, timestampMs: 0, data: Buffer.from('err') };
    assert.deepEqual([...encodeOutput(entry, false)], [2, 0, 0, 0, 0, 0, 0, 3, ...Buffer.from('err')]);
    assert.equal(encodeOutput(entry, true).toString(), 'err');
  });

  void it("gives paths Go's file-mode bits for docker cp", () => {
    assert.equal(dockerFileMode(0o040755), 2 ** 31 + 0o755);
    assert.equal(dockerFileMode(0o120777), 2 ** 27 + 0o777);
    assert.equal(dockerFileMode(0o100644), 0o644);
    const header = JSON.parse(
      Buffer.from(
        statHeader({ name: 'etc', size: 4096, mode: 0o040755, mtime: 'x', linkTarget: '' }),
        'base64',
      ).toString(),
    ) as { mode: number };
    assert.equal(header.mode, 2 ** 31 + 0o755);
  });

  void it('filters events by type, container, action and label', () => {
    const event: DockerEvent = {
      Type: 'container',
      Action: 'exec_start: sh',
      Actor: { ID: 'abc123', Attributes: { name: 'web', image: 'busybox', tier: 'front' } },
      scope: 'local',
      time: 1,
      timeNano: 1,
    };
    assert.ok(eventMatches(event, new Map([['container', ['web']]])));
    assert.ok(eventMatches(event, new Map([['container', ['abc']]])));
    assert.ok(eventMatches(event, new Map([['event', ['exec_start']]])));
    assert.ok(eventMatches(event, new Map([['label', ['tier=front']]])));
    assert.ok(!eventMatches(event, new Map([['type', ['image']]])));
    assert.ok(!eventMatches(event, new Map([['event', ['die']]])));
  });

  void it('words durations as docker ps does', () => {
    assert.equal(humanDuration(200), 'Less than a second');
    assert.equal(humanDuration(5000), '5 seconds');
    assert.equal(humanDuration(65_000), 'About a minute');
    assert.equal(humanDuration(3 * 3600_000), '3 hours');
  });

  void it('prints tetherctl vm ls as an aligned table', () => {
    const table = formatVmTable([
      {
        id: 'a'.repeat(64),
        name: 'web',
        status: 'running',
        pid: 42,
        channel: 'up',
        boot: 2,
        ports: ['127.0.0.1:8080->80/tcp'],
      },
      { id: 'b'.repeat(64), name: 'job', status: 'exited', pid: 0, channel: 'none', boot: 1, ports: [] },
    ]);
    const lines = table.trimEnd().split('\n');
    assert.equal(lines.length, 3);
    assert.deepEqual(lines[1]!.split(/\s{2,}/), [
      'a'.repeat(12),
      'web',
      'running',
      '42',
      'up',
      '2',
      '127.0.0.1:8080->80/tcp',
    ]);
    assert.deepEqual(lines[2]!.split(/\s{2,}/), ['b'.repeat(12), 'job', 'exited', '-', 'none', '1']);
    // Aligned: every row's STATUS column starts where the header's does.
    const column = lines[0]!.indexOf('STATUS');
    assert.equal(lines[1]!.indexOf('running'), column);
    assert.equal(lines[2]!.indexOf('exited'), column);
  });
});

void describe('restart policies', () => {
  void it("bring a container back as Docker's do, never after a stop or a failed boot", () => {
    const ok = { exitCode: 0, error: '' };
    const failed = { exitCode: 2, error: '' };
    assert.equal(restartWanted('no', failed, false), false);
    assert.equal(restartWanted('always', ok, false), true);
    assert.equal(restartWanted('unless-stopped', ok, false), true);
    assert.equal(restartWanted('on-failure', ok, false), false);
    assert.equal(restartWanted('on-failure', failed, false), true);
    assert.equal(restartWanted('always', failed, true), false);
    assert.equal(
      restartWanted('always', { exitCode: 128, error: 'boot failed at config: bad' }, false),
      false,
    );
  });
});

void describe('upgrade request bodies', () => {
  void it('takes exactly Content-Length bytes, from head and the socket, and leaves what follows as stdin', async () => {
    const socket = new PassThrough();
    const req = { headers: { 'content-length': '28' } } as unknown as IncomingMessage;
    const body = readUpgradeBody(req, socket, Buffer.from('{"Detach":false,'));
    socket.write('"Tty":false}');
    socket.write('stdin bytes');
    assert.equal((await body).toString(), '{"Detach":false,"Tty":false}');
    const rest: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => rest.push(chunk));
    socket.resume();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(Buffer.concat(rest).toString(), 'stdin bytes');
  });

  void it('refuses a body over the limit', async () => {
    const req = { headers: { 'content-length': String(10 * 1024 * 1024) } } as unknown as IncomingMessage;
    await assert.rejects(readUpgradeBody(req, new PassThrough(), Buffer.alloc(0)), /too large/);
  });
});
