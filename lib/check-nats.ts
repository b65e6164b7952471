// `--swarm.check-nats`: is each configured NATS URL reachable, with JetStream, which version, how far?
import { connect, type NatsConnection } from "nats";
import type { Config } from "./config.ts";
import { redactUrl } from "./config.ts";
import { authMethod, connectionOptions, explainConnectError } from "./nats-connection.ts";

export interface NatsCheck {
  url: string;
  reachable: boolean;
  server_version?: string;
  jetstream?: boolean;
  rtt_ms?: number;
  /** Why this URL is not usable for a swarm; absent when it is. */
  problem?: string;
}

export async function checkNats(cfg: Config): Promise<NatsCheck[]> {
  return Promise.all(cfg.swarm.nats.urls.map((url) => checkOne(cfg, url)));
}

async function checkOne(cfg: Config, url: string): Promise<NatsCheck> {
  const shown = redactUrl(url);
  let nc: NatsConnection;
  try {
    // Inside the try: an unreadable credentials, seed or TLS file is reported per URL, not thrown.
    nc = await connect({ ...connectionOptions(cfg, "picoclaw-check-nats"), servers: [url], reconnect: false });
  } catch (err) {
    return { url: shown, reachable: false, problem: `unreachable: ${await explainConnectError(err, cfg.swarm.nats, url)}` };
  }
  try {
    const rtt = await nc.rtt();
    const version = nc.info?.version;
    let jetstream = false;
    let problem: string | undefined;
    try {
      const jsm = await nc.jetstreamManager({ timeout: 2_000 });
      await jsm.getAccountInfo();
      jetstream = true;
    } catch (err) {
      problem = `JetStream is not enabled on this server (start nats-server with -js): ${(err as Error).message}`;
    }
    return { url: shown, reachable: true, server_version: version, jetstream, rtt_ms: Math.round(rtt * 100) / 100, problem };
  } finally {
    await nc.close();
  }
}

export function formatChecks(cfg: Config, checks: NatsCheck[]): string {
  const lines = [`NATS check (auth: ${authMethod(cfg.swarm.nats)})`];
  for (const c of checks) {
    if (!c.reachable) {
      lines.push(`  ✗ ${c.url}  ${c.problem}`);
      continue;
    }
    const js = c.jetstream ? "JetStream ✓ enabled" : "JetStream ✗ disabled";
    lines.push(`  ${c.problem ? "✗" : "✓"} ${c.url}  reachable  server ${c.server_version}  ${js}  rtt ${c.rtt_ms}ms`);
    if (c.problem) lines.push(`      ${c.problem}`);
  }
  const bad = checks.filter((c) => c.problem).length;
  lines.push(bad ? `${bad} of ${checks.length} NATS URL(s) not usable` : `all ${checks.length} NATS URL(s) OK`);
  return lines.join("\n");
}
