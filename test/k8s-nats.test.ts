// k8s/nats.yaml's nats-server.conf, run for real: three servers on this machine with the ConfigMap's
// text (only ports, listen addresses, the store and the pid file moved to temporary places; routes to
// 127.0.0.1 instead of nats-N.nats-headless), each with its POD_NAME and the Secret's token. Then the
// coordinator and worker Deployments' own environment (replicas 3, token, heartbeats, echo LLM) runs
// the all-in-one entry against it, a request is answered, one server is killed (what the
// PodDisruptionBudget's maxUnavailable: 1 allows) and the next request is answered too.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { connect } from "nats";
import { freePort } from "../lib/embedded-nats.ts";
import { byKind, containerEnv, loadManifests, picoclawDeployments, podNameOf, statefulSet } from "./helpers/k8s.ts";
import { type RoleProcess, runRole, spawnRole, tempHome } from "./helpers/role-process.ts";
import { waitFor } from "./helpers/wait.ts";

const manifests = loadManifests();
const CONF = byKind<{ data?: Record<string, string> }>(manifests, "ConfigMap").find((c) => c.metadata.name === "nats-config")!.data![
  "nats-server.conf"
]!;
const NATS_ENV = containerEnv(manifests, statefulSet(manifests, "nats").spec!.template.spec!.containers[0]!, "nats-0");
const TOKEN = NATS_ENV.NATS_TOKEN!;

interface Server {
  name: string;
  client: number;
  cluster: number;
  monitor: number;
  dir: string;
  proc?: Subprocess;
}

const servers: Server[] = [];
const nodes: RoleProcess[] = [];
let urls = "";

/** The ConfigMap's text for server i on this machine; every change must apply, or the conf changed shape. */
function localConf(i: number): string {
  const s = servers[i]!;
  let text = CONF;
  const swap = (from: string | RegExp, to: string) => {
    const next = text.replace(from, to);
    if (next === text) throw new Error(`nats-server.conf in k8s/nats.yaml no longer has ${from}: update this test`);
    text = next;
  };
  swap(/^port: 4222$/m, `host: 127.0.0.1\nport: ${s.client}`);
  swap(/^http_port: 8222$/m, `http: "127.0.0.1:${s.monitor}"`);
  swap('pid_file: "/var/run/nats/nats.pid"', `pid_file: "${s.dir}/nats.pid"`);
  swap('store_dir: "/data"', `store_dir: "${s.dir}/jetstream"`);
  swap(/^ {2}port: 6222$/m, `  host: 127.0.0.1\n  port: ${s.cluster}`);
  servers.forEach((peer, j) => {
    swap(`nats://nats-${j}.nats-headless:6222`, `nats://127.0.0.1:${peer.cluster}`);
  });
  return text;
}

async function health(s: Server, query = ""): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${s.monitor}/healthz${query}`).catch(() => undefined);
  return res?.status ?? 0;
}

/** A picoclaw Deployment's container environment, pointed at the local servers. */
function deploymentEnv(name: string): Record<string, string> {
  const d = picoclawDeployments(manifests).find((x) => x.metadata.name === name)!;
  const env = containerEnv(manifests, d.spec!.template.spec!.containers[0]!, podNameOf(name));
  env.PICOCLAW_SWARM_NATS_URLS = urls;
  // Several processes share this machine; the HTTP endpoints are not what this test is about.
  delete env.PICOCLAW_SWARM_HTTP_LISTEN;
  return env;
}

async function submit(text: string) {
  return runRole("picoclaw.ts", ["submit", "--json", text], {
    env: { PICOCLAW_SWARM_NATS_URLS: urls, PICOCLAW_SWARM_NATS_TOKEN: TOKEN },
    timeoutMs: 90_000,
  });
}

beforeAll(async () => {
  for (let i = 0; i < 3; i++) {
    servers.push({
      name: `nats-${i}`,
      client: await freePort(),
      cluster: await freePort(),
      monitor: await freePort(),
      dir: mkdtempSync(join(tmpdir(), `picoclaw-k8s-nats-${i}-`)),
    });
  }
  urls = servers.map((s) => `nats://127.0.0.1:${s.client}`).join(",");
  for (const [i, s] of servers.entries()) {
    const conf = join(s.dir, "nats-server.conf");
    writeFileSync(conf, localConf(i));
    s.proc = Bun.spawn(["nats-server", "-c", conf], {
      env: { ...process.env, POD_NAME: s.name, NATS_TOKEN: TOKEN },
      stdout: "ignore",
      stderr: Bun.file(join(s.dir, "nats-server.log")),
    });
  }
});

