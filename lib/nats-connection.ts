// One NATS connection per node: servers, auth, TLS, reconnect with backoff, and its state for the dashboard.
import { readFileSync } from "node:fs";
import { isIP, connect as tcpConnect } from "node:net";
import { type TLSSocket, connect as tlsConnect } from "node:tls";
import { type ConnectionOptions, connect, credsAuthenticator, type NatsConnection, nkeyAuthenticator } from "nats";
import type { Config } from "./config.ts";
import { redactUrl } from "./config.ts";
import { JetStreamMissingError, NatsConnectError, PicoclawError } from "./errors.ts";
import type { Logger } from "./log.ts";
import { NATS_BACKOFF, withRetry } from "./retry.ts";
import { inboxPrefix } from "./subjects.ts";

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

/** nats.js tries a server again after this long, plus up to the jitter. */
const RECONNECT_WAIT_MS = 1_000;
const RECONNECT_JITTER_MS = 500;
/** The longest a node that lost its server waits before trying it again: how late a peer may be back after us. */
export const RECONNECT_WAIT_MAX_MS = RECONNECT_WAIT_MS + RECONNECT_JITTER_MS;

export function connectionOptions(cfg: Config, name: string): ConnectionOptions {
  const n = cfg.swarm.nats;
  const opts: ConnectionOptions = {
    servers: n.urls,
    name,
    timeout: n.connect_timeout,
    reconnect: true,
    maxReconnectAttempts: -1,
    reconnectTimeWait: RECONNECT_WAIT_MS,
    reconnectJitter: RECONNECT_JITTER_MS,
    pingInterval: Math.max(2_000, Math.min(n.heartbeat_interval * 2, 30_000)),
    maxPingOut: 3,
    // nats.js otherwise captures `new Error().stack` on every request and publish (~4% of a busy
    // coordinator's CPU in the bench profile); our errors name the operation themselves.
    noAsyncTraces: true,
  };
  // With an explicit H-id, replies (core requests, JetStream API answers, pulled sub-tasks, KV reads) come
  // to _INBOX_<hid>.… instead of the shared _INBOX.…, so per-H-id NATS permissions can allow each swarm's
  // user only its own inboxes (docs/nats-server.conf); `_INBOX.>` would let one swarm read another's work.
  if (cfg.swarm.hid) opts.inboxPrefix = inboxPrefix(cfg.swarm.hid);
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

/**
 * Connects, waiting up to swarm.nats.connect_timeout for a server that is not up yet (a refused or
 * timed-out connection is tried again; refused credentials or TLS are not), then keeps reconnecting for
 * the connection's life. A failure says why, in one line.
 */
export async function openNats(cfg: Config, name: string, log: Logger): Promise<NatsLink> {
  const n = cfg.swarm.nats;
  const started = Date.now();
  let nc: NatsConnection;
  try {
    nc = await withRetry(
      (attempt) => {
        // Each attempt is short: a server caught half-way through a restart may accept and never answer.
        const left = Math.max(100, Math.min(5_000, started + n.connect_timeout - Date.now()));
        if (attempt === 2)
          log.warn("NATS not reachable yet; waiting for it", { servers: n.urls.map(redactUrl).join(","), for_ms: n.connect_timeout });
        return connect({ ...connectionOptions(cfg, name), timeout: left });
      },
      { backoff: NATS_BACKOFF, untilMs: n.connect_timeout, retryable: isUnreachable },
    );
  } catch (err) {
    const reason = await explainConnectError(err, n, n.urls[0]!);
    throw new NatsConnectError(n.urls.map(redactUrl), reason, authMethod(n), { cause: err });
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

/** Nobody answered (yet): worth another try. Refused credentials or TLS problems are final. */
function isUnreachable(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  const said = `${e?.code ?? ""} ${e?.message ?? ""}`;
  return (
    ["CONNECTION_REFUSED", "TIMEOUT", "CONNECTION_TIMEOUT", "DISCONNECT"].includes(e?.code ?? "") ||
    /ECONNREFUSED|connection refused|ECONNRESET|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN/i.test(said)
  );
}

/**
 * A NATS or JetStream failure that passes by itself: a time-out, a lost connection, or no responders
 * (JetStream, a stream or consumer leader not back yet after a restart or an election). Worth trying
 * again; anything else (permissions, a bad request, our own closed connection) is not.
 */
export function isTransientNatsError(err: unknown): boolean {
  // Our own wrappers keep the NATS error as their cause.
  const cause = (err as { cause?: unknown })?.cause;
  if (cause !== undefined && cause !== err && isTransientNatsError(cause)) return true;
  const e = err as { code?: string; message?: string };
  if (e?.code === "CONNECTION_CLOSED" || e?.code === "PERMISSIONS_VIOLATION") return false;
  if (["TIMEOUT", "CONNECTION_TIMEOUT", "DISCONNECT", "CONNECTION_REFUSED", "503", "408", "REQUEST_ERROR"].includes(e?.code ?? ""))
    return true;
  return /timeout|timed out|no responders|disconnect|jetstream (is )?not (ready|available)|temporarily unavailable|leader/i.test(
    e?.message ?? "",
  );
}

/** JetStream's "stream not found" (API error 10059). */
export function isStreamNotFound(err: unknown): boolean {
  const e = err as { api_error?: { err_code?: number }; message?: string } | undefined;
  return e?.api_error?.err_code === 10059 || /stream not found/i.test(String(e?.message ?? ""));
}

/** Certificate-verification failures reported by the TLS stack (Node/Bun error codes). */
const CERT_CODES = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_UNTRUSTED",
  "CERT_SIGNATURE_FAILURE",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "HOSTNAME_MISMATCH",
]);

/** A socket that died under us: during a TLS handshake this is how a refused client certificate shows. */
const DROPPED = /EBADF|ECONNRESET|EPIPE|socket hang up|socket.*(closed|disconnected)|connection closed|CONNECTION_CLOSED/i;

/**
 * Turns nats.js errors into one line a user can act on. With the node's NATS settings it can also say
 * which TLS setting to look at (never a secret: only which keys are set).
 */
export function describeNatsError(err: unknown, nats?: Config["swarm"]["nats"]): string {
  const e = err as { code?: string; message?: string };
  const msg = e?.message ?? String(err);
  const code = e?.code ?? "";
  const tls = nats?.tls;
  const usesTls = !!nats && wantsTls(nats);
  if (code === "CONNECTION_REFUSED" || /ECONNREFUSED|connection refused/i.test(msg)) {
    return "connection refused (is nats-server running and is the port right?)";
  }
  if (code === "AUTHORIZATION_VIOLATION" || /authorization/i.test(msg)) {
    return `server refused the credentials (${msg})`;
  }
  if (code === "BAD_CREDS") {
    return "the credentials file is not a valid .creds file (it needs a NATS USER JWT block and a USER NKEY SEED block)";
  }
  if (/^nkeys: /.test(msg)) return `not a valid nkey seed (${msg})`;
  if (code === "SERVER_OPT_NA" && msg === "tls") {
    return (
      "TLS failed: this nats-server does not offer TLS (the URL is tls:// or swarm.nats.tls.* is set; " +
      "give the server a tls block, or use a nats:// URL without TLS settings)"
    );
  }
  // An alert received from the server: it refused our side of the handshake (our client certificate).
  if (usesTls && /alert/i.test(msg)) return tlsDropped(msg, nats);
  if (CERT_CODES.has(code) || /certificate|self.signed/i.test(msg)) {
    const hint =
      code === "ERR_TLS_CERT_ALTNAME_INVALID" || code === "HOSTNAME_MISMATCH"
        ? "the certificate does not name the host in the URL"
        : tls?.ca_file
          ? "is swarm.nats.tls.ca_file the CA that signed the server's certificate?"
          : "set swarm.nats.tls.ca_file to the CA that signed the server's certificate";
    return `TLS failed: untrusted server certificate (${msg}); ${hint}`;
  }
  if (code === "TLS") return `TLS failed (${msg})`;
  if (usesTls && DROPPED.test(`${code} ${msg}`)) return tlsDropped(msg, nats);
  if (code === "TIMEOUT" || /timeout/i.test(msg)) return `timed out (${msg})`;
  if (/tls|ssl/i.test(msg)) return `TLS failed (${msg})`;
  return msg;
}

function wantsTls(nats: Config["swarm"]["nats"]): boolean {
  const t = nats.tls;
  return !!(t.ca_file || t.cert_file || t.key_file) || nats.urls.some((u) => u.startsWith("tls://"));
}

/** How nats-server refuses a client certificate (missing, or signed by a CA it does not trust). */
function tlsDropped(detail: string, nats?: Config["swarm"]["nats"]): string {
  const hint = nats?.tls.cert_file
    ? "does the server trust the CA that signed swarm.nats.tls.cert_file?"
    : "it may require a client certificate (mutual TLS): set swarm.nats.tls.cert_file and swarm.nats.tls.key_file";
  return `TLS failed: the server refused the TLS handshake (${detail}); ${hint}`;
}

/**
 * describeNatsError, plus one diagnosis nats.js cannot give: with reconnecting on, a server that drops the
 * connection right after the TLS handshake (how nats-server refuses a missing or untrusted client
 * certificate) surfaces only as a time-out. Over TLS, a time-out or dropped socket is followed by one bare
 * TLS handshake to `url` that tells the two apart.
 */
export async function explainConnectError(err: unknown, nats: Config["swarm"]["nats"], url: string): Promise<string> {
  const e = err as { code?: string; message?: string };
  const said = `${e?.code ?? ""} ${e?.message ?? String(err)}`;
  if (wantsTls(nats) && (e?.code === "TIMEOUT" || DROPPED.test(said))) {
    const probe = await probeTls(url, nats, Math.max(2_000, Math.min(nats.connect_timeout, 5_000))).catch(() => undefined);
    if (probe instanceof Error) return describeNatsError(probe, nats);
    if (probe && probe !== "answered") return tlsDropped(probe.refused, nats);
  }
  return describeNatsError(err, nats);
}

type Probe = { refused: string } | "answered" | Error | undefined;

/**
 * One TLS handshake the way a NATS client does it (plain INFO, then TLS with the node's CA and client
 * certificate, then CONNECT + PING). `refused`: the server hung up or sent an alert instead of answering;
 * "answered": it replied (PONG or -ERR); an Error: our side of the handshake failed (e.g. an untrusted
 * server certificate); undefined: nothing learnt (no INFO, no TLS offered, or no answer in time).
 */
async function probeTls(url: string, nats: Config["swarm"]["nats"], timeoutMs: number): Promise<Probe> {
  const u = new URL(url.includes("://") ? url : `nats://${url}`);
  const host = u.hostname.replace(/^\[|\]$/g, "");
  const port = Number(u.port || 4222);
  const t = nats.tls;
  const ca = t.ca_file ? [readFileSync(t.ca_file)] : undefined;
  const cert = t.cert_file ? readFileSync(t.cert_file) : undefined;
  const key = t.key_file ? readFileSync(t.key_file) : undefined;
  return new Promise((resolve) => {
    let secure: TLSSocket | undefined;
    let done = false;
    const finish = (r: Probe) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      secure?.destroy();
      sock.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => finish(undefined), timeoutMs);
    const sock = tcpConnect({ host, port });
    sock.on("error", () => finish(undefined));
    let info = "";
    const onInfo = (d: Buffer) => {
      info += d.toString("latin1");
      const nl = info.indexOf("\r\n");
      if (nl < 0) return;
      sock.removeListener("data", onInfo);
      let offered = false;
      try {
        const i = JSON.parse(info.slice(info.indexOf("{"), nl)) as { tls_required?: boolean; tls_available?: boolean };
        offered = !!(i.tls_required || i.tls_available);
      } catch {
        /* not a NATS server */
      }
      if (!offered) return finish(undefined);
      const s = tlsConnect({ socket: sock, ca, cert, key, servername: isIP(host) ? undefined : host, rejectUnauthorized: true });
      secure = s;
      let reply = "";
      s.on("secureConnect", () => {
        if (!s.authorized) return finish(s.authorizationError ?? new Error("server certificate not trusted"));
        s.write('CONNECT {"verbose":false,"pedantic":false,"tls_required":true}\r\nPING\r\n');
      });
      s.on("data", (b: Buffer) => {
        reply += b.toString("latin1");
        if (/PONG|-ERR/.test(reply)) finish("answered");
      });
      // A local verification failure (untrusted server certificate) is reported as such; an alert from the
      // server or a dropped socket means the server refused our side of the handshake.
      s.on("error", (err) => {
        const local =
          !/alert/i.test(err.message) &&
          (CERT_CODES.has((err as { code?: string }).code ?? "") || /certificate|self.signed/i.test(err.message));
        finish(local ? err : { refused: err.message });
      });
      s.on("close", () => finish({ refused: "connection closed without an answer" }));
    };
    sock.on("data", onInfo);
  });
}

