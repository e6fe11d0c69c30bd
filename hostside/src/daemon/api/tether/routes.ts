/**
 * tetherd's own API, for what Docker has no words for: a container's boot-health timeline (every stage the
 * agent reported, with guest and host times) and its VM (hypervisor pid, channel state). tetherctl reads it.
 */
import type { Container } from '../../containers/container.ts';
import type { ContainerManager } from '../../containers/manager.ts';
import type { Router } from '../http/router.ts';

export const TETHER_API_PREFIX = '/tether/v1';

export interface VmSummary {
  id: string;
  name: string;
  status: string;
  pid: number;
  channel: string;
  boot: number;
  ports: string[];
}

export function vmSummary(container: Container): VmSummary {
  const record = container.record;
  return {
    id: record.id,
    name: record.name,
    status: record.state.status,
    pid: record.state.pid,
    channel: container.boot && !container.boot.ended ? container.boot.channelState : 'none',
    boot: record.bootCount,
    ports:
      record.state.status === 'running'
        ? record.ports.map((p) => `${p.hostIp}:${p.hostPort}->${p.guestPort}/${p.protocol}`)
        : [],
  };
}

export function registerTetherRoutes(router: Router, manager: ContainerManager): void {
  router.add('GET', `${TETHER_API_PREFIX}/vms`, (ctx) => ctx.send(200, manager.list().map(vmSummary)));

  router.add('GET', `${TETHER_API_PREFIX}/containers/{id}/health`, (ctx) => {
    const container = manager.find(ctx.params['id']!);
    const boot = container.boot;
    boot?.console?.poll();
    ctx.send(200, {
      ...vmSummary(container),
      error: container.record.state.error,
      exitCode: container.record.state.exitCode,
      oomKilled: container.record.state.oomKilled,
      // Console status lines not signed with the boot's key: a container's forgeries, or lines cut short.
      droppedStatusLines: boot?.console?.dropped ?? 0,
      timeline: boot?.timeline ?? [],
    });
  });
}
