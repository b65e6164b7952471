// What every scenario gets and returns.
import type { NatsConnection } from "nats";
import type { Config } from "../../lib/config.ts";
import type { NatsServer } from "../../test/helpers/nats-server.ts";
import type { RedisServer } from "./redis.ts";

export interface BenchContext {
  nats: NatsServer;
  /** The bench's own connection (client side of every baseline and submitter of swarm requests). */
  nc: NatsConnection;
  /** Absent when redis-server is not installed: BullMQ rows are skipped. */
  redis?: RedisServer;
  redisSkipReason?: string;
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
  run(ctx: BenchContext): Promise<ScenarioResult>;
}
