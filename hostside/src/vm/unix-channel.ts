/** A VM channel exposed by a unix socket on the host (QEMU's chardev socket, a dev agent's listener). */
import { connect } from 'node:net';
import type { Duplex } from 'node:stream';
import { TetherError } from '../../../protocol/src/errors/errors.ts';

/** Connects; a refusal is TETHER_CHANNEL_CLOSED naming `what` and the socket. */
export function connectUnixChannel(path: string, what: string): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    socket.once('connect', () => {
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        new TetherError(
          'TETHER_CHANNEL_CLOSED',
          `cannot connect to ${what} ${path}: ${error.code ?? error.message}`,
          { cause: error },
        ),
      ),
    );
  });
}