afterAll(async () => {
  for (const p of nodes) if (p.proc.exitCode === null) p.signal("SIGTERM");
  await Promise.all(nodes.map((p) => p.exited(15_000).catch(() => p.proc.kill("SIGKILL"))));
  for (const s of servers) s.proc?.kill("SIGTERM");
  await Promise.all(servers.map((s) => Promise.race([s.proc?.exited, Bun.sleep(5_000)])));
  for (const s of servers) {
    if (s.proc?.exitCode === null) s.proc.kill("SIGKILL");
    rmSync(s.dir, { recursive: true, force: true });
  }
});

describe("k8s/nats.yaml's nats-server.conf as a three-server JetStream cluster", () => {
  test("the probes' endpoints: liveness, readiness and start-up (full health) all pass; every server routes to both others", async () => {
    for (const s of servers) {
      await waitFor(`${s.name} /healthz?js-enabled-only=true`, async () => (await health(s, "?js-enabled-only=true")) === 200, 20_000);
      await waitFor(`${s.name} /healthz?js-server-only=true`, async () => (await health(s, "?js-server-only=true")) === 200, 20_000);
      // The full check needs the JetStream cluster formed (a meta leader elected by a majority).
      await waitFor(`${s.name} /healthz`, async () => (await health(s)) === 200, 30_000);
      // Newer servers pool several connections per peer: count the peers.
      const routez = (await (await fetch(`http://127.0.0.1:${s.monitor}/routez`)).json()) as { routes?: { remote_id: string }[] };
      const peers = new Set((routez.routes ?? []).map((r) => r.remote_id));
      expect({ server: s.name, peers: peers.size }).toEqual({ server: s.name, peers: 2 });
    }
  });

  test("clients need the Secret's token", async () => {
    const wrong = await connect({ servers: urls.split(","), token: "not-the-token", reconnect: false }).then(
      (nc) => nc.close().then(() => "connected"),
      (err: Error) => err.message,
    );
    expect(wrong).toMatch(/Authorization Violation/i);
  });

  test("the Deployments' environment runs a swarm on it with replicas 3, and it survives the loss of one server", async () => {
    const home = tempHome();
    // One after the other: two nodes starting at the same moment on a fresh replicated cluster race to
    // create the same R3 bucket, and today the loser exits (NatsError 503 or TIMEOUT); Kubernetes
    // restarts it, but a test must not lean on restarts.
    const coordinator = spawnRole("picoclaw.ts", [], { env: deploymentEnv("picoclaw-coordinator"), home });
    nodes.push(coordinator);
    await coordinator.waitForLine(/Node joined swarm .*self=true/, 30_000);
    const worker = spawnRole("picoclaw.ts", [], { env: deploymentEnv("picoclaw-worker"), home });
    nodes.push(worker);
    await coordinator.waitForLine(new RegExp(`Node joined swarm node=${podNameOf("picoclaw-worker")}\\b`), 30_000);

    const first = await submit("Review this change: the HTTP client now retries failed requests");
    expect({ code: first.code, output: first.code === 0 ? "" : first.output }).toEqual({ code: 0, output: "" });

    // The swarm's streams are replicated on all three servers.
    const nc = await connect({ servers: urls.split(","), token: TOKEN });
    const streams = await (await nc.jetstreamManager()).streams.list().next();
    await nc.close();
    expect(streams.length).toBeGreaterThan(0);
    expect(streams.map((s) => [s.config.name, s.config.num_replicas]).filter(([, r]) => r !== 3)).toEqual([]);

    // One server lost without warning; clients on it reconnect to the other two.
    servers[2]!.proc!.kill("SIGKILL");
    await servers[2]!.proc!.exited;
    const second = await submit("Review this change: one NATS server is gone");
    expect({ code: second.code, output: second.code === 0 ? "" : second.output }).toEqual({ code: 0, output: "" });
  }, 180_000);
});
