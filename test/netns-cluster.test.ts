// Several hosts on one machine: the guide's "3. Multi-Machine Swarm" with each machine a Linux network
// namespace (test/helpers/netns.ts). A 3-node nats-server cluster with JetStream (one server per host,
// routes over a bridge), replicas 3, a coordinator on h1, a worker on h2 and one on h3, each connected
// to its own host's server, and the test's OpenAI-style LLM server on h1. Then h3 is cut off the
// network mid-request: its worker must be marked offline, its sub-tasks redone on h2, the request
// answered with every sub-task completed exactly once; after healing, h3's worker is back in the swarm.
//
// The test process itself stays in the machine's own namespace and cannot reach 10.213.0.0/24: it
// observes only through processes it runs inside the namespaces (`ip netns exec`): their logs,
// `picoclaw submit --json`, `dashboard --json` and nats-server's monitoring endpoint read from within.

import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { swarmNames } from "../lib/subjects.ts";
import { canCreateNamespaces, createNetLab, type NetHost, type NetLab } from "./helpers/netns.ts";
import { ROOT, type RoleProcess, reaper, runRole, spawnRole } from "./helpers/role-process.ts";
import type { SwarmEvent } from "./helpers/swarm.ts";
import { waitFor } from "./helpers/wait.ts";

const can = canCreateNamespaces();
if (!can.ok) console.warn(`netns-cluster.test.ts: the multi-host test cannot run here: ${can.reason}`);

const HEARTBEAT_MS = 300;
const NODE_TIMEOUT_MS = 2_000;
const ACK_WAIT_MS = 2_000;
/** Slack on top of node_timeout + heartbeat_interval for a loaded 2-core box. */
const DETECTION_SLACK_MS = 5_000;
const TIMING = [
  "--swarm.nats.heartbeat_interval",
  `${HEARTBEAT_MS}ms`,
  "--swarm.nats.node_timeout",
  `${NODE_TIMEOUT_MS}ms`,
  "--swarm.tasks.ack_wait",
  `${ACK_WAIT_MS}ms`,
];
const TASKS = ["t1", "t2", "t3", "t4", "t5", "t6"];

let lab: NetLab | undefined;
const procs = reaper();
/** Every process's output, written to LOG_DIR after each run (replacing the previous run's). */
const LOG_DIR = join(ROOT, ".tmp", "netns-cluster");
const named: { name: string; p: RoleProcess }[] = [];
let passed = false;
const keep = <T extends RoleProcess>(name: string, p: T): T => {
  named.push({ name, p });
  return procs.track(p);
};

afterAll(async () => {
  if (named.length > 0) {
    rmSync(LOG_DIR, { recursive: true, force: true });
    mkdirSync(LOG_DIR, { recursive: true });
    for (const { name, p } of named) writeFileSync(join(LOG_DIR, `${name}.log`), `${p.output()}\n`);
    if (!passed) console.warn(`netns-cluster: the output of every process is in ${LOG_DIR}`);
  }
  // Everything was started by this file: role processes, servers and the LLM server (by pid), then the
  // namespaces (cleanup() also SIGKILLs anything still inside them, and is registered for exit too).
  await Promise.race([procs.killAll(), Bun.sleep(10_000)]);
  lab?.cleanup();
});

/** Epoch ms of a log line (`2026-11-24T13:42:29.713Z INFO  ...`). */
const lineTime = (line: string): number => Date.parse(line.slice(0, 24));

interface Jsz {
  meta_cluster?: { leader?: string; cluster_size?: number; replicas?: { name: string; current: boolean }[] };
  account_details?: {
    stream_detail?: { name: string; cluster?: { leader?: string }; consumer_detail?: { name: string; cluster?: { leader?: string } }[] }[];
  }[];
}

