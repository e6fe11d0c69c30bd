/**
 * The HTTP edge: routes by method and path pattern (Docker's optional /vX.Y prefix stripped and checked),
 * JSON bodies with a size limit, Docker's error body `{"message": ...}` with the status its error code maps
 * to, and hijacked connections for attach and exec (HTTP/1.1 101 with `Upgrade: tcp`, or a raw 200 stream
 * for clients that do not ask to upgrade). Route handlers never see a socket error kill the daemon.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { describeError, isTetherError, TetherError } from '../../../../../protocol/src/errors/errors.ts';
import { statusForError } from './errors.ts';

export const API_VERSION = '1.47';
export const MIN_API_VERSION = '1.24';
export const MAX_JSON_BODY_BYTES = 1024 * 1024;

export interface Hijacked {
  /** The client's connection after the response head: read stdin from it, write output to it. */
  stream: Duplex;
  /** True when the client asked to upgrade (it may send stdin and half-close). */
  upgraded: boolean;
}

export interface RouteContext {
  req: IncomingMessage;
  params: Record<string, string>;
  query: URLSearchParams;
  /** The API version the client speaks (from the path prefix, else ours). */
  apiVersion: string;
  json(): Promise<unknown>;
  send(status: number, body?: unknown, headers?: Record<string, string>): void;
  /** Answers with a streaming body (logs, events, load progress); the caller writes and ends it. */
  stream(status: number, contentType: string, headers?: Record<string, string>): ServerResponse | Duplex;
  hijack(contentType?: string): Hijacked;
  /** The raw connection of an upgrade request (WebSocket handshakes are finished by the route). */
  upgradeSocket: Duplex | undefined;
  head: Buffer;
  /** The route took the connection over itself (a WebSocket). */
  markHijacked(): void;
  /** Resolves when the client has gone away. */
  closed: Promise<void>;
  readonly log: Logger;
}

export type Handler = (ctx: RouteContext) => Promise<void> | void;

interface Route {
  method: string;
  pattern: RegExp;
  keys: string[];
  handler: Handler;
}

export function compareVersions(a: string, b: string): number {
  const [aMajor = 0, aMinor = 0] = a.split('.').map(Number);
  const [bMajor = 0, bMinor = 0] = b.split('.').map(Number);
  return aMajor - bMajor || aMinor - bMinor;
}

/** Pure: splits Docker's `/v1.43/containers/json` into the version and the route path. */
export function splitVersion(path: string): { version: string | undefined; path: string } {
  const match = /^\/v(\d+\.\d+)(\/.*)$/.exec(path);
  return match ? { version: match[1]!, path: match[2]! } : { version: undefined, path };
}

export class Router {
  readonly #routes: Route[] = [];
  readonly #log: Logger;

  constructor(log: Logger) {
    this.#log = log;
  }

  add(method: string, path: string, handler: Handler): void {
    const keys: string[] = [];
    const source = path.replace(/\{(\w+)(\*)?\}/g, (_m, key: string, rest: string | undefined) => {
      keys.push(key);
      return rest ? '(.+)' : '([^/]+)';
    });
    this.#routes.push({ method, pattern: new RegExp(`^${source}$`), keys, handler });
  }

