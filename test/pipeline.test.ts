// Requests become answers: the guide's code-review swarm, capability routing, concurrency limits,
// priorities and DAG inputs — real nats-server, real role processes, a real OpenAI-style HTTP server.
import { describe, expect, test } from "bun:test";
import { connect } from "nats";
import { swarmNames, taskKeys } from "../lib/subjects.ts";
import { ECHO_ENV, swarmSuite } from "./helpers/suite.ts";
import { maxOverlap, planFile, runIntervals, submit } from "./helpers/swarm.ts";

const suite = swarmSuite();

const llmEnv = () => suite.llmEnv();
const echoEnv = ECHO_ENV;

describe("task pipeline", () => {
  test("code review: four sub-tasks run in parallel on the four specialists; the answer has all four sections", async () => {
    const swarm = await suite.start("p1", [
      { script: "coordinator.ts", args: ["--swarm.capabilities", "coordination"], env: echoEnv },
      { script: "specialist.ts", args: ["--swarm.capabilities", "rust,go,python"], env: llmEnv() },
      { script: "specialist.ts", args: ["--swarm.capabilities", "security,audit"], env: llmEnv() },
      { script: "specialist.ts", args: ["--swarm.capabilities", "docs,writing"], env: llmEnv() },
      { script: "specialist.ts", args: ["--swarm.capabilities", "testing,qa"], env: llmEnv() },
    ]);
    const r = await submit(swarm, ["Review this change: retry failed HTTP calls [[delay=3000 tokens=6]]"]);
    expect(r.code).toBe(0);
    const planned = r.events.find((e) => e.kind === "planned") as { plan?: { tasks: { capability: string }[] } };
    expect(planned.plan!.tasks.map((t) => t.capability)).toEqual(["rust", "security", "docs", "testing"]);

    const runs = runIntervals(r.events);
    expect(runs.size).toBe(4);
    // Each on a different specialist, the one whose capability fits.
    const nodeOf = (task: string) => runs.get(task)!.node;
    expect(nodeOf("code")).toBe(swarm.ids[1]!);
    expect(nodeOf("security")).toBe(swarm.ids[2]!);
    expect(nodeOf("docs")).toBe(swarm.ids[3]!);
    expect(nodeOf("testing")).toBe(swarm.ids[4]!);
    // In parallel: all four execution intervals overlap (each call lasts 3 s: time for all four to start
    // on a loaded machine).
    expect(maxOverlap([...runs.values()])).toBe(4);

    const answer = r.answer!.answer!;
    for (const section of [
      "## code review — completed",
      "## security review — completed",
      "## docs review — completed",
      "## testing review — completed",
    ]) {
      expect(answer).toContain(section);
    }
    expect(answer).toContain("ok: "); // the LLM server's replies made it into the answer
    expect(r.answer!.usage!.total_tokens).toBeGreaterThan(0);
    // The guide's log lines on the coordinator.
    expect(swarm.nodes[0]!.countLines(/INFO {2}Task assigned task=\S+ .*node=claw-\S+ capability=/)).toBe(4);
    expect(swarm.nodes[1]!.countLines(/INFO {2}Task completed task=code .*node=.* duration_ms=\d+/)).toBe(1);
  });

  test("a sub-task's events (started, progress, completed) reach submit live and none is stored; its result is stored once, in KV", async () => {
    const swarm = await suite.start("p7", [
      { script: "coordinator.ts", env: echoEnv },
      { script: "worker.ts", env: llmEnv() },
    ]);
    const r = await submit(swarm, ["[[delay=2500 tokens=10]] a streamed call"]);
    expect(r.code).toBe(0);
    const heard = r.events.filter((e) => e.kind === "progress");
    expect(heard.length, "progress events submit printed").toBeGreaterThan(0);
    expect(heard.some((e) => ((e as { tokens?: number }).tokens ?? 0) > 0)).toBe(true);
    const completed = r.events.find((e) => e.kind === "completed") as { task: string; result?: { text?: string } } | undefined;
    expect(completed?.result?.text, "the completed event submit heard, with its result").toContain("a streamed call");
    expect(r.events.some((e) => e.kind === "started")).toBe(true);
    // What the EVENTS stream kept of the sub-task: everything it has under the request's task subjects.
    const names = swarmNames("p7");
    const nc = await connect({ servers: suite.nats.url });
    try {
      const consumer = await nc.jetstream().consumers.get(names.streams.events, { filterSubjects: names.taskEventsOf(r.answer!.request) });
      const pending = (await consumer.info()).num_pending;
      const stored: string[] = [];
      if (pending > 0) {
        for await (const m of await consumer.fetch({ max_messages: pending, expires: 5_000 })) {
          stored.push((m.json() as { kind: string }).kind);
          if (stored.length >= pending) break;
        }
      }
      // A first attempt that succeeds leaves nothing in the stream (only a last attempt's `started` and a
      // sub-task the coordinator gives up are stored there): its outcome is the result record.
      expect(stored).toEqual([]);
      const kv = await nc.jetstream().views.kv(names.buckets.tasks, { bindOnly: true });
      const result = await kv.get(taskKeys.result(r.answer!.request, completed!.task));
      expect(result?.operation, "the result record").toBe("PUT");
      expect(result!.json<{ text: string }>().text).toContain("a streamed call");
    } finally {
      await nc.close();
    }
  });

  test("a worker with max_concurrent 2 given 10 sub-tasks never runs more than 2 at once", async () => {
    const swarm = await suite.start("p2", [
      { script: "coordinator.ts", args: ["--swarm.tasks.max_fanout", "16"], env: echoEnv },
      { script: "worker.ts", args: ["--swarm.max_concurrent", "2"], env: llmEnv() },
    ]);
    const tasks = Array.from({ length: 10 }, (_, i) => `  - { id: t${i}, capability: general, prompt: "job ${i} [[delay=250]]" }`);
    const r = await submit(swarm, ["--plan", planFile(`tasks:\n${tasks.join("\n")}\n`)]);
    expect(r.code).toBe(0);
    const runs = runIntervals(r.events);
    expect(runs.size).toBe(10);
    expect(maxOverlap([...runs.values()])).toBe(2);
  });

  test("a burst is shared: twelve sub-tasks reach two idle workers with twelve slots each, and both run some", async () => {
    const swarm = await suite.start("p6", [
      { script: "coordinator.ts", args: ["--swarm.tasks.max_fanout", "16"], env: echoEnv },
      { script: "worker.ts", args: ["--swarm.max_concurrent", "12"], env: llmEnv() },
      { script: "worker.ts", args: ["--swarm.max_concurrent", "12"], env: llmEnv() },
    ]);
    // Each worker must know the other is online before the burst (it takes only its share then).
    for (const w of swarm.nodes.slice(1)) await w.waitForLine(/Node joined swarm .*role=worker(?!.*self=true)/, 15_000);
    const tasks = Array.from({ length: 12 }, (_, i) => `  - { id: b${i}, capability: general, prompt: "burst ${i} [[delay=500]]" }`);
    const r = await submit(swarm, ["--plan", planFile(`tasks:\n${tasks.join("\n")}\n`)]);
    expect(r.code).toBe(0);
    const perNode = new Map<string, number>();
    for (const run of runIntervals(r.events).values()) perNode.set(run.node, (perNode.get(run.node) ?? 0) + 1);
    expect(perNode.size).toBe(2);
    for (const n of perNode.values()) expect(n).toBeGreaterThanOrEqual(2);
  });

  test("priority: with the only slot busy, a priority-3 task queued after ten priority-0 tasks runs next", async () => {
    const swarm = await suite.start("p3", [
      { script: "coordinator.ts", args: ["--swarm.tasks.max_fanout", "16"], env: echoEnv },
      { script: "worker.ts", args: ["--swarm.max_concurrent", "1"], env: llmEnv() },
    ]);
    const worker = swarm.nodes[1]!;
    // The blocker holds the slot long enough for the second submit to start and queue its eleven under load.
    const blocker = submit(swarm, [
      "--plan",
      planFile('tasks:\n  - { id: blocker, capability: general, prompt: "hold the slot [[delay=6000]]" }\n'),
    ]);
    await worker.waitForLine(/Task assigned task=blocker/, 15_000);
    const low = Array.from({ length: 10 }, (_, i) => `  - { id: low${i}, capability: general, priority: 0, prompt: "low ${i}" }`);
    const queued = submit(swarm, [
      "--plan",
      planFile(`tasks:\n${low.join("\n")}\n  - { id: urgent, capability: general, priority: 3, prompt: "urgent" }\n`),
    ]);
    expect((await blocker).code).toBe(0);
    expect((await queued).code).toBe(0);
    const order = worker.lines.filter((l) => l.includes("Task assigned")).map((l) => l.match(/task=(\S+)/)![1]);
    expect(order[0]).toBe("blocker");
    expect(order[1]).toBe("urgent");
    expect(order.length).toBe(12);
  });

  test("a specialist never takes a general task; a capability nobody has is rejected with a clear message", async () => {
    const swarm = await suite.start("p4", [
      { script: "coordinator.ts", env: echoEnv },
      { script: "specialist.ts", args: ["--swarm.capabilities", "rust"], env: echoEnv },
    ]);
    const general = await submit(swarm, ["Summarise the week's news"], 20_000);
    expect(general.code).toBe(1);
    expect(general.answer?.kind).toBe("failed");
    expect(general.answer?.error).toContain("capability general, which no online node offers");
    expect(general.answer?.error).toContain("rust");

    const gpu = await submit(swarm, ["--capabilities", "gpu", "render the scene"], 20_000);
    expect(gpu.code).toBe(1);
    expect(gpu.answer?.error).toMatch(/task gpu needs capability gpu, which no online node offers/);
    expect(gpu.output).toContain("rejected");

    const rust = await submit(swarm, ["--capabilities", "rust", "check the borrow checker"], 20_000);
    expect(rust.code).toBe(0);
    expect(swarm.nodes[1]!.countLines(/Task assigned/)).toBe(1);
    expect(swarm.nodes[1]!.countLines(/capability=general/)).toBe(0);
  });

  test("DAG: b depends on a and receives a's result; a cycle is rejected before anything runs", async () => {
    const swarm = await suite.start("p5", [
      { script: "coordinator.ts", env: echoEnv },
      { script: "worker.ts", args: ["--swarm.capabilities", "code"], env: llmEnv() },
    ]);
    const r = await submit(swarm, [
      "--plan",
      planFile(
        [
          "tasks:",
          "  - id: a",
          "    capability: code",
          "    prompt: 'find the bug [[reply=ALPHA-FINDING-42]]'",
          "  - id: b",
          "    capability: general",
          "    depends_on: [a]",
          "    prompt: 'write the fix'",
          "",
        ].join("\n"),
      ),
    ]);
    expect(r.code).toBe(0);
    const bRequest = suite.llm.requests.find((q) => q.body.messages?.at(-1)?.content.startsWith("write the fix"));
    expect(bRequest?.body.messages?.at(-1)?.content).toContain("ALPHA-FINDING-42");
    const runs = runIntervals(r.events);
    expect(runs.get("b")!.start).toBeGreaterThanOrEqual(runs.get("a")!.end);

    const before = suite.llm.requests.length;
    const cyc = await submit(
      swarm,
      [
        "--plan",
        planFile(
          [
            "tasks:",
            "  - { id: a, capability: code, prompt: x, depends_on: [b] }",
            "  - { id: b, capability: code, prompt: y, depends_on: [a] }",
            "  - { id: c, capability: code, prompt: z, depends_on: [ghost] }",
            "",
          ].join("\n"),
        ),
      ],
      20_000,
    );
    expect(cyc.code).toBe(1);
    expect(cyc.answer?.error).toMatch(/unknown task ghost|cycle: (a -> b -> a|b -> a -> b)/);
    expect(suite.llm.requests.length).toBe(before);

    const cyc2 = await submit(
      swarm,
      [
        "--plan",
        planFile(
          "tasks:\n  - { id: a, capability: code, prompt: x, depends_on: [b] }\n  - { id: b, capability: code, prompt: y, depends_on: [a] }\n",
        ),
      ],
      20_000,
    );
    expect(cyc2.code).toBe(1);
    expect(cyc2.answer?.error).toMatch(/cycle: (a -> b -> a|b -> a -> b)/);
    expect(suite.llm.requests.length).toBe(before);
  });
});
