/**
 * Every error Tether raises on purpose carries a stable string code. Callers match on `code`, never on the
 * message; `docs/errors.md` lists each code with what it means and what to do.
 */
export const ERROR_CODES = [
  'TETHER_CONFIG_INVALID',
  'TETHER_CONFIG_MISSING',
  'TETHER_FRAME_TRUNCATED',
  'TETHER_FRAME_INVALID',
  'TETHER_FRAME_TOO_LARGE',
  'TETHER_RESYNC_FAILED',
  'TETHER_REQUEST_INVALID',
  'TETHER_REQUEST_TIMEOUT',
  'TETHER_AUTH_FAILED',
  'TETHER_HOST_KEY_MISMATCH',
  'TETHER_CHANNEL_CLOSED',
  'TETHER_NO_MAIN_PROCESS',
  'TETHER_OFFSET_GONE',
  'TETHER_USER_UNKNOWN',
  'TETHER_SPAWN_FAILED',
  'TETHER_USAGE',
  'TETHER_SYSCALL',
  'TETHER_DISK_NOT_FOUND',
  'TETHER_VM_FAILED',
  'TETHER_IMAGE_MISSING',
  'TETHER_BOOT_FAILED',
  'TETHER_ROOTFS_FAILED',
  'TETHER_IMAGE_INVALID',
  'TETHER_IMAGE_UNSUPPORTED',
  'TETHER_NO_SUCH_IMAGE',
  'TETHER_REFERENCE_INVALID',
  'TETHER_REGISTRY_FAILED',
  'TETHER_REGISTRY_DENIED',
  'TETHER_CONFLICT',
  'TETHER_NO_SUCH_CONTAINER',
  'TETHER_NO_SUCH_EXEC',
  'TETHER_NOT_RUNNING',
  'TETHER_NAME_CONFLICT',
  'TETHER_INVALID_PARAMETER',
  'TETHER_STATE_INVALID',
  'TETHER_API_NOT_FOUND',
  'TETHER_NO_SUCH_NETWORK',
  'TETHER_NO_SUCH_VOLUME',
  'TETHER_PATH_NOT_FOUND',
  'TETHER_ARCHIVE_FAILED',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export class TetherError extends Error {
  override readonly name = 'TetherError';
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

export function isTetherError(value: unknown, code?: ErrorCode): value is TetherError {
  return value instanceof TetherError && (code === undefined || value.code === code);
}

/** A message for any thrown value, for the places that must report and carry on (PID 1 never dies). */
export function describeError(value: unknown): string {
  if (value instanceof TetherError) return `${value.code}: ${value.message}`;
  if (value instanceof Error) return value.message;
  return String(value);
}
