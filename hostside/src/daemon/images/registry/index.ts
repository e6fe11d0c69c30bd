/** Pulls from registries (Docker Registry HTTP API v2) into the image store, and logins. */
export { parseRegistryAuthHeader, type Credentials } from './auth.ts';
export { checkLogin, type LoginResult } from './login.ts';
export { errorMessage, layerLabel, progressText, type PullMessage } from './progress.ts';
export { Puller, type PullerOptions, type PullResult, type PullStore } from './pull.ts';
export {
  parseInsecureList,
  parsePullReference,
  referenceText,
  type PullReference,
} from './pull-reference.ts';
