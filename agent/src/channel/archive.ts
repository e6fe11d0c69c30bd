/**
 * docker cp inside the container: the stat of a path, a tar stream of it, and a tar stream extracted into a
 * directory (archive-stat@tether, archive-get@tether, archive-put@tether). Paths are in the container's root:
 * `/` in a VM (the agent has pivoted into it), --rootfs in --dev mode.
 *
 * Extraction refuses any entry that would land outside the target directory (a `../` name; tar-fs already
 * refuses paths through a symlink and hard links that leave it), and skips every later entry: the ones
 * before it stay, as with Docker. Symlinks may point anywhere, as in Docker: they are never followed when writing.
 */
import * as fs from 'node:fs';
import { lstatSync, readlinkSync, statSync } from 'node:fs';
import { basename, join, posix } from 'node:path';
import type { Readable } from 'node:stream';
import type { ServerChannel } from 'ssh2';
import tarFs from 'tar-fs';
import tarStream from 'tar-stream';
import { describeError, TetherError } from '../../../protocol/src/errors/errors.ts';
import type { ArchiveStat } from '../../../protocol/src/requests/requests.ts';
import { oncePeerDrained, peerHasRoom } from './session-pipe.ts';

type Log = (message: string) => void;

/** The host path of container path `path` under `rootDir`; `..` cannot climb above the root. */
export function containerPath(rootDir: string, path: string): string {
  return join(rootDir, posix.normalize('/' + path));
}

function notFound(path: string, error: unknown): TetherError {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ENOTDIR')
    return new TetherError('TETHER_PATH_NOT_FOUND', `no such file or directory in the container: ${path}`);
  return new TetherError('TETHER_ARCHIVE_FAILED', `${path}: ${describeError(error)}`, { cause: error });
}

/** lstat of a container path, in Docker's terms; throws TETHER_PATH_NOT_FOUND when it is not there. */
export function statPath(rootDir: string, path: string): ArchiveStat {
  const hostPath = containerPath(rootDir, path);
  try {
    const stat = lstatSync(hostPath);
    return {
      name: basename(posix.normalize('/' + path)) || '/',
      size: stat.size,
      mode: stat.mode,
      mtime: stat.mtime.toISOString(),
      linkTarget: stat.isSymbolicLink() ? readlinkSync(hostPath) : '',
    };
  } catch (error) {
    throw notFound(path, error);
  }
}

/** Ends a channel with status 1 and the reason on stderr. */
function failStream(channel: ServerChannel, message: string, log: Log): void {
  log(message);
  channel.stderr.write(`tether: ${message}\n`);
  channel.exit(1);
  channel.end();
}

/**
 * Streams a tar of the path onto the channel (after the reply was sent), entries named under its last
 * component, with backpressure; ends with status 0, or 1 when a file could not be read part-way.
 */
export function sendArchive(rootDir: string, path: string, channel: ServerChannel, log: Log): void {
  const hostPath = containerPath(rootDir, path);
  const name = basename(hostPath);
  // strict: false skips what tar-fs cannot pack (sockets, devices, fifos) rather than failing the copy.
  // The path itself is packed and its entries renamed under `name`, rather than packing `name` from the
  // parent: tar-fs refuses every entry when its cwd is `/` (its inside-cwd check tests the prefix `//`),
  // and in a VM the parent of /www is `/`.
  const pack = name
    ? tarFs.pack(hostPath, {
        strict: false,
        map: (header) => ({ ...header, name: header.name === '.' ? name : posix.join(name, header.name) }),
      })
    : tarFs.pack(hostPath, { strict: false });
  const source = pack as unknown as Readable;
  let done = false;
  let paused = false;
  source.on('data', (chunk: Buffer) => {
    // The channel's own 'drain' is not enough: a client that grants a 4 GiB window and stops reading
    // would have the whole tar queued on the connection's stream (see peerHasRoom).
    if ((channel.write(chunk) && peerHasRoom(channel)) || paused) return;
    paused = true;
    source.pause();
    oncePeerDrained(channel, () => {
      paused = false;
      source.resume();
    });
  });
  source.on('end', () => {
    if (done) return;
    done = true;
    channel.exit(0);
    channel.end();
  });
  source.on('error', (error: Error) => {
    if (done) return;
    done = true;
    failStream(channel, `archive of ${path} failed: ${error.message}`, log);
  });
  channel.on('close', () => {
    if (!done) source.destroy();
  });
}

