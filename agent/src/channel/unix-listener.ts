/** The --dev transport: a unix socket where every connection is its own channel stream. */
import { chmodSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import type { ChannelServer } from './server.ts';

export function listenUnix(
  path: string,
  server: ChannelServer,
  logger: (message: string) => void,
): Promise<Server> {
  rmSync(path, { force: true }); // a stale socket from an earlier run would make listen fail with EADDRINUSE
  const listener = createServer((socket) => {
    socket.on('error', (error) => logger(`channel socket: ${error.message}`));
    void server.serve(socket);
  });
  return new Promise((resolve, reject) => {
    listener.once('error', reject);
    listener.listen(path, () => {
      chmodSync(path, 0o600);
      listener.off('error', reject);
      // An accept that fails (EMFILE, ENFILE) costs that one connection; unheard, it would end the agent.
      listener.on('error', (error) => logger(`channel socket: accept failed: ${error.message}`));
      resolve(listener);
    });
  });
}
