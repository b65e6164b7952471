// Tokens per request, node, capability and model: in the answer (and its breakdown), the events, each
// node's /metrics, `dashboard --json` and the text frame; the merge streamed as answer_delta events;
// swarm.tasks.max_tokens_per_request stopping a request. Real nats-server, LLM server, role processes.
import { describe, expect, test } from "bun:test";
import type { DashboardSnapshot } from "../roles/dashboard/snapshot.ts";
import { runRole } from "./helpers/role-process.ts";
import { swarmSuite } from "./helpers/suite.ts";
import { planFile, type SwarmEvent, submit } from "./helpers/swarm.ts";
import { waitFor } from "./helpers/wait.ts";

const suite = swarmSuite();
const HTTP = ["--swarm.http.listen", "127.0.0.1:0"];

function httpUrl(lines: string[]): string {
  const url = lines.map((l) => /HTTP listening url=(\S+)/.exec(l)?.[1]).find(Boolean);
  if (!url) throw new Error(`no "HTTP listening" line in:\n${lines.join("\n")}`);
  return url;
}

function metric(text: string, name: string, labels: Record<string, string>): number {
  const want = Object.entries(labels)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}="${v}"`)
    .join(",");
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${want}} `));
  return line ? Number(line.split(" ").at(-1)) : 0;
}