/** Checks that `path` is a directory in the container, for archive-put's reply. */
export function checkTargetDir(rootDir: string, path: string): void {
  let isDir: boolean;
  try {
    isDir = statSync(containerPath(rootDir, path)).isDirectory();
  } catch (error) {
    throw notFound(path, error);
  }
  if (!isDir)
    throw new TetherError(
      'TETHER_PATH_NOT_FOUND',
      `${path} is not a directory in the container to copy into`,
    );
}

/** Pure: does a tar entry's name climb out of the directory it is extracted into? */
export function escapesTarget(entryName: string): boolean {
  const normalized = posix.normalize(entryName.replace(/^\/+/, ''));
  return normalized === '..' || normalized.startsWith('../');
}

/**
 * Extracts the tar stream the client sends (`first` = bytes that came with the params) into `path`; ends
 * the channel with status 0 once every entry is on disk, or 1 and the reason.
 */
export function receiveArchive(
  rootDir: string,
  path: string,
  put: { noOverwriteDirNonDir?: boolean },
  channel: ServerChannel,
  first: Buffer,
  log: Log,
): void {
  const target = containerPath(rootDir, path);
  let refused: Error | undefined;
  const parser = tarStream.extract();
  // Before tar-fs's own listener: when tar-fs fails an entry (a path through a symlink, a file over a
  // directory) the extractor is destroyed and the entry's stream errors too; the extractor's error is the
  // one reported, and this keeps the entry's copy from being an uncaught 'error' event.
  parser.on('entry', (_header, stream) => stream.on('error', () => {}));
  // tar-fs 3 options that @types/tar-fs (written for 2.x) does not list: extract, validateSymlinks, fs.
  // The extractor says 'finish' once it has read the whole tar, which can be before tar-fs has written the
  // last file: count the files still being written, so the exit (and the client's next read) comes after.
  const writing = new Set<Promise<void>>();
  const trackingFs = {
    ...fs,
    createWriteStream: (...args: Parameters<typeof fs.createWriteStream>) => {
      const stream = fs.createWriteStream(...args);
      writing.add(new Promise<void>((resolve) => stream.once('close', () => resolve())));
      return stream;
    },
  };
  const options: tarFs.ExtractOptions & { extract: unknown; validateSymlinks: boolean; fs: unknown } = {
    fs: trackingFs,
    extract: parser,
    // Symlinks may point anywhere, as in Docker (absolute targets are the container's paths); tar-fs still
    // refuses to write through one.
    validateSymlinks: false,
    // tar-fs would clamp a `../` name into the target; refuse it instead, as Docker does.
    ignore: (name, header) => {
      if (refused) return true;
      const entry = header?.name ?? name;
      if (escapesTarget(entry))
        refused = new Error(`entry ${JSON.stringify(entry)} would land outside ${path}`);
      else if (put.noOverwriteDirNonDir && header) {
        try {
          const existing = lstatSync(name);
          const wantsDir = header.type === 'directory';
          if (existing.isDirectory() !== wantsDir)
            refused = new Error(
              `entry ${JSON.stringify(entry)} would replace ${wantsDir ? 'a non-directory with a directory' : 'a directory with a non-directory'}`,
            );
        } catch {
          // Not there yet: nothing to replace.
        }
      }
      // Refused: this entry and every later one are read and skipped (destroying the extractor mid-entry
      // would leave tar-fs's entry stream erroring with nobody listening), and the end reports why.
      return refused !== undefined;
    },
  };
  const extract = tarFs.extract(target, options);
  const sink = extract as unknown as NodeJS.WritableStream & Readable;
  let done = false;
  const finish = (error?: Error): void => {
    if (done) return;
    done = true;
    channel.unpipe(sink);
    if (error) {
      failStream(channel, `extracting into ${path} failed: ${error.message}`, log);
      channel.resume(); // take and drop what the client still sends until it sees the exit
      return;
    }
    channel.exit(0);
    channel.end();
  };
  sink.on('error', (error: Error) => finish(error));
  sink.on('finish', () => void Promise.all(writing).then(() => finish(refused)));
  if (first.length > 0) sink.write(first);
  channel.pipe(sink);
  channel.resume();
}
