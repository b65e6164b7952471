// Temporal mode against a real `temporal server start-dev`: each request runs as a workflow (id = request
// id) whose activities plan, run each sub-task over NATS and answer; another coordinator's worker finishes
// a workflow whose coordinator died, paying for no sub-task twice; Temporal unreachable at start, lost
// and back mid-run; the dashboard shows the workflow worker; Temporal off means silence.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { freePort } from "../lib/embedded-nats.ts";
import type { DashboardSnapshot } from "../roles/dashboard/snapshot.ts";
import { reaper, runRole, spawnRole, tempHome } from "./helpers/role-process.ts";
import { ECHO_ENV, swarmSuite } from "./helpers/suite.ts";
import { planFile, submit } from "./helpers/swarm.ts";
import { startTemporalServer, type TemporalServer } from "./helpers/temporal-server.ts";
import { waitFor } from "./helpers/wait.ts";

const suite = swarmSuite();
const procs = reaper();
let temporal: TemporalServer;
beforeAll(async () => {
  temporal = await startTemporalServer();
}, 120_000);
afterAll(async () => {
  await procs.killAll();
  await temporal?.stop();
});

const WARNING = /Temporal connection failed \(workflows disabled\)/;
const withTemporal = (queue: string) => ["--swarm.temporal.address", temporal.address, "--swarm.temporal.task_queue", queue];

