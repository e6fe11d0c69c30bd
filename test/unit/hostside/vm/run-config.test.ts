import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTetherError } from '../../../../protocol/src/errors/errors.ts';
import {
  DEFAULT_PATH,
  buildRunConfig,
  containerEnv,
  hostnameOf,
  newContainerId,
  type RunConfigInput,
} from '../../../../hostside/src/vm/run-config.ts';
import { userNetworkConfig } from '../../../../hostside/src/vm/qemu/user-network.ts';

const HOST_KEY = '-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n';
const CLIENT_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake tetherctl';
const ID = 'a'.repeat(12) + 'b'.repeat(52);
const STATUS_KEY = Buffer.alloc(32, 7).toString('base64');

function input(overrides: Partial<RunConfigInput> = {}): RunConfigInput {
  return {
    id: ID,
    argv: ['uname', '-a'],
    network: userNetworkConfig(),
    agentHostKey: HOST_KEY,
    clientPublicKey: CLIENT_KEY,
    statusKey: STATUS_KEY,
    ...overrides,
  };
}

void describe('vm run config', () => {
  void it('is a valid version 1 config with the process, root disk, user network, keys and power-off', () => {
    assert.deepEqual(buildRunConfig(input()), {
      version: 1,
      id: ID,
      hostname: 'aaaaaaaaaaaa',
      process: {
        argv: ['uname', '-a'],
        env: [DEFAULT_PATH, 'HOSTNAME=aaaaaaaaaaaa'],
        tty: false,
        openStdin: false,
        stdinOnce: false,
      },
      storage: { root: { serial: 'tether-root', fstype: 'ext4' } },
      network: {
        interfaces: [
          { name: 'eth0', mac: '52:54:00:12:34:56', address: '10.0.2.15/24', gateway: '10.0.2.2' },
        ],
        dns: ['10.0.2.3'],
      },
      channel: { hostKey: HOST_KEY, authorizedKeys: [CLIENT_KEY], statusKey: STATUS_KEY },
      powerOffOnExit: true,
    });
  });

  void it('carries -w, -u, -t and -i', () => {
    const config = buildRunConfig(input({ cwd: '/tmp', user: 'tester:wheel', tty: true, openStdin: true }));
    assert.equal(config.process?.cwd, '/tmp');
    assert.equal(config.process?.user, 'tester:wheel');
    assert.equal(config.process?.tty, true);
    assert.equal(config.process?.stdinOnce, true, 'docker run -i closes stdin when the piped input ends');
    assert.equal(config.process?.openStdin, true);
    assert.ok(config.process?.env?.includes('TERM=xterm'));
  });

  void it('refuses what the agent would refuse, naming the field', () => {
    assert.throws(
      () => buildRunConfig(input({ cwd: 'relative' })),
      (e) => isTetherError(e, 'TETHER_CONFIG_INVALID') && /process\.cwd/.test(e.message),
    );
    assert.throws(
      () => buildRunConfig(input({ env: ['NOEQUALS'] })),
      (e) => isTetherError(e, 'TETHER_CONFIG_INVALID') && /process\.env\[2\]/.test(e.message),
    );
  });
});

void describe('container environment', () => {
  void it('puts Docker defaults first and lets the user override each', () => {
    assert.deepEqual(containerEnv(['A=1'], 'h', false), [DEFAULT_PATH, 'HOSTNAME=h', 'A=1']);
    assert.deepEqual(containerEnv(['PATH=/bin', 'TERM=dumb'], 'h', true), [
      'HOSTNAME=h',
      'PATH=/bin',
      'TERM=dumb',
    ]);
    assert.deepEqual(containerEnv([], 'h', true), [DEFAULT_PATH, 'HOSTNAME=h', 'TERM=xterm']);
    assert.deepEqual(containerEnv(['X=a=b', 'EMPTY='], 'h', false).slice(2), ['X=a=b', 'EMPTY=']);
  });
});

void describe('container ids', () => {
  void it('are 64 hex digits, fresh each time; the hostname is the first 12', () => {
    const a = newContainerId();
    assert.match(a, /^[0-9a-f]{64}$/);
    assert.notEqual(a, newContainerId());
    assert.equal(hostnameOf(a), a.slice(0, 12));
  });
});
