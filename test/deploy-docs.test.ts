// docs/deploy.md's multi-machine and systemd sections, run for real on this machine:
// - docs/nats-cluster.conf as three nats-servers (only ports, listen addresses and the store moved,
//   routes to 127.0.0.1 instead of machine1..3), with the token and server names from the environment;
// - two coordinators and three workers from docs/picoclaw-worker.env (URLs of all three servers,
//   replicas 3), all started at the same instant on the fresh cluster, as machines booting together
//   do: every one joins (none exits on JetStream electing leaders or on a bucket another node is
//   creating), the guide's review is answered, the streams are replicated on all three servers;
// - docs/picoclaw@.service: `systemd-analyze verify` accepts it, and the process it starts, with the
//   environment file as systemd reads it, leaves the swarm and exits 0 on its KillSignal well within
//   TimeoutStopSec.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { connect } from "nats";
import { freePort } from "../lib/embedded-nats.ts";
import { type LlmServer, startLlmServer } from "./helpers/llm-server.ts";
import { ROOT, type RoleProcess, reaper, runRole, spawnRole, tempHome } from "./helpers/role-process.ts";
import { waitFor } from "./helpers/wait.ts";

const CONF = readFileSync(join(ROOT, "docs/nats-cluster.conf"), "utf8");
const UNIT = readFileSync(join(ROOT, "docs/picoclaw@.service"), "utf8");
const TOKEN = "deploy-docs-test-token";
const REVIEW = "Review this change: the HTTP client now retries failed requests";

/** KEY=VALUE lines as systemd's EnvironmentFile reads them (comments and blank lines skipped). */
function envFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const t = line.trim();
    if (t === "" || t.startsWith("#") || t.startsWith(";")) continue;
    const eq = t.indexOf("=");
    env[t.slice(0, eq).trim()] = t.slice(eq + 1).trim();
  }
  return env;
}
const WORKER_ENV = envFile(readFileSync(join(ROOT, "docs/picoclaw-worker.env"), "utf8"));

/** `Key=value` of the unit's sections (last one wins, as in systemd). */
function unitSetting(key: string): string {
  const m = [...UNIT.matchAll(new RegExp(`^${key}=(.*)$`, "gm"))].at(-1);
  if (!m) throw new Error(`docs/picoclaw@.service has no ${key}=`);
  return m[1]!.trim();
}

interface Server {
  name: string;
  client: number;
  cluster: number;
  monitor: number;
  dir: string;
  proc?: Subprocess;
}
const servers: Server[] = [];
let urls = "";

/** docs/nats-cluster.conf for server i on this machine; every change must apply, or the file changed shape. */
function localConf(i: number): string {
  const s = servers[i]!;
  let text = CONF;
  const swap = (from: string | RegExp, to: string) => {
    const next = text.replace(from, to);
    if (next === text) throw new Error(`docs/nats-cluster.conf no longer has ${from}: update this test`);
    text = next;
  };
  swap(/^port: 4222$/m, `host: 127.0.0.1\nport: ${s.client}`);
  swap(/^http_port: 8222$/m, `http: "127.0.0.1:${s.monitor}"`);
  swap('store_dir: "/var/lib/nats/jetstream"', `store_dir: "${s.dir}/jetstream"`);
  swap(/^ {2}port: 6222$/m, `  host: 127.0.0.1\n  port: ${s.cluster}`);
  servers.forEach((peer, j) => {
    swap(`nats-route://machine${j + 1}:6222`, `nats-route://127.0.0.1:${peer.cluster}`);
  });
  return text;
}

function logTail(s: Server): string {
  return readFileSync(join(s.dir, "nats-server.log"), "utf8").split("\n").slice(-25).join("\n");
}

async function healthz(s: Server): Promise<number> {
  if (s.proc?.exitCode !== null) throw new Error(`${s.name} exited:\n${readFileSync(join(s.dir, "nats-server.log"), "utf8")}`);
  return (await fetch(`http://127.0.0.1:${s.monitor}/healthz`).catch(() => undefined))?.status ?? 0;
}

/** The worker env file as a node on "machine N" reads it, pointed at the local servers. */
function nodeEnv(over: Record<string, string>): Record<string, string> {
  const env = { ...WORKER_ENV, ...over };
  expect(env.PICOCLAW_SWARM_NATS_URLS).toBe("nats://machine1:4222,nats://machine2:4222,nats://machine3:4222");
  env.PICOCLAW_SWARM_NATS_URLS = urls;
  env.PICOCLAW_SWARM_NATS_TOKEN = TOKEN;
  return env;
}

