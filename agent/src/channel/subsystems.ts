/**
 * The agent's own requests, each an SSH subsystem: the client's first frame carries typed parameters
 * (protocol/src/requests), the agent answers with one reply frame, then the channel carries the
 * request's stream. A malformed request gets a reply naming what was wrong, and only its channel closes.
 */
import type { ServerChannel, Session as SshSession } from 'ssh2';
import { describeError, isTetherError, TetherError } from '../../../protocol/src/errors/errors.ts';
import { FirstFrameReader } from '../../../protocol/src/framing/length-prefixed.ts';
import { encodeLogFrame } from '../../../protocol/src/logs/log-frame.ts';
import {
  archiveGetRequest,
  archivePutRequest,
  archiveStatRequest,
  attachRequest,
  decodeParams,
  encodeReply,
  execRequest,
  statsRequest,
  statusRequest,
  type AttachParams,
  type RequestType,
} from '../../../protocol/src/requests/requests.ts';
import { encodeStatusRecord } from '../../../protocol/src/status/status.ts';
import type { ExitStatus } from '../process/exit-status.ts';
import type { StatusReporter } from '../status/reporter.ts';
import { readAgentStats, readContainerStats } from '../status/stats.ts';
import { checkTargetDir, receiveArchive, sendArchive, statPath } from './archive.ts';
import type { ChannelServices } from './server.ts';
import { oncePeerDrained, peerHasRoom, pipeSession } from './session-pipe.ts';

type Log = (message: string) => void;

/** Bytes of output sent per wake-up of an attach pump, so one client cannot monopolise the loop. */
const ATTACH_SLICE_BYTES = 256 * 1024;

/** How long a request channel may take to send its whole parameter frame. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;

/**
 * The parameter-frame deadline: `TETHER_REQUEST_TIMEOUT_MS` from `env` when it is a positive integer (tests
 * shorten it this way), the default otherwise.
 */
export function requestTimeoutFromEnv(env: NodeJS.ProcessEnv): number {
  const value = Number(env['TETHER_REQUEST_TIMEOUT_MS']);
  return Number.isSafeInteger(value) && value > 0 ? value : DEFAULT_REQUEST_TIMEOUT_MS;
}

/**
 * Reads the parameter frame; calls back with the parameters and any bytes that followed them. A frame
 * that is not whole within the deadline gets a TETHER_REQUEST_TIMEOUT reply and the channel closes.
 */
function readParams<P>(
  type: RequestType<P, unknown>,
  channel: ServerChannel,
  done: (params: P, rest: Buffer) => void,
): void {
  const reader = new FirstFrameReader(64 * 1024);
  let received = 0;
  const timeoutMs = requestTimeoutFromEnv(process.env);
  const stop = (): void => {
    clearTimeout(timer);
    channel.off('data', onData);
    channel.off('close', stop);
  };
  const timer = setTimeout(() => {
    stop();
    fail(
      type,
      channel,
      new TetherError(
        'TETHER_REQUEST_TIMEOUT',
        `${type.subsystem}: no whole parameters frame within ${timeoutMs} ms (${received} bytes came)`,
      ),
    );
  }, timeoutMs);
  const onData = (chunk: Buffer): void => {
    received += chunk.length;
    try {
      const first = reader.push(chunk);
      if (!first) return;
      stop();
      channel.pause();
      done(decodeParams(type, first.body), first.rest);
    } catch (error) {
      stop();
      fail(type, channel, error);
    }
  };
  channel.on('data', onData);
  channel.on('close', stop);
}

function fail(type: RequestType<unknown, unknown>, channel: ServerChannel, error: unknown): void {
  const code = isTetherError(error) ? error.code : 'TETHER_REQUEST_INVALID';
  channel.write(encodeReply(type, { error: { code, message: describeError(error) } }));
  channel.exit(125);
  channel.end();
}

function sendExit(channel: ServerChannel, status: ExitStatus): void {
  if (status.signal) channel.exit(status.signal.replace(/^SIG/, ''), false, '');
  else channel.exit(status.exitCode);
  channel.end();
}

