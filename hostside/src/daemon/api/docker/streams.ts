/**
 * The container endpoints that stream: attach (hijacked HTTP and WebSocket) and logs. Both read the
 * container's log file, never the channel, so they serve the same bytes whether tetherd has been up all
 * along or was restarted in between.
 */
import { WebSocketServer, type WebSocket } from 'ws';
import { TetherError } from '../../../../../protocol/src/errors/errors.ts';
import type { ContainerManager } from '../../containers/manager.ts';
import { formatDockerTimestamp, parseDockerTime, readLogs, type ReadLogsOptions } from '../../logs/index.ts';
import type { Router } from '../http/router.ts';
import {
  attachContainer,
  attachOptionsFrom,
  encodeOutput,
  socketPeer,
  writeWithBackpressure,
  type AttachPeer,
} from './attach.ts';

function on(query: URLSearchParams, name: string): boolean {
  return ['1', 'true', 'True'].includes(query.get(name) ?? '');
}

/** Pure: Docker's logs query in our reader's terms. */
export function logOptionsFrom(
  query: URLSearchParams,
  now = Date.now(),
): ReadLogsOptions & { timestamps: boolean } {
  const since = query.get('since');
  const until = query.get('until');
  const tail = query.get('tail');
  let tailValue: number | 'all' | undefined;
  if (tail && tail !== 'all') {
    const n = Number(tail);
    if (!Number.isInteger(n))
      throw new TetherError('TETHER_INVALID_PARAMETER', `invalid value for "tail": "${tail}"`);
    tailValue = n < 0 ? 'all' : n;
  }
  const timestamps = on(query, 'timestamps');
  return {
    follow: on(query, 'follow'),
    ...(since && since !== '0' ? { since: parseDockerTime(since, now) } : {}),
    ...(until && until !== '0' ? { until: parseDockerTime(until, now) } : {}),
    ...(tailValue !== undefined ? { tail: tailValue } : {}),
    lines: timestamps || tailValue !== undefined,
    timestamps,
  };
}

export function registerStreamRoutes(router: Router, manager: ContainerManager): void {
  router.add('POST', '/containers/{id}/attach', async (ctx) => {
    const container = manager.find(ctx.params['id']!);
    const options = attachOptionsFrom(ctx.query);
    const { stream } = ctx.hijack(
      container.record.config.tty
        ? 'application/vnd.docker.raw-stream'
        : 'application/vnd.docker.multiplexed-stream',
    );
    ctx.log.info({ container: container.id, stdin: options.stdin }, 'attach');
    await attachContainer(manager, container, options, socketPeer(stream), ctx.log);
  });

  const wss = new WebSocketServer({ noServer: true, maxPayload: 1024 * 1024 });
  router.add('GET', '/containers/{id}/attach/ws', async (ctx) => {
    const container = manager.find(ctx.params['id']!);
    const options = attachOptionsFrom(ctx.query);
    const socket = ctx.upgradeSocket;
    if (!socket)
      throw new TetherError('TETHER_INVALID_PARAMETER', 'attach/ws needs a WebSocket upgrade request');
    const ws = await new Promise<WebSocket>((resolve) =>
      wss.handleUpgrade(ctx.req, socket, ctx.head, resolve),
    );
    ctx.markHijacked();
    await attachContainer(manager, container, options, webSocketPeer(ws), ctx.log);
  });

  router.add('GET', '/containers/{id}/logs', async (ctx) => {
    const container = manager.find(ctx.params['id']!);
    const stdout = on(ctx.query, 'stdout');
    const stderr = on(ctx.query, 'stderr');
    if (!stdout && !stderr)
      throw new TetherError(
        'TETHER_INVALID_PARAMETER',
        'Bad parameters: you must choose at least one stream',
      );
    const { timestamps, ...options } = logOptionsFrom(ctx.query);
    const tty = container.record.config.tty;
    const abort = new AbortController();
    void ctx.closed.then(() => abort.abort());
    const out = ctx.stream(
      200,
      tty ? 'application/vnd.docker.raw-stream' : 'application/vnd.docker.multiplexed-stream',
    );
    try {
      for await (const entry of readLogs(container.logs, { ...options, signal: abort.signal })) {
        if (entry.stream === 1 ? !stdout : !stderr) continue;
        const data = timestamps
          ? Buffer.concat([Buffer.from(formatDockerTimestamp(entry.timestampMs) + ' '), entry.data])
          : entry.data;
        await writeWithBackpressure(out, encodeOutput({ ...entry, data }, tty));
      }
    } finally {
      out.end();
    }
  });
}

function webSocketPeer(ws: WebSocket): AttachPeer {
  const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
  ws.on('error', () => undefined);
  return {
    write: (bytes) =>
      new Promise((resolve) => {
        if (ws.readyState !== ws.OPEN) return resolve();
        ws.send(bytes, { binary: true }, () => resolve());
      }),
    onInput: (listener, onEnd) => {
      ws.on('message', (data: Buffer | ArrayBuffer | Buffer[]) =>
        listener(
          Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data),
        ),
      );
      ws.once('close', onEnd);
    },
    pauseInput: () => ws.pause(),
    resumeInput: () => ws.resume(),
    close: () => ws.close(1000),
    closed,
    raw: true,
  };
}
