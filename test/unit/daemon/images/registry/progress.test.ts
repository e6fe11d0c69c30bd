import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  errorMessage,
  humanSize,
  layerLabel,
  layerProgress,
  layerStatus,
  progressText,
  pullingFrom,
} from '../../../../../hostside/src/daemon/images/registry/progress.ts';

const DIGEST = `sha256:9ad63333ebc9${'0'.repeat(52)}`;

void describe('pull progress messages', () => {
  void it('size bytes as Docker does (decimal units, 4 significant digits)', () => {
    const table: [number, string][] = [
      [0, '0B'],
      [999, '999B'],
      [1000, '1kB'],
      [772_790, '772.8kB'],
      [2_200_000, '2.2MB'],
      [1_234_567, '1.235MB'],
      [3_400_000_000, '3.4GB'],
    ];
    for (const [bytes, text] of table) assert.equal(humanSize(bytes), text, String(bytes));
  });

  void it('draw the 50-column bar with current/total', () => {
    assert.equal(progressText(0, 0), '');
    assert.equal(progressText(1_200_000, 3_400_000), `[${'='.repeat(17)}>${' '.repeat(33)}]    1.2MB/3.4MB`);
    assert.equal(progressText(3_400_000, 3_400_000), `[${'='.repeat(50)}>] ` + '   3.4MB/3.4MB');
    assert.equal(progressText(500, 0), '    500B');
    // More than the total: the number alone, the bar full.
    assert.equal(progressText(5000, 4000), `[${'='.repeat(50)}>]      5kB`);
  });

  void it('have the shapes of the Docker daemon', () => {
    assert.equal(layerLabel(DIGEST), '9ad63333ebc9');
    assert.deepEqual(pullingFrom('latest', 'library/busybox'), {
      status: 'Pulling from library/busybox',
      id: 'latest',
    });
    assert.deepEqual(layerStatus(DIGEST, 'Pulling fs layer'), {
      status: 'Pulling fs layer',
      progressDetail: {},
      id: '9ad63333ebc9',
    });
    assert.deepEqual(layerProgress(DIGEST, 'Downloading', 10, 100), {
      status: 'Downloading',
      progressDetail: { current: 10, total: 100 },
      progress: `[=====>${' '.repeat(45)}]      10B/100B`,
      id: '9ad63333ebc9',
    });
    assert.deepEqual(errorMessage('boom'), { errorDetail: { message: 'boom' }, error: 'boom' });
  });
});