/**
 * Fails start-up with a clear reason when the server has no JetStream (instead of a KV error later).
 * A server that has just (re)started answers "no responders" until JetStream is up, so that answer is
 * believed only after a moment, or not at all when the server's INFO says it has JetStream (a cluster
 * still electing its leaders); a lost connection is waited out within connect_timeout.
 */
export async function requireJetStream(link: NatsLink, connectTimeoutMs: number, embeddedPort?: number): Promise<void> {
  const started = Date.now();
  const noJetStream = (err: unknown) => /503|not enabled|no responders/i.test(String((err as Error)?.message));
  try {
    await withRetry(
      async () => {
        const jsm = await link.nc.jetstreamManager({ timeout: 5_000 });
        await jsm.getAccountInfo();
      },
      {
        backoff: NATS_BACKOFF,
        untilMs: connectTimeoutMs,
        retryable: (err) =>
          isTransientNatsError(err) && (!noJetStream(err) || link.nc.info?.jetstream === true || Date.now() - started < 1_500),
      },
    );
  } catch (err) {
    if (noJetStream(err) && link.nc.info?.jetstream === true) {
      await link.nc.close();
      throw new PicoclawError(
        "E_NATS",
        `JetStream at ${link.url()} did not become ready within swarm.nats.connect_timeout (${connectTimeoutMs}ms): a cluster without a leader? (${(err as Error).message})`,
        { cause: err },
      );
    }
    if (noJetStream(err)) {
      await link.nc.close();
      throw new JetStreamMissingError(link.url(), embeddedPort);
    }
    await link.nc.close();
    throw new PicoclawError("E_NATS", `NATS at ${link.url()} did not answer JetStream requests: ${(err as Error).message}`, { cause: err });
  }
}
