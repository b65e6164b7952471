// Where Temporal is, if anywhere: `swarm.temporal.address` (empty: no Temporal, silently), or the CLI's
// localhost:7233 when the config only says `enabled: true` (the guide's Large Swarm example).
import type { Config } from "./config.ts";

export interface TemporalSettings {
  address: string;
  namespace: string;
  taskQueue: string;
}

export const DEFAULT_TEMPORAL_ADDRESS = "localhost:7233";

export function temporalSettings(cfg: Config): TemporalSettings | undefined {
  const t = cfg.swarm.temporal;
  if (t.enabled === false) return undefined;
  const address = t.address || (t.enabled ? DEFAULT_TEMPORAL_ADDRESS : "");
  if (!address) return undefined;
  return { address, namespace: t.namespace, taskQueue: t.task_queue };
}
