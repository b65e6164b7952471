// Merges sub-task results into one answer: by LLM when one is configured, else a structured report.
// Failed and skipped sub-tasks are always shown, never dropped.
import { formatDuration } from "../../lib/duration.ts";
import type { LlmProvider, LlmUsage } from "../../lib/llm-types.ts";
import {
  MAX_ANSWER_DELTA_CHARS,
  type PlanSummary,
  type RequestEventBody,
  type TaskEnd,
  type TaskResult,
  type ToolCallSummary,
  type UsageRow,
} from "../../lib/task-messages.ts";
import { PLANNING } from "./planner.ts";

/** The coordinator's merge call, in token counts. */
export const SYNTHESIS = "(synthesis)";

export interface SubTaskOutcome {
  id: string;
  title: string;
  capability: string;
  required: boolean;
  /** Absent when the sub-task never ran (skipped because a dependency failed). */
  result?: TaskResult;
  skipped?: string;
}

export interface SynthesisInput {
  request: string;
  requestText: string;
  plan: PlanSummary;
  outcomes: SubTaskOutcome[];
  durationMs: number;
  /** Why the request was stopped before every sub-task ended (its token limit): answered as failed, no merge. */
  stopped?: string;
}

/** What the answer needs from the coordinator besides the outcomes. */
export interface AnswerContext {
  /** This coordinator: its planning and merge calls are its rows in `usage_by`. */
  coordinator: string;
  /** Publishes a progress event for followers (the merge's `answer_delta`s). */
  tell?(ev: RequestEventBody): void;
  /** Aborts the merge (the request's deadline). */
  signal?: AbortSignal;
  /** The deadline ended the request. */
  expired?: boolean;
}

/** How often the merge's text goes out while it streams: often enough to read live, not an event per token. */
const DELTA_EVERY_MS = 100;
export function totalUsage(outcomes: SubTaskOutcome[]): LlmUsage {
  const u = { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };
  for (const o of outcomes) {
    if (!o.result) continue;
    u.prompt_tokens += o.result.usage.prompt_tokens;
    u.completion_tokens += o.result.usage.completion_tokens;
    u.total_tokens += o.result.usage.total_tokens;
  }
  return u;
}

function statusOf(o: SubTaskOutcome): string {
  if (o.skipped) return "SKIPPED";
  return o.result?.status === "completed" ? "completed" : "FAILED";
}

/** One section per sub-task with node, duration and status: the answer when no LLM merges. */
export function structuredReport(s: SynthesisInput): string {
  const done = s.outcomes.filter((o) => o.result?.status === "completed").length;
  const failed = s.outcomes.length - done;
  const usage = totalUsage(s.outcomes);
  const llms = [...new Set(s.outcomes.flatMap((o) => (o.result ? [o.result.llm] : [])))];
  const lines = [
    `# Swarm answer (request ${s.request})`,
    "",
    `> ${s.requestText.replace(/\s+/g, " ").slice(0, 300)}${s.requestText.length > 300 ? "…" : ""}`,
    "",
    `Planner: ${s.plan.planner} (${s.outcomes.length} sub-task${s.outcomes.length === 1 ? "" : "s"}) · ` +
      `${done} completed, ${failed} failed or skipped · ${formatDuration(s.durationMs)} · ${usage.total_tokens} tokens`,
  ];
  if (llms.length) lines.push(`LLM: ${llms.join(", ")}`);
  if (s.plan.note) lines.push(`Note: ${s.plan.note}`);
  for (const o of s.outcomes) {
    lines.push("", `## ${o.title} — ${statusOf(o)}`);
    if (o.skipped) {
      lines.push(`capability ${o.capability} · not run: ${o.skipped}`);
      continue;
    }
    const r = o.result!;
    lines.push(
      // The same time and tokens the live progress lines show for it (roles/picoclaw/progress.ts).
      `node ${r.node} · capability ${r.capability} · ${formatDuration(r.finished_at - r.started_at)} (run time on the node) · ` +
        `attempt ${r.attempts} · ${r.usage.total_tokens} tokens${o.required ? "" : " · optional"}`,
    );
    if (r.tool_calls?.length) lines.push(toolCallsLine(r.tool_calls));
    lines.push("");
    if (r.status === "completed") lines.push(r.text ?? "");
    else {
      lines.push(`**Failed:** ${r.error ?? "unknown error"}`);
      if (r.errors.length > 1) lines.push("", "Attempts:", ...r.errors.map((e) => `- ${e}`));
    }
  }
  return lines.join("\n");
}

