// The planners (DESIGN §7): the heuristic one (the guide's code-review split, named capabilities,
// --capabilities, fan-out cap), the LLM one (validated JSON, one retry) and the choice between them.
// The LLM here is a scripted in-test stand-in: these are pure unit tests; real HTTP is tested elsewhere.
import { describe, expect, test } from "bun:test";
import type { Completion, CompletionRequest, LlmProvider } from "../lib/llm-types.ts";
import { PlanError, parsePlanText } from "../lib/plan.ts";
import type { OnlineCapabilities } from "../lib/registry.ts";
import { heuristicPlan, llmPlan, makePlan } from "../roles/coordinator/planner.ts";

/** The guide's "Distributed Code Review Swarm": a coordinator and four specialists. */
const reviewSwarm: OnlineCapabilities = new Map([
  ["coordination", 1],
  ["rust", 1],
  ["go", 1],
  ["python", 1],
  ["security", 1],
  ["audit", 1],
  ["docs", 1],
  ["writing", 1],
  ["testing", 1],
  ["qa", 1],
]);

const limits = { maxFanout: 8, maxDepth: 4, maxPromptBytes: 64 * 1024 };

/** An LlmProvider that replies with the scripted texts in order and records each request. */
function scripted(replies: string[], kind: "openai" | "echo" = "openai"): LlmProvider & { calls: CompletionRequest[] } {
  const calls: CompletionRequest[] = [];
  return {
    kind,
    model: "scripted",
    label: "scripted test stand-in",
    calls,
    async complete(req: CompletionRequest): Promise<Completion> {
      calls.push(req);
      const text = replies[calls.length - 1] ?? "";
      return { text, model: "scripted", usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } };
    },
  };
}

const goodPlan = JSON.stringify({
  tasks: [
    { id: "security", capability: "security", prompt: "Review for security", depends_on: [], priority: 2, title: "security review" },
    { id: "summary", capability: "docs", prompt: "Document the findings", depends_on: ["security"] },
  ],
});

describe("heuristicPlan", () => {
  test("the guide's code review: exactly four parallel tasks on rust, security, docs, testing", () => {
    const plan = heuristicPlan("Review this change: fn main() { unsafe { libc::system(cmd) } }", reviewSwarm, { maxFanout: 8 });
    expect(plan.tasks.map((t) => [t.id, t.capability])).toEqual([
      ["code", "rust"],
      ["security", "security"],
      ["docs", "docs"],
      ["testing", "testing"],
    ]);
    expect(plan.tasks.every((t) => t.depends_on.length === 0)).toBe(true);
    expect(plan.tasks.map((t) => t.title)).toEqual(["code review", "security review", "docs review", "testing review"]);
    const security = plan.tasks[1]?.prompt ?? "";
    expect(security).toStartWith("You are the security reviewer of a swarm. Review only for security:");
    expect(security).toEndWith("\n\nReview this change: fn main() { unsafe { libc::system(cmd) } }");
    expect(plan.synthesize).toBe(true);
  });

  test("a review falls back to general workers for areas no specialist covers, and skips the rest", () => {
    const some = new Map([
      ["coordination", 1],
      ["security", 1],
      ["general", 2],
    ]);
    const plan = heuristicPlan("Please audit PR 42", some, { maxFanout: 8 });
    expect(plan.tasks.map((t) => [t.id, t.capability])).toEqual([
      ["code", "general"],
      ["security", "security"],
      ["docs", "general"],
      ["testing", "general"],
    ]);
    const noGeneral = heuristicPlan(
      "look over this diff",
      new Map([
        ["security", 1],
        ["qa", 1],
      ]),
      { maxFanout: 8 },
    );
    expect(noGeneral.tasks.map((t) => [t.id, t.capability])).toEqual([
      ["security", "security"],
      ["testing", "qa"],
    ]);
  });

  test("a request naming one online capability gives one task", () => {
    const plan = heuristicPlan("Write a Python script that dedupes a CSV", reviewSwarm, { maxFanout: 8 });
    expect(plan.tasks.map((t) => [t.id, t.capability])).toEqual([["python", "python"]]);
    const two = heuristicPlan("Port this Go tool to rust", reviewSwarm, { maxFanout: 8 });
    expect(two.tasks.map((t) => t.capability)).toEqual(["go", "rust"]);
  });

  test("nothing named: one general task, never routed to a specialist's capability", () => {
    const plan = heuristicPlan(
      "What is the capital of France?",
      new Map([
        ["general", 3],
        ["code", 1],
      ]),
      { maxFanout: 8 },
    );
    expect(plan.tasks).toHaveLength(1);
    expect(plan.tasks[0]).toMatchObject({ id: "general", capability: "general", prompt: "What is the capital of France?" });
    const noGeneral = heuristicPlan(
      "hello",
      new Map([
        ["coordination", 5],
        ["code", 1],
        ["research", 2],
      ]),
      { maxFanout: 8 },
    );
    expect(noGeneral.tasks.map((t) => t.capability)).toEqual(["general"]);
  });

  test("--capabilities: one task per listed capability, even for a review request", () => {
    const plan = heuristicPlan("Review this change", reviewSwarm, { capabilities: ["security", "rust", "security"], maxFanout: 8 });
    expect(plan.tasks.map((t) => [t.id, t.capability, t.title])).toEqual([
      ["security", "security", "security task"],
      ["rust", "rust", "rust task"],
    ]);
  });

  test("fan-out cap: never more than maxFanout tasks", () => {
    expect(heuristicPlan("Review this change", reviewSwarm, { maxFanout: 2 }).tasks.map((t) => t.id)).toEqual(["code", "security"]);
    const many = heuristicPlan("x", reviewSwarm, { capabilities: ["a", "b", "c", "d", "e"], maxFanout: 3 });
    expect(many.tasks.map((t) => t.id)).toEqual(["a", "b", "c"]);
  });
});

