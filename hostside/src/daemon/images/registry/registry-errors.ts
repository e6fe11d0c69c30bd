/**
 * What a registry's refusals mean to the person pulling, in Docker's words. The Registry API answers errors
 * with `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown",...}]}` (distribution's
 * `errcode` package); Docker turns DENIED / UNAUTHORIZED, MANIFEST_UNKNOWN and NAME_UNKNOWN into "not found"
 * messages that name the image. Pure.
 */
import { TetherError } from '../../../../../protocol/src/errors/errors.ts';

export interface RegistryErrorItem {
  code: string;
  message: string;
}

/** Pure: the errors of a registry's error body, or [] when it is not one. */
export function parseErrorBody(body: string): RegistryErrorItem[] {
  try {
    const value = JSON.parse(body) as { errors?: unknown };
    if (!Array.isArray(value.errors)) return [];
    return value.errors.flatMap((item: unknown) => {
      if (typeof item !== 'object' || item === null) return [];
      const { code, message } = item as { code?: unknown; message?: unknown };
      return typeof code === 'string'
        ? [{ code, message: typeof message === 'string' ? message : code.toLowerCase() }]
        : [];
    });
  } catch {
    return [];
  }
}

/** Pure: `manifest unknown: manifest unknown`, as Docker prints an errcode (its code in words, its message). */
export function describeErrorItems(items: readonly RegistryErrorItem[]): string {
  return items.map((item) => `${item.code.toLowerCase().replace(/_/g, ' ')}: ${item.message}`).join('; ');
}

export interface FailedResponse {
  status: number;
  statusText: string;
  body: string;
  url: string;
}

/**
 * Pure: the error for a registry's refusal of the manifest of `name` (`what` is `name:tag` or
 * `name@digest`). Denied and unknown are TETHER_NO_SUCH_IMAGE (HTTP 404, as Docker answers them); anything
 * else is TETHER_REGISTRY_FAILED with the status and what the registry said.
 */
export function manifestError(response: FailedResponse, name: string, what: string): TetherError {
  const items = parseErrorBody(response.body);
  const codes = new Set(items.map((item) => item.code));
  const said = items.length > 0 ? describeErrorItems(items) : undefined;
  if (response.status === 401 || response.status === 403 || codes.has('DENIED') || codes.has('UNAUTHORIZED'))
    return new TetherError(
      'TETHER_NO_SUCH_IMAGE',
      `pull access denied for ${name}, repository does not exist or may require 'docker login'${said ? `: ${said}` : ''}`,
    );
  if (codes.has('NAME_UNKNOWN'))
    return new TetherError('TETHER_NO_SUCH_IMAGE', `repository ${name} not found: ${said}`);
  if (response.status === 404 || codes.has('MANIFEST_UNKNOWN'))
    return new TetherError(
      'TETHER_NO_SUCH_IMAGE',
      `manifest for ${what} not found: ${said ?? 'manifest unknown'}`,
    );
  return unexpectedResponse(response);
}

/** Pure: TETHER_REGISTRY_FAILED for any other answer: the URL, the status and what the registry said. */
export function unexpectedResponse(response: FailedResponse): TetherError {
  const items = parseErrorBody(response.body);
  const said =
    items.length > 0 ? describeErrorItems(items) : response.body.trim().slice(0, 200) || '(no body)';
  return new TetherError(
    'TETHER_REGISTRY_FAILED',
    `${response.url} answered ${response.status} ${response.statusText}: ${said}`,
  );
}

/** Pure: a failure to reach `url` at all (refused, no such host, TLS), with the system's reason. */
export function unreachable(url: string, error: unknown): TetherError {
  const cause = (error as { cause?: unknown } | null)?.cause ?? error;
  const code = (cause as { code?: unknown } | null)?.code;
  const reason = cause instanceof Error ? cause.message : String(cause);
  const hint =
    code === 'ECONNREFUSED'
      ? ' (is the registry running on that port?)'
      : typeof code === 'string' && /^(?:ERR_TLS|DEPTH_ZERO|SELF_SIGNED|UNABLE_TO|CERT_)/.test(code)
        ? ' (a registry that speaks plain HTTP must be on loopback or listed in TETHER_INSECURE_REGISTRIES)'
        : code === 'ERR_SSL_WRONG_VERSION_NUMBER' || /wrong version number/.test(reason)
          ? ' (it does not speak HTTPS: list it in TETHER_INSECURE_REGISTRIES to use plain HTTP)'
          : '';
  return new TetherError('TETHER_REGISTRY_FAILED', `cannot reach the registry at ${url}: ${reason}${hint}`, {
    cause: error,
  });
}