/**
 * LLM merge; on any failure falls back to the structured report with a note, so an answer always comes.
 * The structured per-sub-task status lines are kept under the merged text so nothing is hidden.
 */
export async function synthesize(
  s: SynthesisInput,
  llm: LlmProvider,
  signal?: AbortSignal,
  onText?: (delta: string) => void,
): Promise<{ text: string; usage?: LlmUsage; by: "llm" | "report" }> {
  const report = structuredReport(s);
  const usable = s.outcomes.filter((o) => o.result?.status === "completed");
  if (llm.kind === "echo" || usable.length < 2 || s.stopped) return { text: report, by: "report" };
  try {
    // Within a budget: 32 results of 64 KiB would pass any model's context and the message limit.
    const share = Math.floor(MAX_SYNTHESIS_INPUT_BYTES / usable.length);
    const sections = usable.map((o) => `## ${o.title} (${o.capability})\n${cut(o.result!.text ?? "", share)}`).join("\n\n");
    const c = await llm.complete({
      signal,
      capability: SYNTHESIS,
      onProgress: onText && ((_tokens, delta) => delta && onText(delta)),
      messages: [
        {
          role: "system",
          content:
            "You merge the results of several specialist agents into one answer to the user's request. Keep every finding; remove repetition; say which parts failed. Markdown.",
        },
        { role: "user", content: `Request:\n${s.requestText}\n\nResults:\n\n${sections}` },
      ],
    });
    const status = s.outcomes
      .map((o) => {
        const calls = o.result?.tool_calls?.length ? `\n  ${toolCallsLine(o.result.tool_calls)}` : "";
        return `- ${o.title}: ${statusOf(o)}${o.result ? ` (node ${o.result.node})` : ""}${calls}`;
      })
      .join("\n");
    const note = s.plan.note ? `\nNote: ${s.plan.note}` : "";
    return { text: `${c.text}\n\n---\nPlanner: ${s.plan.planner}${note}\nSub-tasks:\n${status}`, usage: c.usage, by: "llm" };
  } catch (err) {
    return { text: `${report}\n\nNote: LLM synthesis failed (${(err as Error).message}); showing the structured report.`, by: "report" };
  }
}

/**
 * `Tool calls: 3 · write_file "a.txt" (2ms, ok) · exec "git diff" (40ms, ok, approved by alice@ops (ap-3f9a0c1b2d))`:
 * at most 20 shown; a call that needed approval says how it was decided.
 */
function toolCallsLine(calls: ToolCallSummary[]): string {
  const decided = (c: ToolCallSummary) =>
    c.approval ? `, ${c.approval.outcome.replace("_", " ")}${c.approval.by ? ` by ${c.approval.by}` : ""} (${c.approval.id})` : "";
  const shown = calls.slice(0, 20).map((c) => `${c.tool} ${c.args} (${formatDuration(c.duration_ms)}, ${c.outcome}${decided(c)})`);
  const more = calls.length > 20 ? ` · ${calls.length - 20} more` : "";
  return `Tool calls: ${calls.length} · ${shown.join(" · ")}${more}`;
}

function taskEnd(x: SubTaskOutcome): TaskEnd {
  const r = x.result;
  if (!r) return { id: x.id, status: x.skipped ? "skipped" : "unfinished" };
  return {
    ...{ id: x.id, status: r.status === "completed" ? "completed" : "failed", node: r.node },
    ...{ tokens: r.usage.total_tokens, started_at: r.started_at, finished_at: r.finished_at },
  };
}

/** Results given to the LLM merge, all together at most this much (each a fair share of it). */
const MAX_SYNTHESIS_INPUT_BYTES = 256 * 1024;