describe("llmPlan", () => {
  test("a valid plan the first time: one attempt, JSON asked for, only online capabilities listed", async () => {
    const llm = scripted([goodPlan]);
    const { plan, attempts } = await llmPlan("Review this change", reviewSwarm, llm, limits);
    expect(attempts).toBe(1);
    expect(plan.tasks.map((t) => [t.id, t.capability, t.depends_on])).toEqual([
      ["security", "security", []],
      ["summary", "docs", ["security"]],
    ]);
    expect(llm.calls[0]?.json).toBe(true);
    const system = llm.calls[0]?.messages[0]?.content ?? "";
    expect(system).toContain("audit, docs, go, python, qa, rust, security, testing, writing");
    expect(system).not.toContain("coordination");
    expect(system).not.toContain("general");
  });

  test("a ```json fenced reply is accepted", async () => {
    const { attempts } = await llmPlan("x", reviewSwarm, scripted([`Here you go:\n\`\`\`json\n${goodPlan}\n\`\`\``]), limits);
    expect(attempts).toBe(1);
  });

  test("invalid, then valid: two attempts, and the second prompt says what was wrong", async () => {
    const bad = JSON.stringify({ tasks: [{ id: "gpu", capability: "gpu", prompt: "render" }] });
    const llm = scripted([bad, goodPlan]);
    const { plan, attempts } = await llmPlan("x", reviewSwarm, llm, limits);
    expect(attempts).toBe(2);
    expect(plan.tasks[0]?.id).toBe("security");
    const second = llm.calls[1]?.messages ?? [];
    expect(second.some((m) => m.role === "assistant" && m.content === bad)).toBe(true);
    expect(second.at(-1)?.content).toContain("task gpu needs capability gpu");
  });

  test("invalid twice: a PlanError saying so, with the last reason", async () => {
    const cycle = JSON.stringify({
      tasks: [
        { id: "a", capability: "rust", prompt: "x", depends_on: ["b"] },
        { id: "b", capability: "rust", prompt: "y", depends_on: ["a"] },
      ],
    });
    const err = await llmPlan("x", reviewSwarm, scripted(["not json at all", cycle]), limits).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PlanError);
    expect((err as PlanError).message).toStartWith("LLM planner returned an invalid plan twice: ");
    expect((err as PlanError).message).toContain("cycle: a -> b -> a");
  });
});

