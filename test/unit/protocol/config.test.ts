import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isTetherError } from '../../../protocol/src/errors/errors.ts';
import {
  CMDLINE_CONFIG_KEY,
  ConfigError,
  configFromCmdline,
  decodeConfig,
  encodeConfig,
  parseKernelCmdline,
  validateConfig,
} from '../../../protocol/src/config/config.ts';
import type { Problem } from '../../../protocol/src/config/schema.ts';

const CONFIGS = join(process.cwd(), 'test/fixtures/configs');
const readJson = (path: string): unknown => JSON.parse(readFileSync(path, 'utf8'));

/** Runs `fn`, which must throw a ConfigError; returns it. */
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
    assert.equal(error.code, 'TETHER_CONFIG_INVALID');
    return error;
  }
  assert.fail('no ConfigError was thrown');
}

/** A copy of the minimal config with one field set (by dotted path; numbers index arrays). */
function withField(path: string, value: unknown): Record<string, unknown> {
  const config: Record<string, unknown> = { version: 1, id: 'x' };
  const keys = path.split('.');
  let at: Record<string, unknown> = config;
  keys.slice(0, -1).forEach((key) => {
    at[key] ??= {};
    at = at[key] as Record<string, unknown>;
  });
  at[keys.at(-1)!] = value;
  return config;
}

void describe('config: valid configs', () => {
  for (const file of readdirSync(join(CONFIGS, 'valid'))) {
    void it(`${file} passes and comes back unchanged`, () => {
      const input = readJson(join(CONFIGS, 'valid', file));
      assert.deepEqual(validateConfig(input), input);
      assert.deepEqual(decodeConfig(readFileSync(join(CONFIGS, 'valid', file))), input);
    });
  }

  void it('the minimal config is {version: 1, id}', () => {
    assert.deepEqual(validateConfig({ version: 1, id: 'x' }), { version: 1, id: 'x' });
  });

  void it('encodeConfig output decodes to the same config', () => {
    const full = validateConfig(readJson(join(CONFIGS, 'valid/full.json')));
    assert.deepEqual(decodeConfig(encodeConfig(full)), full);
  });

  void it('edge values that are valid', () => {
    const base = { version: 1, id: 'x' };
    const process = (fields: object): object => ({ ...base, process: { argv: ['sh'], ...fields } });
    const ok: object[] = [
      process({ argv: ['sh', ''] }),
      process({ env: ['A=', 'B=x=y', 'MULTI=line\nvalue'] }),
      process({ stopTimeoutSeconds: 0 }),
      process({ stopTimeoutSeconds: 3600 }),
      { ...base, network: { interfaces: [{ address: '0.0.0.0/0' }, { address: '255.255.255.255/32' }] } },
      { ...base, hostname: 'a' },
      { ...base, hostname: `${'a'.repeat(63)}.b` },
      { ...base, id: 'a'.repeat(128) },
      { ...base, storage: { root: { serial: 'a'.repeat(20) }, volumes: [] } },
    ];
    for (const config of ok) assert.deepEqual(validateConfig(config), config);
  });
});

