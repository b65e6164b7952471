// Tasks on the dashboard: while a worker runs sub-tasks, `dashboard --json` lists them under the worker and
// counts queued / running; afterwards it counts them done. Real nats-server, role processes, LLM server.
import { afterAll, afterEach, beforeAll, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { DashboardSnapshot, SnapshotNode } from "../roles/dashboard/snapshot.ts";
import { type LlmServer, startLlmServer } from "./helpers/llm-server.ts";
import { type NatsServer, startNatsServer } from "./helpers/nats-server.ts";
import { FAST, type RoleProcess, reaper, runRole, spawnRole, tempHome } from "./helpers/role-process.ts";
import { waitFor } from "./helpers/wait.ts";

// Each sub-task holds its slot this long: long enough that a dashboard run (start + 1.5 s query window)
// lands inside the first pair's run even on a loaded machine (several tries of one, when each is slow).
const TASK_MS = 8_000;
const WAIT_MS = 15_000;

let nats: NatsServer;
let llm: LlmServer;
const procs = reaper();
beforeAll(async () => {
  [nats, llm] = await Promise.all([startNatsServer(), startLlmServer()]);
});
afterEach(() => procs.killAll());
afterAll(async () => {
  await Promise.all([nats.stop(), llm.stop()]);
});

function selfId(p: RoleProcess): string {
  const id = p.lines.find((l) => l.includes("Node joined swarm") && l.includes("self=true"))?.match(/node=(\S+)/)?.[1];
  if (!id) throw new Error(`no self join line in:\n${p.output()}`);
  return id;
}

/** One `dashboard.ts --json` run (exit 0 required), parsed. */
async function dashboardJson(common: string[]): Promise<DashboardSnapshot> {
  const r = await runRole("dashboard.ts", ["--json", ...common]);
  if (r.code !== 0) throw new Error(`dashboard --json exited ${r.code}:\n${r.output}`);
  return JSON.parse(r.stdout) as DashboardSnapshot;
}

/** Runs the dashboard until `ok` holds for its snapshot; the error names the last snapshot seen. */
async function dashboardUntil(what: string, common: string[], ok: (s: DashboardSnapshot) => boolean): Promise<DashboardSnapshot> {
  let last: DashboardSnapshot | undefined;
  try {
    return await waitFor(
      what,
      async () => {
        last = await dashboardJson(common);
        return ok(last) ? last : undefined;
      },
      WAIT_MS,
    );
  } catch (err) {
    const seen = last
      ? JSON.stringify({
          tasks: last.tasks,
          nodes: last.nodes.map((n) => ({
            node: n.node,
            role: n.role,
            status: n.status,
            running: n.running,
            tasks: n.tasks,
            done: n.done,
            failed: n.failed,
          })),
        })
      : "no snapshot";
    throw new Error(`${(err as Error).message}\nlast snapshot: ${seen}`);
  }
}

test("dashboard --json shows the worker's running tasks, queued/running while they run, and done afterwards", async () => {
  const hid = `dt-${Date.now().toString(36)}`;
  const common = ["--swarm.nats.urls", nats.url, "--swarm.hid", hid, ...FAST];
  const home = tempHome();
  const coord = procs.track(spawnRole("coordinator.ts", common, { home, env: { PICOCLAW_LLM_PROVIDER: "echo" } }));
  const worker = procs.track(
    spawnRole("worker.ts", [...common, "--swarm.max_concurrent", "2"], {
      home,
      env: { PICOCLAW_LLM_BASE_URL: llm.url, PICOCLAW_LLM_MODEL: "test" },
    }),
  );
  await worker.waitForLine(/Node joined swarm .*self=true/, WAIT_MS);
  const workerId = selfId(worker);
  await coord.waitForLine(new RegExp(`Node joined swarm node=${workerId}\\b`), WAIT_MS);

  // Nothing has run yet: the queue stream may not even have a consumer with work; all counts are zero.
  const idle = await dashboardJson(common);
  expect(idle.tasks).toEqual({ queued: 0, running: 0, done: 0, failed: 0 });

  const plan = join(home, "plan.yaml");
  const ids = ["a", "b", "c", "d"];
  writeFileSync(
    plan,
    `tasks:\n${ids.map((id) => `  - { id: ${id}, capability: general, prompt: "part ${id} [[delay=${TASK_MS}]]" }`).join("\n")}\n`,
  );
  const submit = procs.track(spawnRole("picoclaw.ts", ["submit", "--json", ...common, "--plan", plan], { home }));

  const busy = await dashboardUntil("the worker running 2 tasks with 2 queued", common, (s) => {
    const w = s.nodes.find((n) => n.node === workerId);
    // Its status too: a heartbeat late by two intervals on a loaded machine reads "suspicious" for a moment.
    return w?.tasks.length === 2 && w.status === "busy" && s.tasks.running === 2 && s.tasks.queued === 2;
  });
  const w = busy.nodes.find((n) => n.node === workerId) as SnapshotNode;
  expect(w.running).toBe(2);
  expect(w.status).toBe("busy");
  for (const t of w.tasks) {
    expect(t).toEqual({
      request: expect.stringMatching(/^r-/),
      task: expect.any(String),
      capability: "general",
      started_at: expect.any(Number),
      // The worker has the default file tools: its sub-tasks run as tool loops, at their first model call.
      step: "thinking",
    });
    expect(ids).toContain(t.task);
    expect(t.started_at).toBeLessThanOrEqual(Date.parse(busy.generated_at) + 1_000);
  }
  expect(new Set(w.tasks.map((t) => t.request)).size).toBe(1);
  expect(busy.tasks).toMatchObject({ queued: 2, running: 2, failed: 0 });
  expect(busy.this_node.tasks).toEqual([]); // the observer itself runs nothing

  const code = await submit.exited(WAIT_MS + 4 * TASK_MS);
  if (code !== 0) throw new Error(`submit exited ${code}:\n${submit.output()}`);
  const after = await dashboardUntil("4 done, none running or queued", common, (s) => s.tasks.done === 4);
  expect(after.tasks).toEqual({ queued: 0, running: 0, done: 4, failed: 0 });
  const wAfter = after.nodes.find((n) => n.node === workerId) as SnapshotNode;
  expect(wAfter).toMatchObject({ running: 0, tasks: [], done: 4, failed: 0 });

  // The text dashboard shows the same counts.
  const once = await runRole("dashboard.ts", ["--once", ...common]);
  expect(once.code).toBe(0);
  expect(once.stdout).toContain("  Tasks:      0 queued, 0 running, 4 done, 0 failed");
}, 120_000);

test("dashboards show each node's tools and the step a running sub-task's tool loop is at", async () => {
  const home = tempHome();
  const counter = join(home, "counter.txt");
  writeFileSync(counter, "");
  llm.script((b) => {
    if (!String(b.messages?.find((m) => m.role === "user")?.content ?? "").includes("<slow-step>")) return undefined;
    const seen = (b.messages ?? []).filter((m) => m.role === "tool").length;
    return seen === 0
      ? { tool_calls: [{ name: "mcp_counter_increment", arguments: JSON.stringify({ label: "slow", delay_ms: TASK_MS }) }] }
      : "counted";
  });
  try {
    const common = ["--swarm.nats.urls", nats.url, "--swarm.hid", "dt2", ...FAST];
    const mcp = JSON.stringify({ counter: { command: "bun", args: [join(import.meta.dir, "fixtures/mcp-counter-server.ts"), counter] } });
    const worker = procs.track(
      spawnRole("worker.ts", [...common, "--tools.exec.enabled"], {
        env: { PICOCLAW_LLM_BASE_URL: llm.url, PICOCLAW_LLM_MODEL: "m", PICOCLAW_TOOLS_MCP_SERVERS: mcp },
        home,
      }),
    );
    const coord = procs.track(spawnRole("coordinator.ts", common, { env: { PICOCLAW_LLM_PROVIDER: "echo" }, home }));
    for (const p of [worker, coord]) await p.waitForLine(/Node joined swarm .*self=true/, 15_000);
    const workerId = selfId(worker);
    const submit = procs.track(spawnRole("picoclaw.ts", ["submit", ...common, "<slow-step> count slowly"], { home }));
    const during = await dashboardUntil("the worker's sub-task at its MCP call", common, (s) =>
      Boolean(s.nodes.find((n) => n.node === workerId)?.tasks.some((t) => t.step?.startsWith("mcp_counter_increment"))),
    );
    const w = during.nodes.find((n) => n.node === workerId) as SnapshotNode;
    expect(w.tools).toEqual(expect.arrayContaining(["exec", "list_dir", "read_file", "mcp_counter_count", "mcp_counter_increment"]));
    expect(w.tasks[0]!.step).toBe('mcp_counter_increment "slow"');
    // The terminal dashboard: the tools under the node, the step beside its running sub-task.
    const once = await runRole("dashboard.ts", ["--once", ...common]);
    expect(once.stdout).toContain(
      "      tools: append_file, edit_file, exec, list_dir, mcp_counter_count, mcp_counter_crash, mcp_counter_increment, read_file and 1 more",
    );
    expect(once.stdout).toMatch(/↳ general \(general\) r-\S+ \S+ · mcp_counter_increment "slow"/);
    expect(await submit.exited(WAIT_MS + 2 * TASK_MS)).toBe(0);
    // `submit` printed the call when it ended.
    expect(submit.output()).toMatch(/general task: mcp_counter_increment "slow" on claw-\S+, \d+(\.\d+)?s, ok/);
  } finally {
    llm.script(undefined);
  }
}, 120_000);
