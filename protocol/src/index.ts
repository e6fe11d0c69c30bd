export * from './errors/errors.ts';
export * from './framing/length-prefixed.ts';
export * from './resync/resync.ts';
export * from './config/config.ts';
export * from './status/status.ts';
export * from './logs/log-frame.ts';
export * from './requests/requests.ts';
