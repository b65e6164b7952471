// k8s/nats.yaml's nats-server.conf, run for real: three servers on this machine with the ConfigMap's
// text (only ports, listen addresses, the store and the pid file moved to temporary places; routes to
// 127.0.0.1 instead of nats-N.nats-headless), each with its POD_NAME and the role passwords of the Secrets.
// Then the coordinator and worker Deployments' own environment (replicas 3, their NATS users, echo LLM) runs
// the all-in-one entry against it, a request is answered, one server is killed (what the
// PodDisruptionBudget's maxUnavailable: 1 allows) and the next request is answered too.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { connect } from "nats";
import { freePort } from "../lib/embedded-nats.ts";
import { swarmNames } from "../lib/subjects.ts";
import { byKind, containerEnv, loadManifests, picoclawDeployments, podNameOf, statefulSet } from "./helpers/k8s.ts";
import { type RoleProcess, runRole, spawnRole, tempHome } from "./helpers/role-process.ts";
import { waitFor } from "./helpers/wait.ts";

const manifests = loadManifests();
const CONF = byKind<{ data?: Record<string, string> }>(manifests, "ConfigMap").find((c) => c.metadata.name === "nats-config")!.data![
  "nats-server.conf"
]!;
const NATS_ENV = containerEnv(manifests, statefulSet(manifests, "nats").spec!.template.spec!.containers[0]!, "nats-0");
/** The coordinator pod's NATS user: what this test itself connects as. */
const COORDINATOR_ENV = (() => {
  const d = picoclawDeployments(manifests).find((x) => x.metadata.name === "picoclaw-coordinator")!;
  return containerEnv(manifests, d.spec!.template.spec!.containers[0]!, podNameOf("picoclaw-coordinator"));
})();
const AS_COORDINATOR = { user: COORDINATOR_ENV.PICOCLAW_SWARM_NATS_USER!, pass: COORDINATOR_ENV.PICOCLAW_SWARM_NATS_PASSWORD! };
/** The swarm's streams (a coordinator user may look each up; it may not list all streams). */
const STREAMS = (() => {
  const n = swarmNames(COORDINATOR_ENV.PICOCLAW_SWARM_HID!);
  return [...Object.values(n.streams), n.kvStream(n.buckets.tasks), n.kvStream(n.buckets.leader)];
})();

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
const ports = { coordinator: 0, worker: 0 };
let firstRequest: string | undefined;
/** Inboxes of the H-id the users may read (docs/nats-server.conf: never _INBOX.>). */
const INBOX = `_INBOX_${COORDINATOR_ENV.PICOCLAW_SWARM_HID}`;

/**
 * The manifests deploy nats-server 2.15.1, so the cluster runs on a 2.10+ server whichever the suite's
 * pass uses: the one on PATH when it is new enough, else the newest from scripts/setup-test-tools.sh.
 */
const natsBin = (() => {
  const tools = process.env.PICOCLAW_TOOLS_DIR ?? join(homedir(), ".picoclaw", "tools");
  for (const bin of [Bun.which("nats-server"), join(tools, "nats-newest", "nats-server")]) {
    if (!bin || !existsSync(bin)) continue;
    const v = /v(\d+)\.(\d+)\./.exec(Bun.spawnSync([bin, "--version"]).stdout.toString());
    if (v && (Number(v[1]) > 2 || (Number(v[1]) === 2 && Number(v[2]) >= 10))) return bin;
  }
  throw new Error("k8s-nats.test.ts needs nats-server 2.10 or newer (the manifests deploy 2.15.1): run scripts/setup-test-tools.sh");
})();

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
  if (s.proc?.exitCode !== null) {
    const log = await Bun.file(join(s.dir, "nats-server.log"))
      .text()
      .catch(() => "");
    throw new Error(`${s.name} exited (code ${s.proc?.exitCode}):\n${log}`);
  }
  const res = await fetch(`http://127.0.0.1:${s.monitor}/healthz${query}`).catch(() => undefined);
  return res?.status ?? 0;
}

