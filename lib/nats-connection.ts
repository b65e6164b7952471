// One NATS connection per node: servers, auth, TLS, reconnect with backoff, and its state for the dashboard.
import { readFileSync } from "node:fs";
import {
  connect,
  credsAuthenticator,
  type ConnectionOptions,
  type NatsConnection,
  nkeyAuthenticator,
} from "nats";
import type { Config } from "./config.ts";
import { redactUrl } from "./config.ts";
import { NatsConnectError } from "./errors.ts";
import type { Logger } from "./log.ts";

export type NatsState = "connecting" | "connected" | "reconnecting" | "disconnected" | "closed";

/** Live connection facts, read by the dashboard and by `--swarm.check-nats`. */
export interface NatsLink {
  nc: NatsConnection;
  state(): NatsState;
  /** The URL of the server currently connected to (password hidden). */
  url(): string;
  disconnects(): number;
}

/** Which auth method a config selects, named for errors. Never includes the secret. */
export function authMethod(nats: Config["swarm"]["nats"]): string {
  if (nats.credentials) return `credentials file ${nats.credentials}`;
  if (nats.nkey_seed) return `nkey seed file ${nats.nkey_seed}`;
  if (nats.token) return "token";
  if (nats.user) return `user ${nats.user}`;
  if (nats.urls.some((u) => /\/\/[^/]*@/.test(u))) return "user/password in URL";
  return "none";
}

export function connectionOptions(cfg: Config, name: string): ConnectionOptions {
  const n = cfg.swarm.nats;
  const opts: ConnectionOptions = {
    servers: n.urls,
    name,
    timeout: n.connect_timeout,
    reconnect: true,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 1_000,
    reconnectJitter: 500,
    pingInterval: Math.max(2_000, Math.min(n.heartbeat_interval * 2, 30_000)),
    maxPingOut: 3,
  };
  if (n.credentials) opts.authenticator = credsAuthenticator(readFileSync(n.credentials));
  else if (n.nkey_seed) opts.authenticator = nkeyAuthenticator(new TextEncoder().encode(readFileSync(n.nkey_seed, "utf8").trim()));
  if (n.token) opts.token = n.token;
  if (n.user) {
    opts.user = n.user;
    opts.pass = n.password;
  } else {
    // nats.js ignores credentials written into a URL; take them from there (and keep them out of logs).
    const inUrl = urlCredentials(n.urls);
    if (inUrl) {
      opts.user = inUrl.user;
      opts.pass = inUrl.pass;
      opts.servers = n.urls.map(stripCredentials);
    }
  }
  const tls = n.tls;
  if (tls.ca_file || tls.cert_file || tls.key_file || n.urls.some((u) => u.startsWith("tls://"))) {
    opts.tls = { caFile: tls.ca_file, certFile: tls.cert_file, keyFile: tls.key_file };
  }
  return opts;
}

export function urlCredentials(urls: string[]): { user: string; pass?: string } | undefined {
  for (const u of urls) {
    const m = /^[a-z]+:\/\/([^:@/]+)(?::([^@/]*))?@/.exec(u);
    if (m) return { user: decodeURIComponent(m[1]!), pass: m[2] === undefined ? undefined : decodeURIComponent(m[2]) };
  }
  return undefined;
}

function stripCredentials(url: string): string {
  return url.replace(/^([a-z]+:\/\/)[^@/]*@/, "$1");
}

/** Connects (failing fast with a specific reason) and keeps reconnecting for the node's life. */
export async function openNats(cfg: Config, name: string, log: Logger): Promise<NatsLink> {
  let nc: NatsConnection;
  try {
    nc = await connect(connectionOptions(cfg, name));
  } catch (err) {
    throw new NatsConnectError(cfg.swarm.nats.urls.map(redactUrl), describeNatsError(err), authMethod(cfg.swarm.nats));
  }
  let state: NatsState = "connected";
  let disconnects = 0;
  (async () => {
    for await (const s of nc.status()) {
      if (s.type === "disconnect") {
        disconnects++;
        state = "reconnecting";
        log.warn("NATS disconnected, reconnecting", { server: redactUrl(String(s.data)) });
      } else if (s.type === "reconnect") {
        state = "connected";
        log.info("NATS reconnected", { server: redactUrl(String(s.data)) });
      } else if (s.type === "error") {
        log.warn("NATS error", { error: String(s.data) });
      }
    }
  })().catch(() => {});
  nc.closed().then(() => {
    state = "closed";
  });
  return {
    nc,
    state: () => state,
    url: () => redactUrl(nc.getServer().includes("://") ? nc.getServer() : `nats://${nc.getServer()}`),
    disconnects: () => disconnects,
  };
}

/** Turns nats.js errors into one line a user can act on. */
export function describeNatsError(err: unknown): string {
  const e = err as { code?: string; message?: string };
  const msg = e?.message ?? String(err);
  if (e?.code === "CONNECTION_REFUSED" || /ECONNREFUSED|connection refused/i.test(msg)) {
    return "connection refused (is nats-server running and is the port right?)";
  }
  if (e?.code === "AUTHORIZATION_VIOLATION" || /authorization/i.test(msg)) {
    return `server refused the credentials (${msg})`;
  }
  if (e?.code === "TIMEOUT" || /timeout/i.test(msg)) return `timed out (${msg})`;
  if (/certificate|self.signed|tls|ssl/i.test(msg)) return `TLS failed (${msg})`;
  return msg;
}