describe("tokens", () => {
  test("the answer sums every LLM call and breaks it down by node, capability and model; metrics and both dashboards agree", async () => {
    const swarm = await suite.start("tok1", [
      { script: "coordinator.ts", args: HTTP, env: suite.llmEnv() },
      { script: "specialist.ts", args: ["--swarm.capabilities", "code", ...HTTP], env: suite.llmEnv() },
      { script: "specialist.ts", args: ["--swarm.capabilities", "security", ...HTTP], env: suite.llmEnv() },
    ]);
    const [coordId, codeId, secId] = swarm.ids as [string, string, string];
    // Two sub-tasks, so the coordinator's LLM merges them; the delay spreads the merge's chunks over a
    // second, so it goes out as several answer_delta events.
    const r = await submit(swarm, ["--capabilities", "code,security", "Check the retry loop [[tokens=7]] [[delay=1000]]"]);
    expect(r.code).toBe(0);
    const answer = r.answer!;
    expect(answer.status).toBe("completed");

    // The LLM server saw three calls (two sub-tasks, one merge) and reported their usage.
    const calls = suite.llm.requests.filter((q) => JSON.stringify(q.body.messages).includes("Check the retry loop"));
    expect(calls).toHaveLength(3);
    const served = calls.reduce((n, q) => n + q.usage!.total_tokens, 0);
    expect(answer.usage!.total_tokens).toBe(served);

    const rows = answer.usage_by!;
    const row = (node: string, capability: string) => rows.find((x) => x.node === node && x.capability === capability);
    expect(rows.map((x) => `${x.node}/${x.capability}/${x.model}`).sort()).toEqual(
      [`${codeId}/code/test-model`, `${secId}/security/test-model`, `${coordId}/(synthesis)/test-model`].sort(),
    );
    expect(row(coordId, "(synthesis)")!.completion_tokens).toBe(7);
    const sum = (k: "prompt_tokens" | "completion_tokens" | "total_tokens") => rows.reduce((n, x) => n + x[k], 0);
    expect(answer.usage).toEqual({
      prompt_tokens: sum("prompt_tokens"),
      completion_tokens: sum("completion_tokens"),
      total_tokens: served,
    });

    // Each sub-task's completed event carries its usage and model; the merge went out as it was produced.
    const completed = r.events.filter((e) => e.kind === "completed" && "result" in e) as (SwarmEvent & {
      result: { usage: { total_tokens: number }; model: string };
    })[];
    expect(completed.map((e) => e.result.model)).toEqual(["test-model", "test-model"]);
    const deltas = r.events.filter((e) => e.kind === "answer_delta") as (SwarmEvent & { delta: string; seq: number })[];
    expect(deltas.length).toBeGreaterThan(1);
    expect(deltas.map((d) => d.seq)).toEqual(deltas.map((_, i) => i));
    expect(answer.answer!.startsWith(deltas.map((d) => d.delta).join(""))).toBe(true);
    expect(r.events.findIndex((e) => e.kind === "answer")).toBeGreaterThan(r.events.indexOf(deltas.at(-1)!));

    // Each node's metrics: its own tokens by capability and model.
    const [coordUrl, codeUrl] = swarm.nodes.map((p) => httpUrl(p.lines)) as [string, string];
    const codeMetrics = await (await fetch(`${codeUrl}/metrics`)).text();
    const codeRow = row(codeId, "code")!;
    expect(metric(codeMetrics, "picoclaw_llm_tokens_total", { capability: "code", model: "test-model", type: "prompt" })).toBe(
      codeRow.prompt_tokens,
    );
    const coordMetrics = await (await fetch(`${coordUrl}/metrics`)).text();
    expect(metric(coordMetrics, "picoclaw_llm_tokens_total", { capability: "(synthesis)", model: "test-model", type: "completion" })).toBe(
      7,
    );

    // dashboard --json: each node's tokens from its heartbeats, and the swarm's by capability and model.
    const snap = await waitFor("the dashboard seeing every node's tokens", async () => {
      const d = await runRole("dashboard.ts", ["--json", ...swarm.common]);
      const s = JSON.parse(d.stdout) as DashboardSnapshot;
      return s.tokens.total === served ? s : undefined;
    });
    expect(snap.nodes.find((n) => n.node === codeId)!.tokens).toMatchObject({
      total: codeRow.total_tokens,
      by_capability: { code: codeRow.total_tokens },
    });
    expect(snap.tokens.by_capability).toEqual({
      code: codeRow.total_tokens,
      security: row(secId, "security")!.total_tokens,
      "(synthesis)": row(coordId, "(synthesis)")!.total_tokens,
    });
    expect(snap.tokens.by_model).toEqual({ "test-model": served });

    // A heartbeat late by two intervals (a loaded machine) reads "suspicious" for a moment: look again.
    let once = await runRole("dashboard.ts", ["--once", ...swarm.common]);
    for (let i = 0; i < 5 && !once.stdout.includes(`${codeId.padEnd(22)} S online`); i++) {
      once = await runRole("dashboard.ts", ["--once", ...swarm.common]);
    }
    expect(once.stdout).toMatch(new RegExp(`  Tokens:     ${served} \\(\\d+ prompt, \\d+ completion\\)`));
    expect(once.stdout).toContain(`${codeId.padEnd(22)} S online`);
    expect(once.stdout).toMatch(new RegExp(`${codeId} .*  ${codeRow.total_tokens} tokens`));
  });

  test("swarm.tasks.max_tokens_per_request stops a request that passes it: answered failed with the reason, later sub-tasks never run", async () => {
    const swarm = await suite.start("tok2", [
      { script: "coordinator.ts", args: ["--swarm.tasks.max_tokens_per_request", "30"], env: suite.llmEnv() },
      { script: "worker.ts", env: suite.llmEnv() },
    ]);
    const before = suite.llm.requests.length;
    const plan = planFile(
      [
        "tasks:",
        "  - { id: a, capability: general, prompt: 'Step one of a long chain of work' }",
        "  - { id: b, capability: general, prompt: 'Step two', depends_on: [a] }",
        "  - { id: c, capability: general, prompt: 'Step three', depends_on: [b] }",
      ].join("\n"),
    );
    const r = await submit(swarm, ["--plan", plan]);
    expect(r.code).toBe(1);
    expect(r.answer!.status).toBe("failed");
    expect(r.answer!.error).toMatch(/^stopped: the request used \d+ tokens, more than swarm\.tasks\.max_tokens_per_request \(30\)$/);
    expect(r.answer!.usage!.total_tokens).toBeGreaterThan(30);
    expect(r.answer!.answer).toContain("## b (general) — SKIPPED");
    expect(r.answer!.answer).toContain("not run: stopped: the request used");
    expect(suite.llm.requests.length - before).toBe(1); // only a ran; no merge either
    expect(swarm.nodes[0]!.output()).toMatch(/Request stopped at its token limit request=r-\w+ tokens=\d+ max_tokens_per_request=30/);
  });
});
