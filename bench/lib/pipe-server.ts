/**
 * The stream bench's baseline server, in its own process as the agent is: on each connection to the unix
 * socket it runs the command and pipes the child's stdout to the socket, nothing else (no framing, no
 * SSH, no output log). Usage: node --import tsx bench/lib/pipe-server.ts SOCKET -- CMD ARGS...
 */
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { createServer } from 'node:net';

const [socketPath, separator, command, ...args] = process.argv.slice(2);
if (!socketPath || separator !== '--' || !command) {
  console.error('usage: pipe-server.ts SOCKET -- CMD ARGS...');
  process.exit(2);
}

rmSync(socketPath, { force: true });
const server = createServer((socket) => {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  child.stdout.pipe(socket);
  socket.on('error', () => child.kill());
});
server.listen(socketPath, () => process.stdout.write('listening\n'));
process.on('SIGTERM', () => process.exit(0));
