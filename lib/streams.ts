// JetStream streams, consumers and the tasks KV bucket of one swarm, with every limit set explicitly.
// Idempotent: any node (and `submit`) may call these at start; the first one creates, later ones reuse.
// The coordinator owns the streams: it creates them and brings their settings in line with its config.
// Workers create a missing one only where the server lets them (docs/nats-server.conf does not: a
// worker credential that may change TASKS could stop all work) and otherwise wait for a coordinator.
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
import { ConfigError, PicoclawError } from "./errors.ts";
import type { Logger } from "./log.ts";
import { isTransientNatsError } from "./nats-connection.ts";
import type { SwarmNames } from "./subjects.ts";

const MiB = 1024 * 1024;
/** A stored heartbeat is dropped after this long: the node is forgotten by dashboards started later. */
export const NODES_MAX_AGE_MS = 10 * 60_000;

/** Limits per stream; see docs/requests.md "Streams and limits". */
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
      // A copy of a signed sub-task must keep its signed message id: the stream drops it as a duplicate
      // until the signature's time window (max_skew) has surely passed for it (lib/signing.ts).
      duplicate_window: nanos(Math.min(Math.max(120_000, 2 * cfg.swarm.security.max_skew), t.retention)),
      name: names.streams.tasks,
      subjects: names.streamSubjects.tasks,
      retention: RetentionPolicy.Workqueue,
      max_bytes: 1024 * MiB,
      discard: DiscardPolicy.New,
    },
    {
      // The last heartbeat of each node, in memory: a fresh dashboard sees who fell silent before it started.
      ...common,
      storage: StorageType.Memory,
      name: names.streams.nodes,
      subjects: names.streamSubjects.nodes,
      retention: RetentionPolicy.Limits,
      max_msgs_per_subject: 1,
      max_msgs: cfg.swarm.max_nodes,
      // Heartbeats are plain publishes: the server need not answer them (nor a forged reply subject).
      no_ack: true,
      max_age: nanos(NODES_MAX_AGE_MS),
      max_bytes: 64 * MiB,
      discard: DiscardPolicy.Old,
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

/** Stream settings we set from config, with the key a user changes to change them. */
const STREAM_SETTINGS: { field: keyof StreamConfig; key: string }[] = [
  { field: "num_replicas", key: "swarm.nats.replicas" },
  { field: "max_age", key: "swarm.tasks.retention" },
  { field: "max_msg_size", key: "(built in)" },
  { field: "duplicate_window", key: "swarm.security.max_skew" },
  { field: "max_bytes", key: "(built in)" },
  { field: "max_msgs", key: "(built in)" },
  { field: "max_msgs_per_subject", key: "(built in)" },
];

/**
 * What a role does with the swarm's streams at start. "owner" (the coordinator): creates them and applies
 * its settings. "member" (workers): creates one only where its NATS user may, else waits for a
 * coordinator; never changes settings. "client" (submit, the gateway): as a member, but a stream it may
 * not create is an error that says to start a coordinator first.
 */
export type StreamRole = "owner" | "member" | "client";

function isPermissionViolation(err: unknown): boolean {
  return (err as { code?: string })?.code === "PERMISSIONS_VIOLATION";
}

/**
 * For a node whose NATS user may not create `stream`: wait until a coordinator has (saying so once),
 * then `open` it. Any other failure of `open` is the caller's.
 */
export async function openOrWait<T>(jsm: JetStreamManager, stream: string, open: () => Promise<T>, log?: Logger): Promise<T> {
  try {
    return await open();
  } catch (err) {
    if (!isPermissionViolation(err)) throw err;
  }
  log?.warn("Waiting for a coordinator to create a JetStream stream: this NATS user may not create it", { stream });
  for (let delay = 500; ; delay = Math.min(delay * 2, 5_000)) {
    const found = await jsm.streams.info(stream).catch((err) => {
      if (isPermissionViolation(err)) throw err; // it may not even look: no coordinator will change that
      return undefined;
    });
    if (found) break;
    await Bun.sleep(delay);
  }
  log?.info("JetStream stream found", { stream });
  return open();
}

/** Creates one stream unless it is there; a permission error is thrown as is (the caller says what it means for it). */
async function createStream(jsm: JetStreamManager, sc: Partial<StreamConfig>): Promise<void> {
  try {
    await jsm.streams.add(sc);
  } catch (err) {
    // Another node may have created it in between; only then is the error harmless.
    if (await jsm.streams.info(sc.name!).catch(() => undefined)) return;
    if (isPermissionViolation(err)) throw err;
    throw new PicoclawError("E_NATS", `cannot create JetStream stream ${sc.name}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Creates the swarm's streams; an owner also brings existing ones in line with its config (replicas,
 * retention...): the settings follow the coordinator's config at start-up. Settings a server cannot
 * change (a stream's storage or retention policy) stop start-up naming the stream and the setting.
 */
export async function ensureStreams(
  nc: NatsConnection,
  names: SwarmNames,
  cfg: Config,
  log?: Logger,
  role: StreamRole = "owner",
): Promise<JetStreamManager> {
  const jsm = await nc.jetstreamManager();
  for (const sc of streamConfigs(names, cfg)) {
    const existing = await jsm.streams.info(sc.name!).catch(() => undefined);
    if (!existing) {
      if (role === "member") await openOrWait(jsm, sc.name!, () => createStream(jsm, sc), log);
      else {
        await createStream(jsm, sc).catch((err) => {
          if (!isPermissionViolation(err)) throw err;
          const fix =
            role === "owner" ? "the coordinator's NATS user must (docs/nats-server.conf)" : "start a coordinator first: it creates them";
          throw new PicoclawError(
            "E_NATS",
            `JetStream stream ${sc.name} does not exist and this NATS user may not create it ($JS.API.STREAM.CREATE.${sc.name}): ${fix}`,
            { cause: err },
          );
        });
      }
      continue;
    }
    const have = existing.config;
    for (const field of ["storage", "retention"] as const) {
      if (sc[field] !== undefined && have[field] !== sc[field]) {
        throw new ConfigError(
          `stream ${sc.name}`,
          "the NATS server",
          `${field} ${sc[field]} (it has ${have[field]}; delete the stream to recreate it)`,
        );
      }
    }
    if (role !== "owner") continue; // the settings a server can change are the coordinator's to apply
    const changed = STREAM_SETTINGS.filter(({ field }) => sc[field] !== undefined && have[field] !== sc[field]);
    if (changed.length === 0) continue;
    try {
      await jsm.streams.update(sc.name!, { ...have, ...Object.fromEntries(changed.map(({ field }) => [field, sc[field]])) });
      log?.info("Stream settings follow the config", {
        stream: sc.name,
        changed: changed.map(({ field }) => `${field}:${have[field]}->${sc[field]}`).join(","),
      });
    } catch (err) {
      if (isTransientNatsError(err)) throw err; // not the setting's fault: the caller may try again
      const first = changed[0]!;
      throw new ConfigError(
        first.key,
        "config",
        `a value the server can apply to stream ${sc.name} (${first.field} ${have[first.field]} -> ${sc[first.field]}: ${(err as Error).message})`,
      );
    }
  }
  return jsm;
}

export interface ConsumerSettings {
  ackWait: number;
  maxDeliver: number;
  /** A consumer nobody pulls from for this long is removed by the server (2.10+; a node's own queue). */
  inactiveMs?: number;
}

/**
 * A durable pull consumer on one subject, shared by every node that pulls from it. An existing one
 * follows this node's config (ack wait, max deliveries) at start-up.
 */
export async function ensureConsumer(
  jsm: JetStreamManager,
  stream: string,
  durable: string,
  filter: string,
  opts: ConsumerSettings,
  log?: Logger,
): Promise<boolean> {
  const config = {
    durable_name: durable,
    filter_subject: filter,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(opts.ackWait),
    max_deliver: opts.maxDeliver,
    max_ack_pending: 10_000,
    ...(opts.inactiveMs ? { inactive_threshold: nanos(opts.inactiveMs) } : {}),
  };
  const existing = await jsm.consumers.info(stream, durable).catch(() => undefined);
  if (!existing) {
    try {
      await jsm.consumers.add(stream, config);
    } catch (err) {
      await jsm.consumers.info(stream, durable).catch(() => {
        throw new PicoclawError("E_NATS", `cannot create consumer ${durable} on ${stream}: ${(err as Error).message}`, { cause: err });
      });
      return false;
    }
    return true;
  }
  const have = existing.config;
  const keys = {
    ack_wait: "swarm.tasks.ack_wait",
    max_deliver: "swarm.tasks.max_deliver",
    max_ack_pending: "(built in)",
    inactive_threshold: "(built in)",
  } as const;
  const changed = (Object.keys(keys) as (keyof typeof keys)[]).filter(
    (k) => config[k as keyof typeof config] !== undefined && have[k] !== config[k as keyof typeof config],
  );
  if (changed.length === 0) return false;
  try {
    await jsm.consumers.update(stream, durable, Object.fromEntries(changed.map((k) => [k, config[k as keyof typeof config]])));
    log?.info("Consumer settings follow the config", {
      consumer: durable,
      changed: changed.map((k) => `${k}:${have[k]}->${config[k as keyof typeof config]}`).join(","),
    });
  } catch (err) {
    if (isTransientNatsError(err)) throw err;
    const k = changed[0]!;
    throw new ConfigError(keys[k], "config", `a value the server can apply to consumer ${durable} (${(err as Error).message})`);
  }
  return false;
}

export async function openTasksKv(nc: NatsConnection, names: SwarmNames, cfg: Config): Promise<KV> {
  const kv = await nc.jetstream().views.kv(names.buckets.tasks, {
    history: 1,
    replicas: cfg.swarm.nats.replicas,
    ttl: cfg.swarm.tasks.retention,
    maxBucketSize: 512 * MiB,
    storage: StorageType.File,
  });
  return withReadRetries(kv, await withTimeout(nc, kv, READ_TIMEOUT_MS));
}

/**
 * Another handle on `kv` whose requests give up after `timeoutMs` instead of the JetStream default 5 s,
 * bound with the bucket's own read path (direct get where the server has it: the roles' NATS users may
 * read only that way).
 */
export async function withTimeout(nc: NatsConnection, kv: KV, timeoutMs: number): Promise<KV> {
  const status = await kv.status();
  const allow_direct = status.streamInfo.config.allow_direct ?? false;
  return nc.jetstream({ timeout: timeoutMs, checkAPI: false }).views.kv(status.bucket, { bindOnly: true, allow_direct });
}

/** A KV read's time-out (a direct get answers in a millisecond or two), and how often it is tried. */
const READ_TIMEOUT_MS = 2_000;
const READ_TRIES = 4;

/**
 * A direct get goes to one replica of the bucket, picked at random from every server's (a queue group
 * across the cluster). One cut off from the network keeps its share until its route is dropped, 10 s or
 * more later, and reads sent its way time out; asked again, another replica most likely answers.
 */
function withReadRetries(kv: KV, reads: KV): KV {
  kv.get = async (key, opts) => {
    for (let tries = 1; ; tries++) {
      try {
        return await reads.get(key, opts);
      } catch (err) {
        if (tries >= READ_TRIES || (err as { code?: string }).code !== "TIMEOUT") throw err;
      }
    }
  };
  return kv;
}