/** A picoclaw Deployment's container environment, pointed at the local servers, HTTP on a free port here. */
function deploymentEnv(name: string, httpPort: number): Record<string, string> {
  const d = picoclawDeployments(manifests).find((x) => x.metadata.name === name)!;
  const env = containerEnv(manifests, d.spec!.template.spec!.containers[0]!, podNameOf(name));
  env.PICOCLAW_SWARM_NATS_URLS = urls;
  // Several processes share this machine: each its own port instead of the pod's 0.0.0.0:8080.
  env.PICOCLAW_SWARM_HTTP_LISTEN = `127.0.0.1:${httpPort}`;
  return env;
}

/** What the kubelet's probes would see: the status of /healthz and /readyz. */
async function probes(httpPort: number): Promise<string> {
  const get = (path: string) =>
    fetch(`http://127.0.0.1:${httpPort}${path}`).then(
      (r) => r.status,
      () => 0,
    );
  return `healthz ${await get("/healthz")}, readyz ${await get("/readyz")}`;
}

/**
 * docs/deploy.md's `kubectl exec deploy/picoclaw-coordinator -- picoclaw submit ...`: the coordinator pod's
 * whole environment, HTTP address included (the node in that pod already listens there).
 */
function clientEnv(): Record<string, string> {
  return deploymentEnv("picoclaw-coordinator", ports.coordinator);
}

async function submit(text: string) {
  return runRole("picoclaw.ts", ["submit", "--json", text], { env: clientEnv(), timeoutMs: 90_000 });
}

