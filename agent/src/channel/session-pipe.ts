/**
 * Connects a running Session to an SSH channel: stdout to channel data, stderr to extended data (RFC 4254
 * §5.2), channel data to stdin, window-change to resize, signal to kill, and exit-status / exit-signal
 * (§6.10) when it ends. Backpressure holds both ways: a full SSH window pauses the process's output, a
 * full stdin pipe pauses the channel.
 */
import type { ServerChannel, Session as SshSession } from 'ssh2';
import type { Session } from '../process/session.ts';

export function pipeSession(
  session: Session,
  channel: ServerChannel,
  sshSession: SshSession,
  log: (message: string) => void,
): void {
  const forward = (write: (chunk: Buffer) => boolean) => (chunk: Buffer) => {
    if (!write(chunk)) {
      session.pauseOutput();
      channel.once('drain', () => session.resumeOutput());
    }
  };
  session.on(
    'stdout',
    forward((chunk) => channel.write(chunk)),
  );
  session.on(
    'stderr',
    forward((chunk) => channel.stderr.write(chunk)),
  );
  channel.on('data', (chunk: Buffer) => {
    if (!session.write(chunk)) {
      channel.pause();
      session.onceInputDrained(() => channel.resume());
    }
  });
  channel.on('end', () => session.endInput());
  channel.on('error', (error: Error) => log(`session channel error: ${error.message}`));
  channel.on('close', () => {
    // The client went away first: hang up a terminal session as sshd does; a piped one just loses stdin.
    if (session.exitStatus === undefined && session.tty) session.kill('SIGHUP');
    session.endInput();
  });
  sshSession.on('window-change', (accept, _reject, info) => {
    session.resize({ cols: info.cols || 80, rows: info.rows || 24 });
    accept?.();
  });
  sshSession.on('signal', (accept, reject, info) => {
    if (session.kill(info.name)) accept?.();
    else reject?.();
  });
  session.on('exit', (status) => {
    if (status.signal) channel.exit(status.signal.replace(/^SIG/, ''), false, '');
    else channel.exit(status.exitCode);
    channel.end();
  });
}
