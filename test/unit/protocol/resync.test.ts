import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isTetherError } from '../../../protocol/src/errors/errors.ts';
import {
  RESYNC_GARBAGE_LIMIT,
  ResyncClient,
  ResyncServer,
  type ResyncStep,
} from '../../../protocol/src/resync/resync.ts';

// Expected bytes are spelled out from the diagram in resync.ts, not produced by its encoders.
function wire(magic: number[], ...words: number[]): Buffer {
  const out = Buffer.alloc(4 + words.length * 4);
  out.set(magic, 0);
  words.forEach((word, index) => out.writeUInt32BE(word >>> 0, 4 + index * 4));
  return out;
}
const syn = (nonce: number): Buffer => wire([0x16, 0x54, 0x53, 0x59], nonce);
const synAck = (nonce: number, token: number): Buffer => wire([0x06, 0x54, 0x53, 0x41], nonce + 1, token);
const ack = (token: number): Buffer => wire([0x06, 0x54, 0x41, 0x4b], token + 1);
const ready = (token: number): Buffer => wire([0x06, 0x54, 0x52, 0x44], token + 2);

const MAGICS = [
  [0x16, 0x54, 0x53, 0x59],
  [0x06, 0x54, 0x53, 0x41],
  [0x06, 0x54, 0x41, 0x4b],
  [0x06, 0x54, 0x52, 0x44],
].map((bytes) => Buffer.from(bytes));
const hasMagic = (bytes: Uint8Array): boolean => MAGICS.some((magic) => Buffer.from(bytes).includes(magic));

/** Tokens the server hands out, in order; running out is a test bug. */
function tokens(...values: number[]): () => number {
  let next = 0;
  return () => {
    const value = values[next++];
    assert.notEqual(value, undefined, 'the server asked for more tokens than the script provides');
    return value!;
  };
}

/** Feeds chunks to one side; collects what it sends, whether it finished, and every byte after the handshake. */
function feed(
  side: { push(chunk: Uint8Array): ResyncStep },
  chunks: Buffer[],
): { sent: Buffer; done: boolean; after: Buffer } {
  const sent: Buffer[] = [];
  const after: Buffer[] = [];
  let done = false;
  for (const chunk of chunks) {
    const step = side.push(chunk);
    sent.push(...step.send);
    if (step.done) {
      if (done) assert.deepEqual(step.send, [], 'nothing is sent after the handshake is done');
      done = true;
      after.push(step.rest);
    } else {
      assert.equal(step.rest.length, 0, 'rest stays empty until the handshake is done');
    }
  }
  return { sent: Buffer.concat(sent), done, after: Buffer.concat(after) };
}

const NONCE = 0x0badf00d;
const TOKEN = 0x7e57ab1e;
const SSH_FROM_HOST = Buffer.from('SSH-2.0-tetherd\r\n');
const SSH_FROM_AGENT = Buffer.from('SSH-2.0-tether\r\n');

