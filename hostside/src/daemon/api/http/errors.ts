/**
 * TetherError codes to HTTP statuses, as Docker answers the same conditions (the docker CLI prints the
 * message and exits 125; some clients branch on the status, e.g. 404 makes `docker run` try a pull).
 */
import { isTetherError, type ErrorCode } from '../../../../../protocol/src/errors/errors.ts';

const STATUS: Partial<Record<ErrorCode, number>> = {
  TETHER_NO_SUCH_CONTAINER: 404,
  TETHER_NO_SUCH_EXEC: 404,
  TETHER_NO_SUCH_NETWORK: 404,
  TETHER_NO_SUCH_VOLUME: 404,
  TETHER_API_NOT_FOUND: 404,
  TETHER_PATH_NOT_FOUND: 404,
  TETHER_NO_SUCH_IMAGE: 404,
  TETHER_NOT_RUNNING: 409,
  TETHER_NAME_CONFLICT: 409,
  TETHER_CONFLICT: 409,
  TETHER_INVALID_PARAMETER: 400,
  TETHER_USAGE: 400,
  TETHER_CONFIG_INVALID: 400,
  TETHER_REQUEST_INVALID: 400,
  TETHER_IMAGE_INVALID: 400,
  TETHER_USER_UNKNOWN: 400,
  TETHER_REFERENCE_INVALID: 400,
  // Docker answers a refused login 401; other registry failures stay 500 as Docker's do.
  TETHER_REGISTRY_DENIED: 401,
};

export function statusForError(error: unknown): number {
  const explicit = (error as { status?: unknown } | null)?.status;
  if (typeof explicit === 'number') return explicit;
  if (!isTetherError(error)) return 500;
  return STATUS[error.code] ?? 500;
}