void describe('config: invalid configs name every bad field', () => {
  for (const file of readdirSync(join(CONFIGS, 'invalid')).filter(
    (name) => !name.endsWith('.expected.json'),
  )) {
    void it(file, () => {
      const expected = readJson(
        join(CONFIGS, 'invalid', file.replace(/\.json$/, '.expected.json')),
      ) as Problem[];
      const error = configError(() => decodeConfig(readFileSync(join(CONFIGS, 'invalid', file)), file));
      assert.deepEqual(error.problems, expected);
      // Every problem is in the message, as `path: expected X, got Y`, one per line.
      for (const problem of expected) {
        assert.ok(
          error.message.includes(`\n  ${problem.path}: expected ${problem.expected}, got ${problem.got}\n`),
          `message lacks ${problem.path}:\n${error.message}`,
        );
      }
      assert.ok(error.message.startsWith(`invalid config from ${file}:\n`));
      assert.ok(error.message.endsWith('see docs/config.md).'));
    });
  }

  void it('each kind of bad field is reported with its path and what was expected', () => {
    const cases: [path: string, value: unknown, problemPath: string, expected: RegExp][] = [
      ['version', '1', 'version', /an integer from 1 to 1/],
      ['version', 1.5, 'version', /an integer/],
      ['id', '', 'id', /an identifier/],
      ['id', 'a'.repeat(129), 'id', /an identifier/],
      ['name', '', 'name', /a non-empty string/],
      ['hostname', 'a..b', 'hostname', /a hostname/],
      ['hostname', `${'a'.repeat(64)}`, 'hostname', /a hostname/],
      ['process', ['sh'], 'process', /an object/],
      ['process.argv', [], 'process.argv', /a non-empty array/],
      ['process.argv', 'sh', 'process.argv', /a non-empty array/],
      ['process.argv', [null], 'process.argv[0]', /a string/],
      ['process.env', ['=x'], 'process.env[0]', /KEY=VALUE/],
      ['process.env', ['NUL=\0'], 'process.env[0]', /KEY=VALUE/],
      ['process.user', '', 'process.user', /a non-empty string/],
      ['process.stopTimeoutSeconds', -1, 'process.stopTimeoutSeconds', /from 0 to 3600/],
      ['storage', { root: {} }, 'storage.root.serial', /required/],
      [
        'storage',
        { root: { serial: 'r', fstype: 'btrfs' } },
        'storage.root.fstype',
        /one of "ext4", "squashfs"/,
      ],
      ['storage', { root: { serial: 'has space' } }, 'storage.root.serial', /virtio disk serial/],
      ['network', { interfaces: [{}] }, 'network.interfaces[0].address', /required/],
      [
        'network',
        { interfaces: [{ address: '10.0.0.1/33' }] },
        'network.interfaces[0].address',
        /prefix length/,
      ],
      [
        'network',
        { interfaces: [{ address: '10.0.0.1/24', name: 'Eth0' }] },
        'network.interfaces[0].name',
        /interface name/,
      ],
      ['network', { search: ['ok', 'not ok'] }, 'network.search[1]', /a hostname/],
      ['modules', 'virtio_net', 'modules', /an array/],
      [
        'network',
        { interfaces: [{ address: '10.0.0.1/24', adress: 'x' }] },
        'network.interfaces[0].adress',
        /no such field \(known: name, mac, address, gateway\)/,
      ],
    ];
    for (const [path, value, problemPath, expected] of cases) {
      const error = configError(() => validateConfig(withField(path, value)));
      const problem = error.problems.find((p) => p.path === problemPath);
      assert.ok(
        problem,
        `no problem at ${problemPath} for ${path} = ${JSON.stringify(value)}: ${error.message}`,
      );
      assert.match(problem.expected, expected, problemPath);
      assert.match(error.message, new RegExp(`  ${problemPath.replace(/[[\].]/g, '\\$&')}: expected `));
    }
  });

  void it('a value that is not an object at all is reported at (root)', () => {
    for (const value of [null, [], 'config', 1]) {
      const error = configError(() => validateConfig(value));
      assert.deepEqual(
        error.problems.map((p) => [p.path, p.expected]),
        [['(root)', 'an object']],
      );
    }
  });

  void it('several problems are reported at once', () => {
    const error = configError(() =>
      validateConfig({ id: 'x', hostname: '_', process: { argv: [] }, extra: 1 }),
    );
    assert.deepEqual(
      error.problems.map((p) => p.path),
      ['version', 'hostname', 'process.argv', 'extra'],
    );
    assert.equal(error.message.split('\n').filter((line) => line.startsWith('  ')).length, 4);
  });

  void it('long strings are cut short in the message', () => {
    const error = configError(() =>
      validateConfig({ version: 1, id: 'x', name: 5, hostname: 'h_'.repeat(100) }),
    );
    const got = error.problems.find((p) => p.path === 'hostname')!.got;
    assert.equal(got, JSON.stringify('h_'.repeat(20) + '…'));
    assert.equal(error.problems.find((p) => p.path === 'name')!.got, 'number 5');
  });

  void it('bad JSON is a ConfigError at (root) naming the source', () => {
    const error = configError(() =>
      decodeConfig(Buffer.from('{"version": 1, id: "x"}'), 'fw_cfg opt/tether/config'),
    );
    assert.equal(error.problems.length, 1);
    assert.equal(error.problems[0]!.path, '(root)');
    assert.equal(error.problems[0]!.expected, 'JSON text');
    assert.match(
      error.message,
      /^invalid config from fw_cfg opt\/tether\/config:\n {2}\(root\): expected JSON text, got /,
    );
    configError(() => decodeConfig(Buffer.alloc(0)));
  });
});

