// HTTP on any node (`swarm.http.listen HOST:PORT`, off by default): /healthz, /readyz and /metrics for
// orchestrators and Prometheus, plus whatever routes the role adds (the web dashboard, the gateway).
import type { Server } from "bun";
import { ConfigError } from "./errors.ts";
import type { Logger } from "./log.ts";

export type Handler = (req: Request, server: Server<undefined>) => Response | Promise<Response>;

export interface HttpEndpoint {
  /** e.g. http://127.0.0.1:8080 (the port actually bound when 0 was asked for). */
  url: string;
  port: number;
  stop(): Promise<void>;
}

export interface Probe {
  ok: boolean;
  /** Shown in the JSON body: what was checked and what was found. */
  detail: Record<string, string | number | boolean>;
}

export interface NodeHttp {
  /** Process and NATS link. */
  health(): Probe;
  /** Joined the swarm (or discovered it, for an observer) and JetStream answers. */
  ready(): Promise<Probe>;
  metrics(): string;
  /** Role routes by path: exact paths, or a prefix ending in '/' (e.g. "/v1/"). */
  routes?: Record<string, Handler>;
}

/** "HOST:PORT" (IPv6 as [::1]:8080) -> hostname and port; throws ConfigError naming the key. */
export function parseListen(listen: string, source: string): { hostname: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(listen.trim());
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port > 65535) {
    throw new ConfigError("swarm.http.listen", source, "HOST:PORT, e.g. 127.0.0.1:8080 or 0.0.0.0:8080 (port 0 picks a free one)", listen);
  }
  return { hostname: m[1] ?? m[2]!, port };
}

/** Seconds a connection may stay silent (no request, or a request sent too slowly) before it is closed. */
export const IDLE_TIMEOUT_S = 10;

/** 127.0.0.0/8, ::1 and "localhost": where a keyless server may listen. */
export function isLoopback(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** A Host header naming the loopback interface (any port). */
function loopbackHost(host: string | null): boolean {
  if (!host) return false;
  const name = host.startsWith("[") ? host.slice(0, host.indexOf("]") + 1) : host.split(":")[0]!;
  return isLoopback(name);
}

export function serveNodeHttp(listen: string, source: string, node: NodeHttp, log: Logger): HttpEndpoint {
  const { hostname, port } = parseListen(listen, source);
  const loopback = isLoopback(hostname);
  const json = (status: number, body: unknown) =>
    new Response(`${JSON.stringify(body)}\n`, { status, headers: { "content-type": "application/json" } });
  const builtIn: Record<string, Handler> = {
    "/healthz": () => {
      const p = node.health();
      return json(p.ok ? 200 : 503, { status: p.ok ? "ok" : "unhealthy", ...p.detail });
    },
    "/readyz": async () => {
      const p = await node.ready();
      return json(p.ok ? 200 : 503, { status: p.ok ? "ready" : "not ready", ...p.detail });
    },
    "/metrics": () => new Response(node.metrics(), { headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" } }),
  };
  const routes = { ...builtIn, ...node.routes };
  const prefixes = Object.keys(routes).filter((p) => p.endsWith("/") && p !== "/");
  let server: Server<undefined>;
  try {
    server = Bun.serve({
      hostname,
      port,
      // A connection that sends nothing for this long is closed (slowloris); the long-lived routes (the
      // dashboard's events, a gateway chat) lift it for their own request with server.timeout(req, 0).
      idleTimeout: IDLE_TIMEOUT_S,
      fetch(req, srv) {
        const path = new URL(req.url).pathname;
        // On loopback only a loopback Host is answered: a web page whose name was re-pointed at
        // 127.0.0.1 (DNS rebinding) reaches the port but not the routes.
        if (loopback && !loopbackHost(req.headers.get("host"))) {
          return json(421, { error: `this server answers only Host names of the loopback interface, not ${req.headers.get("host")}` });
        }
        const handler = routes[path] ?? routes[prefixes.find((p) => path.startsWith(p)) ?? ""];
        if (!handler) return json(404, { error: `no such path: ${path}`, paths: Object.keys(routes) });
        return handler(req, srv);
      },
      error(err) {
        log.error("HTTP handler failed", { error: err.message });
        return json(500, { error: "internal error" });
      },
    });
  } catch (err) {
    throw new ConfigError("swarm.http.listen", source, `a free address to listen on (${(err as Error).message})`, listen);
  }
  const url = `http://${hostname.includes(":") ? `[${hostname}]` : hostname}:${server.port}`;
  log.info("HTTP listening", { url, paths: Object.keys(routes).join(",") });
  return { url, port: server.port ?? port, stop: () => server.stop(true) };
}
