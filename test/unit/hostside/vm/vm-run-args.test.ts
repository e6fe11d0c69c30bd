import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTetherError } from '../../../../protocol/src/errors/errors.ts';
import { parseVmRunArgs } from '../../../../hostside/src/cli/vm-command.ts';

const usageError = (pattern: RegExp) => (e: unknown) =>
  isTetherError(e, 'TETHER_USAGE') && pattern.test(e.message);

void describe('vm run arguments', () => {
  void it('defaults: no stdin, no tty, microvm, default memory, 180 s boot timeout', () => {
    assert.deepEqual(parseVmRunArgs(['--rootfs', 'b.tar', '--', 'uname', '-a']), {
      interactive: false,
      tty: false,
      env: [],
      user: undefined,
      workdir: undefined,
      rootfs: 'b.tar',
      machine: 'microvm',
      memoryMiB: undefined,
      bootTimeoutMs: 180_000,
      timeline: false,
      keep: false,
      command: ['uname', '-a'],
    });
  });

  void it('takes every option, long and short, with attached values', () => {
    const args = parseVmRunArgs([
      '-it',
      '--timeline',
      '--keep',
      '--machine=pc',
      '--memory',
      '512',
      '--boot-timeout',
      '30',
      '-e',
      'A=1',
      '--env=B=2=3',
      '-eC=',
      '-u',
      'tester',
      '-w',
      '/tmp',
      '--rootfs=x.tar',
      '--',
      'sh',
    ]);
    assert.equal(args.interactive, true);
    assert.equal(args.tty, true);
    assert.equal(args.timeline, true);
    assert.equal(args.keep, true);
    assert.equal(args.machine, 'pc');
    assert.equal(args.memoryMiB, 512);
    assert.equal(args.bootTimeoutMs, 30_000);
    assert.deepEqual(args.env, ['A=1', 'B=2=3', 'C=']);
    assert.equal(args.user, 'tester');
    assert.equal(args.workdir, '/tmp');
    assert.equal(args.rootfs, 'x.tar');
    assert.deepEqual(args.command, ['sh']);
  });

  void it('ends options at the first word that is not one, like docker run', () => {
    const args = parseVmRunArgs(['--rootfs', 'x.tar', '-i', 'ls', '-la', '--', '-e']);
    assert.equal(args.interactive, true);
    assert.deepEqual(args.command, ['ls', '-la', '--', '-e']);
    assert.deepEqual(parseVmRunArgs(['--rootfs', 'x.tar', '-ie', 'K=V', 'cat']).env, ['K=V']);
  });

  void it('explains what is wrong', () => {
    assert.throws(() => parseVmRunArgs(['--rootfs', 'x.tar']), usageError(/needs a command/));
    assert.throws(() => parseVmRunArgs(['--', 'true']), usageError(/--rootfs TAR is required/));
    assert.throws(() => parseVmRunArgs(['--rootfs']), usageError(/--rootfs needs a value/));
    assert.throws(() => parseVmRunArgs(['--bogus', 'x']), usageError(/unknown option --bogus/));
    assert.throws(() => parseVmRunArgs(['-iz', 'x']), usageError(/unknown option -z in -iz/));
    assert.throws(() => parseVmRunArgs(['--rootfs', 'x', '-e', 'NOVALUE', 'true']), usageError(/KEY=VALUE/));
    assert.throws(() => parseVmRunArgs(['--rootfs', 'x', '-w', 'rel', 'true']), usageError(/absolute/));
    assert.throws(() => parseVmRunArgs(['--rootfs', 'x', '--memory', '1.5', 'true']), usageError(/MiB/));
    assert.throws(
      () => parseVmRunArgs(['--rootfs', 'x', '--memory', '32', 'true']),
      usageError(/at least 64/),
    );
    assert.throws(
      () => parseVmRunArgs(['--rootfs', 'x', '--machine', 'q35', 'true']),
      usageError(/pc, microvm/),
    );
    assert.throws(
      () => parseVmRunArgs(['--rootfs', 'x', '--boot-timeout', '0', 'true']),
      usageError(/seconds/),
    );
    assert.throws(
      () => parseVmRunArgs(['--rootfs', 'a', '--rootfs', 'b', 'true']),
      usageError(/more than once/),
    );
    assert.throws(() => parseVmRunArgs(['--keep=yes', 'true']), usageError(/takes no value/));
  });
});
