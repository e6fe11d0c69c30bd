/**
 * The daemon's event stream, in Docker's shape (GET /events): each lifecycle step of a container or image.
 * A bounded history lets `docker events --since` replay recent events; live subscribers get the rest.
 */
import { EventEmitter } from 'node:events';

export interface DockerEvent {
  Type: 'container' | 'image' | 'network' | 'volume';
  Action: string;
  Actor: { ID: string; Attributes: Record<string, string> };
  scope: 'local';
  time: number;
  timeNano: number;
  /** Deprecated fields the docker CLI still prints for containers. */
  status?: string;
  id?: string;
  from?: string;
}

const HISTORY = 1000;

export class EventBus extends EventEmitter<{ event: [DockerEvent] }> {
  readonly #history: DockerEvent[] = [];

  publish(
    type: DockerEvent['Type'],
    action: string,
    id: string,
    attributes: Record<string, string> = {},
  ): DockerEvent {
    const nowNs = BigInt(Date.now()) * 1_000_000n + (process.hrtime.bigint() % 1_000_000n);
    const event: DockerEvent = {
      Type: type,
      Action: action,
      Actor: { ID: id, Attributes: attributes },
      scope: 'local',
      time: Number(nowNs / 1_000_000_000n),
      timeNano: Number(nowNs),
      ...(type === 'container'
        ? { status: action, id, ...(attributes['image'] ? { from: attributes['image'] } : {}) }
        : {}),
    };
    this.#history.push(event);
    if (this.#history.length > HISTORY) this.#history.shift();
    this.emit('event', event);
    return event;
  }

  /** Events at or after `sinceNs` still in the history. */
  since(sinceNs: number): DockerEvent[] {
    return this.#history.filter((event) => event.timeNano >= sinceNs);
  }
}