const procs = reaper();
let llm: LlmServer;

beforeAll(async () => {
  for (let i = 0; i < 3; i++) {
    servers.push({
      name: `machine${i + 1}`,
      client: await freePort(),
      cluster: await freePort(),
      monitor: await freePort(),
      dir: mkdtempSync(join(tmpdir(), `picoclaw-deploy-nats-${i}-`)),
    });
  }
  urls = servers.map((s) => `nats://127.0.0.1:${s.client}`).join(",");
  for (const [i, s] of servers.entries()) {
    const conf = join(s.dir, "nats-cluster.conf");
    writeFileSync(conf, localConf(i));
    s.proc = Bun.spawn(["nats-server", "-c", conf], {
      env: { ...process.env, NATS_SERVER_NAME: s.name, NATS_TOKEN: TOKEN },
      stdout: "ignore",
      stderr: Bun.file(join(s.dir, "nats-server.log")),
    });
  }
  llm = await startLlmServer();
});

afterAll(async () => {
  await procs.killAll();
  await llm?.stop();
  for (const s of servers) s.proc?.kill("SIGTERM");
  await Promise.all(servers.map((s) => Promise.race([s.proc?.exited, Bun.sleep(5_000)])));
  for (const s of servers) {
    if (s.proc?.exitCode === null) s.proc.kill("SIGKILL");
    rmSync(s.dir, { recursive: true, force: true });
  }
});

describe("docs/deploy.md, multi-machine: docs/nats-cluster.conf as three servers", () => {
  test("each server is healthy (JetStream cluster formed) and routes to both others; clients need the token", async () => {
    for (const s of servers) {
      // Bounded generously: on a loaded 2-core machine the three servers take a while to elect a leader.
      await waitFor(`${s.name} /healthz`, async () => (await healthz(s)) === 200, 60_000, 100).catch((err: Error) => {
        throw new Error(`${err.message}\n${servers.map((x) => `--- ${x.name} log (end) ---\n${logTail(x)}`).join("\n")}`);
      });
      const routez = (await (await fetch(`http://127.0.0.1:${s.monitor}/routez`)).json()) as { routes?: { remote_id: string }[] };
      expect({ server: s.name, peers: new Set((routez.routes ?? []).map((r) => r.remote_id)).size }).toEqual({ server: s.name, peers: 2 });
    }
    const refused = await connect({ servers: urls.split(","), reconnect: false }).then(
      (nc) => nc.close().then(() => "connected"),
      (err: Error) => err.message,
    );
    expect(refused).toMatch(/Authorization Violation/i);
  }, 90_000);

  test("two coordinators and three workers from docs/picoclaw-worker.env, started at the same instant: all join, the review is answered, streams R3", async () => {
    const nodes: RoleProcess[] = [];
    const llmEnv = { PICOCLAW_LLM_BASE_URL: llm.url, PICOCLAW_LLM_MODEL: "test-model" };
    for (let i = 0; i < 5; i++) {
      const role = i < 2 ? { PICOCLAW_SWARM_ROLE: "coordinator", PICOCLAW_SWARM_CAPABILITIES: "coordination" } : llmEnv;
      const env = nodeEnv({
        ...role,
        PICOCLAW_SWARM_HTTP_LISTEN: `127.0.0.1:${await freePort()}`,
        PICOCLAW_SWARM_NODE_ID: `machine-node-${i}`,
      });
      nodes.push(spawnRole("picoclaw.ts", [], { env, home: tempHome() }));
    }
    for (const n of nodes) procs.track(n);
    // Every node sees the four others join; none exits meanwhile (a start-up failure would end the process).
    for (const [i, n] of nodes.entries()) {
      await waitFor(
        `machine-node-${i} to see the four others join`,
        () => {
          if (n.proc.exitCode !== null) throw new Error(`machine-node-${i} exited ${n.proc.exitCode}:\n${n.output()}`);
          return n.lines.filter((l) => /Node joined swarm node=machine-node-\d+ /.test(l) && !l.includes("self=true")).length >= 4;
        },
        60_000,
        100,
      );
    }
    expect(nodes.map((n) => n.proc.exitCode)).toEqual([null, null, null, null, null]);
    const retried = nodes.flatMap((n) => n.lines.filter((l) => l.includes("JetStream not ready yet")));
    console.log(`deploy-docs: ${retried.length} start-up steps tried again${retried.length ? `, e.g. ${retried[0]}` : ""}`);
    // One leads, one stands by.
    await waitFor("a leading coordinator", () => nodes.slice(0, 2).some((n) => n.countLines(/Coordinator leading/) > 0), 30_000);

    // docs/deploy.md's client: `picoclaw submit` with the same environment, from any machine.
    const r = await runRole("picoclaw.ts", ["submit", REVIEW], { env: nodeEnv({}), home: tempHome(), timeoutMs: 90_000 });
    expect({ code: r.code, output: r.code === 0 ? "" : r.output }).toEqual({ code: 0, output: "" });
    expect(r.stdout).toContain("4 completed, 0 failed or skipped");
    expect(r.stdout).toContain("ok: "); // the workers' LLM answered

    const nc = await connect({ servers: urls.split(","), token: TOKEN });
    const streams = await (await nc.jetstreamManager()).streams.list().next();
    await nc.close();
    expect(streams.length).toBeGreaterThan(0);
    expect(streams.map((s) => [s.config.name, s.config.num_replicas]).filter(([, n]) => n !== 3)).toEqual([]);
  }, 180_000);
});

