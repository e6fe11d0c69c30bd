/**
 * What tetherctl asks tetherd through its own API, for what the docker CLI cannot show: a container's boot
 * timeline (`tetherctl health NAME`, as `vm run --timeline` prints it) and its VM (`tetherctl vm ls`).
 */
import { request } from 'node:http';
import { parseArgs } from 'node:util';
import { TetherError } from '../../../protocol/src/errors/errors.ts';
import { TETHER_API_PREFIX, type VmSummary } from '../daemon/api/tether/routes.ts';
import { defaultDaemonPaths } from '../daemon/state/daemon-paths.ts';
import { formatTimeline, type TimelineEntry } from '../vm/timeline.ts';

export const DAEMON_USAGE = `usage: tetherctl health [--socket PATH] NAME|ID    the container's boot timeline and exit
       tetherctl vm ls [--socket PATH]            every container's VM: hypervisor pid, channel state, ports

  --socket PATH   tetherd's API socket (default TETHER_SOCKET, else ${defaultDaemonPaths(process.getuid?.() ?? 0, process.env).socket})`;

export function daemonSocket(given: string | undefined): string {
  return (
    given ?? process.env['TETHER_SOCKET'] ?? defaultDaemonPaths(process.getuid?.() ?? 0, process.env).socket
  );
}

/** GET on tetherd's socket; a refused connection says how to start tetherd. */
export function getJson(socket: string, path: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, path, method: 'GET' }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let body: unknown;
        try {
          body = JSON.parse(text);
        } catch {
          body = { message: text };
        }
        if ((res.statusCode ?? 500) >= 400)
          reject(
            new TetherError(
              res.statusCode === 404 ? 'TETHER_NO_SUCH_CONTAINER' : 'TETHER_VM_FAILED',
              (body as { message?: string }).message ?? `tetherd answered ${res.statusCode}`,
            ),
          );
        else resolve(body);
      });
    });
    req.on('error', (error: NodeJS.ErrnoException) =>
      reject(
        new TetherError(
          'TETHER_CHANNEL_CLOSED',
          `cannot reach tetherd at ${socket} (${error.code ?? error.message}): start it with \`bin/tetherd --socket ${socket}\` or give --socket`,
        ),
      ),
    );
    req.end();
  });
}

/** Pure: `tetherctl vm ls` as a table. */
export function formatVmTable(vms: readonly VmSummary[]): string {
  const rows = [
    ['CONTAINER', 'NAME', 'STATUS', 'PID', 'CHANNEL', 'BOOTS', 'PORTS'],
    ...vms.map((vm) => [
      vm.id.slice(0, 12),
      vm.name,
      vm.status,
      vm.pid ? String(vm.pid) : '-',
      vm.channel,
      String(vm.boot),
      vm.ports.join(', '),
    ]),
  ];
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  return (
    rows
      .map((row) =>
        row
          .map((cell, column) => cell.padEnd(widths[column]!))
          .join('  ')
          .trimEnd(),
      )
      .join('\n') + '\n'
  );
}

export async function runHealthCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { socket: { type: 'string' } },
    allowPositionals: true,
  });
  const name = positionals[0];
  if (!name || positionals.length > 1)
    throw new TetherError('TETHER_USAGE', `name one container\n${DAEMON_USAGE}`);
  const health = (await getJson(
    daemonSocket(values.socket),
    `${TETHER_API_PREFIX}/containers/${encodeURIComponent(name)}/health`,
  )) as VmSummary & {
    timeline: TimelineEntry[];
    error: string;
    exitCode: number;
    // Absent from an older tetherd's answer.
    oomKilled?: boolean;
    droppedStatusLines?: number;
  };
  process.stdout.write(
    `${health.name} (${health.id.slice(0, 12)}): ${health.status}, boot ${health.boot}, channel ${health.channel}` +
      (health.status === 'exited' ? `, exit code ${health.exitCode}` : '') +
      (health.oomKilled ? ', OOM-killed' : '') +
      '\n',
  );
  if (health.error) process.stdout.write(`error: ${health.error}\n`);
  if (health.droppedStatusLines)
    process.stdout.write(
      `${health.droppedStatusLines} console status line(s) left out: not signed with this boot's key (forged, replayed or cut short)\n`,
    );
  process.stdout.write(
    health.timeline.length ? formatTimeline(health.timeline) : 'no boot recorded by this tetherd\n',
  );
  return 0;
}

export async function runVmListCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { socket: { type: 'string' } } });
  const vms = (await getJson(daemonSocket(values.socket), `${TETHER_API_PREFIX}/vms`)) as VmSummary[];
  process.stdout.write(formatVmTable(vms));
  return 0;
}
