/**
 * The agent's configuration: what the host tells one VM about its container. Delivered as JSON through
 * QEMU fw_cfg (`opt/tether/config`), the kernel command line (`tether.config=<base64>`) or a disk labeled
 * TETHER-CFG; decoded and validated here, the same way whichever path it took.
 */
import { TetherError } from '../errors/errors.ts';
import {
  arrayOf,
  boolean,
  integer,
  object,
  oneOf,
  optional,
  required,
  string,
  type Problem,
} from './schema.ts';

export const CONFIG_VERSION = 1;

const absolutePath = string({ pattern: /^\/.*/, patternName: 'an absolute path' });
const envEntry = string({ pattern: /^[^=\0]+=[^\0]*$/s, patternName: 'a KEY=VALUE string' });
const hostname = string({
  pattern:
    /^(?=.{1,253}$)[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/,
  patternName: 'a hostname (letters, digits and hyphens, dot-separated)',
});
const ipv4 = /(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}/;
const ipAddress = string({ pattern: new RegExp(`^${ipv4.source}$`), patternName: 'an IPv4 address' });
const cidr = string({
  pattern: new RegExp(`^${ipv4.source}/(3[0-2]|[12]?\\d)$`),
  patternName: 'an IPv4 address with prefix length, e.g. 10.0.2.15/24',
});
const signalName = string({ pattern: /^SIG[A-Z0-9]+$/, patternName: 'a signal name such as SIGTERM' });
const identifier = string({
  pattern: /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/,
  patternName: 'an identifier ([a-zA-Z0-9_.-])',
});
const serial = string({
  pattern: /^[a-zA-Z0-9_.-]{1,20}$/,
  patternName: 'a virtio disk serial (up to 20 of [a-zA-Z0-9_.-])',
});

const processSchema = object({
  argv: required(arrayOf(string(), { nonEmpty: true })),
  env: optional(arrayOf(envEntry)),
  cwd: optional(absolutePath),
  user: optional(string({ nonEmpty: true })),
  tty: optional(boolean),
  openStdin: optional(boolean),
  stdinOnce: optional(boolean),
  stopSignal: optional(signalName),
  stopTimeoutSeconds: optional(integer(0, 3600)),
  restart: optional(oneOf('no', 'on-failure', 'always')),
  // false: the process is PID 1 of its namespace, as under Docker without --init (docs/decisions/container-init.md).
  init: optional(boolean),
});

const diskSchema = object({
  serial: required(serial),
  fstype: optional(oneOf('ext4', 'squashfs')),
});

const volumeSchema = object({
  serial: required(serial),
  target: required(absolutePath),
  readOnly: optional(boolean),
  fstype: optional(oneOf('ext4', 'squashfs')),
  /** Docker's copy-up: an empty volume first gets what the image has at `target`. */
  copyUp: optional(boolean),
});

const interfaceSchema = object({
  name: optional(string({ pattern: /^[a-z0-9]{1,15}$/, patternName: 'an interface name' })),
  mac: optional(
    string({ pattern: /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/, patternName: 'a lower-case MAC address' }),
  ),
  address: required(cidr),
  gateway: optional(ipAddress),
});

export const configSchema = object({
  version: required(integer(CONFIG_VERSION, CONFIG_VERSION)),
  id: required(identifier),
  name: optional(string({ nonEmpty: true })),
  hostname: optional(hostname),
  process: optional(processSchema),
  storage: optional(
    object({
      root: required(diskSchema),
      volumes: optional(arrayOf(volumeSchema)),
    }),
  ),
  network: optional(
    object({
      interfaces: optional(arrayOf(interfaceSchema)),
      dns: optional(arrayOf(ipAddress)),
      search: optional(arrayOf(hostname)),
    }),
  ),
  channel: optional(
    object({
      hostKey: optional(
        string({ pattern: /-----BEGIN [A-Z ]*PRIVATE KEY-----/, patternName: 'a PEM private key' }),
      ),
      authorizedKeys: optional(
        arrayOf(string({ pattern: /^(ssh-|ecdsa-)\S+ \S+/, patternName: 'an OpenSSH public key line' })),
      ),
      // Signs the status lines on the console (protocol/src/status/console-line.ts): 32 bytes, base64.
      statusKey: optional(
        string({
          pattern: /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/,
          patternName: 'base64 of 32 random bytes',
        }),
      ),
    }),
  ),
  modules: optional(arrayOf(identifier)),
  // The container's cgroup limits; the agent keeps them within what leaves itself room in the VM.
  limits: optional(
    object({
      memoryBytes: optional(integer(1024 * 1024, Number.MAX_SAFE_INTEGER)),
      pids: optional(integer(1, 4_194_304)),
    }),
  ),
  powerOffOnExit: optional(boolean),
});

type Checked<C> = C extends (...args: never[]) => infer T ? Exclude<T, undefined> : never;
export type AgentConfig = Checked<typeof configSchema>;
export type ProcessConfig = NonNullable<AgentConfig['process']>;

export class ConfigError extends TetherError {
  readonly problems: Problem[];
  constructor(source: string, problems: Problem[]) {
    super(
      'TETHER_CONFIG_INVALID',
      `invalid config from ${source}:\n` +
        problems.map((p) => `  ${p.path}: expected ${p.expected}, got ${p.got}`).join('\n') +
        '\nFix these fields and deliver the config again (see docs/config.md).',
    );
    this.problems = problems;
  }
}

/** Validates a parsed value; throws ConfigError naming every bad field. */
export function validateConfig(value: unknown, source = 'config'): AgentConfig {
  const problems: Problem[] = [];
  const config = configSchema(value, '', problems);
  if (config === undefined || problems.length > 0) throw new ConfigError(source, problems);
  return config;
}

/** Decodes JSON bytes (fw_cfg, disk, file) into a validated config. */
export function decodeConfig(bytes: Uint8Array, source = 'config'): AgentConfig {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (error) {
    throw new ConfigError(source, [{ path: '(root)', expected: 'JSON text', got: (error as Error).message }]);
  }
  return validateConfig(parsed, source);
}

export function encodeConfig(config: AgentConfig): Buffer {
  return Buffer.from(JSON.stringify(config));
}

/** Splits a kernel command line into key/value pairs, honouring double quotes as the kernel does. */
export function parseKernelCmdline(cmdline: string): Map<string, string> {
  const out = new Map<string, string>();
  const words = cmdline.trim().match(/(?:[^\s"]+|"[^"]*")+/g) ?? [];
  for (const word of words) {
    const unquoted = word.replace(/"/g, '');
    const eq = unquoted.indexOf('=');
    if (eq === -1) out.set(unquoted, '');
    else out.set(unquoted.slice(0, eq), unquoted.slice(eq + 1));
  }
  return out;
}

export const CMDLINE_CONFIG_KEY = 'tether.config';

/** The config carried on the kernel command line as `tether.config=<base64 JSON>`, if any. */
export function configFromCmdline(cmdline: string): AgentConfig | undefined {
  const encoded = parseKernelCmdline(cmdline).get(CMDLINE_CONFIG_KEY);
  if (encoded === undefined) return undefined;
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(encoded)) {
    throw new ConfigError('kernel command line', [
      { path: CMDLINE_CONFIG_KEY, expected: 'base64 text', got: JSON.stringify(encoded.slice(0, 40)) },
    ]);
  }
  return decodeConfig(Buffer.from(encoded, 'base64'), 'kernel command line');
}
