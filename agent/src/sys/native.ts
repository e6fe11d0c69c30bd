/**
 * Loads the agent's native addons: our own `sys.node` and node-pty's `pty.node`.
 *
 * - Dev mode (a plain `node dist/tether.cjs`, or tsx in tests): `sys.node` comes from `build/native/` next to the
 *   bundle's folder (`dirname(argv[1])/../build/native`), else under the working directory, or from
 *   `$TETHER_NATIVE_BUILD_DIR`; `pty.node` from the node-pty package that `require` resolves.
 * - Inside the single executable (`node:sea` says so): a SEA can dlopen only real files, so the embedded asset
 *   `<name>.node` is written to `$TETHER_NATIVE_DIR` (default `/run/tether/native`, a tmpfs as PID 1, created 0700)
 *   and dlopen'd from there with RTLD_NOW, so a missing symbol fails here and not at the first call.
 *
 * The esbuild plugins of init-image/build-agent.mjs route node-pty's own loader and any bundled `.node` require
 * here, which is why this module must stay importable from CommonJS (no import.meta).
 */
import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { constants } from 'node:os';
import * as path from 'node:path';
import * as sea from 'node:sea';
import { TetherError } from '../../../protocol/src/errors/errors.ts';

export type NativeName = 'sys' | 'pty';

const DEFAULT_NATIVE_DIR = '/run/tether/native';
const loaded = new Map<string, unknown>();

export function isSea(): boolean {
  try {
    return sea.isSea();
  } catch {
    return false;
  }
}

/** The addon's exports, loaded once per process. */
export function loadNative(name: NativeName): unknown {
  const cached = loaded.get(name);
  if (cached !== undefined) return cached;
  const file = isSea() ? extractAsset(name) : devPath(name);
  const module = { exports: {} as unknown };
  try {
    process.dlopen(module, file, constants.dlopen.RTLD_NOW);
  } catch (error) {
    throw new TetherError('TETHER_SYSCALL', `dlopen ${name}.node from ${file}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  loaded.set(name, module.exports);
  return module.exports;
}

/** Writes the SEA asset `<name>.node` to a real file (write, then rename: a file already mapped stays intact). */
function extractAsset(name: NativeName): string {
  const dir = process.env['TETHER_NATIVE_DIR'] ?? DEFAULT_NATIVE_DIR;
  const file = path.join(dir, `${name}.node`);
  let bytes: ArrayBuffer;
  try {
    bytes = sea.getRawAsset(`${name}.node`) as ArrayBuffer;
  } catch (error) {
    throw new TetherError('TETHER_SYSCALL', `read SEA asset ${name}.node: ${(error as Error).message}`, {
      cause: error,
    });
  }
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const temporary = `${file}.${process.pid}.tmp`;
    writeFileSync(temporary, new Uint8Array(bytes), { mode: 0o500 });
    renameSync(temporary, file);
  } catch (error) {
    throw new TetherError(
      'TETHER_SYSCALL',
      `extract SEA asset ${name}.node into ${dir}: ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
  return file;
}

function devPath(name: NativeName): string {
  const entry = process.argv[1] !== undefined ? path.resolve(process.argv[1]) : path.join(process.cwd(), 'x');
  if (name === 'pty') {
    // node-pty's own package layout; resolved from the bundle first, then from the working directory.
    for (const from of [entry, path.join(process.cwd(), 'x')]) {
      try {
        const pkg = createRequire(from).resolve('node-pty/package.json');
        const file = path.join(path.dirname(pkg), 'build', 'Release', 'pty.node');
        if (existsSync(file)) return file;
      } catch {
        // not resolvable from here; try the next place
      }
    }
    throw new TetherError(
      'TETHER_SYSCALL',
      `load pty.node: node-pty is not installed near ${entry} or ${process.cwd()}`,
    );
  }
  const candidates = [
    ...(process.env['TETHER_NATIVE_BUILD_DIR'] ? [process.env['TETHER_NATIVE_BUILD_DIR']] : []),
    path.join(path.dirname(entry), '..', 'build', 'native'),
    path.join(process.cwd(), 'build', 'native'),
  ].map((dir) => path.join(dir, `${name}.node`));
  const found = candidates.find((file) => existsSync(file));
  if (found === undefined) {
    throw new TetherError(
      'TETHER_SYSCALL',
      `load ${name}.node: not built (run make native); looked at ${candidates.join(', ')}`,
    );
  }
  return found;
}
