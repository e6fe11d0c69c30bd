/**
 * Published ports (docker run -p) on QEMU's user-mode network: one `hostfwd=` rule per port on the
 * `-netdev user` option; slirp listens on the host address and connects to the guest port for each
 * connection (or relays each datagram). A host port that is taken makes QEMU exit at start with only
 * "Could not set up host forwarding rule '…'"; describeForwardFailure() finds out why and says which port.
 */
import { createSocket } from 'node:dgram';
import { isIPv4, createServer } from 'node:net';
import { TetherError } from '../../../../protocol/src/errors/errors.ts';
import type { PortForward } from '../driver.ts';

function isPort(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 1 && (value as number) <= 65535;
}

function invalid(message: string): TetherError {
  return new TetherError('TETHER_VM_FAILED', `published port ${message}`);
}

/** Pure: how a forward reads in messages, e.g. "127.0.0.1:8080->80/tcp" (the form `docker port` prints). */
export function describePortForward(port: PortForward): string {
  return `${port.hostIp}:${port.hostPort}->${port.guestPort}/${port.protocol}`;
}

/** Throws a TetherError naming the first bad value: protocol, address, port numbers, or a host port used twice. */
export function checkPortForwards(ports: readonly PortForward[]): void {
  const taken: PortForward[] = [];
  for (const [index, port] of ports.entries()) {
    const at = `#${index + 1}`;
    if (port.protocol !== 'tcp' && port.protocol !== 'udp')
      throw invalid(`${at}: protocol must be tcp or udp, got ${JSON.stringify(port.protocol)}`);
    // slirp's hostfwd takes an IPv4 address only (QEMU 7.2).
    if (typeof port.hostIp !== 'string' || !isIPv4(port.hostIp))
      throw invalid(`${at}: host address must be an IPv4 address, got ${JSON.stringify(port.hostIp)}`);
    if (!isPort(port.hostPort))
      throw invalid(
        `${at}: host port must be an integer from 1 to 65535, got ${JSON.stringify(port.hostPort)}`,
      );
    if (!isPort(port.guestPort))
      throw invalid(
        `${at}: container port must be an integer from 1 to 65535, got ${JSON.stringify(port.guestPort)}`,
      );
    // 0.0.0.0 covers every address, so it clashes with any other address on the same port.
    const clash = taken.find(
      (other) =>
        other.protocol === port.protocol &&
        other.hostPort === port.hostPort &&
        (other.hostIp === port.hostIp || other.hostIp === '0.0.0.0' || port.hostIp === '0.0.0.0'),
    );
    if (clash)
      throw invalid(
        `${describePortForward(port)} uses host port ${port.hostIp}:${port.hostPort}/${port.protocol}, already published as ${describePortForward(clash)}`,
      );
    taken.push(port);
  }
}

/** Pure: QEMU's rule, `tcp:127.0.0.1:8080-:80` (an empty guest address is the guest's own, 10.0.2.15). */
export function hostForwardRule(port: PortForward): string {
  return `${port.protocol}:${port.hostIp}:${port.hostPort}-:${port.guestPort}`;
}

/** Pure: the `-netdev` value for the user-mode network with these forwards (checked first). */
export function userNetdevOption(ports: readonly PortForward[] = []): string {
  checkPortForwards(ports);
  return ['user', 'id=net', ...ports.map((port) => `hostfwd=${hostForwardRule(port)}`)].join(',');
}

/**
 * Pure: the forward QEMU could not set up, from its messages (net/slirp.c: "Could not set up host
 * forwarding rule 'tcp:127.0.0.1:8080-:80'"), matched back to the spec's ports.
 */
export function failedForward(qemuLog: string, ports: readonly PortForward[]): PortForward | undefined {
  const match = /Could not set up host forwarding rule '([^']*)'/.exec(qemuLog);
  if (!match) return undefined;
  return ports.find((port) => hostForwardRule(port) === match[1]);
}

/** Why the host port cannot be had, found by trying to bind it ourselves: e.g. EADDRINUSE, EACCES. */
export function probeHostPort(port: PortForward): Promise<string | undefined> {
  return new Promise((resolve) => {
    if (port.protocol === 'udp') {
      const socket = createSocket('udp4');
      socket.once('error', (error: NodeJS.ErrnoException) => {
        socket.close();
        resolve(error.code ?? error.message);
      });
      socket.bind(port.hostPort, port.hostIp, () => socket.close(() => resolve(undefined)));
      return;
    }
    const server = createServer();
    server.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
    server.listen({ port: port.hostPort, host: port.hostIp, exclusive: true }, () =>
      server.close(() => resolve(undefined)),
    );
  });
}

const REASONS: Record<string, string> = {
  EADDRINUSE: 'it is already in use',
  EACCES: 'binding it needs privileges (ports below 1024 need root or CAP_NET_BIND_SERVICE)',
  EADDRNOTAVAIL: 'the address is not one of this host',
};

/** A start failure caused by a published port, in words that name the port; undefined for other failures. */
export async function describeForwardFailure(
  qemuLog: string,
  ports: readonly PortForward[],
): Promise<string | undefined> {
  const port = failedForward(qemuLog, ports);
  if (!port) return undefined;
  const code = await probeHostPort(port);
  const why = code === undefined ? 'it was taken when QEMU started' : (REASONS[code] ?? code);
  return `cannot publish ${describePortForward(port)}: host port ${port.hostIp}:${port.hostPort}/${port.protocol} cannot be bound, ${why}${code ? ` (${code})` : ''}`;
}
