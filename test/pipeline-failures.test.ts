// When the LLM misbehaves: rate limits are retried, permanent errors fail the sub-task (and the answer
// says so), timeouts free the slot, and a planner that cannot produce JSON falls back to the heuristic.
import { describe, expect, test } from "bun:test";
import { startLlmServer } from "./helpers/llm-server.ts";
import { ECHO_ENV, swarmSuite } from "./helpers/suite.ts";
import { planFile, runIntervals, submit } from "./helpers/swarm.ts";

const suite = swarmSuite();

const llmEnv = () => suite.llmEnv();
const echoEnv = ECHO_ENV;
const requestsFor = (text: string) => suite.llm.requests.filter((q) => q.body.messages?.at(-1)?.content.includes(text));

describe("LLM failures", () => {
  test("429 with Retry-After then 200: the sub-task is retried after the delay and succeeds", async () => {
    const swarm = await suite.start("f1", [
      { script: "coordinator.ts", env: echoEnv },
      { script: "worker.ts", env: llmEnv() },
    ]);
    const r = await submit(swarm, ["--capabilities", "general", "limited call [[status=429 times=1 retry_after=1]]"]);
    expect(r.code).toBe(0);
    expect(r.answer?.status).toBe("completed");
    const retry = r.events.find((e) => e.kind === "retrying") as { retry_in_ms?: number; error?: string } | undefined;
    expect(retry?.retry_in_ms).toBe(1000);
    expect(retry?.error).toContain("429");
    const calls = requestsFor("limited call");
    expect(calls.length).toBe(2);
    expect(calls[1]!.at - calls[0]!.at).toBeGreaterThanOrEqual(900);
    expect(r.answer?.answer).toContain("attempt 2");
  });

  test("400: the sub-task fails at once with the provider's message and the answer marks it", async () => {
    const swarm = await suite.start("f2", [
      { script: "coordinator.ts", env: echoEnv },
      { script: "worker.ts", env: llmEnv() },
    ]);
    const plan = planFile(
      [
        "tasks:",
        "  - { id: good, capability: general, prompt: 'fine work' }",
        "  - { id: bad, capability: general, prompt: 'broken call [[status=400]]', required: false, title: bad call }",
        "",
      ].join("\n"),
    );
    const r = await submit(swarm, ["--plan", plan]);
    expect(r.code).toBe(0); // the failed sub-task was optional: the answer is partial, not failed
    expect(r.answer?.status).toBe("partial");
    expect(r.answer?.answer).toContain("## bad call — FAILED");
    expect(r.answer?.answer).toContain("scripted failure 400");
    expect(r.answer?.answer).toContain("## good (general) — completed");
    expect(requestsFor("broken call").length).toBe(1); // permanent: no retry
    const failed = r.events.find((e) => e.kind === "failed" && "task" in e && e.task === "bad") as { error?: string } | undefined;
    expect(failed?.error).toContain("400");

    const required = await submit(swarm, [
      "--plan",
      planFile("tasks:\n  - { id: bad2, capability: general, prompt: 'broken again [[status=400]]' }\n"),
    ]);
    expect(required.code).toBe(1);
    expect(required.answer?.status).toBe("failed");
    expect(required.output).toContain("required sub-task failed: bad2");
  });

  test("a per-task timeout aborts the call and frees the slot for the next sub-task", async () => {
    const swarm = await suite.start("f3", [
      { script: "coordinator.ts", env: echoEnv },
      { script: "worker.ts", args: ["--swarm.max_concurrent", "1", "--swarm.tasks.max_deliver", "1"], env: llmEnv() },
    ]);
    const plan = planFile(
      [
        "tasks:",
        "  - { id: slow, capability: general, priority: 3, timeout: 500ms, required: false, prompt: 'too slow [[delay=8000]]' }",
        "  - { id: next, capability: general, priority: 0, prompt: 'quick one' }",
        "",
      ].join("\n"),
    );
    const r = await submit(swarm, ["--plan", plan]);
    expect(r.code).toBe(0);
    expect(r.answer?.answer).toContain("timed out after 500ms");
    const slowStart = r.events.find((e) => e.kind === "started" && "task" in e && e.task === "slow")!.at;
    const next = runIntervals(r.events).get("next")!;
    // The slot was freed by the timeout, not by the 8 s response.
    expect(next.start - slowStart).toBeLessThan(4_000);
    const call = requestsFor("too slow")[0]!;
    expect(call.endedAt! - call.at).toBeLessThan(4_000);
  });
});

describe("timeouts are retried per policy", () => {
  test("a sub-task that times out on every attempt is retried up to max_deliver, then failed with each attempt's error", async () => {
    const swarm = await suite.start("f5", [
      { script: "coordinator.ts", env: echoEnv },
      { script: "worker.ts", args: ["--swarm.tasks.max_deliver", "2"], env: llmEnv() },
    ]);
    const plan = planFile(
      "tasks:\n  - { id: stuck, capability: general, timeout: 300ms, required: false, prompt: 'stuck-call [[delay=3000]]' }\n  - { id: quick, capability: general, prompt: 'quick-call' }\n",
    );
    const r = await submit(swarm, ["--plan", plan]);
    expect(r.code).toBe(0);
    expect(r.events.filter((e) => e.kind === "retrying" && "task" in e && e.task === "stuck").length).toBe(1);
    expect(requestsFor("stuck-call").length).toBe(2);
    expect(r.answer?.answer).toMatch(/attempt 1 on claw-\S+: timed out after 300ms[\s\S]*attempt 2 on claw-\S+: timed out after 300ms/);
    expect(r.answer?.status).toBe("partial");
  });
});

describe("LLM planner", () => {
  test("invalid JSON twice: the heuristic plan is used and the answer says so", async () => {
    const planner = await startLlmServer({
      respond: (body) => (body.response_format ? "Sure! Here is the plan: tasks = code, docs" : undefined),
    });
    try {
      const swarm = await suite.start("f4", [
        { script: "coordinator.ts", env: { PICOCLAW_LLM_BASE_URL: planner.url, PICOCLAW_LLM_MODEL: "planner" } },
        { script: "specialist.ts", args: ["--swarm.capabilities", "rust"], env: echoEnv },
        { script: "specialist.ts", args: ["--swarm.capabilities", "security"], env: echoEnv },
      ]);
      const r = await submit(swarm, ["Review this change: unsafe pointer cast"]);
      expect(r.code).toBe(0);
      expect(planner.requests.filter((q) => q.body.response_format).length).toBe(2);
      const planned = r.events.find((e) => e.kind === "planned") as { plan?: { planner: string; note?: string } };
      expect(planned.plan?.planner).toBe("heuristic");
      // The LLM was asked first, so the submitter heard `accepted` before the plan.
      const kinds = r.events.map((e) => e.kind);
      expect(kinds.indexOf("accepted")).toBeGreaterThanOrEqual(0);
      expect(kinds.indexOf("accepted")).toBeLessThan(kinds.indexOf("planned"));
      expect(r.answer?.answer).toContain("LLM planner returned an invalid plan twice");
      expect(r.answer?.answer).toContain("security review");
    } finally {
      await planner.stop();
    }
  });
});