  /** For the http server's 'request' event, and 'upgrade' (socket given) for hijacking clients. */
  async handle(
    req: IncomingMessage,
    res: ServerResponse | undefined,
    upgradeSocket?: Duplex,
    head: Buffer = Buffer.alloc(0),
  ): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://tetherd');
    const { version, path } = splitVersion(decodeURIComponent(url.pathname));
    const socket = upgradeSocket ?? req.socket;
    // Node hands an upgrade request's body to us raw (in `head` and on the socket): take exactly its
    // Content-Length here, so no byte of it is mistaken for the stdin that follows (docker exec -i).
    let upgradeBody: Buffer | undefined;
    let answered = false;
    let hijacked = false;
    const closed = new Promise<void>((resolve) => {
      socket.once('close', () => resolve());
      (res ?? socket).once('close', () => resolve());
    });
    const writeHead = (status: number, headers: Record<string, string>, body: Buffer | undefined): void => {
      answered = true;
      if (res) {
        res.writeHead(status, headers);
        res.end(body);
        return;
      }
      // An upgrade request answered without upgrading: write a plain response on the raw socket.
      const head = [`HTTP/1.1 ${status} ${statusText(status)}`];
      for (const [key, value] of Object.entries({ ...headers, 'Content-Length': String(body?.length ?? 0) }))
        head.push(`${key}: ${value}`);
      socket.end(Buffer.concat([Buffer.from(head.join('\r\n') + '\r\n\r\n'), body ?? Buffer.alloc(0)]));
    };
    const ctx: RouteContext = {
      req,
      params: {},
      query: url.searchParams,
      apiVersion: version ?? API_VERSION,
      log: this.#log,
      closed,
      upgradeSocket,
      head,
      markHijacked: () => {
        answered = true;
        hijacked = true;
      },
      json: () => (upgradeBody ? Promise.resolve(parseJson(upgradeBody)) : readJson(req)),
      send: (status, body, headers = {}) => {
        if (answered) return;
        if (body === undefined) return writeHead(status, headers, undefined);
        if (typeof body === 'string' || Buffer.isBuffer(body))
          return writeHead(
            status,
            { 'Content-Type': 'text/plain; charset=utf-8', ...headers },
            Buffer.from(body),
          );
        writeHead(
          status,
          { 'Content-Type': 'application/json', ...headers },
          Buffer.from(JSON.stringify(body) + '\n'),
        );
      },
      stream: (status, contentType, headers = {}) => {
        answered = true;
        if (res) {
          res.writeHead(status, { 'Content-Type': contentType, ...headers });
          res.flushHeaders();
          return res;
        }
        const extra = Object.entries(headers)
          .map(([key, value]) => `${key}: ${value}\r\n`)
          .join('');
        socket.write(
          `HTTP/1.1 ${status} ${statusText(status)}\r\nContent-Type: ${contentType}\r\n${extra}\r\n`,
        );
        return socket;
      },
      hijack: (contentType = 'application/vnd.docker.raw-stream') => {
        answered = true;
        hijacked = true;
        if (upgradeSocket) {
          upgradeSocket.write(
            `HTTP/1.1 101 UPGRADED\r\nContent-Type: ${contentType}\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n`,
          );
          return { stream: upgradeSocket, upgraded: true };
        }
        // No upgrade asked (docker-py's attach/logs): a raw body with no length, ended by closing.
        const response = res!;
        response.useChunkedEncodingByDefault = false;
        response.shouldKeepAlive = false;
        response.writeHead(200, { 'Content-Type': contentType, Connection: 'close' });
        response.flushHeaders();
        return { stream: responseDuplex(response, req), upgraded: false };
      },
    };
    try {
      if (upgradeSocket) upgradeBody = await readUpgradeBody(req, upgradeSocket, head);
      if (version !== undefined) checkVersion(version);
      const route = this.#match(req.method ?? 'GET', path, ctx);
      await route(ctx);
      if (!answered) ctx.send(204);
    } catch (error) {
      if (hijacked || (answered && !res)) {
        this.#log.warn({ path, err: describeError(error) }, 'stream failed');
        socket.destroy();
        return;
      }
      if (answered) {
        // A client that hangs up once it has what it wanted (docker cp reads a tar to its end marker).
        const premature = (error as NodeJS.ErrnoException).code === 'ERR_STREAM_PREMATURE_CLOSE';
        this.#log[premature ? 'debug' : 'warn'](
          { path, err: describeError(error) },
          'response failed after headers',
        );
        res?.destroy();
        return;
      }
      const status = statusForError(error);
      if (status >= 500) this.#log.error({ path, err: describeError(error) }, 'request failed');
      else this.#log.debug({ path, status, err: describeError(error) }, 'request refused');
      ctx.send(status, { message: isTetherError(error) ? error.message : describeError(error) });
    }
  }

  #match(method: string, path: string, ctx: RouteContext): Handler {
    let pathMatched = false;
    for (const route of this.#routes) {
      const match = route.pattern.exec(path);
      if (!match) continue;
      pathMatched = true;
      if (route.method !== method && !(method === 'HEAD' && route.method === 'GET')) continue;
      route.keys.forEach((key, index) => (ctx.params[key] = match[index + 1]!));
      return route.handler;
    }
    // Docker answers an unknown path with 404 "page not found", a known path with the wrong method too.
    throw new TetherError('TETHER_API_NOT_FOUND', pathMatched ? 'page not found' : 'page not found');
  }
}