describe("makePlan", () => {
  const request = "Review this change: add retries";

  test("an explicit plan wins and is validated", async () => {
    const explicit = parsePlanText("tasks:\n  - {id: sec, capability: security, prompt: check}\n", "plan.yaml");
    const made = await makePlan({ request, online: reviewSwarm, limits, explicit, llm: scripted([goodPlan]) });
    expect(made).toEqual({ plan: explicit, planner: "explicit" });
    const offline = parsePlanText("tasks:\n  - {id: g, capability: gpu, prompt: render}\n", "plan.yaml");
    await expect(makePlan({ request, online: reviewSwarm, limits, explicit: offline })).rejects.toThrow(PlanError);
  });

  test("the LLM planner when a real provider is configured", async () => {
    const made = await makePlan({ request, online: reviewSwarm, limits, llm: scripted([goodPlan]) });
    expect(made.planner).toBe("llm");
    expect(made.note).toBeUndefined();
  });

  test("the LLM failing twice falls back to the heuristic plan with a note", async () => {
    const llm = scripted(["{}", "nonsense"]);
    const made = await makePlan({ request, online: reviewSwarm, limits, llm });
    expect(llm.calls).toHaveLength(2);
    expect(made.planner).toBe("heuristic");
    expect(made.plan.tasks.map((t) => t.capability)).toEqual(["rust", "security", "docs", "testing"]);
    expect(made.note).toStartWith("LLM planner returned an invalid plan twice (");
    expect(made.note).toEndWith("); used the heuristic plan");
  });

  test("the echo provider goes straight to the heuristic, without asking it", async () => {
    const echo = scripted([goodPlan], "echo");
    const made = await makePlan({ request, online: reviewSwarm, limits, llm: echo });
    expect(echo.calls).toHaveLength(0);
    expect(made.planner).toBe("heuristic");
    expect(made.note).toBeUndefined();
    expect(made.plan.tasks.map((t) => t.id)).toEqual(["code", "security", "docs", "testing"]);
  });

  test("the heuristic plan is validated too: nothing online to run it is a PlanError", async () => {
    const err = await makePlan({ request: "hello", online: new Map([["coordination", 1]]), limits }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PlanError);
    expect((err as PlanError).message).toContain("online capabilities: coordination");
  });
});

describe("plans that need tools", () => {
  const tools = new Map([
    ["general", new Set(["exec", "read_file"])],
    ["security", new Set(["read_file"])],
  ]);
  const online: OnlineCapabilities = new Map([
    ["general", 2],
    ["security", 1],
  ]);

  test("the LLM planner is told which tools each capability's nodes have, and a plan needing a missing one is sent back", async () => {
    const bad = JSON.stringify({ tasks: [{ id: "scan", capability: "security", prompt: "scan", tools: ["exec"] }] });
    const good = JSON.stringify({ tasks: [{ id: "scan", capability: "general", prompt: "scan", tools: ["exec"] }] });
    const llm = scripted([bad, good]);
    const made = await llmPlan("run the scanner", online, llm, { ...limits, tools });
    const system = llm.calls[0]!.messages[0]!.content;
    expect(system).toContain("general: exec, read_file");
    expect(system).toContain("security: read_file");
    expect(made.attempts).toBe(2);
    expect(made.plan.tasks[0]!.tools).toEqual(["exec"]);
    expect(llm.calls[1]!.messages.at(-1)!.content).toContain(
      "task scan needs tool exec, which no online node offers with capability security",
    );
  });

  test("an explicit plan needing a tool nobody has is refused naming the task and the tool", async () => {
    const plan = parsePlanText("tasks:\n  - { id: t, capability: security, prompt: x, tools: [exec, exec] }\n", "plan.yaml");
    expect(plan.tasks[0]!.tools).toEqual(["exec"]); // duplicates dropped
    const made = makePlan({ request: "x", online, limits, explicit: plan, tools });
    await expect(made).rejects.toThrow(
      new PlanError("invalid plan in the explicit plan: task t needs tool exec, which no online node offers with capability security"),
    );
  });
});

describe("what a chat may not put in a plan", () => {
  test("an LLM plan cannot pin a sub-task to a node or raise its priority: both are dropped", async () => {
    const reply = JSON.stringify({
      tasks: [
        { id: "a", capability: "general", prompt: "x", priority: 3, node: "claw-00000bad" },
        { id: "b", capability: "general", prompt: "y", priority: 0 },
      ],
    });
    const made = await llmPlan("anything", new Map([["general", 1]]), scripted([reply]), limits);
    expect(made.plan.tasks.map((t) => ({ id: t.id, priority: t.priority, node: t.node }))).toEqual([
      { id: "a", priority: 1, node: undefined },
      { id: "b", priority: 0, node: undefined },
    ]);
  });

  test("depends_on: repeats are one dependency; more than 64 different ones is a plan error naming the task", () => {
    const many = Array.from({ length: 65 }, () => "a");
    const plan = parsePlanText(
      JSON.stringify({
        tasks: [
          { id: "a", capability: "general", prompt: "x" },
          { id: "b", capability: "general", prompt: "y", depends_on: many },
        ],
      }),
      "plan.json",
    );
    expect(plan.tasks[1]!.depends_on).toEqual(["a"]);
    const distinct = Array.from({ length: 65 }, (_, i) => `t${i}`);
    expect(() =>
      parsePlanText(JSON.stringify({ tasks: [{ id: "b", capability: "general", prompt: "y", depends_on: distinct }] }), "plan.json"),
    ).toThrow("invalid plan in plan.json: tasks[0].depends_on: at most 64 different tasks");
  });
});