function cut(text: string, maxBytes: number): string {
  const bytes = Buffer.from(text);
  if (bytes.length <= maxBytes) return text;
  return `${bytes
    .subarray(0, maxBytes)
    .toString()
    .replace(/\uFFFD$/, "")}\n[… ${bytes.length - maxBytes} more bytes not shown to the merge]`;
}

/**
 * The answer event: the merged text, the request's status, and the tokens of every LLM call it made
 * (planning, sub-tasks, merge) in all and by node, capability and model. While an LLM merges, its text
 * goes to followers as `answer_delta` events. `expired`: the deadline ended the request, and its error
 * says which sub-tasks were unfinished; `stopped` (in the input): its token limit did.
 */
export async function answerFor(s: SynthesisInput, llm: LlmProvider, startedAt: number, ctx: AnswerContext): Promise<RequestEventBody> {
  const deltas = ctx.tell ? deltaSender(ctx.tell) : undefined;
  const merged = await synthesize(s, llm, ctx.signal, deltas?.push);
  deltas?.flush();
  const missing = s.outcomes.filter((x) => x.required && x.result?.status !== "completed").map((x) => x.id);
  const unfinished = s.outcomes.filter((x) => !x.result).map((x) => x.id);
  const failed = missing.length > 0 || ctx.expired || s.stopped !== undefined;
  const status = failed ? "failed" : s.outcomes.some((x) => x.result?.status !== "completed") ? "partial" : "completed";
  const rows = usageRows(s, ctx.coordinator, llm.model, merged.usage);
  return {
    kind: "answer",
    answer: merged.text,
    status,
    usage: sumUsage(rows),
    usage_by: rows,
    duration_ms: Date.now() - startedAt,
    tasks: s.outcomes.map(taskEnd),
    error:
      s.stopped ??
      (ctx.expired
        ? `the request's deadline passed with sub-tasks unfinished: ${unfinished.join(", ")}`
        : missing.length
          ? `required sub-task failed: ${missing.join(", ")}`
          : undefined),
  };
}

/** Tokens by node, capability and model: the planner's, each sub-task's, the merge's. */
export function usageRows(s: SynthesisInput, coordinator: string, model: string, merge?: LlmUsage): UsageRow[] {
  const rows = new Map<string, UsageRow>();
  const add = (node: string, capability: string, model: string, u: LlmUsage) => {
    if (u.total_tokens === 0 && u.prompt_tokens === 0 && u.completion_tokens === 0) return;
    const key = JSON.stringify([node, capability, model]);
    const row = rows.get(key) ?? { node, capability, model, prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };
    row.prompt_tokens += u.prompt_tokens;
    row.completion_tokens += u.completion_tokens;
    row.total_tokens += u.total_tokens;
    rows.set(key, row);
  };
  if (s.plan.usage) add(coordinator, PLANNING, model, s.plan.usage);
  for (const o of s.outcomes) if (o.result) add(o.result.node, o.result.capability, o.result.model ?? "(unknown)", o.result.usage);
  if (merge) add(coordinator, SYNTHESIS, model, merge);
  return [...rows.values()];
}

export function sumUsage(rows: LlmUsage[]): LlmUsage {
  const u = { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };
  for (const r of rows) {
    u.prompt_tokens += r.prompt_tokens;
    u.completion_tokens += r.completion_tokens;
    u.total_tokens += r.total_tokens;
  }
  return u;
}

/** Gathers streamed text and sends it as numbered `answer_delta` events at most every DELTA_EVERY_MS. */
function deltaSender(tell: (ev: RequestEventBody) => void): { push(delta: string): void; flush(): void } {
  let buf = "";
  let seq = 0;
  let last = Date.now();
  const flush = () => {
    for (let i = 0; i < buf.length; i += MAX_ANSWER_DELTA_CHARS) {
      tell({ kind: "answer_delta", delta: buf.slice(i, i + MAX_ANSWER_DELTA_CHARS), seq: seq++ });
    }
    buf = "";
    last = Date.now();
  };
  return {
    push(delta) {
      buf += delta;
      if (Date.now() - last >= DELTA_EVERY_MS || buf.length >= MAX_ANSWER_DELTA_CHARS) flush();
    },
    flush,
  };
}
