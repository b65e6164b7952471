// `picoclaw health`: asks this machine's node for /healthz on swarm.http.listen (the container image's
// HEALTHCHECK, which has no curl). Exit 0 when healthy, 1 when not or when nothing answers.
import type { Config } from "../../lib/config.ts";
import { ConfigError } from "../../lib/errors.ts";
import { parseListen } from "../../lib/http.ts";

export async function runHealthCheck(cfg: Config, source: string): Promise<number> {
  const listen = cfg.swarm.http.listen;
  if (!listen)
    throw new ConfigError("swarm.http.listen", source, "HOST:PORT of the node's HTTP endpoint (health asks its /healthz)", listen);
  const { hostname, port } = parseListen(listen, source);
  // A node listening on every address answers on loopback too.
  const host = ["0.0.0.0", "::"].includes(hostname) ? "127.0.0.1" : hostname.includes(":") ? `[${hostname}]` : hostname;
  const url = `http://${host}:${port}/healthz`;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
    const body = (await res.text()).trim();
    console.log(`${url}: ${res.status} ${body}`);
    return res.ok ? 0 : 1;
  } catch (err) {
    console.error(`picoclaw: ${url}: no answer (${(err as Error).message})`);
    return 1;
  }
}