/** True once every stream answers its info request with a cluster leader other than `lost`. */
async function streamsLed(lost: string): Promise<boolean> {
  const nc = await connect({ servers: urls.split(","), ...AS_COORDINATOR, inboxPrefix: INBOX, timeout: 2_000 });
  try {
    const jsm = await nc.jetstreamManager({ timeout: 2_000 });
    const leaders = await Promise.all(STREAMS.map(async (n) => (await jsm.streams.info(n)).cluster?.leader));
    return leaders.every((l) => l !== undefined && l !== "" && l !== lost);
  } finally {
    await nc.close();
  }
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
  ports.coordinator = await freePort();
  ports.worker = await freePort();
  for (const [i, s] of servers.entries()) {
    const conf = join(s.dir, "nats-server.conf");
    writeFileSync(conf, localConf(i));
    s.proc = Bun.spawn([natsBin, "-c", conf], {
      env: { ...process.env, ...NATS_ENV, POD_NAME: s.name },
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
      // Newer servers pool several connections per peer: count the peers. Health needs only a majority,
      // so the route to a server that started last can still be on its way.
      const peers = async () => {
        const routez = (await (await fetch(`http://127.0.0.1:${s.monitor}/routez`)).json()) as { routes?: { remote_id: string }[] };
        return new Set((routez.routes ?? []).map((r) => r.remote_id)).size;
      };
      let seen = 0;
      await waitFor(
        () => `${s.name} routing to both others (last saw ${seen} peers)`,
        async () => {
          seen = await peers();
          return seen === 2;
        },
        20_000,
        250,
      );
    }
  });

  test("clients need a user of the Secrets: no token, no wrong password", async () => {
    const attempt = (o: { token?: string; user?: string; pass?: string }) =>
      connect({ servers: urls.split(","), ...o, reconnect: false }).then(
        (nc) => nc.close().then(() => "connected"),
        (err: Error) => err.message,
      );
    expect(await attempt({ token: "any-token" })).toMatch(/Authorization Violation/i);
    expect(await attempt({ user: AS_COORDINATOR.user, pass: "not-the-password" })).toMatch(/Authorization Violation/i);
    expect(await attempt(AS_COORDINATOR)).toBe("connected");
  });

  test("the coordinator and worker Deployments' environment runs a swarm on it: ready, answering, streams R3", async () => {
    const home = tempHome();
    // At the same instant, as `kubectl apply` starts them: both race to create the same R3 buckets on
    // the fresh cluster, and the one that loses rides out the 503s and time-outs (lib/node.ts duringStartUp).
    const coordinator = spawnRole("picoclaw.ts", [], { env: deploymentEnv("picoclaw-coordinator", ports.coordinator), home });
    const worker = spawnRole("picoclaw.ts", [], { env: deploymentEnv("picoclaw-worker", ports.worker), home });
    nodes.push(coordinator, worker);
    await coordinator.waitForLine(/Node joined swarm .*self=true/, 30_000);
    await coordinator.waitForLine(new RegExp(`Node joined swarm node=${podNameOf("picoclaw-worker")}\\b`), 30_000);
    for (const [role, port] of Object.entries(ports)) {
      await waitFor(`${role} ready`, async () => (await probes(port)) === "healthz 200, readyz 200", 15_000);
    }

    // docs/deploy.md's `kubectl exec deploy/picoclaw-dashboard -- picoclaw --swarm.dashboard --once`.
    const frame = await runRole("picoclaw.ts", ["--swarm.dashboard", "--once"], {
      env: deploymentEnv("picoclaw-dashboard", ports.coordinator),
      timeoutMs: 30_000,
    });
    expect({ code: frame.code, worker: frame.output.includes(podNameOf("picoclaw-worker")) }).toEqual({ code: 0, worker: true });

    const first = await submit("Review this change: the HTTP client now retries failed requests");
    expect({ code: first.code, output: first.code === 0 ? "" : first.output }).toEqual({ code: 0, output: "" });
    firstRequest = first.stdout.match(/"request":"(r-[0-9a-f]+)"/)?.[1];
    expect(firstRequest).toBeDefined();

    // The swarm's streams are replicated on all three servers.
    const nc = await connect({ servers: urls.split(","), ...AS_COORDINATOR, inboxPrefix: INBOX });
    const jsm = await nc.jetstreamManager();
    const streams = await Promise.all(STREAMS.map((n) => jsm.streams.info(n)));
    expect(streams.map((s) => [s.config.name, s.config.num_replicas]).filter(([, r]) => r !== 3)).toEqual([]);
    // The worker pods' user may not change a stream (nor could it stop all work with max_msg_size 1).
    const workerEnv = deploymentEnv("picoclaw-worker", ports.worker);
    const wc = await connect({
      servers: urls.split(","),
      user: workerEnv.PICOCLAW_SWARM_NATS_USER!,
      pass: workerEnv.PICOCLAW_SWARM_NATS_PASSWORD!,
      inboxPrefix: INBOX,
    });
    const tasks = swarmNames(COORDINATOR_ENV.PICOCLAW_SWARM_HID!).streams.tasks;
    const refused = await (await wc.jetstreamManager()).streams
      .update(tasks, { ...streams.find((s) => s.config.name === tasks)!.config, max_msg_size: 1 })
      .then(
        () => "updated",
        (err: Error) => err.message,
      );
    await Promise.all([nc.close(), wc.close()]);
    expect(refused).toContain(`Permissions Violation for Publish to "$JS.API.STREAM.UPDATE.${tasks}"`);
  }, 120_000);

  // On Debian's 2.9.10, after the loss `picoclaw watch` printed the stored answer but then did not exit
  // (reported in the issue notes): one more reason the manifests deploy a 2.10+ server.
  test("with one server lost (the budget's maxUnavailable: 1) the swarm keeps its work and answers", async () => {
    expect(firstRequest).toBeDefined();
    // Without warning; clients on it reconnect to the other two, and every stream or bucket that had
    // its leader there elects a new one. (A client that starts during those seconds can still fail
    // today: reported, not this file's concern.)
    servers[2]!.proc!.kill("SIGKILL");
    await servers[2]!.proc!.exited;
    await waitFor("a JetStream leader for every stream on the two servers left", () => streamsLed(servers[2]!.name), 30_000, 250);
    // What was acknowledged before the loss is still there: the first request's stored answer.
    const watched = await runRole("picoclaw.ts", ["watch", firstRequest!, "--json"], { env: clientEnv(), timeoutMs: 60_000 });
    expect({ code: watched.code, output: watched.code === 0 ? "" : watched.output }).toEqual({ code: 0, output: "" });
    expect(watched.stdout).toContain(`"kind":"answer"`);
    // On failure, what the swarm's nodes said too: submit alone cannot tell who did not answer.
    const second = await submit("Review this change: one NATS server is gone").catch((err: Error) => ({ code: -1, output: err.message }));
    const said = () => nodes.map((n, i) => `--- node ${i}\n${n.output().slice(-4_000)}`).join("\n");
    expect({ code: second.code, output: second.code === 0 ? "" : `${second.output}\n${said()}` }).toEqual({ code: 0, output: "" });
    for (const [role, port] of Object.entries(ports)) {
      await waitFor(`${role} ready again`, async () => (await probes(port)) === "healthz 200, readyz 200", 30_000);
    }
  }, 180_000);
});
