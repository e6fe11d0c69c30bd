/**
 * Heavy tests say what they need. Locally a missing prerequisite skips the test with the reason; in CI
 * (TETHER_REQUIRE_ALL=1) it fails, so nothing passes silently.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { TestContext } from 'node:test';

export const REPO = new URL('../../', import.meta.url).pathname;
export const requireAll = process.env['TETHER_REQUIRE_ALL'] === '1';

export function hasCommand(name: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Returns the reason a test cannot run, or undefined when it can. */
export function missing(checks: Record<string, boolean>): string | undefined {
  const absent = Object.entries(checks)
    .filter(([, ok]) => !ok)
    .map(([what]) => what);
  return absent.length ? `missing: ${absent.join(', ')}` : undefined;
}

/** Skips (locally) or fails (in CI) when a prerequisite is missing. Returns true when the test may go on. */
export function need(t: TestContext, checks: Record<string, boolean>): boolean {
  const reason = missing(checks);
  if (!reason) return true;
  if (requireAll) throw new Error(`prerequisite ${reason} (TETHER_REQUIRE_ALL=1 forbids skipping)`);
  t.skip(reason);
  return false;
}

export const built = (): boolean => existsSync(`${REPO}bin/tether`) && existsSync(`${REPO}bin/tether-exec`);
export const isRoot = (): boolean => process.getuid?.() === 0;
