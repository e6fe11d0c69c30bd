/**
 * Running debugfs on a raw ext4 image and reading what it said. debugfs exits 0 when commands fail and
 * writes its errors to stderr; with `-f` it echoes each command as `debugfs: COMMAND` on stdout and makes
 * both streams unbuffered (debugfs.c source_file()), so one file for both keeps the order and every
 * message can be pinned on the command before it.
 *
 * Two uses: an apply script (`runScript`: any message a command prints, beyond the few it prints when it
 * works, is a failure) and the read-only look-ups the script generator needs (`lowerImageOf`: `ls -p` of a
 * level of directories per run, `stat` for link counts).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { TetherError } from '../../../../../protocol/src/errors/errors.ts';
import { quote, typeOfMode, type LowerChild, type LowerImage } from './debugfs-script.ts';

/** A command's place in the transcript and what it printed. */
export interface CommandOutput {
  command: string;
  output: string;
}

export interface Transcript {
  /** What debugfs printed before the first command (its banner, or why it could not open the image). */
  preamble: string;
  outputs: CommandOutput[];
}

/** debugfs's path: /usr/sbin is not on a non-root PATH on Debian. */
export function debugfsPath(): string {
  const dirs = [...(process.env['PATH'] ?? '').split(delimiter), '/usr/sbin', '/sbin'];
  for (const dir of dirs) if (dir && existsSync(join(dir, 'debugfs'))) return join(dir, 'debugfs');
  throw new TetherError(
    'TETHER_ROOTFS_FAILED',
    "debugfs not found: install it with 'apt-get install e2fsprogs' (it is listed in .ci/apt-packages)",
  );
}

/**
 * Pure: splits what `debugfs -f` printed into each command's output. Commands hold no line break (the
 * generator refuses them), so each echo is one whole line; a command whose echo is missing did not run.
 */
export function splitTranscript(text: string, commands: readonly string[]): Transcript {
  const outputs: CommandOutput[] = [];
  let at = 0;
  let preamble: string | undefined;
  let previous: string | undefined;
  for (const command of commands) {
    const echo = `debugfs: ${command}\n`;
    let found = text.indexOf(echo, at);
    while (found > 0 && text[found - 1] !== '\n') found = text.indexOf(echo, found + 1);
    if (found === -1) break;
    const between = text.slice(at, found);
    if (previous === undefined) preamble = between;
    else outputs.push({ command: previous, output: between });
    previous = command;
    at = found + echo.length;
  }
  if (previous === undefined) return { preamble: text, outputs };
  outputs.push({ command: previous, output: text.slice(at) });
  return { preamble: preamble ?? '', outputs };
}

/** Lines a working apply command may print: inode numbers it allocated, the blank line of a freed inode. */
const QUIET = /^(Allocated inode: \d+)?$/;
const BANNER = /^debugfs \d[^\n]*\n?$/;
const FULL = /Could not allocate (block|inode)|No free space|No space left/i;

/** Pure: the first failure in an apply transcript, as a message, or undefined when all went well. */
export function firstFailure(transcript: Transcript, commands: readonly string[]): string | undefined {
  if (!BANNER.test(transcript.preamble))
    return `debugfs could not open the image: ${transcript.preamble.trim() || 'no output'}`;
  for (const { command, output } of transcript.outputs) {
    const bad = output.split('\n').filter((line) => !QUIET.test(line));
    if (bad.length > 0) {
      const message = bad.join(' / ').trim();
      const full = FULL.test(message) ? 'the ext4 filesystem is full (no free blocks or inodes): ' : '';
      return `${full}debugfs command \`${command}\` failed: ${message}`;
    }
  }
  if (transcript.outputs.length < commands.length)
    return `debugfs stopped before \`${commands[transcript.outputs.length]}\``;
  return undefined;
}

