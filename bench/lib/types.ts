// What every scenario gets and returns.
import type { NatsConnection } from "nats";
import type { Config } from "../../lib/config.ts";
import type { NatsServer } from "../../test/helpers/nats-server.ts";
import type { RedisServer } from "./redis.ts";

export interface BenchContext {
  nats: NatsServer;
  /** The bench's own connection (client side of every baseline and submitter of swarm requests). */
  nc: NatsConnection;
  /** Started when a picked scenario needs it (`needs: ["redis"]`); the bench stops when it cannot be. */
  redis?: RedisServer;
  cfg: Config;
  rounds: number;
  /** A fresh H-id for each swarm, so no run sees another one's streams or consumers. */
  hid(tag: string): string;
}

export interface Row {
  /** Scenario number and name, e.g. "1 dispatch". */
  group: string;
  name: string;
  figure: string;
  ratio: string;
  /** The budget this row is judged against, if any (DESIGN §12 or the issue). */
  target?: string;
  verdict?: "met" | "MISSED" | "skipped" | "";
}

/** The Redis of a scenario that declared `needs: ["redis"]`. */
export function redisOf(ctx: BenchContext): RedisServer {
  if (!ctx.redis) throw new Error("this scenario needs redis-server, and the bench did not start one");
  return ctx.redis;
}

export interface ScenarioResult {
  id: string;
  rows: Row[];
  /** Raw per-round figures (written to the JSON file). */
  rounds: Record<string, unknown>[];
  /** Extra detail printed under the table (e.g. where a request's time goes). */
  notes?: string[];
  extra?: Record<string, unknown>;
}

export interface Scenario {
  id: string;
  title: string;
  /** Baseline servers it compares against: a missing one is an error, never a skipped row. */
  needs?: "redis"[];
  run(ctx: BenchContext): Promise<ScenarioResult>;
}
