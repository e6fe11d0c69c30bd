import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TetherError } from '../../../../protocol/src/errors/errors.ts';
import type { LogFrame } from '../../../../protocol/src/logs/log-frame.ts';
import type { AttachParams, TerminalSize } from '../../../../protocol/src/requests/requests.ts';
import type {
  AttachHandle,
  AttachHandlers,
  ChannelClient,
  ExitResult,
} from '../../../../hostside/src/channel/client.ts';
import { ResumableAttach } from '../../../../hostside/src/vm/resumable-attach.ts';

/** One fake agent connection: records what the attach asked and sent; the test ends it at will. */
class FakeConnection {
  params: AttachParams | undefined;
  stdin: string[] = [];
  stdinEnded = false;
  sizes: TerminalSize[] = [];
  signals: string[] = [];
  closed = false;
  handlers: AttachHandlers | undefined;
  offset = 0;
  resolveExit: (result: ExitResult | undefined) => void = () => {};
  readonly refuse: Error | undefined;

  constructor(refuse?: Error) {
    this.refuse = refuse;
  }

  emit(text: string): void {
    const frame: LogFrame = { stream: 1, timestampMs: 0, data: Buffer.from(text) };
    this.offset += frame.data.length;
    this.handlers!.onFrame(frame);
  }

  end(result?: ExitResult): void {
    this.resolveExit(result);
  }

  client(): ChannelClient {
    return fakeClient(this);
  }
}

function fakeClient(self: FakeConnection): ChannelClient {
  const fake = {
    attach(params: AttachParams, handlers: AttachHandlers): Promise<AttachHandle> {
      if (self.refuse) return Promise.reject(self.refuse);
      self.params = params;
      self.handlers = handlers;
      self.offset = typeof params.from === 'number' ? params.from : 0;
      const exit = new Promise<ExitResult | undefined>((resolve) => (self.resolveExit = resolve));
      return Promise.resolve({
        result: { offset: self.offset, oldest: 0, tty: false, running: true },
        get offset() {
          return self.offset;
        },
        stdin: {
          write: (chunk: Buffer) => self.stdin.push(chunk.toString()),
          end: () => void (self.stdinEnded = true),
        } as never,
        resize: (size: TerminalSize) => void self.sizes.push(size),
        signal: (name: string) => void self.signals.push(name),
        detach: () => self.end(undefined),
        exit,
      });
    },
    close: () => void (self.closed = true),
  };
  return fake as unknown as ChannelClient;
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 0));
async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.ok(check(), 'condition not reached');
}

void describe('resumable attach', () => {
  void it('reattaches after a drop from the offset just past the last byte delivered', async () => {
    const connections = [new FakeConnection(), new FakeConnection()];
    const queue = [...connections];
    const output: string[] = [];
    const drops: number[] = [];
    const attach = new ResumableAttach({
      connect: () => Promise.resolve(queue.shift()!.client()),
      from: 'start',
      stdin: true,
      onFrame: (frame) => output.push(frame.data.toString()),
      onDrop: (offset) => drops.push(offset),
    });
    const [first, second] = connections as [FakeConnection, FakeConnection];
    await until(() => first.params !== undefined);
    assert.deepEqual(first.params, { from: 'start', stdin: true });
    first.emit('hello ');
    first.emit('wor');
    first.end(undefined); // the channel dropped without an exit status
    await until(() => second.params !== undefined);
    assert.ok(first.closed, 'the dropped connection is closed before reconnecting');
    assert.deepEqual(second.params, { from: 9, stdin: true });
    assert.deepEqual(drops, [9]);
    second.emit('ld');
    second.end({ exitCode: 3 });
    assert.deepEqual(await attach.exit, { exitCode: 3 });
    assert.equal(output.join(''), 'hello world');
    assert.equal(attach.offset, 11);
  });

  void it('keeps input typed before any attach and sends it, then EOF, once attached; size too', async () => {
    const connection = new FakeConnection();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const attach = new ResumableAttach({
      connect: async () => {
        await gate;
        return connection.client();
      },
      from: 'start',
      stdin: true,
      onFrame: () => {},
    });
    attach.writeStdin(Buffer.from('a'));
    attach.writeStdin(Buffer.from('b'));
    attach.resize({ cols: 100, rows: 30 });
    attach.endStdin();
    assert.equal(attach.signal('SIGINT'), false, 'no attach yet to carry a signal');
    release();
    await until(() => connection.stdinEnded);
    assert.deepEqual(connection.stdin, ['a', 'b']);
    assert.deepEqual(connection.sizes, [{ cols: 100, rows: 30 }]);
    assert.equal(attach.signal('SIGINT'), true);
    assert.deepEqual(connection.signals, ['SIGINT']);
    connection.end({ exitCode: 0 });
    assert.deepEqual(await attach.exit, { exitCode: 0 });
  });

  void it('ends with undefined when it can no longer connect (the VM is gone)', async () => {
    const errors: Error[] = [];
    const attach = new ResumableAttach({
      connect: () => Promise.reject(new TetherError('TETHER_CHANNEL_CLOSED', 'the VM ended')),
      from: 'start',
      stdin: false,
      onFrame: () => {},
      onError: (error) => errors.push(error),
    });
    assert.equal(await attach.exit, undefined);
    assert.equal(errors[0]?.message, 'the VM ended');
    assert.equal(attach.offset, undefined);
  });

  void it("stops at the agent's refusal instead of retrying it", async () => {
    let connects = 0;
    const attach = new ResumableAttach({
      connect: () => {
        connects++;
        return Promise.resolve(
          new FakeConnection(new TetherError('TETHER_NO_MAIN_PROCESS', 'no main process')).client(),
        );
      },
      from: 'start',
      stdin: false,
      onFrame: () => {},
    });
    assert.equal(await attach.exit, undefined);
    assert.equal(connects, 1);
  });

  void it('close() ends it without reconnecting', async () => {
    const connection = new FakeConnection();
    let connects = 0;
    const attach = new ResumableAttach({
      connect: () => {
        connects++;
        return Promise.resolve(connection.client());
      },
      from: 'end',
      stdin: false,
      onFrame: () => {},
    });
    await until(() => connection.params !== undefined);
    attach.close();
    assert.equal(await attach.exit, undefined);
    await tick();
    assert.equal(connects, 1);
    assert.ok(connection.closed);
  });
});