export function serveSubsystem(
  name: string,
  channel: ServerChannel,
  session: SshSession,
  services: ChannelServices,
  log: Log,
): void {
  channel.on('error', (error: Error) => log(`${name}: ${error.message}`));
  const rootDir = services.rootDir ?? '/';
  switch (name) {
    case execRequest.subsystem:
      readParams(execRequest, channel, (params, rest) => {
        let started;
        try {
          started = services.exec.start(params);
        } catch (error) {
          fail(execRequest, channel, error);
          return;
        }
        channel.write(encodeReply(execRequest, { ok: { pid: started.pid } }));
        if (rest.length > 0) started.write(rest);
        pipeSession(started, channel, session, log);
        channel.resume();
      });
      return;
    case attachRequest.subsystem:
      readParams(attachRequest, channel, (params) => serveAttach(params, channel, session, services, log));
      return;
    case statusRequest.subsystem:
      readParams(statusRequest, channel, (params) => {
        channel.write(encodeReply(statusRequest, { ok: {} }));
        serveStatus(params.follow, channel, services.status);
      });
      return;
    case statsRequest.subsystem:
      readParams(statsRequest, channel, (params) => {
        let agent;
        let container;
        try {
          const cgroup = services.containerCgroup?.();
          container = cgroup === undefined ? undefined : readContainerStats(cgroup);
          agent = readAgentStats(params.resetPeak ?? false);
        } catch (error) {
          fail(statsRequest, channel, error);
          return;
        }
        channel.write(encodeReply(statsRequest, { ok: { agent, ...(container ? { container } : {}) } }));
        channel.exit(0);
        channel.end();
      });
      return;
    case archiveStatRequest.subsystem:
    case archiveGetRequest.subsystem: {
      const type = name === archiveGetRequest.subsystem ? archiveGetRequest : archiveStatRequest;
      readParams(type, channel, (params) => {
        let stat;
        try {
          stat = statPath(rootDir, params.path);
        } catch (error) {
          fail(type, channel, error);
          return;
        }
        channel.write(encodeReply(type, { ok: { stat } }));
        if (type === archiveGetRequest) sendArchive(rootDir, params.path, channel, log);
        else {
          channel.exit(0);
          channel.end();
        }
      });
      return;
    }
    case archivePutRequest.subsystem:
      readParams(archivePutRequest, channel, (params, rest) => {
        try {
          checkTargetDir(rootDir, params.path);
        } catch (error) {
          fail(archivePutRequest, channel, error);
          return;
        }
        channel.write(encodeReply(archivePutRequest, { ok: {} }));
        receiveArchive(rootDir, params.path, params, channel, rest, log);
      });
      return;
    default: {
      const error = new TetherError(
        'TETHER_REQUEST_INVALID',
        `unknown request ${name}; known: exec@tether, attach@tether, status@tether, stats@tether, archive-stat@tether, archive-get@tether, archive-put@tether`,
      );
      log(error.message);
      fail(execRequest, channel, error);
    }
  }
}

/**
 * The records so far and, with `follow`, each new one. The client keeps its own index into the reporter's
 * records (which the agent keeps anyway, for late clients) and records go out only while the peer has
 * room: a client that stops reading costs at most one record beyond the connection's bounded buffer,
 * however many records come meanwhile, and gets every one of them in order once it reads again.
 */
function serveStatus(follow: boolean, channel: ServerChannel, status: StatusReporter): void {
  let next = 0;
  let waiting = false;
  let closed = false;
  const pump = (): void => {
    waiting = false;
    if (closed) return;
    const records = status.records;
    while (next < records.length) {
      const room = channel.write(encodeStatusRecord(records[next++]!)) && peerHasRoom(channel);
      if (!room) {
        waiting = true;
        oncePeerDrained(channel, pump);
        return;
      }
    }
    if (!follow) {
      closed = true;
      channel.exit(0);
      channel.end();
    }
  };
  const wake = (): void => {
    if (!waiting) pump();
  };
  if (follow) status.on('record', wake);
  channel.on('close', () => {
    closed = true;
    status.off('record', wake);
  });
  // Read on, so the client's EOF and close are seen (it sends nothing else).
  if (follow) channel.resume();
  pump();
}

