// `--swarm.nats.embedded`: a local nats-server shared by every local node that asks for one.
// Lifecycle: the first node starts it (detached, so a Ctrl-C in that terminal does not take it down);
// later nodes join it; whichever embedded node stops last, seeing no other client connected, stops it.
import { spawn } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { join } from "node:path";
import type { Config } from "./config.ts";
import { NatsServerMissingError } from "./errors.ts";
import type { Logger } from "./log.ts";

export interface EmbeddedNats {
  url: string;
  /** True when this process started the server. */
  started: boolean;
  /** Call after the node's own connection is closed: stops the server if no client is left. */
  release(): Promise<void>;
}

interface ServerState {
  pid: number;
  port: number;
  monitor_port: number;
}

export function natsServerBinary(env: Record<string, string | undefined> = process.env): string {
  return env.PICOCLAW_NATS_SERVER_BIN || "nats-server";
}

export function findNatsServer(env: Record<string, string | undefined> = process.env): string | undefined {
  const bin = natsServerBinary(env);
  return bin.includes("/") ? (existsSync(bin) ? bin : undefined) : (Bun.which(bin) ?? undefined);
}

export function portOpen(host: string, port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = createConnection({ host, port });
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.once("connect", () => done(true));
    sock.once("error", () => done(false));
  });
}

// Ports this process already handed out: the kernel may give the same ephemeral port to two binds in a
// row once the first is closed, and callers asking twice (a server's client and monitor ports) need two.
const handedOut = new Set<number>();

export async function freePort(): Promise<number> {
  for (let tries = 0; tries < 50; tries++) {
    const port = await ephemeralPort();
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error("no free TCP port on 127.0.0.1: the system kept giving back ports this process had already handed out");
}

function ephemeralPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number, stepMs = 50): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return true;
    await Bun.sleep(stepMs);
  }
  return false;
}

export async function ensureEmbeddedNats(cfg: Config, log: Logger): Promise<EmbeddedNats> {
  const n = cfg.swarm.nats;
  const port = n.embedded_port;
  const connectHost = n.embedded_host === "0.0.0.0" || n.embedded_host === "::" ? "127.0.0.1" : n.embedded_host;
  const url = `nats://${connectHost.includes(":") ? `[${connectHost}]` : connectHost}:${port}`;
  const dir = join(n.store_dir, `port-${port}`);
  const stateFile = join(dir, "embedded.json");
  const release = () => releaseServer(stateFile, log);

  if (await portOpen(connectHost, port)) {
    log.info("Embedded NATS already running, joining it", { url });
    return { url, started: false, release };
  }
  const bin = findNatsServer();
  if (!bin) throw new NatsServerMissingError(natsServerBinary());
  if (["0.0.0.0", "::"].includes(n.embedded_host) && !n.token && !n.user) {
    log.warn("Embedded NATS listens on all interfaces without authentication; anyone on the network can join", {
      host: n.embedded_host,
    });
  }

  mkdirSync(dir, { recursive: true });
  const monitor = await freePort();
  const logFd = openSync(join(dir, "nats-server.log"), "a");
  // The node's own token or user/password protect the server it starts, so other clients need them too.
  // They go in a config file readable by us only, not on the command line where `ps` would show them.
  const auth: string[] = [];
  if (n.token || n.user) {
    const conf = join(dir, "auth.conf");
    const body = n.token
      ? `authorization { token: ${JSON.stringify(n.token)} }\n`
      : `authorization { user: ${JSON.stringify(n.user)}, password: ${JSON.stringify(n.password ?? "")} }\n`;
    writeFileSync(conf, body, { mode: 0o600 });
    auth.push("-c", conf);
  }
  const child = spawn(
    bin,
    [
      "-js",
      "-a",
      n.embedded_host,
      "-p",
      String(port),
      "-m",
      String(monitor),
      "-sd",
      dir,
      "--server_name",
      `picoclaw-embedded-${port}`,
      ...auth,
    ],
    { detached: true, stdio: ["ignore", logFd, logFd] },
  );
  let exited = false;
  child.once("exit", () => {
    exited = true;
  });
  const up = await waitFor(async () => exited || (await portOpen(connectHost, port, 200)), 10_000);
  if (exited || !up) {
    // Another node may have won the race for the port: join its server instead.
    if (await portOpen(connectHost, port)) return { url, started: false, release };
    throw new Error(`embedded nats-server did not start on ${url}; see ${join(dir, "nats-server.log")}`);
  }
  child.unref();
  // Markers of servers stopped earlier (see releaseServer) name other pids: clear them.
  for (const f of readdirSync(dir)) if (f.startsWith("embedded.json.stopping-")) rmSync(join(dir, f), { force: true });
  writeFileSync(stateFile, JSON.stringify({ pid: child.pid ?? 0, port, monitor_port: monitor } satisfies ServerState));
  log.info("Embedded NATS started", { url, store: dir, pid: child.pid });
  return { url, started: true, release };
}

async function releaseServer(stateFile: string, log: Logger): Promise<void> {
  let state: ServerState;
  try {
    state = JSON.parse(readFileSync(stateFile, "utf8")) as ServerState;
  } catch {
    return; // not started by an embedded node (or already stopped)
  }
  // The server may still list a connection its client has just closed (later on a loaded machine): look
  // again for a moment before leaving it up for others.
  let clients = await connectedClients(state.monitor_port);
  for (const end = Date.now() + 1_500; clients !== undefined && clients > 0 && Date.now() < end; ) {
    await Bun.sleep(100);
    clients = await connectedClients(state.monitor_port);
  }
  if (clients === undefined) return; // server already gone or not ours
  if (clients > 0) {
    log.info("Embedded NATS left running for other local nodes", { clients, pid: state.pid });
    return;
  }
  // Nodes stopped together (the demo's Ctrl-C) can each find no client left. The one that creates the
  // marker stops the server; the others wait for it to go, and take over only if it does not.
  if (!claimStop(stopMarker(stateFile, state.pid))) {
    if (await waitFor(async () => !pidAlive(state.pid), 5_000)) {
      log.debug("Embedded NATS stopped by another local node", { pid: state.pid });
      return;
    }
  }
  if (!pidAlive(state.pid)) return;
  try {
    process.kill(state.pid, "SIGTERM");
  } catch {
    /* already exited */
  }
  await waitFor(async () => !pidAlive(state.pid), 5_000);
  rmSync(stateFile, { force: true });
  log.info("Embedded NATS stopped", { pid: state.pid });
}

/** Per server pid, so a marker left by a stopper that died mid-stop never blocks a later server. */
function stopMarker(stateFile: string, pid: number): string {
  return `${stateFile}.stopping-${pid}`;
}

/** True for the one caller that creates the marker (exclusive create). */
function claimStop(marker: string): boolean {
  try {
    closeSync(openSync(marker, "wx"));
    return true;
  } catch {
    return false;
  }
}

async function connectedClients(monitorPort: number): Promise<number | undefined> {
  try {
    const res = await fetch(`http://127.0.0.1:${monitorPort}/connz`, { signal: AbortSignal.timeout(2_000) });
    return ((await res.json()) as { num_connections: number }).num_connections;
  } catch {
    return undefined;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
