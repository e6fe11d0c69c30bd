/**
 * Chain ids (OCI image spec, "Layer ChainID"): a layer's id in the store is the digest of its diff id and
 * of every layer below it, because a layer's disk is a delta that is valid only over those same layers.
 * Two images that share their lowest layers share those chain ids, and so their disks.
 *
 *   ChainID(L0)      = DiffID(L0)
 *   ChainID(L0..Ln)  = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln))
 *
 * Pure.
 */
import { createHash } from 'node:crypto';
import { TetherError } from '../../../../protocol/src/errors/errors.ts';

const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;

/** The chain id of every prefix of `diffIds`, bottom first (`result[i]` names layers 0..i). */
export function chainIds(diffIds: readonly string[]): string[] {
  const chain: string[] = [];
  for (const diffId of diffIds) {
    if (!DIGEST_RE.test(diffId))
      throw new TetherError(
        'TETHER_IMAGE_INVALID',
        `the image config's rootfs.diff_ids holds ${JSON.stringify(diffId)}, which is not a sha256 digest`,
      );
    const below = chain.at(-1);
    chain.push(
      below === undefined
        ? diffId
        : `sha256:${createHash('sha256').update(`${below} ${diffId}`).digest('hex')}`,
    );
  }
  return chain;
}

/** The hex part of a `sha256:<hex>` digest: a layer's folder name. */
export const digestHex = (digest: string): string => digest.slice('sha256:'.length);