function serveAttach(
  params: AttachParams,
  channel: ServerChannel,
  session: SshSession,
  services: ChannelServices,
  log: Log,
): void {
  const { main, log: output } = services;
  if (!main) {
    fail(
      attachRequest,
      channel,
      new TetherError('TETHER_NO_MAIN_PROCESS', 'this agent has no main process to attach to; use exec'),
    );
    return;
  }
  let offset = params.from === 'start' ? output.oldest : params.from === 'end' ? output.end : params.from;
  offset = Math.min(Math.max(offset, output.oldest), output.end);
  const withOutput = params.output !== false;
  // A client that starts at `offset` wants nothing below it: to the log that is as good as taken. Without
  // this, a process paused on a full log of bytes nobody read stays paused for a client attaching from the
  // end, which waits for output that cannot come. (With a log port the log evicts only what the port
  // took, whatever readers say; a client without output takes nothing and lets nothing go.)
  if (withOutput) output.acknowledge(offset);
  log(
    `attached from offset ${offset}${params.stdin ? ' with stdin' : ''}${withOutput ? '' : ', without output'}`,
  );
  channel.write(
    encodeReply(attachRequest, {
      ok: { offset, oldest: output.oldest, tty: main.tty, running: main.finalExit === undefined },
    }),
  );

  let waiting = false;
  let closed = false;
  const pump = (): void => {
    waiting = false;
    if (closed) return;
    if (!withOutput) {
      // No output on this channel, and no read() either: only the exit, once output has ended too.
      const exit = main.finalExit;
      if (output.ended && exit) {
        closed = true;
        sendExit(channel, exit);
      }
      return;
    }
    if (offset < output.oldest) {
      // This client fell behind the bytes that others (or the log port) took and the log evicted.
      channel.stderr.write(
        `tether: attach fell behind: output ${offset}..${output.oldest} is no longer kept; reattach from ${output.oldest}\n`,
      );
      channel.close();
      return;
    }
    // This client's own offset, as the log port keeps its own: peek, write while the peer has room, and
    // acknowledge only what went onto the channel. What is left stays in the log for the next wake-up, so
    // a full channel costs at most one frame beyond its buffer.
    let room = true;
    for (const chunk of output.peek(offset, ATTACH_SLICE_BYTES)) {
      room = channel.write(encodeLogFrame(chunk)) && peerHasRoom(channel);
      offset = chunk.offset + chunk.data.length;
      if (!room) break;
    }
    output.acknowledge(offset);
    if (!room) {
      // A full window, or a peer that granted a huge one and does not read: wait for it to take the bytes.
      waiting = true;
      oncePeerDrained(channel, pump);
      return;
    }
    if (offset < output.end) {
      waiting = true;
      setImmediate(pump);
      return;
    }
    const exit = main.finalExit;
    if (output.ended && exit) {
      closed = true;
      sendExit(channel, exit);
    }
  };
  const wake = (): void => {
    if (!waiting) pump();
  };
  if (withOutput) output.on('data', wake);
  output.on('end', wake);
  main.on('final', wake);
  channel.on('close', () => {
    closed = true;
    output.off('data', wake);
    output.off('end', wake);
    main.off('final', wake);
  });

  if (params.stdin) {
    channel.on('data', (chunk: Buffer) => {
      if (!main.write(chunk)) {
        channel.pause();
        main.onceInputDrained(() => channel.resume());
      }
    });
    // A client whose input ended (EOF) ends its side; the process keeps its stdin (other clients may
    // still type) unless the container asked for Docker's StdinOnce. A client that detaches closes the
    // channel without an EOF first (ssh2 marks that 'closed'): that never closes the process's stdin.
    channel.on('end', () => {
      if ((channel as unknown as { incoming: { state: string } }).incoming.state === 'eof')
        main.attachInputEnded();
    });
  }
  session.on('window-change', (accept, _reject, info) => {
    main.resize({ cols: info.cols || 80, rows: info.rows || 24 });
    accept?.();
  });
  session.on('signal', (accept, reject, info) => (main.kill(info.name) ? accept?.() : reject?.()));
  channel.resume();
  pump();
}
