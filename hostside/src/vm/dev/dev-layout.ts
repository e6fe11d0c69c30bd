/**
 * Where a dev VM keeps its files in its state directory, in one place so the driver that starts it and the
 * one that adopts it later agree. The names match a QEMU VM's (hostside/src/vm/qemu/layout.ts) where the
 * files mean the same.
 */
import { join } from 'node:path';

export interface DevLayout {
  stateDir: string;
  /** Status records as console lines (--console-file). */
  consoleLog: string;
  /** The framed output (--log-file). */
  logPort: string;
  channelSocket: string;
  configFile: string;
  metadata: string;
  /** The agent's pid, written by the driver once it has spawned it. */
  pidFile: string;
  /** The agent's own stdout/stderr. */
  agentLog: string;
  /** The agent's --state (its generated keys; the config's keys take precedence). */
  agentState: string;
}

export function devLayout(stateDir: string): DevLayout {
  return {
    stateDir,
    consoleLog: join(stateDir, 'console.log'),
    logPort: join(stateDir, 'container.log'),
    channelSocket: join(stateDir, 'channel.sock'),
    configFile: join(stateDir, 'config.json'),
    metadata: join(stateDir, 'vm.json'),
    pidFile: join(stateDir, 'dev.pid'),
    agentLog: join(stateDir, 'agent.log'),
    agentState: join(stateDir, 'dev-state'),
  };
}

/** What adopt() needs to know about a dev VM another process started. */
export interface DevVmMetadata {
  id: string;
  pid: number;
  /** Size of the console file when this boot started: its records start there (a restart appends). */
  consoleOffset: number;
}
