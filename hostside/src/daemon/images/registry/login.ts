/**
 * POST /auth (`docker login HOST`): checks credentials against the registry, as Docker's daemon does
 * before the CLI stores them. Basic auth is tried on GET /v2/; token auth asks the realm for a token.
 */
import { TetherError } from '../../../../../protocol/src/errors/errors.ts';
import { credentialsFromAuthConfig } from './auth.ts';
import { RegistryClient } from './client.ts';
import { registryOfServerAddress } from './pull-reference.ts';

export interface LoginOptions {
  insecure?: readonly string[];
  fetch?: typeof fetch;
}

/** Docker's answer to a login that worked. */
export interface LoginResult {
  Status: 'Login Succeeded';
  IdentityToken: string;
}

/** Checks the AuthConfig `body` (username, password, serveraddress); TETHER_REGISTRY_DENIED when refused. */
export async function checkLogin(body: unknown, options: LoginOptions = {}): Promise<LoginResult> {
  const credentials = credentialsFromAuthConfig(body);
  if (!credentials)
    throw new TetherError(
      'TETHER_INVALID_PARAMETER',
      'a login needs a username and password (or an identity token)',
    );
  const registry = registryOfServerAddress(credentials.serverAddress ?? '');
  const client = new RegistryClient({
    registry,
    repository: '',
    credentials,
    insecure: options.insecure ?? [],
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
  await client.login();
  return { Status: 'Login Succeeded', IdentityToken: '' };
}
