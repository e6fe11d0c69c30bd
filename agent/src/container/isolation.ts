/**
 * How a session is walled off, as the exec helper's options. The main process makes the container (its
 * namespaces, its /dev, /proc and /sys, its capabilities) under a small init of its own unless the config
 * asks for the process itself as PID 1; exec sessions join what the main process made. In --dev mode there
 * are no namespaces, but the main process still runs under the init (a subreaper there), so nothing it
 * starts outlives it or the agent.
 */
export type Isolation =
  /** --dev: no namespaces; `init` puts the small init (a subreaper) between the agent and the process. */
  | { kind: 'none'; init: boolean }
  /** The container's main process: new namespaces, into `cgroup`, with `masks` hidden besides Docker's. */
  | { kind: 'new'; init: boolean; cgroup?: string; masks?: string[] }
  /** An exec session: joins the container made by the main helper with this pid. */
  | { kind: 'join'; pid: number; cgroup?: string };

/** The helper's options for this isolation; empty for none without init (the helper then just execs). */
export function isolationArgs(isolation: Isolation | undefined, tty: boolean): string[] {
  if (!isolation) return [];
  const args: string[] = [];
  switch (isolation.kind) {
    case 'none':
      if (isolation.init) args.push('--init');
      break;
    case 'new':
      args.push('--new-container');
      if (isolation.init) args.push('--init');
      if (isolation.cgroup) args.push('--cgroup', isolation.cgroup);
      for (const path of isolation.masks ?? []) args.push('--mask', path);
      break;
    case 'join':
      args.push('--join', String(isolation.pid));
      if (isolation.cgroup) args.push('--cgroup', isolation.cgroup);
      break;
  }
  if (args.length > 0 && tty) args.push('--tty');
  return args;
}

/**
 * Whether the helper stays between the agent and the process (the relay): then SIGKILL must be asked for
 * with FORWARD_SIGKILL, since a relay killed outright would leave what it runs behind.
 */
export function isRelayed(isolation: Isolation | undefined): boolean {
  return isolationArgs(isolation, false).length > 0;
}

/** The real-time signal that asks the relay (and the init) for SIGKILL (native/tether-exec/tether-exec.h). */
export const FORWARD_SIGKILL = 64;