void describe('resync handshake, byte scripts', () => {
  void it('a clean exchange: SYN, SYNACK, ACK, READY, with the exact bytes of the spec', () => {
    const client = new ResyncClient();
    const server = new ResyncServer(tokens(TOKEN));
    const first = client.start(NONCE);
    assert.deepEqual(first, Buffer.from([0x16, 0x54, 0x53, 0x59, 0x0b, 0xad, 0xf0, 0x0d]));

    const s1 = server.push(first);
    assert.equal(s1.done, false);
    assert.deepEqual(s1.send, [
      Buffer.from([0x06, 0x54, 0x53, 0x41, 0x0b, 0xad, 0xf0, 0x0e, 0x7e, 0x57, 0xab, 0x1e]),
    ]);

    const c1 = client.push(Buffer.concat(s1.send));
    assert.equal(c1.done, false);
    assert.deepEqual(c1.send, [Buffer.from([0x06, 0x54, 0x41, 0x4b, 0x7e, 0x57, 0xab, 0x1f])]);

    const s2 = server.push(Buffer.concat(c1.send));
    assert.equal(s2.done, true);
    assert.equal(server.done, true);
    assert.deepEqual(s2.send, [Buffer.from([0x06, 0x54, 0x52, 0x44, 0x7e, 0x57, 0xab, 0x20])]);
    assert.equal(s2.rest.length, 0);

    const c2 = client.push(Buffer.concat(s2.send));
    assert.deepEqual(c2, { send: [], done: true, rest: Buffer.alloc(0) });
    assert.equal(client.done, true);
  });

  void it('nonce and token arithmetic wraps at 2^32', () => {
    const client = new ResyncClient();
    const server = new ResyncServer(tokens(0xffffffff));
    const s1 = server.push(client.start(0xffffffff));
    assert.deepEqual(Buffer.concat(s1.send), wire([0x06, 0x54, 0x53, 0x41], 0, 0xffffffff));
    const c1 = client.push(Buffer.concat(s1.send));
    assert.deepEqual(Buffer.concat(c1.send), wire([0x06, 0x54, 0x41, 0x4b], 0));
    const s2 = server.push(Buffer.concat(c1.send));
    assert.deepEqual(Buffer.concat(s2.send), wire([0x06, 0x54, 0x52, 0x44], 1));
    assert.equal(client.push(Buffer.concat(s2.send)).done, true);
  });

  void it('the server ignores garbage before and between messages', () => {
    const server = new ResyncServer(tokens(TOKEN));
    // The host can ACK only a SYNACK it has read: its ACK comes in a later read than its SYN.
    const beforeAck = Buffer.concat([
      Buffer.from('SSH-2.0-stale half packet \x00\xff\x06\x54'),
      syn(NONCE),
      Buffer.from([0x06, 0x54, 0x41, 0x00, 0x16, 0x54, 0x53]), // near-misses of ACK and SYN magic
    ]);
    const result = feed(server, [beforeAck, Buffer.concat([ack(TOKEN), SSH_FROM_HOST])]);
    assert.deepEqual(result, {
      sent: Buffer.concat([synAck(NONCE, TOKEN), ready(TOKEN)]),
      done: true,
      after: SSH_FROM_HOST,
    });
  });

  void it('the client ignores garbage before and between messages', () => {
    const client = new ResyncClient();
    client.start(NONCE);
    const input = Buffer.concat([
      Buffer.from('[    0.123] console noise\r\n\x06\x54\x53'),
      synAck(NONCE, TOKEN),
      Buffer.from('\x06\x54\x52more noise\x06'),
      ready(TOKEN),
      SSH_FROM_AGENT,
    ]);
    assert.deepEqual(feed(client, [input]), { sent: ack(TOKEN), done: true, after: SSH_FROM_AGENT });
  });

  void it('a duplicated SYN in a later read gets a second SYNACK; only the ACK of the latest token completes', () => {
    const server = new ResyncServer(tokens(111, 222));
    const s1 = { send: [...server.push(syn(NONCE)).send, ...server.push(syn(NONCE)).send] };
    assert.deepEqual(s1.send, [synAck(NONCE, 111), synAck(NONCE, 222)]);

    // The client sees both SYNACKs for its nonce and acknowledges each; its latest token is 222.
    const client = new ResyncClient();
    client.start(NONCE);
    const c1 = client.push(Buffer.concat(s1.send));
    assert.deepEqual(c1.send, [ack(111), ack(222)]);

    const stale = server.push(ack(111));
    assert.deepEqual(stale, { send: [], done: false, rest: Buffer.alloc(0) });
    const s2 = server.push(ack(222));
    assert.deepEqual(s2.send, [ready(222)]);
    assert.equal(s2.done, true);

    assert.equal(
      client.push(ready(111)).done,
      false,
      'a READY for the older token is not the one it waits for',
    );
    assert.equal(client.push(ready(222)).done, true);
  });

  void it('after a retry with a new nonce, SYNACKs and READYs for the old nonce are ignored', () => {
    const client = new ResyncClient();
    client.start(1);
    const retry = client.start(2);
    assert.deepEqual(retry, syn(2));

    // The agent reads the SYNs one at a time and answers both in order; the first answer is stale.
    const server = new ResyncServer(tokens(500, 600));
    const s1 = { send: [...server.push(syn(1)).send, ...server.push(syn(2)).send] };
    assert.deepEqual(s1.send, [synAck(1, 500), synAck(2, 600)]);

    const staleOnly = client.push(synAck(1, 500));
    assert.deepEqual(staleOnly.send, [], 'no ACK for a reply to the old nonce');
    const c1 = client.push(synAck(2, 600));
    assert.deepEqual(c1.send, [ack(600)]);

    // A READY built from the stale token must not finish the client either.
    assert.equal(client.push(ready(500)).done, false);
    const s2 = server.push(Buffer.concat(c1.send));
    assert.deepEqual(s2.send, [ready(600)]);
    assert.equal(client.push(Buffer.concat(s2.send)).done, true);
  });

  void it('SYNs read together get one SYNACK, for the last of them: a flood of SYNs costs one answer per read', () => {
    const server = new ResyncServer(tokens(7));
    const flood = Buffer.concat(Array.from({ length: 1000 }, (_, index) => syn(index)));
    assert.deepEqual(server.push(flood).send, [synAck(999, 7)]);
    const done = server.push(ack(7));
    assert.deepEqual(done.send, [ready(7)]);
    assert.equal(done.done, true);
  });

  void it('a SYN voids the token of every earlier SYN, even in the same read', () => {
    const server = new ResyncServer(tokens(10, 20));
    assert.deepEqual(server.push(syn(1)).send, [synAck(1, 10)]);
    const s2 = server.push(Buffer.concat([syn(2), ack(10)]));
    assert.deepEqual(s2, { send: [synAck(2, 20)], done: false, rest: Buffer.alloc(0) });
    assert.equal(server.push(ack(10)).done, false, 'the ACK of a superseded token is stale');
    assert.equal(server.push(ack(20)).done, true);
  });

  void it('a stale ACK (older token) arriving before the current one is skipped', () => {
    const server = new ResyncServer(tokens(10, 20));
    server.push(syn(1));
    server.push(syn(2));
    const result = feed(server, [Buffer.concat([ack(10), ack(20), SSH_FROM_HOST])]);
    assert.deepEqual(result, { sent: ready(20), done: true, after: SSH_FROM_HOST });
  });

  void it('an ACK before any SYN is ignored', () => {
    const server = new ResyncServer(tokens(TOKEN));
    assert.deepEqual(server.push(ack(TOKEN)), { send: [], done: false, rest: Buffer.alloc(0) });
    assert.equal(feed(server, [syn(NONCE), ack(TOKEN)]).done, true);
  });

  void it('garbage that itself holds a whole SYN magic costs one attempt; the retry completes', () => {
    // The fake SYN swallows the first half of the real one; the client never sees its nonce answered.
    const server = new ResyncServer(tokens(1, 2));
    const s1 = server.push(Buffer.concat([Buffer.from([0x16, 0x54, 0x53, 0x59]), syn(NONCE)]));
    assert.equal(s1.send.length, 1);
    const client = new ResyncClient();
    client.start(NONCE);
    assert.deepEqual(client.push(Buffer.concat(s1.send)).send, []);

    const s2 = server.push(client.start(NONCE + 7));
    assert.deepEqual(s2.send, [synAck(NONCE + 7, 2)]);
    const c2 = client.push(Buffer.concat(s2.send));
    const s3 = server.push(Buffer.concat(c2.send));
    assert.equal(s3.done, true);
    assert.equal(client.push(Buffer.concat(s3.send)).done, true);
  });

  void it('the bytes after READY and ACK, even in the same chunk, come back as rest; later chunks pass through', () => {
    const server = new ResyncServer(tokens(TOKEN));
    server.push(syn(NONCE));
    const s = server.push(Buffer.concat([ack(TOKEN), SSH_FROM_HOST]));
    assert.equal(s.done, true);
    assert.deepEqual(s.rest, SSH_FROM_HOST);
    assert.deepEqual(server.push(Buffer.from('more')), { send: [], done: true, rest: Buffer.from('more') });

    const client = new ResyncClient();
    client.start(NONCE);
    client.push(synAck(NONCE, TOKEN));
    const c = client.push(Buffer.concat([ready(TOKEN), SSH_FROM_AGENT]));
    assert.equal(c.done, true);
    assert.deepEqual(c.rest, SSH_FROM_AGENT);
    assert.deepEqual(client.push(Buffer.from([0x16, 0x54])), {
      send: [],
      done: true,
      rest: Buffer.from([0x16, 0x54]),
    });
  });

  void it('messages split at every byte boundary, and one byte at a time, give the same result', () => {
    const serverInput = Buffer.concat([
      Buffer.from('junk'),
      syn(NONCE),
      Buffer.from('x'),
      ack(TOKEN),
      SSH_FROM_HOST,
    ]);
    const clientInput = Buffer.concat([
      Buffer.from('\x06\x54'),
      synAck(NONCE, TOKEN),
      ready(TOKEN),
      SSH_FROM_AGENT,
    ]);
    const serverExpected = {
      sent: Buffer.concat([synAck(NONCE, TOKEN), ready(TOKEN)]),
      done: true,
      after: SSH_FROM_HOST,
    };
    const clientExpected = { sent: ack(TOKEN), done: true, after: SSH_FROM_AGENT };

    // The host's ACK follows its SYN only after a SYNACK came back: the server reads them apart.
    const ackAt = serverInput.indexOf(ack(TOKEN));
    for (let cut = 0; cut <= serverInput.length; cut++) {
      const chunks =
        cut <= ackAt
          ? [serverInput.subarray(0, cut), serverInput.subarray(cut, ackAt), serverInput.subarray(ackAt)]
          : [serverInput.subarray(0, ackAt), serverInput.subarray(ackAt, cut), serverInput.subarray(cut)];
      const result = feed(new ResyncServer(tokens(TOKEN)), chunks);
      assert.deepEqual(result, serverExpected, `server, split at ${cut}`);
    }
    for (let cut = 0; cut <= clientInput.length; cut++) {
      const client = new ResyncClient();
      client.start(NONCE);
      const result = feed(client, [clientInput.subarray(0, cut), clientInput.subarray(cut)]);
      assert.deepEqual(result, clientExpected, `client, split at ${cut}`);
    }
    const bytewise = (input: Buffer): Buffer[] => [...input].map((byte) => Buffer.from([byte]));
    assert.deepEqual(feed(new ResyncServer(tokens(TOKEN)), bytewise(serverInput)), serverExpected);
    const client = new ResyncClient();
    client.start(NONCE);
    assert.deepEqual(feed(client, bytewise(clientInput)), clientExpected);
  });

  void it('a client that was never started refuses input with TETHER_RESYNC_FAILED', () => {
    assert.throws(
      () => new ResyncClient().push(synAck(1, 2)),
      (error) => isTetherError(error, 'TETHER_RESYNC_FAILED'),
    );
  });
});