function checkVersion(version: string): void {
  if (compareVersions(version, API_VERSION) > 0)
    throw new TetherError(
      'TETHER_INVALID_PARAMETER',
      `client version ${version} is too new. Maximum supported API version is ${API_VERSION}`,
    );
  if (compareVersions(version, MIN_API_VERSION) < 0)
    throw new TetherError(
      'TETHER_INVALID_PARAMETER',
      `client version ${version} is too old. Minimum supported API version is ${MIN_API_VERSION}, please upgrade your client to a newer version`,
    );
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_JSON_BODY_BYTES) throw bodyTooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_JSON_BODY_BYTES) throw bodyTooLarge();
    chunks.push(chunk);
  }
  return parseJson(Buffer.concat(chunks));
}

function parseJson(body: Buffer): unknown {
  const text = body.toString('utf8').trim();
  if (text === '') return {};
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new TetherError(
      'TETHER_INVALID_PARAMETER',
      `invalid JSON in the request body: ${(error as Error).message}`,
    );
  }
}

/**
 * The body of an upgrade request, by its Content-Length (clients that upgrade send one, or none): from
 * `head`, then from the socket; whatever follows it is put back on the socket for the stream.
 */
export function readUpgradeBody(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<Buffer> {
  const length = Number(req.headers['content-length'] ?? 0);
  if (!Number.isSafeInteger(length) || length < 0 || length > MAX_JSON_BODY_BYTES)
    return Promise.reject(bodyTooLarge());
  return new Promise((resolve, reject) => {
    let got = head;
    const done = (): void => {
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.pause();
      const rest = got.subarray(length);
      if (rest.length > 0) socket.unshift(rest);
      resolve(got.subarray(0, length));
    };
    const onData = (chunk: Buffer): void => {
      got = Buffer.concat([got, chunk]);
      if (got.length >= length) done();
    };
    const onEnd = (): void => {
      socket.off('data', onData);
      reject(new TetherError('TETHER_INVALID_PARAMETER', 'the connection ended inside the request body'));
    };
    if (got.length >= length) return done();
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.resume();
  });
}

function bodyTooLarge(): TetherError {
  const error = new TetherError(
    'TETHER_INVALID_PARAMETER',
    `request body too large: the limit for JSON bodies is ${MAX_JSON_BODY_BYTES} bytes`,
  );
  (error as TetherError & { status?: number }).status = 413;
  return error;
}

function statusText(status: number): string {
  const texts: Record<number, string> = {
    200: 'OK',
    204: 'No Content',
    304: 'Not Modified',
    400: 'Bad Request',
    404: 'Not Found',
    409: 'Conflict',
    413: 'Payload Too Large',
    500: 'Internal Server Error',
  };
  return texts[status] ?? 'Status';
}

/** A Duplex over a plain (non-upgraded) response: writes go to the body, nothing is read. */
function responseDuplex(res: ServerResponse, req: IncomingMessage): Duplex {
  // The request body was already consumed or empty; the client sends no input without an upgrade.
  return new (class extends Duplex {
    override _read(): void {
      this.push(null);
    }
    override _write(chunk: Buffer, _encoding: BufferEncoding, done: (error?: Error | null) => void): void {
      if (res.write(chunk)) done();
      else res.once('drain', () => done());
    }
    override _final(done: () => void): void {
      res.end(done);
    }
    override _destroy(error: Error | null, done: (error: Error | null) => void): void {
      res.destroy();
      req.destroy();
      done(error);
    }
  })();
}
