/**
 * QemuVm.reopenLog against a scripted QMP server on a unix socket (the real QEMU is in
 * test/e2e/qemu-driver.test.ts): the exact chardev-change request, and what a refusal says.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isTetherError } from '../../../../protocol/src/errors/errors.ts';
import { qemuLayout, type QemuLayout } from '../../../../hostside/src/vm/qemu/layout.ts';
import { QmpClient } from '../../../../hostside/src/vm/qemu/qmp-client.ts';
import { QemuVm } from '../../../../hostside/src/vm/qemu/qemu-vm.ts';

type Reply = { return: unknown } | { error: { class: string; desc: string } };

/** Answers each command from `script` (by name), records what was asked. */
function fakeQmp(path: string, script: Record<string, Reply>, asked: unknown[]): Promise<Server> {
  return new Promise((resolve) => {
    const server = createServer((socket: Socket) => {
      socket.write(
        JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 22 } }, capabilities: [] } }) +
          '\n',
      );
      let buffered = '';
      socket.on('data', (chunk) => {
        buffered += chunk.toString();
        let newline: number;
        while ((newline = buffered.indexOf('\n')) >= 0) {
          const command = JSON.parse(buffered.slice(0, newline)) as {
            execute: string;
            id?: string;
            arguments?: unknown;
          };
          buffered = buffered.slice(newline + 1);
          asked.push({ execute: command.execute, arguments: command.arguments });
          const reply = script[command.execute] ?? { return: {} };
          socket.write(JSON.stringify({ ...reply, id: command.id }) + '\n');
        }
      });
    });
    server.listen(path, () => resolve(server));
  });
}

void describe('QemuVm.reopenLog', () => {
  let dir: string;
  let layout: QemuLayout;
  let standIn: ChildProcess;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'tether-qvm-'));
    layout = qemuLayout(dir);
    // A live process whose command line names the QMP socket: what isProcessAlive takes for our QEMU.
    standIn = spawn('sh', ['-c', 'sleep 60', layout.qmpSocket], { stdio: 'ignore' });
  });
  after(() => {
    standIn.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  async function vmWith(
    script: Record<string, Reply>,
    asked: unknown[],
  ): Promise<{ vm: QemuVm; server: Server }> {
    const server = await fakeQmp(layout.qmpSocket, script, asked);
    const qmp = await QmpClient.connect(layout.qmpSocket);
    return { vm: new QemuVm('c1', layout, standIn.pid!, qmp, { ports: [] }), server };
  }

  void it('asks QEMU for a file backend at the same path, appending', async () => {
    const asked: unknown[] = [];
    const { vm, server } = await vmWith({}, asked);
    try {
      await vm.reopenLog();
      assert.deepEqual(asked.slice(1), [
        {
          execute: 'chardev-change',
          arguments: { id: 'log', backend: { type: 'file', data: { out: layout.logPort, append: true } } },
        },
      ]);
      assert.deepEqual(vm.ports, []);
    } finally {
      vm.release();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  void it('says the VM is paused when QEMU refuses for that reason, and that the old file stays in use', async () => {
    const asked: unknown[] = [];
    const { vm, server } = await vmWith(
      {
        'chardev-change': {
          error: { class: 'GenericError', desc: 'Chardev user does not support chardev hotswap' },
        },
        'query-status': { return: { status: 'paused', running: false } },
      },
      asked,
    );
    try {
      await assert.rejects(
        vm.reopenLog(),
        (e) =>
          isTetherError(e, 'TETHER_VM_FAILED') &&
          e.message ===
            `cannot reopen the log file ${layout.logPort} of VM c1 (the VM is paused; QEMU swaps the file only while it runs): ` +
              'QMP chardev-change: GenericError: Chardev user does not support chardev hotswap; output still goes to the previous file',
      );
    } finally {
      vm.release();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
