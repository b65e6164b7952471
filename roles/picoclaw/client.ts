// A short-lived client of the swarm (submit, drain): connects like a node, joins the local embedded
// server without starting one, and resolves the swarm's H-id.
import type { Config } from "../../lib/config.ts";
import { type Identity, resolveIdentity } from "../../lib/identity.ts";
import type { Logger } from "../../lib/log.ts";
import { isTransientNatsError, type NatsLink, openNats, requireJetStream } from "../../lib/nats-connection.ts";
import { NATS_BACKOFF, withRetry } from "../../lib/retry.ts";
import { type SwarmNames, swarmNames } from "../../lib/subjects.ts";

export interface SwarmClient {
  link: NatsLink;
  identity: Identity;
  names: SwarmNames;
  close(): Promise<void>;
}

export async function openClient(cfg: Config, log: Logger, name: string): Promise<SwarmClient> {
  if (cfg.swarm.nats.embedded) cfg.swarm.nats.urls = [`nats://127.0.0.1:${cfg.swarm.nats.embedded_port}`];
  const link = await openNats(cfg, name, log);
  try {
    await requireJetStream(link, cfg.swarm.nats.connect_timeout, cfg.swarm.nats.embedded ? cfg.swarm.nats.embedded_port : undefined);
    // NATS may go away again right after the first connection: the identity read is retried meanwhile.
    const identity = await withRetry(() => resolveIdentity(cfg, link.nc), {
      backoff: NATS_BACKOFF,
      untilMs: cfg.swarm.nats.connect_timeout,
      retryable: isTransientNatsError,
    });
    return { link, identity, names: swarmNames(identity.hid), close: () => link.nc.drain().catch(() => {}) };
  } catch (err) {
    await link.nc.close();
    throw err;
  }
}