void describe('resync garbage limit', () => {
  // No 0x06 or 0x16 bytes: this garbage can never hold a message.
  const garbage = (bytes: number): Buffer => Buffer.alloc(bytes, 'noise: not a tether peer ');

  for (const side of ['server', 'client'] as const) {
    const make = (): { push(chunk: Uint8Array): ResyncStep } => {
      if (side === 'server') return new ResyncServer(tokens());
      const client = new ResyncClient();
      client.start(NONCE);
      return client;
    };

    void it(`the ${side} accepts exactly RESYNC_GARBAGE_LIMIT bytes of garbage, then throws TETHER_RESYNC_FAILED`, () => {
      const machine = make();
      assert.equal(machine.push(garbage(RESYNC_GARBAGE_LIMIT)).done, false);
      assert.throws(
        () => machine.push(Buffer.from('!')),
        (error) =>
          isTetherError(error, 'TETHER_RESYNC_FAILED') &&
          /not a tether channel/.test((error as Error).message),
      );
    });

    void it(`the ${side} counts garbage across chunks of any size`, () => {
      fc.assert(
        fc.property(fc.integer({ min: 4096, max: 300_000 }), (chunkBytes) => {
          const machine = make();
          const chunk = garbage(chunkBytes);
          let pushed = 0;
          try {
            for (;;) {
              machine.push(chunk);
              pushed += chunkBytes;
              assert.ok(pushed <= RESYNC_GARBAGE_LIMIT, 'kept scanning past the limit');
            }
          } catch (error) {
            assert.ok(isTetherError(error, 'TETHER_RESYNC_FAILED'), `unexpected ${String(error)}`);
            assert.ok(pushed + chunkBytes > RESYNC_GARBAGE_LIMIT, `gave up early, after ${pushed} bytes`);
          }
        }),
        { numRuns: 8 },
      );
    });
  }

  void it('the server counts every byte before the handshake, SYNs included', () => {
    const server = new ResyncServer(() => 1);
    const syns = Buffer.concat(Array.from({ length: 8192 }, (_, index) => syn(index)));
    for (let pushed = 0; pushed < RESYNC_GARBAGE_LIMIT; pushed += syns.length)
      assert.equal(server.push(syns).send.length, 1);
    assert.throws(
      () => server.push(syn(1)),
      (error) => isTetherError(error, 'TETHER_RESYNC_FAILED'),
    );
  });

  void it('a matching SYNACK resets the client’s garbage count', () => {
    const client = new ResyncClient();
    client.start(NONCE);
    client.push(garbage(RESYNC_GARBAGE_LIMIT - synAck(NONCE, TOKEN).length));
    client.push(synAck(NONCE, TOKEN));
    assert.equal(client.push(garbage(RESYNC_GARBAGE_LIMIT - 64)).done, false);
  });
});

