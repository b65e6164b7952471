// JetStream streams, consumers and the tasks KV bucket of one swarm, with every limit set explicitly.
// Idempotent: any node (and `submit`) may call these at start; the first one creates, later ones reuse.
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  type JetStreamManager,
  type KV,
  type NatsConnection,
  nanos,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from "nats";
import type { Config } from "./config.ts";
import type { SwarmNames } from "./subjects.ts";

const MiB = 1024 * 1024;

/** Limits per stream; see README "Streams and limits". */
export function streamConfigs(names: SwarmNames, cfg: Config): Partial<StreamConfig>[] {
  const t = cfg.swarm.tasks;
  const common = {
    storage: StorageType.File,
    num_replicas: cfg.swarm.nats.replicas,
    max_age: nanos(t.retention),
    max_msg_size: MiB,
    duplicate_window: nanos(120_000),
  };
  return [
    {
      ...common,
      name: names.streams.requests,
      subjects: names.streamSubjects.requests,
      retention: RetentionPolicy.Workqueue,
      max_bytes: 256 * MiB,
      discard: DiscardPolicy.New,
    },
    {
      ...common,
      name: names.streams.tasks,
      subjects: names.streamSubjects.tasks,
      retention: RetentionPolicy.Workqueue,
      max_bytes: 1024 * MiB,
      discard: DiscardPolicy.New,
    },
    {
      ...common,
      name: names.streams.events,
      subjects: names.streamSubjects.events,
      retention: RetentionPolicy.Limits,
      max_bytes: 256 * MiB,
      discard: DiscardPolicy.Old,
    },
  ];
}

export async function ensureStreams(nc: NatsConnection, names: SwarmNames, cfg: Config): Promise<JetStreamManager> {
  const jsm = await nc.jetstreamManager();
  for (const sc of streamConfigs(names, cfg)) {
    try {
      await jsm.streams.info(sc.name!);
    } catch {
      try {
        await jsm.streams.add(sc);
      } catch (err) {
        // Another node may have created it in between; only then is the error harmless.
        await jsm.streams.info(sc.name!).catch(() => {
          throw new Error(`cannot create JetStream stream ${sc.name}: ${(err as Error).message}`);
        });
      }
    }
  }
  return jsm;
}

/** A durable pull consumer on one subject, shared by every node that pulls from it. */
export async function ensureConsumer(
  jsm: JetStreamManager,
  stream: string,
  durable: string,
  filter: string,
  opts: { ackWait: number; maxDeliver: number },
): Promise<void> {
  const config = {
    durable_name: durable,
    filter_subject: filter,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(opts.ackWait),
    max_deliver: opts.maxDeliver,
    max_ack_pending: 10_000,
  };
  try {
    await jsm.consumers.info(stream, durable);
    return;
  } catch {
    // not there yet
  }
  try {
    await jsm.consumers.add(stream, config);
  } catch (err) {
    await jsm.consumers.info(stream, durable).catch(() => {
      throw new Error(`cannot create consumer ${durable} on ${stream}: ${(err as Error).message}`);
    });
  }
}

export function openTasksKv(nc: NatsConnection, names: SwarmNames, cfg: Config): Promise<KV> {
  return nc.jetstream().views.kv(names.buckets.tasks, {
    history: 1,
    replicas: cfg.swarm.nats.replicas,
    ttl: cfg.swarm.tasks.retention,
    maxBucketSize: 512 * MiB,
    storage: StorageType.File,
  });
}
