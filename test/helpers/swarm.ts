// A small swarm of real role processes on one nats-server, and `picoclaw submit` as a user runs it.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { RequestEvent, TaskEvent } from "../../lib/task-messages.ts";
import type { NatsServer } from "./nats-server.ts";
import { FAST, type RoleProcess, runRole, spawnRole, tempHome } from "./role-process.ts";

export interface NodeSpec {
  script: "coordinator.ts" | "worker.ts" | "specialist.ts";
  args?: string[];
  env?: Record<string, string>;
}

export interface Swarm {
  nodes: RoleProcess[];
  /** Node id of each process, in spec order. */
  ids: string[];
  common: string[];
  stop(): Promise<void>;
}

export function selfId(p: RoleProcess): string {
  const id = p.lines.find((l) => l.includes("Node joined swarm") && l.includes("self=true"))?.match(/node=(\S+)/)?.[1];
  if (!id) throw new Error(`no self join line in:\n${p.output()}`);
  return id;
}

/** Starts the nodes and waits until the coordinator (first spec) has seen every other node join. */
export async function startSwarm(nats: NatsServer, hid: string, specs: NodeSpec[]): Promise<Swarm> {
  const common = ["--swarm.nats.urls", nats.url, "--swarm.hid", hid, ...FAST];
  const home = tempHome();
  const nodes = specs.map((s) => spawnRole(s.script, [...common, ...(s.args ?? [])], { env: s.env, home }));
  for (const p of nodes) await p.waitForLine(/Node joined swarm .*self=true/, 15_000);
  const ids = nodes.map(selfId);
  const watcher = nodes[0]!;
  for (const id of ids.slice(1)) await watcher.waitForLine(new RegExp(`Node joined swarm node=${id}\\b`), 15_000);
  return {
    nodes,
    ids,
    common,
    async stop() {
      for (const p of nodes) if (p.proc.exitCode === null) p.signal("SIGTERM");
      await Promise.all(nodes.map((p) => p.exited(15_000).catch(() => p.proc.kill("SIGKILL"))));
    },
  };
}

export type SwarmEvent = (RequestEvent | TaskEvent) & { kind: string };

export interface SubmitRun {
  code: number;
  events: SwarmEvent[];
  answer?: RequestEvent;
  output: string;
}

/** `picoclaw submit --json ...`; returns the exit code and every event it printed. */
export async function submit(swarm: Swarm, args: string[], timeoutMs = 60_000, stdin?: string): Promise<SubmitRun> {
  const r = await runRole("picoclaw.ts", ["submit", "--json", ...swarm.common, ...args], { timeoutMs, stdin });
  const events = r.stdout
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as SwarmEvent);
  const answer = events.find((e) => e.kind === "answer" || (e.kind === "failed" && !("task" in e && e.task))) as RequestEvent | undefined;
  return { code: r.code, events, answer, output: r.output };
}

/** Writes a plan file (YAML or JSON text) into a temp dir and returns its path. */
export function planFile(text: string): string {
  const path = join(tempHome(), "plan.yaml");
  writeFileSync(path, text);
  return path;
}

/** [start, end] of each sub-task's successful run, from its own started/completed events. */
export function runIntervals(events: SwarmEvent[]): Map<string, { node: string; start: number; end: number }> {
  const out = new Map<string, { node: string; start: number; end: number }>();
  const starts = new Map<string, number>();
  for (const e of events) {
    if (!("task" in e) || !e.task || !("node" in e)) continue;
    const key = `${e.task}@${e.node}`;
    if (e.kind === "started") starts.set(key, e.at);
    if (e.kind === "completed" && starts.has(key)) out.set(e.task, { node: e.node!, start: starts.get(key)!, end: e.at });
  }
  return out;
}

/** Highest number of runs overlapping at any instant. */
export function maxOverlap(intervals: { start: number; end: number }[]): number {
  const points = intervals.flatMap(
    (i) =>
      [
        [i.start, 1],
        [i.end, -1],
      ] as [number, number][],
  );
  points.sort((a, b) => a[0] - b[0] || a[1] - b[1]); // ends before starts at the same instant
  let cur = 0;
  let max = 0;
  for (const [, d] of points) {
    cur += d;
    max = Math.max(max, cur);
  }
  return max;
}