/** A byte stream that hands out what was written in pieces of arbitrary sizes and may put line noise before messages. */
class NoisyLine {
  #pending: Buffer = Buffer.alloc(0);
  #turn = 0;
  readonly #sizes: number[];
  readonly #noise: Buffer[];

  constructor(sizes: number[], noise: Buffer[]) {
    this.#sizes = sizes;
    this.#noise = [...noise];
  }

  /** A handshake message: noise may come before it. */
  writeMessage(bytes: Buffer): void {
    this.#pending = Buffer.concat([this.#pending, this.#noise.shift() ?? Buffer.alloc(0), bytes]);
  }

  writeData(bytes: Buffer): void {
    this.#pending = Buffer.concat([this.#pending, bytes]);
  }

  take(): Buffer | undefined {
    if (this.#pending.length === 0) return undefined;
    const size = this.#sizes[this.#turn++ % this.#sizes.length]!;
    const piece = this.#pending.subarray(0, size);
    this.#pending = this.#pending.subarray(size);
    return piece;
  }
}

void describe('resync handshake, properties', () => {
  const noise = fc
    .uint8Array({ maxLength: 64 })
    .filter((bytes) => !hasMagic(bytes))
    .map((bytes) => Buffer.from(bytes));
  const sizes = fc.array(fc.integer({ min: 1, max: 24 }), { minLength: 1, maxLength: 6 });

  void it('completes through arbitrary noise and chunking; rest is exactly what was sent after it', () => {
    fc.assert(
      fc.property(
        fc.record({
          nonce: fc.nat({ max: 0xffffffff }),
          token: fc.nat({ max: 0xffffffff }),
          toAgentNoise: fc.array(noise, { maxLength: 3 }),
          toHostNoise: fc.array(noise, { maxLength: 3 }),
          toAgentSizes: sizes,
          toHostSizes: sizes,
          hostAfter: fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)),
          agentAfter: fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)),
        }),
        (script) => {
          const toAgent = new NoisyLine(script.toAgentSizes, script.toAgentNoise);
          const toHost = new NoisyLine(script.toHostSizes, script.toHostNoise);
          const client = new ResyncClient();
          const server = new ResyncServer(tokens(script.token));
          const receivedByAgent: Buffer[] = [];
          const receivedByHost: Buffer[] = [];

          // Stale bytes may sit in the agent-to-host direction before the host even starts.
          toHost.writeMessage(Buffer.alloc(0));
          toAgent.writeMessage(client.start(script.nonce));

          for (let rounds = 0; rounds < 10_000; rounds++) {
            const forAgent = toAgent.take();
            const forHost = toHost.take();
            if (!forAgent && !forHost) break;
            if (forAgent) {
              const wasDone = server.done;
              const step = server.push(forAgent);
              for (const bytes of step.send) toHost.writeMessage(bytes);
              if (step.done) receivedByAgent.push(step.rest);
              if (step.done && !wasDone) toHost.writeData(script.agentAfter);
            }
            if (forHost) {
              const wasDone = client.done;
              const step = client.push(forHost);
              for (const bytes of step.send) toAgent.writeMessage(bytes);
              if (step.done) receivedByHost.push(step.rest);
              if (step.done && !wasDone) toAgent.writeData(script.hostAfter);
            }
          }
          assert.equal(server.done, true, 'agent finished');
          assert.equal(client.done, true, 'host finished');
          assert.deepEqual(Buffer.concat(receivedByAgent), script.hostAfter);
          assert.deepEqual(Buffer.concat(receivedByHost), script.agentAfter);
        },
      ),
      { numRuns: 300 },
    );
  });

  void it('any input gives steps or TETHER_RESYNC_FAILED, never another error', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 20 }), (chunks) => {
        const client = new ResyncClient();
        client.start(NONCE);
        const server = new ResyncServer(() => TOKEN);
        for (const chunk of chunks) {
          for (const side of [client, server]) {
            const step = side.push(chunk);
            assert.ok(Array.isArray(step.send) && Buffer.isBuffer(step.rest));
          }
        }
      }),
    );
  });
});