/** nats-server's /jsz (monitoring port 8222), fetched from inside the host's namespace. */
async function jsz(h: NetHost, home: string, query = ""): Promise<Jsz> {
  const code = `const r = await fetch("http://127.0.0.1:8222/jsz${query}", { signal: AbortSignal.timeout(2000) }); console.log(await r.text());`;
  const r = await runRole("jsz", ["-e", code], { binary: "bun", wrap: lab!.exec(h), home, timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`jsz on ${h.name}: exit ${r.code}: ${r.output}`);
  return JSON.parse(r.stdout) as Jsz;
}

/**
 * Which server leads each of the swarm's streams, KV buckets and durable consumers: "name=leader". The
 * EVENTS stream's consumers are left out: they are the ephemeral followers of clients (`submit`), which
 * come and go with them.
 */
async function placement(h: NetHost, home: string, hid: string): Promise<string[]> {
  const j = await jsz(h, home, "?accounts=true&streams=true&consumers=true");
  const out: string[] = [];
  for (const st of j.account_details?.flatMap((a) => a.stream_detail ?? []) ?? []) {
    if (!st.name.includes(hid)) continue;
    out.push(`${st.name}=${st.cluster?.leader ?? "none"}`);
    if (st.name === swarmNames(hid).streams.events) continue;
    for (const c of st.consumer_detail ?? []) out.push(`${st.name}/${c.name}=${c.cluster?.leader ?? "none"}`);
  }
  return out;
}

describe("several hosts on one machine (network namespaces)", () => {
  // Skipped ONLY outside CI when this machine cannot create network namespaces (the reason is in the
  // test name and printed above); under CI=true that is a failure. Running as root (or with CAP_SYS_ADMIN
  // + CAP_NET_ADMIN) with iproute2 installed and the veth and bridge kernel drivers available lifts it.
  test.skipIf(!can.ok && process.env.CI !== "true")(
    `3-host NATS cluster, R3: a host cut off mid-request is detected, its sub-tasks are redone elsewhere, it rejoins after healing${can.ok ? "" : ` [NOT RUN: ${can.reason}]`}`,
    async () => {
      if (!can.ok) throw new Error(`cannot create network namespaces here: ${can.reason}`);
      const t0 = Date.now();
      const timings: Record<string, number> = {};
      lab = createNetLab({ hosts: 3 });
      const [h1, h2, h3] = lab.hosts as [NetHost, NetHost, NetHost];
      const home = lab.tempDir("home-");
      /** A plan file of independent `general` sub-tasks, in the lab's own temporary directory. */
      const planOf = (name: string, ids: string[], prompt: (id: string) => string) => {
        const path = join(home, `${name}.yaml`);
        writeFileSync(path, `tasks:\n${ids.map((id) => `  - { id: ${id}, capability: general, prompt: "${prompt(id)}" }`).join("\n")}\n`);
        return path;
      };

      // --- the NATS cluster, as in the guide, one server per host ---
      const servers = lab.hosts.map((h) => {
        const others = lab!.hosts
          .filter((o) => o !== h)
          .map((o) => `nats://${o.ip}:6222`)
          .join(",");
        const args = [
          "-js",
          "-sd",
          lab!.tempDir(`nats-${h.name}-`),
          "-p",
          "4222",
          "-m",
          "8222",
          "-cluster",
          `nats://${h.ip}:6222`,
          "-routes",
          others,
          "--server_name",
          h.name,
          "--cluster_name",
          "pc",
        ];
        return keep(`nats-${h.name}`, spawnRole(`nats-server@${h.name}`, args, { binary: "nats-server", wrap: lab!.exec(h), home }));
      });
      let lastJsz = "";
      /** All three servers agree on a JetStream meta leader, which sees both other peers current. */
      const metaAgreed = async () => {
        for (const s of servers) if (s.proc.exitCode !== null) throw new Error(`nats-server exited ${s.proc.exitCode}:\n${s.output()}`);
        const all = await Promise.all(lab!.hosts.map((h) => jsz(h, home)));
        lastJsz = JSON.stringify(all.map((j, i) => ({ server: lab!.hosts[i]!.name, meta: j.meta_cluster })));
        const leaders = new Set(all.map((j) => j.meta_cluster?.leader ?? ""));
        if (leaders.size !== 1 || leaders.has("")) return false;
        const leader = all[lab!.hosts.findIndex((h) => h.name === [...leaders][0])];
        const reps = leader?.meta_cluster?.replicas ?? [];
        return reps.length === 2 && reps.every((r) => r.current);
      };
      await waitFor("a JetStream meta leader that all three servers agree on, with every peer current", metaAgreed, 60_000, 500).catch(
        (err) => {
          throw new Error(`${(err as Error).message}\nlast /jsz: ${lastJsz}\n${servers.map((s) => s.output()).join("\n")}`);
        },
      );
      timings.cluster_formed_ms = Date.now() - t0;

      // --- the LLM server on h1, reached by the workers over the bridge ---
      const llm = keep(
        "llm-h1",
        spawnRole("llm-server-main", [join(ROOT, "test/helpers/llm-server-main.ts"), "--hostname", h1.ip], {
          binary: "bun",
          wrap: lab.exec(h1),
          home,
        }),
      );
      const llmUrl = (await llm.waitForLine(/LLM server listening url=/, 20_000)).match(/url=(\S+)/)![1]!;

      // --- the swarm: every node on its own host's server ---
      const hid = `netns${lab.id}`;
      const common = (h: NetHost) => [
        "--swarm.nats.urls",
        `nats://${h.ip}:4222`,
        "--swarm.hid",
        hid,
        "--swarm.nats.replicas",
        "3",
        ...TIMING,
      ];
      const workerEnv = { PICOCLAW_LLM_BASE_URL: llmUrl, PICOCLAW_LLM_MODEL: "test-model" };
      const coordinator = keep(
        "coordinator-h1",
        spawnRole("coordinator.ts", [...common(h1), "--swarm.node_id", "coord-h1"], {
          env: { PICOCLAW_LLM_PROVIDER: "echo" },
          wrap: lab.exec(h1),
          home,
        }),
      );
      await coordinator.waitForLine(/Node joined swarm .*self=true/, 45_000);
      const w2 = keep(
        "worker-h2",
        spawnRole("worker.ts", [...common(h2), "--swarm.node_id", "worker-h2", "--swarm.max_concurrent", "3"], {
          env: workerEnv,
          wrap: lab.exec(h2),
          home,
        }),
      );
      const w3 = keep(
        "worker-h3",
        spawnRole("worker.ts", [...common(h3), "--swarm.node_id", "worker-h3", "--swarm.max_concurrent", "3"], {
          env: workerEnv,
          wrap: lab.exec(h3),
          home,
        }),
      );
      await Promise.all([w2, w3].map((w) => w.waitForLine(/Node joined swarm .*self=true/, 45_000)));
      for (const id of ["worker-h2", "worker-h3"]) await coordinator.waitForLine(new RegExp(`Node joined swarm node=${id}\\b`), 30_000);
      timings.swarm_joined_ms = Date.now() - t0;

      // --- warm-up, until each worker has run a sub-task ---
      // A worker that has just joined may not pull for ~5 s: its first no_wait pull on a freshly created
      // R3 consumer can get no reply and then waits out the JetStream API timeout (see the report). So
      // the scenario starts only once both workers have proven they take work (bounded: 10 rounds of six
      // 1 s sub-tasks, three per worker at a time, so an idle worker has a second to pull the rest).
      let rounds = 0;
      const warmTask = /INFO {2}Task assigned task=warm\d+_\d /;
      while (w2.countLines(warmTask) === 0 || w3.countLines(warmTask) === 0) {
        if (++rounds > 10)
          throw new Error(
            `after 10 warm-up requests a worker has still run nothing\n--- worker-h2 ---\n${w2.output()}\n--- worker-h3 ---\n${w3.output()}`,
          );
        const warm = planOf(
          `warm${rounds}`,
          [1, 2, 3, 4, 5, 6].map((k) => `warm${rounds}_${k}`),
          (id) => `${id} [[delay=1000]]`,
        );
        const r = await runRole("picoclaw.ts", ["submit", "--json", ...common(h1), "--timeout", "40s", "--plan", warm], {
          wrap: lab.exec(h1),
          home,
          timeoutMs: 45_000,
        });
        expect(r.code, `warm-up request ${rounds}:\n${r.output}`).toBe(0);
      }
      timings.warm_up_rounds = rounds;
      timings.warmed_up_ms = Date.now() - t0;
      const leaders = await placement(h1, home, hid);
      const onH3 = leaders.filter((l) => l.endsWith("=h3"));

      // --- a request with six independent 1.5 s sub-tasks, submitted from h1 ---
      const plan = planOf("scenario", TASKS, (id) => `job ${id} [[delay=1500]]`);
      const submitted = Date.now();
      const sub = keep(
        "submit-h1",
        spawnRole("picoclaw.ts", ["submit", "--json", ...common(h1), "--timeout", "2m", "--plan", plan], { wrap: lab.exec(h1), home }),
      );
      const scenarioTask = /INFO {2}Task assigned task=(t\d) /;
      await w3.waitForLine(scenarioTask, 30_000);

      // --- cut h3 off ---
      lab.cut(h3);
      const cutAt = Date.now();
      timings.cut_after_submit_ms = cutAt - submitted;

      const offline = /INFO {2}Node marked offline node=worker-h3\b/;
      const detectBound = NODE_TIMEOUT_MS + HEARTBEAT_MS + DETECTION_SLACK_MS;
      const [coordOffline, w2Offline] = await Promise.all([coordinator, w2].map((p) => p.waitForLine(offline, 30_000)));
      timings.offline_on_coordinator_ms = lineTime(coordOffline!) - cutAt;
      timings.offline_on_w2_ms = lineTime(w2Offline!) - cutAt;
      expect(timings.offline_on_coordinator_ms).toBeLessThanOrEqual(detectBound);
      expect(timings.offline_on_w2_ms).toBeLessThanOrEqual(detectBound);

      // --- the request still completes: every sub-task once, W3's redone on W2 ---
      const code = await sub.exited(120_000);
      timings.answered_after_cut_ms = Date.now() - cutAt;
      // What W3 was running when it was cut off, from its own log (timestamps, as its output reaches us
      // with some delay): assigned before the cut and not completed before it.
      const before = (re: RegExp) =>
        new Set(
          w3.lines
            .filter((l) => lineTime(l) <= cutAt)
            .map((l) => l.match(re)?.[1])
            .filter((t) => t !== undefined),
        );
      const doneBefore = before(/INFO {2}Task completed task=(t\d) /);
      const w3Tasks = [...before(scenarioTask)].filter((t) => !doneBefore.has(t));
      const events = sub.stdout.filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as SwarmEvent);
      const seen = `submit exit ${code}; W3 had ${w3Tasks.join(",")}; leaders on h3 at the cut: ${onH3.join(" ") || "none"}; events:\n${sub.stdout.join("\n")}\n--- submit output ---\n${sub.output()}`;
      expect(code, seen).toBe(0);
      const answer = events.find((e) => e.kind === "answer") as (SwarmEvent & { answer?: string }) | undefined;
      expect(answer, seen).toBeDefined();
      const taskEvents = events.filter((e) => "task" in e && e.task) as (SwarmEvent & { task: string; node?: string; attempt?: number })[];
      const completed = new Map(TASKS.map((t) => [t, taskEvents.filter((e) => e.task === t && e.kind === "completed")]));
      for (const t of TASKS) expect(completed.get(t)!.length, `completed events for ${t}\n${seen}`).toBe(1);
      expect(w3Tasks.length, `W3 was running none of the sub-tasks when it was cut off:\n${w3.output()}`).toBeGreaterThan(0);
      for (const t of w3Tasks) {
        expect(completed.get(t)![0]!.node, `node that completed ${t} (W3 had it when h3 was cut)\n${seen}`).toBe("worker-h2");
        const redo = taskEvents.find((e) => e.task === t && e.kind === "started" && e.node === "worker-h2");
        expect(redo, `W2 started ${t} again\n${seen}`).toBeDefined();
        expect(redo!.at, `W2 restarted ${t} only after the cut`).toBeGreaterThan(cutAt);
        timings[`redo_${t}_started_after_cut_ms`] = redo!.at - cutAt;
      }
      const duplicates = taskEvents.filter((e) => e.kind === "duplicate").length;
      // Nothing duplicated in the answer: one section per sub-task.
      for (const t of TASKS) {
        const sections = answer!.answer!.split("\n").filter((l) => l.startsWith("## ") && new RegExp(`\\b${t}\\b`).test(l));
        expect(sections.length, `sections for ${t} in the answer:\n${answer!.answer}`).toBe(1);
      }

      // --- heal h3: W3 is back in the swarm ---
      lab.heal(h3);
      const healAt = Date.now();
      const offlineIdx = coordinator.lines.indexOf(coordOffline!);
      const back = /INFO {2}Node (back online|joined swarm) node=worker-h3\b/;
      const backLine = await waitFor(
        `the coordinator to see worker-h3 again after healing (a line matching ${back})\n${coordinator.output()}`,
        () => coordinator.lines.slice(offlineIdx + 1).find((l) => back.test(l)),
        60_000,
        50,
      );
      timings.back_on_coordinator_after_heal_ms = lineTime(backLine) - healAt;

      // Seen from h2 too: the dashboard (an observer) counts three nodes online.
      let dash = "";
      await waitFor(
        "the dashboard on h2 to show 3 nodes online, worker-h3 among them",
        async () => {
          const r = await runRole("dashboard.ts", ["--json", ...common(h2)], { wrap: lab!.exec(h2), home, timeoutMs: 20_000 });
          dash = r.stdout;
          if (r.code !== 0) return false;
          const snap = JSON.parse(r.stdout) as {
            stats: { nodes: { online: number; busy: number } };
            nodes: { node: string; status: string }[];
          };
          const w3s = snap.nodes.find((n) => n.node === "worker-h3")?.status;
          return snap.stats.nodes.online + snap.stats.nodes.busy === 3 && (w3s === "online" || w3s === "busy");
        },
        45_000,
        500,
      ).catch((err) => {
        throw new Error(`${(err as Error).message}\nlast dashboard: ${dash}`);
      });
      timings.dashboard_ok_after_heal_ms = Date.now() - healAt;

      // And the healed swarm answers a new request, once JetStream has settled: all three servers agree
      // on a meta leader and every stream, bucket and consumer of the swarm has a leader (h3 rejoining
      // triggers new elections), and the coordinator leads again (it steps down while its lease cannot
      // be renewed). nats-server 2.9.10 sometimes never settles after a heal: two servers each keep
      // claiming the meta leadership and the third flips between them every second (seen for minutes;
      // a server bug, see the report). Then the request is not checked and the summary says why.
      let lastPlacement: string[] = [];
      let unsettled = "";
      await waitFor(
        "every stream, bucket and consumer of the swarm to have a leader after healing",
        async () => {
          if (!(await metaAgreed())) return false;
          lastPlacement = await placement(h1, home, hid);
          return lastPlacement.length === leaders.length && lastPlacement.every((l) => !l.endsWith("=none") && !l.endsWith("="));
        },
        60_000,
        500,
      ).catch((err) => {
        unsettled = `${(err as Error).message}; meta leadership as each server sees it: ${lastJsz}; placement: ${lastPlacement.join(" ") || "(none)"}`;
      });
      let afterNodes = new Set<string | undefined>();
      if (!unsettled) {
        await waitFor(
          "the coordinator to lead after healing",
          () => {
            const last = coordinator.lines.filter((l) => /Coordinator (leading|stepped down)/.test(l)).at(-1);
            return last?.includes("Coordinator leading");
          },
          60_000,
          50,
        ).catch((err) => {
          throw new Error(`${(err as Error).message}\n${coordinator.output()}`);
        });
        timings.settled_after_heal_ms = Date.now() - healAt;
        const after = planOf("after", ["after1", "after2", "after3", "after4"], (id) => `${id} after healing [[delay=300]]`);
        const afterStart = Date.now();
        const again = await runRole("picoclaw.ts", ["submit", "--json", ...common(h1), "--timeout", "60s", "--plan", after], {
          wrap: lab.exec(h1),
          home,
          timeoutMs: 70_000,
        });
        expect(again.code, `a request after healing:\n${again.output}\n--- coordinator ---\n${coordinator.output()}`).toBe(0);
        timings.request_after_heal_ms = Date.now() - afterStart;
        afterNodes = new Set(
          again.stdout
            .split("\n")
            .filter((l) => l.startsWith("{"))
            .map((l) => JSON.parse(l) as SwarmEvent & { node?: string })
            .filter((e) => e.kind === "completed" && "task" in e)
            .map((e) => e.node),
        );
      }

      const w3Reconnects = w3.countLines(/NATS reconnected/);
      const w3Late = w3.lines.filter((l) => /task=t\d /.test(l) && /Task completed|Task failed|Task attempt failed/.test(l));
      console.log(
        [
          `netns-cluster: lab ${lab.id}, hosts ${lab.hosts.map((h) => `${h.name}=${h.ip}`).join(" ")}`,
          `  timings ${Object.entries(timings)
            .map(([k, v]) => `${k}=${v}`)
            .join(" ")}`,
          `  leaders on h3 at the cut (${onH3.length} of ${leaders.length}): ${onH3.join(" ") || "none"}`,
          `  W3 had ${w3Tasks.join(",")} when cut; duplicate events in submit output: ${duplicates}; W3 "NATS reconnected" lines: ${w3Reconnects}`,
          `  W3 scenario task lines: ${w3Late.length ? w3Late.join(" | ") : "(none)"}`,
          unsettled
            ? `  request after healing NOT CHECKED: JetStream did not settle: ${unsettled}`
            : `  request after healing completed on: ${[...afterNodes].join(", ")}`,
          `  coordinator leadership lines: ${coordinator.lines
            .filter((l) => /Coordinator (leading|stepped down)|handed back/.test(l))
            .map((l) => l.slice(11, 23) + l.slice(29))
            .join(" | ")}`,
        ].join("\n"),
      );
      passed = true;
    },
    300_000,
  );
});
