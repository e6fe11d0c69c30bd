/**
 * The small networks API that compose and `docker network` use. Each container VM has its own user-mode
 * network, so a network here is a name with labels that containers may name as their NetworkMode: compose
 * creates `<project>_default`, attaches its services and removes it on `down`. Persisted atomically.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { TetherError } from '../../../../../protocol/src/errors/errors.ts';
import type { EventBus } from '../../containers/events.ts';
import { readJson, writeJsonAtomic } from '../../state/atomic-file.ts';
import type { Router } from '../http/router.ts';
import { parseFilters } from './containers.ts';
import { networkCreateSchema, parseBody } from './schemas.ts';

interface Network {
  Id: string;
  Name: string;
  Created: string;
  Driver: string;
  Labels: Record<string, string>;
  Internal: boolean;
  Attachable: boolean;
  builtin?: boolean;
}

const BUILTIN = ['bridge', 'host', 'none'];

export class NetworkStore {
  readonly #path: string;
  #networks: Network[];

  constructor(root: string) {
    this.#path = join(root, 'networks.json');
    this.#networks = existsSync(this.#path) ? (readJson(this.#path) as Network[]) : [];
  }

  all(): Network[] {
    const builtin = BUILTIN.map((name) => ({
      Id: name.padEnd(64, '0'),
      Name: name,
      Created: new Date(0).toISOString(),
      Driver: name === 'bridge' ? 'bridge' : name,
      Labels: {},
      Internal: false,
      Attachable: false,
      builtin: true,
    }));
    return [...builtin, ...this.#networks];
  }

  find(ref: string): Network {
    const match =
      this.all().find((n) => n.Name === ref || n.Id === ref) ??
      (ref.length >= 4 ? this.all().find((n) => n.Id.startsWith(ref)) : undefined);
    if (!match) throw new TetherError('TETHER_NO_SUCH_NETWORK', `network ${ref} not found`);
    return match;
  }

  exists(ref: string): boolean {
    try {
      this.find(ref);
      return true;
    } catch {
      return false;
    }
  }

  create(
    name: string,
    driver: string,
    labels: Record<string, string>,
    internal: boolean,
    attachable: boolean,
  ): Network {
    if (this.exists(name))
      throw new TetherError('TETHER_NAME_CONFLICT', `network with name ${name} already exists`);
    const network: Network = {
      Id: randomBytes(32).toString('hex'),
      Name: name,
      Created: new Date().toISOString(),
      Driver: driver,
      Labels: labels,
      Internal: internal,
      Attachable: attachable,
    };
    this.#save([...this.#networks, network]);
    return network;
  }

  remove(ref: string): Network {
    const network = this.find(ref);
    if (network.builtin)
      throw new TetherError(
        'TETHER_INVALID_PARAMETER',
        `${network.Name} is a pre-defined network and cannot be removed`,
      );
    this.#save(this.#networks.filter((n) => n.Id !== network.Id));
    return network;
  }

  #save(next: Network[]): void {
    writeJsonAtomic(this.#path, next);
    this.#networks = next;
  }
}

function networkJson(network: Network): Record<string, unknown> {
  return {
    Name: network.Name,
    Id: network.Id,
    Created: network.Created,
    Scope: 'local',
    Driver: network.Driver,
    EnableIPv6: false,
    IPAM: { Driver: 'default', Options: null, Config: [] },
    Internal: network.Internal,
    Attachable: network.Attachable,
    Ingress: false,
    ConfigFrom: { Network: '' },
    ConfigOnly: false,
    Containers: {},
    Options: {},
    Labels: network.Labels,
  };
}

export function registerNetworkRoutes(router: Router, networks: NetworkStore, events: EventBus): void {
  router.add('GET', '/networks', (ctx) => {
    const filters = parseFilters(ctx.query.get('filters'));
    let list = networks.all();
    const names = filters.get('name');
    if (names) list = list.filter((n) => names.some((name) => n.Name.includes(name)));
    const ids = filters.get('id');
    if (ids) list = list.filter((n) => ids.some((id) => n.Id.startsWith(id)));
    const labels = filters.get('label');
    if (labels)
      list = list.filter((n) =>
        labels.every((l) => {
          const [k, v] = l.split('=', 2) as [string, string | undefined];
          return v === undefined ? k in n.Labels : n.Labels[k] === v;
        }),
      );
    ctx.send(200, list.map(networkJson));
  });

  router.add('GET', '/networks/{id}', (ctx) => ctx.send(200, networkJson(networks.find(ctx.params['id']!))));

  router.add('POST', '/networks/create', async (ctx) => {
    const body = parseBody(networkCreateSchema, await ctx.json(), 'network config');
    const network = networks.create(
      body.Name,
      body.Driver || 'bridge',
      body.Labels ?? {},
      body.Internal ?? false,
      body.Attachable ?? false,
    );
    events.publish('network', 'create', network.Id, { name: network.Name, type: network.Driver });
    ctx.send(201, { Id: network.Id, Warning: '' });
  });

  router.add('DELETE', '/networks/{id}', (ctx) => {
    const network = networks.remove(ctx.params['id']!);
    events.publish('network', 'destroy', network.Id, { name: network.Name, type: network.Driver });
    ctx.send(204);
  });

  // Each VM has its own network: joining or leaving a named one changes nothing inside it.
  router.add('POST', '/networks/{id}/connect', (ctx) => void networks.find(ctx.params['id']!));
  router.add('POST', '/networks/{id}/disconnect', (ctx) => void networks.find(ctx.params['id']!));
  router.add('POST', '/networks/prune', (ctx) => ctx.send(200, { NetworksDeleted: [] }));
}
