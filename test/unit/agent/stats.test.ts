import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  agentStatsFrom,
  containerStatsFrom,
  cpuUsageMicros,
  kibField,
  parseProcStatus,
} from '../../../agent/src/status/stats.ts';
import { statsRequest } from '../../../protocol/src/requests/requests.ts';

const PROC_STATUS = `Name:\ttether
State:\tS (sleeping)
VmPeak:\t  812345 kB
VmHWM:\t   61234 kB
VmRSS:\t   50000 kB
Threads:\t7
`;

describe('agent stats', () => {
  it('reads RSS, peak and threads from /proc/self/status in bytes', () => {
    const stats = agentStatsFrom(
      PROC_STATUS,
      { rss: 0, heapTotal: 9, heapUsed: 8, external: 3, arrayBuffers: 1 },
      { user: 1500, system: 500 },
    );
    assert.deepEqual(stats, {
      rssBytes: 50000 * 1024,
      peakRssBytes: 61234 * 1024,
      heapUsedBytes: 8,
      heapTotalBytes: 9,
      externalBytes: 3,
      cpuMicros: 2000,
      cpuSystemMicros: 500,
      threads: 7,
    });
  });

  it('a field that is missing or not in kB reads as 0, not NaN', () => {
    const fields = parseProcStatus('Name:\tkthreadd\nVmRSS:\tweird\n');
    assert.equal(kibField(fields, 'VmRSS'), 0);
    assert.equal(kibField(fields, 'VmHWM'), 0);
  });
});

describe('container stats', () => {
  it('reads memory, limit, pids and CPU from the cgroup files', () => {
    assert.deepEqual(
      containerStatsFrom({
        memoryCurrent: '1048576\n',
        memoryMax: '67108864\n',
        pidsCurrent: '3\n',
        cpuStat: 'usage_usec 4242\nuser_usec 4000\nsystem_usec 242\n',
      }),
      { memoryBytes: 1048576, memoryLimitBytes: 67108864, pids: 3, cpuMicros: 4242 },
    );
  });

  it('"max" is no limit, and the reply leaves the limit out', () => {
    const stats = containerStatsFrom({
      memoryCurrent: '1',
      memoryMax: 'max\n',
      pidsCurrent: '1',
      cpuStat: '',
    });
    assert.equal('memoryLimitBytes' in stats, false);
    assert.equal(cpuUsageMicros(''), 0);
  });

  it('the reply codec keeps both parts and refuses a malformed agent part', () => {
    const reply = {
      agent: agentStatsFrom(PROC_STATUS, process.memoryUsage(), { user: 1, system: 1 }),
      container: { memoryBytes: 1, pids: 1, cpuMicros: 1 },
    };
    assert.deepEqual(statsRequest.checkResult(reply), reply);
    assert.throws(
      () => statsRequest.checkResult({ agent: { rssBytes: 'lots' } }),
      /TETHER_REQUEST_INVALID|rssBytes/,
    );
    assert.deepEqual(statsRequest.checkParams({ resetPeak: true }), { resetPeak: true });
  });
});
