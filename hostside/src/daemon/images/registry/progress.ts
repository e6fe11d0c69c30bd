/**
 * The JSON messages of POST /images/create, shaped as Docker's daemon writes them, so the docker CLI draws
 * the same per-layer lines and bars: `{"status":"Pulling fs layer","progressDetail":{},"id":"<12 hex>"}`,
 * `{"status":"Downloading","progressDetail":{"current":N,"total":M},"progress":"[==>  ] 1.2MB/3.4MB",...}`,
 * and the errors that end a stream, `{"errorDetail":{"message":...},"error":...}`. Pure.
 */

export interface ProgressDetail {
  current?: number;
  total?: number;
}

export interface PullMessage {
  status?: string;
  id?: string;
  progressDetail?: ProgressDetail;
  progress?: string;
  errorDetail?: { message: string };
  error?: string;
}

const UNITS = ['B', 'kB', 'MB', 'GB', 'TB', 'PB', 'EB', 'ZB', 'YB'];
const BAR_WIDTH = 50;

/** Pure: Docker's human size (decimal units, 4 significant digits): `772.8kB`, `2.2MB`, `0B`. */
export function humanSize(bytes: number): string {
  let size = bytes;
  let unit = 0;
  while (size >= 1000 && unit < UNITS.length - 1) {
    size /= 1000;
    unit++;
  }
  return `${Number(size.toPrecision(4))}${UNITS[unit]}`;
}

/** Pure: Docker's progress text, a 50-column bar and `current/total` (`[=====>     ]  1.2MB/3.4MB`). */
export function progressText(current: number, total: number): string {
  if (current <= 0 && total <= 0) return '';
  if (total <= 0) return humanSize(current).padStart(8);
  const filled = Math.min(BAR_WIDTH, Math.floor(Math.floor((current / total) * 100) / 2));
  const bar = `[${'='.repeat(filled)}>${' '.repeat(BAR_WIDTH - filled)}] `;
  // A current past the total (a registry that lied about a size) shows alone, as Docker does.
  const numbers =
    current > total
      ? humanSize(current).padStart(8)
      : `${humanSize(current).padStart(8)}/${humanSize(total)}`;
  return bar + numbers;
}

/** Docker's 12-digit id of a layer in pull messages: its blob digest, shortened. */
export function layerLabel(digest: string): string {
  return digest.replace(/^sha256:/, '').slice(0, 12);
}

/** `latest: Pulling from library/busybox`. */
export function pullingFrom(tagOrDigest: string, repository: string): PullMessage {
  return { status: `Pulling from ${repository}`, id: tagOrDigest };
}

/** A layer's state without figures: `Pulling fs layer`, `Waiting`, `Download complete`, `Pull complete`... */
export function layerStatus(digest: string, status: string): PullMessage {
  return { status, progressDetail: {}, id: layerLabel(digest) };
}

/** A layer's download (or extraction) under way, with Docker's bar. */
export function layerProgress(
  digest: string,
  status: 'Downloading' | 'Extracting',
  current: number,
  total: number,
): PullMessage {
  return {
    status,
    progressDetail: { current, total },
    progress: progressText(current, total),
    id: layerLabel(digest),
  };
}

/** A line with no id: `Digest: sha256:...`, `Status: Downloaded newer image for busybox:latest`. */
export function statusLine(status: string): PullMessage {
  return { status };
}

/** The error that ends a stream already under way; the docker CLI prints it and exits 1. */
export function errorMessage(message: string): PullMessage {
  return { errorDetail: { message }, error: message };
}
