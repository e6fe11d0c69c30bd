import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { chainIds } from '../../../../hostside/src/daemon/images/chain-id.ts';

const digest = (text: string): string => `sha256:${createHash('sha256').update(text).digest('hex')}`;

void describe('chain ids (OCI image spec)', () => {
  void it('is the diff id for the lowest layer and the digest of "below diffid" above it', () => {
    const [a, b, c] = [digest('a'), digest('b'), digest('c')];
    const chain = chainIds([a, b, c]);
    assert.equal(chain[0], a);
    assert.equal(chain[1], digest(`${a} ${b}`));
    assert.equal(chain[2], digest(`${chain[1]} ${c}`));
  });

  void it('differs for the same layer over different layers, so a delta is never used over the wrong base', () => {
    const [a, b, top] = [digest('a'), digest('b'), digest('top')];
    assert.notEqual(chainIds([a, top])[1], chainIds([b, top])[1]);
    assert.deepEqual(chainIds([a, b]).slice(0, 1), chainIds([a, top]).slice(0, 1));
  });

  void it('refuses what is not a sha256 digest', () => {
    assert.throws(() => chainIds(['sha256:xyz']), /"sha256:xyz", which is not a sha256 digest/);
  });
});