/** The activities a workflow ran, in order, from `temporal workflow show --output json`. */
async function activities(workflowId: string): Promise<string[]> {
  const r = await temporal.cli(["workflow", "show", "--workflow-id", workflowId, "--output", "json"]);
  expect(r.code).toBe(0);
  return [...r.out.matchAll(/"activityType":\s*\{\s*"name":\s*"(\w+)"/g)].map((m) => m[1]!);
}

describe("Temporal mode", () => {
  test("each request runs as a workflow: temporal workflow list shows it, workflow show its steps; submit sees no difference", async () => {
    const swarm = await suite.start("tw1", [
      { script: "coordinator.ts", args: withTemporal("pc-tw1"), env: ECHO_ENV },
      { script: "worker.ts", env: ECHO_ENV },
    ]);
    await swarm.nodes[0]!.waitForLine(/Temporal connected: requests run as workflows .*task_queue=pc-tw1/);
    const r = await submit(swarm, ["Review this change: the HTTP client now retries failed requests"]);
    expect(r.code).toBe(0);
    const id = r.answer!.request;
    expect(r.answer?.answer).toContain("## code review — completed");
    expect(swarm.nodes[0]!.output()).toContain(`Request started as a workflow request=${id}`);
    // The workflow closes after its answer activity returns, and the list follows in the background.
    const completed = new RegExp(`Completed\\s+${id}\\s+requestWorkflow`);
    let list = "";
    await waitFor(
      () => `temporal workflow list to show ${id} Completed (last:\n${list})`,
      async () => {
        list = (await temporal.cli(["workflow", "list", "--query", "TaskQueue = 'pc-tw1'"])).out;
        return completed.test(list);
      },
      20_000,
      250,
    );
    expect(await activities(id)).toEqual(["plan", "runSubTask", "runSubTask", "runSubTask", "runSubTask", "answer"]);
    // The README's commands as written for a server on another port than 7233: --address, and --detailed
    // for the steps (the table form shows event types only). temporal.cli adds `--address <host:port>`.
    const shown = await temporal.cli(["workflow", "show", "--workflow-id", id, "--detailed"]);
    expect(shown.code).toBe(0);
    expect([...shown.out.matchAll(/activityType\.name: (\w+)/g)].map((m) => m[1])).toEqual([
      "plan",
      "runSubTask",
      "runSubTask",
      "runSubTask",
      "runSubTask",
      "answer",
    ]);
    const listed = await temporal.cli(["workflow", "list"]);
    expect(listed.out).toMatch(completed);
  });

  test("no unexplained runtime warning: the SDK's promiseHooks line under Bun is not on the coordinator's stderr", async () => {
    const swarm = await suite.start("tw7", [
      { script: "coordinator.ts", args: withTemporal("pc-tw7"), env: ECHO_ENV },
      { script: "worker.ts", env: ECHO_ENV },
    ]);
    const coord = swarm.nodes[0]!;
    await coord.waitForLine(/Temporal connected: requests run as workflows/);
    // The workflow threads start (and the SDK would print its line) when the first workflow runs.
    const r = await submit(swarm, ["a workflow, so the workflow threads run"]);
    expect(r.code).toBe(0);
    expect(coord.output()).toContain(`Request started as a workflow request=${r.answer!.request}`);
    expect(coord.output()).not.toContain("promiseHooks");
    // Every line is one of our log lines: nothing raw from the SDK or its threads.
    expect(coord.lines.filter((l) => !/^\d{4}-\d\d-\d\dT[\d:.]+Z (DEBUG|INFO|WARN|ERROR) /.test(l))).toEqual([]);
  });

  test("a sub-task that needs exec runs, as a workflow activity, on the one worker that has exec", async () => {
    suite.llm.script((b) => {
      if (!String(b.messages?.find((m) => m.role === "user")?.content ?? "").includes("<tw-exec>")) return undefined;
      const seen = (b.messages ?? []).filter((m) => m.role === "tool");
      return seen.length === 0
        ? { tool_calls: [{ name: "exec", arguments: JSON.stringify({ command: "expr 20 + 22" }) }] }
        : `exec said ${seen[0]!.content}`;
    });
    try {
      const swarm = await suite.start("tw6", [
        { script: "coordinator.ts", args: withTemporal("pc-tw6"), env: ECHO_ENV },
        { script: "worker.ts", env: suite.llmEnv() },
        { script: "worker.ts", args: ["--tools.exec.enabled"], env: suite.llmEnv() },
      ]);
      await swarm.nodes[0]!.waitForLine(/Temporal connected: requests run as workflows .*task_queue=pc-tw6/);
      const plan = planFile("tasks:\n  - { id: run, capability: general, tools: [exec], prompt: '<tw-exec> add' }\n");
      for (let i = 0; i < 2; i++) {
        const r = await submit(swarm, ["--plan", plan]);
        expect(r.code).toBe(0);
        expect(r.answer!.answer!).toContain("exec said 42");
        const started = r.events.find((e) => e.kind === "started" && "task" in e && e.task === "run") as { node?: string };
        expect(started.node).toBe(swarm.ids[2]!);
        expect(swarm.nodes[0]!.output()).toContain(`Request started as a workflow request=${r.answer!.request}`);
      }
    } finally {
      suite.llm.script(undefined);
    }
  });

  test("a call waiting for approval: the workflow waits for the decision signal (no worker held), picoclaw approve sends it, the workflow finishes", async () => {
    suite.llm.script((b) => {
      if (!String(b.messages?.find((m) => m.role === "user")?.content ?? "").includes("<tw-approve>")) return undefined;
      const seen = (b.messages ?? []).filter((m) => m.role === "tool");
      return seen.length === 0
        ? { tool_calls: [{ name: "exec", arguments: JSON.stringify({ command: "expr 40 + 2" }) }] }
        : `exec said ${seen[0]!.content}`;
    });
    try {
      const swarm = await suite.start("tw7", [
        { script: "coordinator.ts", args: withTemporal("pc-tw7"), env: ECHO_ENV },
        { script: "worker.ts", args: ["--tools.exec.enabled", "--tools.approval.required", "exec"], env: suite.llmEnv() },
      ]);
      const coordinator = swarm.nodes[0]!;
      await coordinator.waitForLine(/Temporal connected: requests run as workflows .*task_queue=pc-tw7/);
      const client = procs.track(
        spawnRole("picoclaw.ts", ["submit", "--json", "--capabilities", "general", ...swarm.common, "<tw-approve> add"], {}),
      );
      const line = await client.waitForLine(/waiting for approval of exec/, 30_000);
      const id = /\((ap-[0-9a-f]{10}),/.exec(line)![1]!;
      await swarm.nodes[1]!.waitForLine(/Sub-task parked: a tool call waits for approval/, 10_000);
      // The sub-task activity has ended: the wait is the workflow's own (it waits for a signal).
      await coordinator.waitForLine(new RegExp(`Task parked: waiting for approval .*approvals=${id} workflow=true`), 10_000);
      const request = /"request":"(r-[0-9a-f]+)"/.exec(client.stdout.join("\n"))![1]!;
      const ok = await runRole("picoclaw.ts", ["approve", id, ...swarm.common]);
      expect(ok.code).toBe(0);
      expect(await client.exited(60_000)).toBe(0);
      expect(client.output()).toContain("exec said 42");
      expect(coordinator.output()).toContain(`Tool call approved request=${request}`);
      // Visible in the workflow's history: the sub-task ran, parked, got the decision signal, ran again.
      expect(await activities(request)).toEqual(["plan", "runSubTask", "runSubTask", "answer"]);
      const shown = await temporal.cli(["workflow", "show", "--workflow-id", request, "--output", "json"]);
      type HistoryEvent = { workflowExecutionSignaledEventAttributes?: { signalName: string; input: { payloads: { data: string }[] } } };
      const signals = (JSON.parse(shown.out) as { events: HistoryEvent[] }).events.flatMap((e) => {
        const a = e.workflowExecutionSignaledEventAttributes;
        return a ? [{ name: a.signalName, value: JSON.parse(Buffer.from(a.input.payloads[0]!.data, "base64").toString()) }] : [];
      });
      expect(signals).toEqual([{ name: "decision", value: { id, outcome: "approved" } }]);
    } finally {
      suite.llm.script(undefined);
    }
  });

  test("the coordinator running a workflow is killed mid-request: another coordinator's worker finishes it, no sub-task paid twice", async () => {
    const args = [...withTemporal("pc-tw2"), "--swarm.lease_ttl", "2s"];
    const swarm = await suite.start("tw2", [
      { script: "coordinator.ts", args, env: ECHO_ENV },
      { script: "coordinator.ts", args, env: ECHO_ENV },
      { script: "worker.ts", args: ["--swarm.max_concurrent", "4"], env: suite.llmEnv() },
    ]);
    for (const c of swarm.nodes.slice(0, 2)) await c.waitForLine(/Temporal connected/);
    const plan = planFile(
      "tasks:\n  - { id: quick, capability: general, prompt: 'quick [[reply=q]]' }\n  - { id: long, capability: general, prompt: 'long-one [[delay=6000]] [[reply=l]]' }\n",
    );
    const sub = procs.track(spawnRole("picoclaw.ts", ["submit", "--json", ...swarm.common, "--plan", plan]));
    // The coordinator whose activity waits for the long sub-task logs its assignment: that one dies.
    const runner = await waitFor("the coordinator waiting for the long sub-task", () =>
      swarm.nodes.slice(0, 2).find((c) => c.lines.some((l) => l.includes("Task assigned task=long"))),
    );
    runner.signal("SIGKILL");
    expect(await sub.exited(60_000)).toBe(0);
    expect(sub.output()).toContain('"kind":"answer"');
    // An assistant turn that only calls tools (the exec test's) has no content.
    const calls = (marker: string) =>
      suite.llm.requests.filter((q) => q.body.messages?.some((m) => String(m.content ?? "").includes(marker))).length;
    expect({ long: calls("long-one"), quick: calls("quick [[") }).toEqual({ long: 1, quick: 1 });
    const survivor = swarm.nodes.slice(0, 2).find((c) => c !== runner)!;
    // Logged once its answer is stored, which can be a moment after submit already printed it.
    await survivor.waitForLine(/Request answered .*workflow=true/);
    await procs.killAll();
  }, 90_000);

  test("Temporal lost mid-run: new requests are answered without it; back: the open workflow finishes and new ones are workflows again", async () => {
    const swarm = await suite.start("tw3", [
      { script: "coordinator.ts", args: withTemporal("pc-tw3"), env: ECHO_ENV },
      { script: "worker.ts", args: ["--swarm.max_concurrent", "4"], env: suite.llmEnv() },
    ]);
    const coord = swarm.nodes[0]!;
    await coord.waitForLine(/Temporal connected/);
    const open = procs.track(
      spawnRole("picoclaw.ts", ["submit", "--json", ...swarm.common, "slow one [[delay=5000]] [[reply=finished later]]"]),
    );
    await waitFor("the slow request running as a workflow", () => coord.lines.some((l) => l.includes("Request started as a workflow")));
    await swarm.nodes[1]!.waitForLine(/Task assigned/);
    await temporal.down();
    await coord.waitForLine(/Temporal unreachable: new requests run without workflow persistence/, 20_000);
    // Said once, readably: the SDK's retried polls are not repeated as raw gRPC errors.
    expect(coord.output()).not.toMatch(/tonic|Status \{|ConnectError/);
    const during = await submit(swarm, ["while Temporal is away [[reply=still answered]]"]);
    expect(during.code).toBe(0);
    expect(during.answer?.answer).toContain("still answered");
    // Dashboards see it: no coordinator's workflow worker is polling.
    const down = JSON.parse((await runRole("dashboard.ts", ["--json", ...swarm.common])).stdout) as DashboardSnapshot;
    expect(down.connections.temporal).toMatchObject({ enabled: true, connected: false, address: temporal.address });
    await temporal.up();
    await coord.waitForLine(/Temporal back: new requests run as workflows/, 30_000);
    expect(await open.exited(90_000)).toBe(0);
    expect(open.output()).toContain("finished later");
    const after = await submit(swarm, ["after Temporal is back"]);
    expect(after.code).toBe(0);
    expect(coord.output()).toContain(`Request started as a workflow request=${after.answer!.request}`);
    // Workflow counts come from Temporal's visibility store, asked every 2 s, and travel in heartbeats: a
    // workflow completes just after its answer is published, so the count may trail the answer by seconds.
    let up: DashboardSnapshot | undefined;
    await waitFor(
      () => `a dashboard counting both workflows completed (last: ${JSON.stringify(up?.connections.temporal)})`,
      async () => {
        up = JSON.parse((await runRole("dashboard.ts", ["--json", ...swarm.common])).stdout) as DashboardSnapshot;
        return (up.connections.temporal.completed ?? 0) >= 2;
      },
      20_000,
      250,
    );
    expect(up!.connections.temporal).toMatchObject({ enabled: true, connected: true, polling: 1 });
    expect(up!.connections.temporal.completed).toBeGreaterThanOrEqual(2);
    const frame = await runRole("dashboard.ts", ["--once", ...swarm.common]);
    expect(frame.stdout).toMatch(/Temporal: ✓ Yes 127\.0\.0\.1:\d+ · 1 coordinator\(s\) polling · \d+ running, \d+ completed/);
  }, 180_000);
});

describe("Temporal off or away", () => {
  test("unreachable at start: the guide's warning once, and requests are answered on the JetStream path", async () => {
    const address = `127.0.0.1:${await freePort()}`;
    const swarm = await suite.start("tw4", [
      { script: "coordinator.ts", args: ["--swarm.temporal.address", address], env: ECHO_ENV },
      { script: "worker.ts", args: ["--swarm.temporal.address", address], env: ECHO_ENV },
    ]);
    const coord = swarm.nodes[0]!;
    const warning = await coord.waitForLine(WARNING);
    // One readable line naming the address: no raw gRPC error (tonic::transport::Error(...)), no stack.
    expect(warning).toContain(`address=${address} error="connection refused by ${address} (is the Temporal server running there?)"`);
    expect(coord.output()).not.toMatch(/tonic|Status \{|ConnectError|\n\s+at /);
    const r = await submit(swarm, ["hello without workflows"]);
    expect(r.code).toBe(0);
    expect(coord.countLines(WARNING)).toBe(1);
    expect(coord.output()).not.toContain("Request started as a workflow");
    // Only coordinators use Temporal: a worker with the same setting says nothing about it.
    expect(swarm.nodes[1]!.countLines(/Temporal/)).toBe(0);
    expect(coord.output()).not.toMatch(/tonic|Status \{|ConnectError/);
    const board = await runRole("dashboard.ts", ["--once", ...swarm.common, "--swarm.temporal.address", address]);
    expect(board.stdout).toContain(`Temporal: ✗ No  ${address} (workflows disabled)`);
  });

  test('--swarm.temporal.address="" turns it off silently', async () => {
    const swarm = await suite.start("tw5", [{ script: "coordinator.ts", args: ["--swarm.temporal.address="], env: ECHO_ENV }]);
    swarm.nodes[0]!.signal("SIGTERM");
    expect(await swarm.nodes[0]!.exited()).toBe(0);
    expect(swarm.nodes[0]!.countLines(/Temporal/)).toBe(0);
  });

  test("the guide's Large Swarm config (temporal: enabled: true) loads as written and means Temporal at localhost:7233", async () => {
    const home = tempHome();
    mkdirSync(join(home, ".picoclaw"));
    writeFileSync(
      join(home, ".picoclaw", "config.yaml"),
      "swarm:\n  max_concurrent: 20\n  nats:\n    heartbeat_interval: 3s\n    node_timeout: 15s\n  temporal:\n    enabled: true  # Required for workflow persistence\n",
    );
    const c = await runRole("picoclaw.ts", ["config"], { home });
    expect(c.code).toBe(0);
    expect(c.stdout).toContain("swarm.temporal.enabled = true");
    // Started with it (and nothing on localhost:7233 here), a coordinator names that address in its warning.
    const coord = procs.track(
      spawnRole("coordinator.ts", ["--swarm.nats.urls", suite.nats.url, "--swarm.hid", "tw6"], { home, env: ECHO_ENV }),
    );
    const warning = await coord.waitForLine(WARNING, 20_000);
    expect(warning).toContain("address=localhost:7233");
    await procs.killAll();
  });
});