/** Runs `debugfs [-w] -f SCRIPT image`; returns the transcript (stdout and stderr in order) and exit code. */
export async function runDebugfs(
  image: string,
  commands: readonly string[],
  options: { write: boolean; workDir: string; fakeTime?: number },
): Promise<{ transcript: Transcript; code: number | null }> {
  const dir = await mkdtemp(join(options.workDir, 'debugfs-'));
  try {
    const script = join(dir, 'script');
    const log = join(dir, 'log');
    await writeFile(script, commands.map((command) => `${command}\n`).join(''));
    const out = await open(log, 'w');
    let code: number | null;
    try {
      code = await new Promise<number | null>((resolve, reject) => {
        const child = spawn(debugfsPath(), [...(options.write ? ['-w'] : []), '-f', script, image], {
          stdio: ['ignore', out.fd, out.fd],
          // A fixed clock, as tar-to-ext4.sh has: the same layer on the same image gives the same bytes.
          env: {
            ...process.env,
            E2FSPROGS_FAKE_TIME: String(options.fakeTime ?? 1),
            DEBUGFS_PAGER: '__none__',
          },
        });
        child.on('error', reject);
        child.on('close', resolve);
      });
    } finally {
      await out.close();
    }
    return { transcript: splitTranscript(await readFile(log, 'utf8'), commands), code };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Runs an apply script; throws TETHER_ROOTFS_FAILED naming the first command that failed and debugfs's
 * words. The image is then half changed: the caller drops it.
 */
export async function runScript(
  image: string,
  commands: readonly string[],
  options: { workDir: string; what: string; fakeTime?: number },
): Promise<void> {
  if (commands.length === 0) return;
  const { transcript, code } = await runDebugfs(image, commands, { ...options, write: true });
  const failure =
    firstFailure(transcript, commands) ?? (code === 0 ? undefined : `debugfs exited with ${code}`);
  if (failure)
    throw new TetherError('TETHER_ROOTFS_FAILED', `applying ${options.what} to ${image}: ${failure}`);
}

/** One `ls -p` line: /INODE/MODE/UID/GID/NAME/SIZE/ (no size for a directory); names hold no `/`. */
const RECORD = /\/(\d+)\/([0-7]+)\/(-?\d+)\/(-?\d+)\/([^/]*)\/(\d*)\/\n/y;

/** Pure: the children that `ls -p` printed (its output for one directory), without `.` and `..`. */
export function parseListing(output: string, dir: string): LowerChild[] {
  const children: LowerChild[] = [];
  RECORD.lastIndex = 0;
  let at = 0;
  for (;;) {
    RECORD.lastIndex = at;
    const match = RECORD.exec(output);
    if (!match) break;
    at = RECORD.lastIndex;
    const [, ino, mode, , , name] = match;
    if (name === '.' || name === '..') continue;
    const type = typeOfMode(parseInt(mode!, 8));
    if (!type)
      throw new TetherError('TETHER_ROOTFS_FAILED', `${dir}/${name} has an unknown file type (mode ${mode})`);
    children.push({ name: name!, type, ino: Number(ino) });
  }
  if (output.slice(at).trim() !== '')
    throw new TetherError('TETHER_ROOTFS_FAILED', `listing ${dir} with debugfs: ${output.slice(at).trim()}`);
  return children;
}

/** The read-only look-ups of a raw ext4 image, for the script generator; counts the debugfs runs. */
export function lowerImageOf(image: string, workDir: string): LowerImage & { runs: number } {
  const query = async (commands: string[], what: string): Promise<CommandOutput[]> => {
    const { transcript } = await runDebugfs(image, commands, { write: false, workDir });
    lower.runs++;
    if (!BANNER.test(transcript.preamble) || transcript.outputs.length < commands.length)
      throw new TetherError(
        'TETHER_ROOTFS_FAILED',
        `${what} in ${image} with debugfs: ${transcript.preamble.trim() || 'it stopped early'}`,
      );
    return transcript.outputs;
  };
  const lower = {
    runs: 0,
    async list(dirs: readonly string[]): Promise<Map<string, LowerChild[]>> {
      const outputs = await query(
        dirs.map((dir) => `ls -p ${quote(dir)}`),
        'listing directories',
      );
      return new Map(dirs.map((dir, i) => [dir, parseListing(outputs[i]!.output, dir)]));
    },
    async linkCounts(inodes: readonly number[]): Promise<Map<number, number>> {
      const outputs = await query(
        inodes.map((ino) => `stat <${ino}>`),
        'reading link counts',
      );
      return new Map(
        inodes.map((ino, i) => {
          const links = /^Links: (\d+)/m.exec(outputs[i]!.output);
          if (!links)
            throw new TetherError(
              'TETHER_ROOTFS_FAILED',
              `reading the link count of inode ${ino} in ${image}: ${outputs[i]!.output.trim()}`,
            );
          return [ino, Number(links[1])];
        }),
      );
    },
  };
  return lower;
}
