// swarm.llm.tokens_per_minute is one budget for the whole swarm: three worker processes share it through
// NATS, and the LLM server's own log shows the swarm never used more than a window's share in a window.
import { expect, test } from "bun:test";
import { swarmSuite } from "./helpers/suite.ts";
import { planFile, submit } from "./helpers/swarm.ts";

const suite = swarmSuite();

const WINDOW_MS = 2_000;
/** 2,400 a minute = 80 per 2 s window: two of this test's calls (37 tokens, 40 reserved) fit, a third waits. */
const PER_MINUTE = 2_400;
const PER_WINDOW = (PER_MINUTE * WINDOW_MS) / 60_000;
const TASKS = 8;

test("three workers share swarm.llm.tokens_per_minute: no window gets more than its share, so the calls spread over the windows", async () => {
  const budget = [
    "--swarm.llm.tokens_per_minute",
    String(PER_MINUTE),
    "--swarm.llm.token_window",
    `${WINDOW_MS}ms`,
    // A reply costs at most this: the reservation covers every call, so the budget is never overdrawn.
    "--llm.max_tokens",
    "8",
  ];
  // One sub-task at a time each: no two workers can hold all the work while the third waits.
  const worker = { script: "worker.ts" as const, args: [...budget, "--swarm.max_concurrent", "1"], env: suite.llmEnv() };
  const swarm = await suite.start("budget1", [
    { script: "coordinator.ts", env: { PICOCLAW_LLM_PROVIDER: "echo" } },
    worker,
    worker,
    worker,
  ]);
  for (const w of swarm.nodes.slice(1))
    expect(w.output()).toContain(`LLM token budget shared by the swarm tokens_per_minute=${PER_MINUTE}`);

  const ids = Array.from({ length: TASKS }, (_, i) => `t${i}`);
  const plan = planFile(
    `tasks:\n${ids.map((id) => `  - { id: ${id}, capability: general, prompt: "Summarise part ${id} of the report" }`).join("\n")}\n`,
  );
  const before = suite.llm.requests.length;
  const r = await submit(swarm, ["--plan", plan], 90_000);
  expect({ code: r.code, output: r.code === 0 ? "" : r.output }).toEqual({ code: 0, output: "" });
  const calls = suite.llm.requests.slice(before);
  expect(calls).toHaveLength(TASKS);

  // All three workers took part (the budget is shared, not per node).
  const nodes = new Set(r.answer!.usage_by!.map((row) => row.node));
  expect(nodes.size).toBe(3);

  // Per window, by the time each call reached the LLM server: at most the window's share. A call charged
  // in the last milliseconds of a window can arrive in the next one, so one call's worth of slack.
  const biggest = Math.max(...calls.map((c) => c.usage!.total_tokens));
  expect(biggest * 2).toBeLessThanOrEqual(PER_WINDOW);
  const perWindow = new Map<number, number>();
  for (const c of calls)
    perWindow.set(Math.floor(c.at / WINDOW_MS), (perWindow.get(Math.floor(c.at / WINDOW_MS)) ?? 0) + c.usage!.total_tokens);
  const seen = [...perWindow.entries()].sort((a, b) => a[0] - b[0]).map(([w, t]) => `window ${w}: ${t} tokens`);
  expect({ seen, over: [...perWindow.values()].filter((t) => t > PER_WINDOW + biggest) }).toEqual({ seen, over: [] });
  // Most windows are within the share exactly; eight calls of 37 tokens need at least four windows.
  expect([...perWindow.values()].filter((t) => t > PER_WINDOW).length).toBeLessThanOrEqual(1);
  const total = calls.reduce((n, c) => n + c.usage!.total_tokens, 0);
  const windows = Math.ceil(total / PER_WINDOW);
  const span = Math.max(...calls.map((c) => c.at)) - Math.min(...calls.map((c) => c.at));
  expect({ span, seen }).toMatchObject({ span: expect.any(Number) });
  expect(span).toBeGreaterThanOrEqual((windows - 2) * WINDOW_MS);
  expect(r.answer!.status).toBe("completed");
}, 120_000);
