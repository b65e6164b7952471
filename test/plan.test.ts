// Plans as DAGs (DESIGN §7): parsing YAML/JSON plan files, the checks that keep a plan runnable within
// the swarm's limits, and walking it level by level.
import { describe, expect, test } from "bun:test";
import { type Plan, PlanError, type PlanLimits, type PlanTask, parsePlanText, topoLevels, validatePlan } from "../lib/plan.ts";

function t(id: string, depends_on: string[] = [], capability = "general", prompt = `do ${id}`): PlanTask {
  return { id, capability, prompt, depends_on, priority: 1, required: true };
}

function plan(...tasks: PlanTask[]): Plan {
  return { tasks, synthesize: true };
}

const limits: PlanLimits = {
  capabilities: new Set(["general", "code", "security"]),
  maxFanout: 8,
  maxDepth: 4,
  maxPromptBytes: 64 * 1024,
};

/** Runs `fn`, which must throw a PlanError, and returns it. */
function planErrorOf(fn: () => unknown): PlanError {
  try {
    fn();
  } catch (err) {
    if (err instanceof PlanError) return err;
    throw err;
  }
  throw new Error("expected a PlanError");
}

describe("parsePlanText", () => {
  const yaml = `
tasks:
  - id: fetch
    capability: code
    prompt: Read the diff
    timeout: 30s
  - id: security
    capability: security
    title: security review
    prompt: Review for security
    depends_on: [fetch]
    priority: 3
    required: false
  - id: report
    capability: general
    prompt: Write it up
    depends_on: [fetch, security]
synthesize: false
`;

  test("a YAML DAG with timeout: 30s, depends_on, priority, required and title", () => {
    const p = parsePlanText(yaml, "plan.yaml");
    expect(p.synthesize).toBe(false);
    expect(p.tasks.map((x) => x.id)).toEqual(["fetch", "security", "report"]);
    expect(p.tasks[0]).toEqual({
      id: "fetch",
      capability: "code",
      prompt: "Read the diff",
      depends_on: [],
      priority: 1,
      required: true,
      timeout_ms: 30_000,
    });
    expect(p.tasks[1]).toMatchObject({ depends_on: ["fetch"], priority: 3, required: false, title: "security review" });
    expect(p.tasks[1]?.timeout_ms).toBeUndefined();
    expect(p.tasks[2]?.depends_on).toEqual(["fetch", "security"]);
    expect(topoLevels(p)).toEqual([["fetch"], ["security"], ["report"]]);
    validatePlan(p, limits);
  });

  test("JSON works too, and synthesize defaults to true", () => {
    const p = parsePlanText(JSON.stringify({ tasks: [{ id: "a", capability: "code", prompt: "x", timeout_ms: 500 }] }), "plan.json");
    expect(p.synthesize).toBe(true);
    expect(p.tasks[0]?.timeout_ms).toBe(500);
  });

  test("ids with a dot, a star or a space are rejected, naming the source and path", () => {
    for (const bad of ["a.b", "a*", "a b", "x".repeat(41)]) {
      const err = planErrorOf(() => parsePlanText(JSON.stringify({ tasks: [{ id: bad, capability: "code", prompt: "x" }] }), "p.json"));
      expect(err.message).toContain("p.json");
      expect(err.message).toContain("tasks[0].id");
      expect(err.ids).toEqual([bad]);
    }
    const dep = planErrorOf(() => parsePlanText("tasks:\n  - {id: a, capability: code, prompt: x, depends_on: ['b.c']}\n", "p.yaml"));
    expect(dep.message).toContain("tasks[0].depends_on[0]");
    const cap = planErrorOf(() => parsePlanText("tasks:\n  - {id: a, capability: 'co de', prompt: x}\n", "p.yaml"));
    expect(cap.message).toContain("tasks[0].capability");
  });

  test("other problems name the first one: bad duration, empty prompt, unknown key, priority, bad YAML", () => {
    expect(planErrorOf(() => parsePlanText("tasks:\n  - {id: a, capability: code, prompt: x, timeout: 10q}\n", "f")).message).toContain(
      "tasks[0].timeout: a duration",
    );
    expect(planErrorOf(() => parsePlanText("tasks:\n  - {id: a, capability: code, prompt: ''}\n", "f")).message).toContain(
      "tasks[0].prompt",
    );
    expect(planErrorOf(() => parsePlanText("tasks:\n  - {id: a, capability: code, prompt: x, depends: [b]}\n", "f")).message).toContain(
      "depends",
    );
    expect(planErrorOf(() => parsePlanText("tasks:\n  - {id: a, capability: code, prompt: x, priority: 4}\n", "f")).message).toContain(
      "tasks[0].priority: an integer from 0 to 3",
    );
    expect(planErrorOf(() => parsePlanText("tasks: [ {id: a", "broken.yaml")).message).toContain("broken.yaml");
    expect(planErrorOf(() => parsePlanText("just text", "f")).message).toContain("tasks");
  });
});

