/**
 * The log side of tetherd: the store of a container's log files, readers, attach fan-out, rotation.
 *
 * How the daemon drives it, per container (one LogStore and one LogFollower per container directory):
 *
 *   create / tetherd start   store = await LogStore.open(containerDir)  (the VM's stateDir: its
 *                            container.log is the driver's logPortPath; else pass { livePath })
 *                            follower = new LogFollower(store)
 *   start                    await store.beginBoot(); vm = await driver.start(spec); store.markRunning();
 *                            rotation = startRotation(store, () => vm.reopenLog(), { maxBytes, maxFiles })
 *   adopt (tetherd restart)  store.markRunning(); rotation = startRotation(...)  (finishes an owed reopen)
 *   VM ended                 await vm.wait(); await rotation.stop(); store.markStopped()
 *   docker logs              readLogs(store, { follow, since, until, tail, lines: timestamps || tail given,
 *                            signal }) -> encodeDockerFrame(entry.stream, data), data prefixed with
 *                            `${formatDockerTimestamp(entry.timestampMs)} ` for -t
 *   docker attach / start -a follower.subscribe({ onEnd }) (before the start for start -a: it waits for
 *                            the boot); with --logs, readLogs without follow first
 *   docker rm                await store.remove()
 */
export {
  DOCKER_HEADER_BYTES,
  DOCKER_STDERR,
  DOCKER_STDIN,
  DOCKER_STDOUT,
  DockerFrameDecoder,
  encodeDockerFrame,
  formatDockerTimestamp,
  parseDockerTime,
  type DockerFrame,
  type DockerStreamType,
} from './docker-stream.ts';
export {
  BoundaryTracker,
  headerAt,
  resyncFrom,
  walkFrames,
  type FrameHeader,
  type WalkResult,
} from './frame-scan.ts';
export { LineSplitter, MAX_LINE_BYTES } from './line-splitter.ts';
export {
  DEFAULT_MAX_BYTES,
  DEFAULT_MAX_FILES,
  LIVE_FILE_NAME,
  LogStore,
  MAX_SEGMENTS,
  type CrashHook,
  type FileRecord,
  type LogFileRef,
  type LogStoreOptions,
  type LogStoreView,
} from './log-store.ts';
export { DEFAULT_CHUNK_BYTES, readLogs, type LogEntry, type ReadLogsOptions } from './log-reader.ts';
export {
  DEFAULT_QUEUE_BYTES,
  LogFollower,
  LogSubscription,
  type SubscribeOptions,
  type SubscriptionEnd,
} from './log-follower.ts';
export { startRotation, type Rotation, type RotationOptions } from './rotation.ts';
