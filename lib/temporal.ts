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

/**
 * One readable reason for a failure talking to Temporal at `address`, instead of the SDK's raw gRPC
 * error (`tonic::transport::Error(Transport, ConnectError(...))`, `Status { code: Unavailable, ... }`).
 */
export function describeTemporalError(err: unknown, address: string): string {
  const raw = String((err as Error)?.message ?? err);
  if (/ConnectionRefused|connection refused/i.test(raw)) return `connection refused by ${address} (is the Temporal server running there?)`;
  if (/dns error|failed to lookup address|name or service not known|nodename nor servname/i.test(raw))
    return `cannot resolve the host of ${address}`;
  if (/HostUnreachable|NetworkUnreachable|no route to host|network is unreachable/i.test(raw))
    return `${address} is unreachable (no route)`;
  if (/ConnectionReset|connection reset|broken pipe/i.test(raw)) return `connection to ${address} reset`;
  if (/certificate|handshake|\btls\b|InvalidContentType|corrupt message/i.test(raw)) return `TLS with ${address} failed`;
  if (/timed out|timeout|deadline/i.test(raw)) return `no answer from ${address} in time`;
  if (/tonic::|Status \{/.test(raw)) {
    // The innermost message the gRPC error carries, if any.
    const said = [...raw.matchAll(/message: \\?"([^"\\]+)\\?"/g)].at(-1)?.[1];
    return `${said ?? "gRPC transport error"} (${address})`;
  }
  return raw.split("\n")[0]!.slice(0, 300);
}

/** What the Temporal SDK prints under Bun when a workflow thread starts (v8.promiseHooks is missing there). */
export const PROMISE_HOOKS_WARNING = "v8.promiseHooks.createHook is not available; stack trace collection will be disabled.";
