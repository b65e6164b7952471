// swarm.llm.tokens_per_minute is one budget for the whole swarm: three worker processes share it through
// NATS, and the LLM server's own log shows the swarm never used more than a window's share in a window.
import { expect, test } from "bun:test";
import { connect } from "nats";
import { createLogger } from "../lib/log.ts";
import { swarmNames, tokenWindowKey } from "../lib/subjects.ts";
import { openTokenBudget } from "../lib/token-budget.ts";
import { swarmSuite } from "./helpers/suite.ts";
import { planFile, submit } from "./helpers/swarm.ts";
import { waitFor } from "./helpers/wait.ts";

const suite = swarmSuite();

const WINDOW_MS = 2_000;
/** 2,400 a minute = 80 per 2 s window: two of this test's calls (37 tokens, 40 reserved) fit, a third waits. */
const PER_MINUTE = 2_400;
const PER_WINDOW = (PER_MINUTE * WINDOW_MS) / 60_000;
const TASKS = 8;
/** A call's time from its node's last look at the window to the LLM server, at most (a loaded machine). */
const LATE_MS = 250;

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
  // No tools: each call is one small prompt (a tool loop's system prompt alone would pass a window's share).
  const worker = {
    script: "worker.ts" as const,
    args: [...budget, "--swarm.max_concurrent", "1", "--tools.files.enabled", "false"],
    env: suite.llmEnv(),
  };
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

  // Per window, by the time each call reached the LLM server: at most the window's share. A node checks
  // the window it charged just before the call, so only a call charged in a window's last milliseconds
  // arrives in the next one: a call that arrived within LATE_MS of a window's start may count against
  // the window before, when that one has room for it (the first calls start together, so two can cross).
  const biggest = Math.max(...calls.map((c) => c.usage!.total_tokens));
  expect(biggest * 2).toBeLessThanOrEqual(PER_WINDOW);
  const perWindow = new Map<number, number>();
  const charged = new Map<number, number>();
  for (const c of [...calls].sort((a, b) => a.at - b.at)) {
    const w = Math.floor(c.at / WINDOW_MS);
    const t = c.usage!.total_tokens;
    perWindow.set(w, (perWindow.get(w) ?? 0) + t);
    const late = c.at - w * WINDOW_MS < LATE_MS && (charged.get(w - 1) ?? 0) + t <= PER_WINDOW;
    charged.set(late ? w - 1 : w, (charged.get(late ? w - 1 : w) ?? 0) + t);
  }
  const seen = [...calls]
    .sort((a, b) => a.at - b.at)
    .map((c) => `window ${Math.floor(c.at / WINDOW_MS)} +${c.at % WINDOW_MS} ms: ${c.usage!.total_tokens} tokens`);
  expect({ seen, over: [...charged.values()].filter((t) => t > PER_WINDOW) }).toEqual({ seen, over: [] });
  // Most windows are within the share exactly; eight calls of 37 tokens need at least four windows.
  const windowsOver = [...perWindow.values()].filter((t) => t > PER_WINDOW).length;
  expect({ seen, atMostOneWindowOver: windowsOver <= 1 }).toEqual({ seen, atMostOneWindowOver: true });
  const total = calls.reduce((n, c) => n + c.usage!.total_tokens, 0);
  const windows = Math.ceil(total / PER_WINDOW);
  const span = Math.max(...calls.map((c) => c.at)) - Math.min(...calls.map((c) => c.at));
  expect({ seen, spread: span >= (windows - 2) * WINDOW_MS }).toEqual({ seen, spread: true });
  expect(r.answer!.status).toBe("completed");
}, 120_000);

test("a charge that lands after its window ended moves to the window the call starts in", async () => {
  const nc = await connect({ servers: suite.nats.url });
  try {
    const names = swarmNames("budget2");
    const windowMs = 60_000;
    // The clock moves to the next window right after the budget first read it: as when a loaded node's
    // compare-and-set takes longer than what was left of the window.
    const ended = Math.floor(Date.now() / windowMs) + 1;
    let reads = 0;
    const now = () => (reads++ === 0 ? (ended + 1) * windowMs - 1 : (ended + 1) * windowMs);
    const budget = openTokenBudget({ nc, names, log: createLogger("error"), tokensPerMinute: 100, windowMs, replicas: 1, now });
    const settle = await budget.take(40);
    const kv = await nc.jetstream().views.kv(names.buckets.tokens);
    const charged = async (w: number) => Number((await kv.get(tokenWindowKey(w)))?.string() ?? 0);
    // Given back to the window that ended, charged to the one the call starts in; the real usage settles there.
    await waitFor("the ended window's charge given back", async () => (await charged(ended)) === 0, 10_000);
    expect(await charged(ended + 1)).toBe(40);
    settle(25);
    await waitFor("the real usage settled in the new window", async () => (await charged(ended + 1)) === 25, 10_000);
  } finally {
    await nc.close();
  }
});