void describe('kernel command line', () => {
  void it('splits words and keys, honouring double quotes', () => {
    const args = parseKernelCmdline(
      'BOOT_IMAGE=/vmlinuz console=ttyS0,115200  quiet\tpanic=-1 msg="hello world" "quoted=a b" x=a=b empty= \n',
    );
    assert.deepEqual(
      [...args],
      [
        ['BOOT_IMAGE', '/vmlinuz'],
        ['console', 'ttyS0,115200'],
        ['quiet', ''],
        ['panic', '-1'],
        ['msg', 'hello world'],
        ['quoted', 'a b'],
        ['x', 'a=b'],
        ['empty', ''],
      ],
    );
  });

  void it('an empty command line has no words; a later duplicate wins', () => {
    assert.equal(parseKernelCmdline('   ').size, 0);
    assert.equal(parseKernelCmdline('a=1 a=2').get('a'), '2');
  });

  void it('configFromCmdline decodes base64 JSON (standard and URL-safe alphabets)', () => {
    fc.assert(
      fc.property(
        fc.record({
          version: fc.constant(1),
          id: fc.stringMatching(/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,20}$/),
          name: fc.string({ minLength: 1 }),
        }),
        fc.constantFrom('base64' as const, 'base64url' as const),
        (config, encoding) => {
          const encoded = Buffer.from(JSON.stringify(config)).toString(encoding);
          const cmdline = `console=ttyS0 ${CMDLINE_CONFIG_KEY}=${encoded} quiet`;
          assert.deepEqual(configFromCmdline(cmdline), { ...config });
        },
      ),
    );
  });

  void it('configFromCmdline without the key is undefined', () => {
    assert.equal(configFromCmdline('console=ttyS0 quiet tether.configx=abc'), undefined);
    assert.equal(configFromCmdline(''), undefined);
  });

  void it('configFromCmdline with text that is not base64 names the key', () => {
    const error = configError(() => configFromCmdline(`${CMDLINE_CONFIG_KEY}={"version":1}`));
    assert.deepEqual(
      error.problems.map((p) => [p.path, p.expected]),
      [[CMDLINE_CONFIG_KEY, 'base64 text']],
    );
    assert.match(error.message, /^invalid config from kernel command line:/);
    configError(() => configFromCmdline(`${CMDLINE_CONFIG_KEY}="abc def"`));
  });

  void it('configFromCmdline with base64 of something other than a valid config reports it', () => {
    const notJson = configError(() =>
      configFromCmdline(`${CMDLINE_CONFIG_KEY}=${Buffer.from('hello').toString('base64')}`),
    );
    assert.equal(notJson.problems[0]!.expected, 'JSON text');
    const invalid = configError(() =>
      configFromCmdline(`${CMDLINE_CONFIG_KEY}=${Buffer.from('{"version":1}').toString('base64')}`),
    );
    assert.deepEqual(
      invalid.problems.map((p) => p.path),
      ['id'],
    );
  });

  void it('ConfigError is a TetherError carrying the problems', () => {
    const error = configError(() => validateConfig({}));
    assert.ok(isTetherError(error, 'TETHER_CONFIG_INVALID'));
    assert.deepEqual(
      error.problems.map((p) => p.path),
      ['version', 'id'],
    );
  });
});