describe("docs/deploy.md, systemd: docs/picoclaw@.service", () => {
  const dist = join(ROOT, "dist", "picoclaw");
  beforeAll(async () => {
    // The unit runs the compiled all-in-one; build it when it is missing or older than the sources.
    const newest = Math.max(
      ...["lib", "roles", "roles/coordinator", "roles/worker", "roles/dashboard", "roles/picoclaw"].flatMap((d) =>
        readdirSync(join(ROOT, d))
          .filter((f) => f.endsWith(".ts"))
          .map((f) => statSync(join(ROOT, d, f)).mtimeMs),
      ),
    );
    const built = (() => {
      try {
        return statSync(dist).mtimeMs;
      } catch {
        return 0;
      }
    })();
    if (built < newest) {
      const b = Bun.spawnSync(["bun", "run", "build"], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
      if (b.exitCode !== 0) throw new Error(`bun run build failed:\n${b.stderr.toString()}`);
    }
  }, 120_000);

  test("systemd-analyze verify accepts the unit (ExecStart pointed at this build)", () => {
    const analyze = Bun.which("systemd-analyze");
    if (!analyze) throw new Error("systemd-analyze is missing (apt-get install systemd)");
    const dir = mkdtempSync(join(tmpdir(), "picoclaw-unit-"));
    const unit = join(dir, "picoclaw@worker.service");
    writeFileSync(unit, UNIT.replace(/^ExecStart=\/usr\/local\/bin\/picoclaw$/m, `ExecStart=${dist}`));
    const r = Bun.spawnSync([analyze, "verify", unit], { stdout: "pipe", stderr: "pipe" });
    rmSync(dir, { recursive: true, force: true });
    expect({ code: r.exitCode, said: `${r.stdout}${r.stderr}`.trim() }).toEqual({ code: 0, said: "" });
  });

  test("the process it starts, with the environment file, joins; its KillSignal makes it leave and exit 0 within TimeoutStopSec", async () => {
    expect(unitSetting("ExecStart")).toBe("/usr/local/bin/picoclaw");
    expect(unitSetting("EnvironmentFile")).toBe("/etc/picoclaw/%i.env");
    const signal = unitSetting("KillSignal") as "SIGTERM";
    const stopWithinMs = Number(/^(\d+)s$/.exec(unitSetting("TimeoutStopSec"))![1]) * 1_000;
    const env = nodeEnv({ PICOCLAW_SWARM_HTTP_LISTEN: `127.0.0.1:${await freePort()}`, HOME: tempHome() });
    // The default drain_grace must fit in the stop timeout (with room for the hand-back and the leave).
    const cfg = await runRole("picoclaw", ["config"], { env, binary: dist });
    const graceMs = /swarm\.drain_grace = (\d+)/.exec(cfg.output)?.[1];
    expect(Number(graceMs)).toBeLessThan(stopWithinMs - 5_000);

    const node = procs.track(spawnRole("picoclaw", [], { env, binary: dist }));
    await node.waitForLine(/Node joined swarm .*role=worker .*self=true/, 30_000);
    const t0 = Date.now();
    node.signal(signal);
    expect(await node.exited(stopWithinMs)).toBe(0);
    expect(Date.now() - t0).toBeLessThan(stopWithinMs);
    expect(node.output()).toMatch(/Node left swarm .*reason=graceful self=true/);
  }, 90_000);
});
