import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { exitStatusFrom, signalName, signalNumber } from '../../../agent/src/process/exit-status.ts';

void describe('exit status', () => {
  void it('death by signal is 128 + n, with the signal named, whether given by name or number', () => {
    assert.deepEqual(exitStatusFrom(null, 'SIGKILL'), { exitCode: 137, signal: 'SIGKILL' });
    assert.deepEqual(exitStatusFrom(null, 'SIGTERM'), { exitCode: 143, signal: 'SIGTERM' });
    assert.deepEqual(exitStatusFrom(null, 9), { exitCode: 137, signal: 'SIGKILL' });
    assert.deepEqual(exitStatusFrom(null, 15), { exitCode: 143, signal: 'SIGTERM' });
    assert.deepEqual(exitStatusFrom(null, 'SIGINT'), { exitCode: 130, signal: 'SIGINT' });
    assert.deepEqual(exitStatusFrom(undefined, 'SIGSEGV'), { exitCode: 139, signal: 'SIGSEGV' });
  });

  void it('a signal wins over a code (node-pty reports both)', () => {
    assert.deepEqual(exitStatusFrom(0, 'SIGKILL'), { exitCode: 137, signal: 'SIGKILL' });
  });

  void it('a plain exit passes its code through; no signal is 0, null or undefined', () => {
    for (const code of [0, 1, 2, 125, 126, 127, 255]) {
      assert.deepEqual(exitStatusFrom(code, null), { exitCode: code });
      assert.deepEqual(exitStatusFrom(code, 0), { exitCode: code });
      assert.deepEqual(exitStatusFrom(code, undefined), { exitCode: code });
    }
    assert.deepEqual(exitStatusFrom(null, null), { exitCode: 0 });
  });

  void it('signal names and numbers convert both ways, with or without SIG, in any case', () => {
    assert.equal(signalNumber('SIGKILL'), 9);
    assert.equal(signalNumber('kill'), 9);
    assert.equal(signalNumber('Term'), 15);
    assert.equal(signalNumber('SIGNOPE'), undefined);
    assert.equal(signalName(9), 'SIGKILL');
    assert.equal(signalName(15), 'SIGTERM');
    assert.equal(signalName(0), undefined);
    assert.equal(signalName(1000), undefined);
  });
});
