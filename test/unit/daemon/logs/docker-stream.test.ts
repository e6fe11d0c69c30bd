import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isTetherError } from '../../../../protocol/src/errors/errors.ts';
import {
  DockerFrameDecoder,
  encodeDockerFrame,
  formatDockerTimestamp,
  parseDockerTime,
  type DockerStreamType,
} from '../../../../hostside/src/daemon/logs/docker-stream.ts';

void describe('docker multiplexed stream', () => {
  void it('encodes the 8-byte header: stream, three zeros, big-endian size', () => {
    assert.deepEqual(
      encodeDockerFrame(2, Buffer.from('hi')),
      Buffer.from([2, 0, 0, 0, 0, 0, 0, 2, 0x68, 0x69]),
    );
    assert.deepEqual(encodeDockerFrame(1, Buffer.alloc(0)), Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]));
    assert.equal(encodeDockerFrame(0, Buffer.alloc(300)).readUInt32BE(4), 300);
  });

  void it('decodes any frames cut at any points', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ stream: fc.constantFrom(0, 1, 2), data: fc.uint8Array({ maxLength: 40 }) }), {
          maxLength: 10,
        }),
        fc.array(fc.nat(), { maxLength: 6 }),
        (frames, cuts) => {
          const bytes = Buffer.concat(
            frames.map((f) => encodeDockerFrame(f.stream as DockerStreamType, f.data)),
          );
          const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
          const decoder = new DockerFrameDecoder();
          const out = [];
          let from = 0;
          for (const point of [...points, bytes.length]) {
            out.push(...decoder.push(bytes.subarray(from, point)));
            from = point;
          }
          decoder.end();
          assert.deepEqual(
            out.map((f) => [f.stream, Buffer.from(f.data)]),
            frames.map((f) => [f.stream, Buffer.from(f.data)]),
          );
        },
      ),
    );
  });

  void it('refuses a bad header and reports a stream cut inside a frame', () => {
    assert.throws(
      () => new DockerFrameDecoder().push(Buffer.from([3, 0, 0, 0, 0, 0, 0, 0])),
      (e) => isTetherError(e, 'TETHER_FRAME_INVALID'),
    );
    assert.throws(
      () => new DockerFrameDecoder().push(Buffer.from([1, 0, 1, 0, 0, 0, 0, 0])),
      (e) => isTetherError(e, 'TETHER_FRAME_INVALID'),
    );
    const decoder = new DockerFrameDecoder();
    assert.deepEqual(decoder.push(encodeDockerFrame(1, Buffer.from('abc')).subarray(0, 9)), []);
    assert.equal(decoder.pendingBytes, 9);
    assert.throws(
      () => decoder.end(),
      (e) => isTetherError(e, 'TETHER_FRAME_TRUNCATED'),
    );
  });
});

void describe('docker log times', () => {
  void it('formats -t timestamps as RFC 3339 with nine fractional digits in UTC', () => {
    const ms = Date.UTC(2024, 11, 3, 7, 52, 25, 123);
    assert.equal(formatDockerTimestamp(ms), '2024-12-03T07:52:25.123000000Z');
    assert.equal(formatDockerTimestamp(ms + 0.25), '2024-12-03T07:52:25.123250000Z');
    // f64 milliseconds near 2024 resolve about 0.24 µs: the last digits are as close as the value holds.
    assert.match(formatDockerTimestamp(ms + 0.456789), /^2024-12-03T07:52:25\.1234567\d\dZ$/);
    assert.equal(formatDockerTimestamp(0), '1970-01-01T00:00:00.000000000Z');
    // A fraction that rounds up to the next millisecond carries.
    assert.equal(formatDockerTimestamp(ms + 0.9999999), '2024-12-03T07:52:25.124000000Z');
  });

  void it('parses what the docker CLI sends (Unix seconds with up to nine digits) and integers', () => {
    assert.equal(parseDockerTime('1733212345'), 1733212345000);
    assert.ok(Math.abs(parseDockerTime('1733212345.123456789') - (1733212345123 + 0.456789)) < 1e-3);
    assert.equal(parseDockerTime('1733212345.5'), 1733212345500);
    assert.equal(parseDockerTime('0.000000001'), 0.000001);
    assert.equal(parseDockerTime('-1.5'), -1500);
  });

  void it('parses RFC 3339 (zone, offset, none meaning UTC, bare date) and durations before now', () => {
    const base = Date.UTC(2024, 11, 3, 7, 52, 25);
    assert.equal(parseDockerTime('2024-12-03T07:52:25Z'), base);
    assert.equal(parseDockerTime('2024-12-03T07:52:25.25Z'), base + 250);
    assert.ok(Math.abs(parseDockerTime('2024-12-03T07:52:25.123456789Z') - (base + 123.456789)) < 1e-3);
    assert.equal(parseDockerTime('2024-12-03T08:52:25+01:00'), base);
    assert.equal(parseDockerTime('2024-12-03T02:52:25-0500'), base);
    assert.equal(parseDockerTime('2024-12-03T07:52:25'), base);
    assert.equal(parseDockerTime('2024-12-03'), Date.UTC(2024, 11, 3));
    assert.equal(parseDockerTime('10m', 1_000_000), 400_000);
    assert.equal(parseDockerTime('1h30m', 10_000_000), 10_000_000 - 5_400_000);
    assert.equal(parseDockerTime('1.5s', 5000), 3500);
  });

  void it('refuses anything else, naming the value', () => {
    for (const bad of ['', 'yesterday', '2024-13-01', '12:00', '1.2.3', '10x', '1733212345.1234567891']) {
      assert.throws(
        () => parseDockerTime(bad),
        (e) => isTetherError(e, 'TETHER_REQUEST_INVALID') && e.message.includes(JSON.stringify(bad)),
        bad,
      );
    }
  });

  void it('round-trips every millisecond instant through format and parse', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 4102444800000 }), (ms) => {
        assert.equal(parseDockerTime(formatDockerTimestamp(ms)), ms);
      }),
    );
  });
});
