// Swarms of real role processes (`bun roles/<role>.ts`) for the benchmark, and a submitting client.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NatsConnection } from "nats";
import { newRequestId } from "../../lib/ids.ts";
import { decode, encode } from "../../lib/messages.ts";
import { type SwarmNames, swarmNames } from "../../lib/subjects.ts";
import { MAX_PIPELINE_MESSAGE_BYTES, type RequestEvent, type RequestMsg, requestEventSchema } from "../../lib/task-messages.ts";
import { type Child, ROOT, spawnChild, until } from "./util.ts";

export function tempHome(): string {
  return mkdtempSync(join(tmpdir(), "picoclaw-bench-home-"));
}

export interface SwarmOptions {
  natsUrl: string;
  hid: string;
  workers: number;
  /** max_concurrent of each worker. */
  workerSlots: number;
  coordinatorSlots: number;
  coordinatorArgs?: string[];
  /** Run this executable (e.g. dist/picoclaw-coordinator) instead of `bun roles/coordinator.ts`. */
  coordinatorBinary?: string;
  coordinatorEnv?: Record<string, string>;
  workerEnv?: Record<string, string>;
  /** More flags for every worker (e.g. `--agents.defaults.workspace DIR`). */
  workerArgs?: string[];
}

export interface BenchSwarm {
  names: SwarmNames;
  coordinator: Child;
  workers: Child[];
  /** Starts `n` more workers and waits until the coordinator has seen them join. */
  addWorkers(n: number): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Coordinator + workers, heartbeats every 1s. The coordinator logs at info (its `Node joined swarm`
 * lines tell us when it knows every worker); workers log at warn so the bench does not spend its
 * CPU reading a line per sub-task.
 */
export async function startBenchSwarm(o: SwarmOptions): Promise<BenchSwarm> {
  const common = [
    "--swarm.nats.urls",
    o.natsUrl,
    "--swarm.hid",
    o.hid,
    "--swarm.nats.heartbeat_interval",
    "1s",
    "--swarm.nats.node_timeout",
    "5s",
  ];
  const home = tempHome();
  // BENCH_PROFILE=DIR: every coordinator and worker writes a Markdown CPU profile there when it stops.
  const profile: Record<string, string> = process.env.BENCH_PROFILE
    ? { BUN_OPTIONS: `--cpu-prof-md --cpu-prof-dir=${process.env.BENCH_PROFILE}` }
    : {};
  const base = { PICOCLAW_LLM_PROVIDER: "echo", HOME: home, ...profile };
  const coordinator = spawnChild(
    [
      ...(o.coordinatorBinary ? [o.coordinatorBinary] : ["bun", join(ROOT, "roles/coordinator.ts")]),
      ...common,
      "--log.level",
      "info",
      "--swarm.max_concurrent",
      String(o.coordinatorSlots),
      ...(o.coordinatorArgs ?? []),
    ],
    { env: { ...base, ...o.coordinatorEnv } },
  );
  const workers: Child[] = [];
  const spawnWorker = () =>
    spawnChild(
      [
        "bun",
        join(ROOT, "roles/worker.ts"),
        ...common,
        "--log.level",
        "warn",
        "--swarm.max_concurrent",
        String(o.workerSlots),
        ...(o.workerArgs ?? []),
      ],
      {
        env: { ...base, ...o.workerEnv },
      },
    );
  const joined = () => coordinator.lines.filter((l) => /Node joined swarm .*role=worker/.test(l.text)).length;
  const swarm: BenchSwarm = {
    names: swarmNames(o.hid),
    coordinator,
    workers,
    async addWorkers(n) {
      const want = workers.length + n;
      for (let i = 0; i < n; i++) workers.push(spawnWorker());
      await until(`${want} workers joined (coordinator output:\n${coordinator.output()})`, () => joined() >= want, 30_000, 10);
    },
    async stop() {
      await Promise.all([coordinator, ...workers].map((c) => c.stop("SIGTERM", 15_000)));
    },
  };
  await coordinator.waitLine(/Node joined swarm .*self=true/, 30_000);
  await coordinator.waitLine(/Coordinator leading/, 30_000);
  await swarm.addWorkers(o.workers);
  return swarm;
}

export interface PlanTaskSpec {
  id: string;
  capability: string;
  prompt: string;
  depends_on?: string[];
}

export interface Submitted {
  request: string;
  /** performance.now() just before the publish. */
  submittedAt: number;
  answeredAt: number;
  answer: RequestEvent;
}

/** Submits requests as `picoclaw submit` does (a JetStream publish to request.submit) and follows answers. */
export function swarmClient(nc: NatsConnection, names: SwarmNames) {
  const waiting = new Map<string, (e: RequestEvent) => void>();
  const sub = nc.subscribe(names.requestEventsAll, {
    callback: (_e, m) => {
      const d = decode(requestEventSchema, m.data, MAX_PIPELINE_MESSAGE_BYTES);
      if (!d.ok) return;
      if (d.value.kind === "answer" || d.value.kind === "failed") waiting.get(d.value.request)?.(d.value);
    },
  });
  const js = nc.jetstream();
  return {
    async submit(text: string, plan?: { tasks: PlanTaskSpec[] }): Promise<Submitted> {
      const request = newRequestId();
      const answered = new Promise<RequestEvent>((resolve) => waiting.set(request, resolve));
      const submittedAt = performance.now();
      const msg: RequestMsg = { v: 1, request, text, submitted_at: Date.now(), ...(plan ? { plan } : { capabilities: ["general"] }) };
      await js.publish(names.requestSubmit, encode(msg));
      const answer = await answered;
      const answeredAt = performance.now();
      waiting.delete(request);
      if (answer.kind !== "answer" || answer.status !== "completed") {
        throw new Error(`request ${request} was not completed: ${answer.kind} ${answer.status ?? ""} ${answer.error ?? ""}`);
      }
      return { request, submittedAt, answeredAt, answer };
    },
    close: () => sub.unsubscribe(),
  };
}

/** An explicit plan of `n` independent no-op sub-tasks (the offline echo provider answers them). */
export function noopPlan(n: number, prompt = (i: number) => `noop ${i}`): { tasks: PlanTaskSpec[] } {
  return { tasks: Array.from({ length: n }, (_, i) => ({ id: `t${i}`, capability: "general", prompt: prompt(i) })) };
}
