/**
 * GET /containers/{id}/top (docker top, docker-py's Container.top(), `docker-compose top`): Docker runs ps on
 * the host and keeps the container's pids; a container here is a VM, so ps runs inside it over the agent's
 * exec, and the VM's own bookkeeping (kernel threads, the ps itself) is left out. The answer is Docker's
 * {Titles, Processes}, each row split into as many columns as the header has, the last keeping its spaces.
 */
import { TetherError } from '../../../../../protocol/src/errors/errors.ts';
import type { ContainerManager } from '../../containers/manager.ts';
import type { Router } from '../http/router.ts';

export interface TopResult {
  Titles: string[];
  Processes: string[][];
}

/** Pure: ps output as Docker's top body, without kernel threads and without the process `ownPid`. */
export function parsePsOutput(output: string, ownPid?: number): TopResult {
  const lines = output.split('\n').filter((line) => line.trim() !== '');
  const header = lines.shift();
  if (header === undefined)
    throw new TetherError('TETHER_SPAWN_FAILED', 'ps printed nothing: cannot list the processes');
  const titles = header.trim().split(/\s+/);
  const pidColumn = titles.indexOf('PID');
  const processes: string[][] = [];
  for (const line of lines) {
    const fields = line.trim().split(/\s+/);
    const row = [...fields.slice(0, titles.length - 1), fields.slice(titles.length - 1).join(' ')];
    const command = row[row.length - 1] ?? '';
    if (/^\[.*\]$/.test(command)) continue;
    if (ownPid !== undefined && pidColumn >= 0 && row[pidColumn] === String(ownPid)) continue;
    processes.push(row);
  }
  return { Titles: titles, Processes: processes };
}

async function collect(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

export function registerTopRoute(router: Router, manager: ContainerManager): void {
  router.add('GET', '/containers/{id}/top', async (ctx) => {
    const container = manager.find(ctx.params['id']!);
    if (!container.running)
      throw new TetherError('TETHER_NOT_RUNNING', `container ${container.id} is not running`);
    const args = (ctx.query.get('ps_args') ?? '').trim().split(/\s+/).filter(Boolean);
    const handle = await (await manager.channel(container)).exec({ argv: ['ps', ...args], stdin: false });
    const [stdout, stderr, exit] = await Promise.all([
      collect(handle.stdout),
      collect(handle.stderr),
      handle.exit,
    ]);
    if (exit?.exitCode !== 0)
      throw new TetherError(
        'TETHER_SPAWN_FAILED',
        `ps ${args.join(' ')} in the container exited ${exit?.exitCode ?? 'without a status'}: ${stderr.trim()}`,
      );
    ctx.send(200, parsePsOutput(stdout, handle.pid));
  });
}
