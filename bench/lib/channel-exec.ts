/** Exec sessions as the benches use them: one timed `true`, and a command's stdout. */
import type { ChannelClient } from '../../hostside/src/channel/client.ts';

/** Milliseconds from opening an exec session of `true` to its exit status; throws unless it exits 0. */
export async function timeExecTrue(client: ChannelClient): Promise<number> {
  const started = performance.now();
  const handle = await client.exec({ argv: ['true'], stdin: false });
  handle.stdout.resume();
  handle.stderr.resume();
  const exit = await handle.exit;
  const elapsed = performance.now() - started;
  if (exit?.exitCode !== 0) throw new Error(`exec true exited ${JSON.stringify(exit)}`);
  return elapsed;
}

/** The command's stdout; throws with its stderr unless it exits 0. */
export async function execOutput(client: ChannelClient, argv: string[]): Promise<string> {
  const handle = await client.exec({ argv, stdin: false });
  const chunks: Buffer[] = [];
  const errors: Buffer[] = [];
  handle.stdout.on('data', (chunk: Buffer) => chunks.push(chunk));
  handle.stderr.on('data', (chunk: Buffer) => errors.push(chunk));
  const exit = await handle.exit;
  if (exit?.exitCode !== 0)
    throw new Error(`${argv.join(' ')} exited ${JSON.stringify(exit)}: ${Buffer.concat(errors).toString()}`);
  return Buffer.concat(chunks).toString();
}