describe("validatePlan", () => {
  test("an empty plan is rejected", () => {
    expect(planErrorOf(() => validatePlan(plan(), limits)).message).toContain("no tasks");
  });

  test("duplicate ids are named", () => {
    const err = planErrorOf(() => validatePlan(plan(t("a"), t("b"), t("a")), limits));
    expect(err.message).toContain("duplicate task id a");
    expect(err.ids).toEqual(["a"]);
  });

  test("invalid ids in a plan built in code are rejected too", () => {
    const err = planErrorOf(() => validatePlan(plan(t("a.b")), limits));
    expect(err.ids).toEqual(["a.b"]);
  });

  test("an unknown dependency names both the task and the missing id", () => {
    const err = planErrorOf(() => validatePlan(plan(t("a"), t("b", ["ghost"])), limits));
    expect(err.message).toContain("task b depends on unknown task ghost");
    expect(err.ids).toEqual(["b"]);
  });

  test("self-dependency is rejected", () => {
    const err = planErrorOf(() => validatePlan(plan(t("a", ["a"])), limits));
    expect(err.message).toContain("a depends on itself");
    expect(err.ids).toEqual(["a"]);
  });

  test("a cycle is rejected naming the ids on it", () => {
    const err = planErrorOf(() => validatePlan(plan(t("start"), t("a", ["b"]), t("b", ["c"]), t("c", ["a"])), limits));
    expect(err.message).toContain("cycle: a -> b -> c -> a");
    expect(err.ids.sort()).toEqual(["a", "b", "c"]);
    const two = planErrorOf(() => validatePlan(plan(t("a", ["b"]), t("b", ["a"])), limits));
    expect(two.message).toContain("cycle: a -> b -> a");
  });

  test("a capability no online node has is named with the task and the online list", () => {
    const err = planErrorOf(() => validatePlan(plan(t("a"), t("render", [], "gpu")), limits));
    expect(err.message).toContain("task render needs capability gpu");
    expect(err.message).toContain("online capabilities: code, general, security");
    expect(err.ids).toEqual(["render"]);
  });

  test("a prompt over max_prompt_bytes (UTF-8 bytes) is rejected", () => {
    const small = { ...limits, maxPromptBytes: 10 };
    validatePlan(plan(t("ok", [], "general", "0123456789")), small);
    // 4 characters, 12 bytes
    const err = planErrorOf(() => validatePlan(plan(t("big", [], "general", "€€€€")), small));
    expect(err.message).toContain("12 bytes");
    expect(err.ids).toEqual(["big"]);
  });

  test("depth: the longest chain counted in tasks may not pass max_depth", () => {
    const chain = plan(t("a"), t("b", ["a"]), t("c", ["b"]), t("d", ["c"]));
    validatePlan(chain, limits);
    const err = planErrorOf(() => validatePlan(plan(...chain.tasks, t("e", ["d"])), limits));
    expect(err.message).toContain("a -> b -> c -> d -> e");
    expect(err.message).toContain("max_depth 4");
    expect(err.ids).toEqual(["a", "b", "c", "d", "e"]);
  });

  test("width: no level may hold more than max_fanout tasks", () => {
    const nine = Array.from({ length: 9 }, (_, i) => t(`w${i}`));
    validatePlan(plan(...nine.slice(0, 8)), limits);
    const err = planErrorOf(() => validatePlan(plan(...nine), limits));
    expect(err.message).toContain("9 tasks could run at once");
    expect(err.ids).toHaveLength(9);
    // the same nine spread over two levels are fine
    validatePlan(plan(...nine.slice(0, 8), t("w8", ["w0"])), limits);
  });

  test("total: more than max_fanout x max_depth tasks never passes", () => {
    const small = { ...limits, maxFanout: 2, maxDepth: 2 };
    validatePlan(plan(t("a"), t("b"), t("c", ["a"]), t("d", ["b"])), small);
    // five tasks cannot fit two levels of two: whichever limit trips, the plan is rejected
    expect(() => validatePlan(plan(t("a"), t("b"), t("c", ["a"]), t("d", ["b"]), t("e", ["c"])), small)).toThrow(PlanError);
  });
});

describe("walking a plan", () => {
  const dag = plan(t("a"), t("b"), t("c", ["a"]), t("d", ["a", "b"]), t("e", ["c", "d"]));

  test("topoLevels groups tasks by longest dependency path, in plan order", () => {
    expect(topoLevels(dag)).toEqual([["a", "b"], ["c", "d"], ["e"]]);
  });
});
