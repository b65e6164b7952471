// Merges sub-task results into one answer: by LLM when one is configured, else a structured report.
// Failed and skipped sub-tasks are always shown, never dropped.
import { formatDuration } from "../../lib/duration.ts";
import type { LlmProvider, LlmUsage } from "../../lib/llm-types.ts";
import type { PlanSummary, RequestEventBody, TaskResult } from "../../lib/task-messages.ts";

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
}

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
      `node ${r.node} · capability ${r.capability} · ${formatDuration(r.finished_at - r.started_at)} · ` +
        `attempt ${r.attempts} · ${r.usage.total_tokens} tokens${o.required ? "" : " · optional"}`,
    );
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
): Promise<{ text: string; usage?: LlmUsage; by: "llm" | "report" }> {
  const report = structuredReport(s);
  const usable = s.outcomes.filter((o) => o.result?.status === "completed");
  if (llm.kind === "echo" || usable.length < 2) return { text: report, by: "report" };
  try {
    // Within a budget: 32 results of 64 KiB would pass any model's context and the message limit.
    const share = Math.floor(MAX_SYNTHESIS_INPUT_BYTES / usable.length);
    const sections = usable.map((o) => `## ${o.title} (${o.capability})\n${cut(o.result!.text ?? "", share)}`).join("\n\n");
    const c = await llm.complete({
      signal,
      messages: [
        {
          role: "system",
          content:
            "You merge the results of several specialist agents into one answer to the user's request. Keep every finding; remove repetition; say which parts failed. Markdown.",
        },
        { role: "user", content: `Request:\n${s.requestText}\n\nResults:\n\n${sections}` },
      ],
    });
    const status = s.outcomes.map((o) => `- ${o.title}: ${statusOf(o)}${o.result ? ` (node ${o.result.node})` : ""}`).join("\n");
    const note = s.plan.note ? `\nNote: ${s.plan.note}` : "";
    return { text: `${c.text}\n\n---\nPlanner: ${s.plan.planner}${note}\nSub-tasks:\n${status}`, usage: c.usage, by: "llm" };
  } catch (err) {
    return { text: `${report}\n\nNote: LLM synthesis failed (${(err as Error).message}); showing the structured report.`, by: "report" };
  }
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
 * The answer event: the merged text, the request's status and the tokens of every LLM call it made.
 * `expired`: the deadline ended the request, and its error says which sub-tasks were unfinished.
 */
export async function answerFor(
  s: SynthesisInput,
  llm: LlmProvider,
  startedAt: number,
  o: { signal?: AbortSignal; expired?: boolean } = {},
): Promise<RequestEventBody> {
  const merged = await synthesize(s, llm, o.signal);
  const missing = s.outcomes.filter((x) => x.required && x.result?.status !== "completed").map((x) => x.id);
  const unfinished = s.outcomes.filter((x) => !x.result).map((x) => x.id);
  const status =
    missing.length || o.expired ? "failed" : s.outcomes.some((x) => x.result?.status !== "completed") ? "partial" : "completed";
  const usage = totalUsage(s.outcomes);
  if (merged.usage) {
    usage.prompt_tokens += merged.usage.prompt_tokens;
    usage.completion_tokens += merged.usage.completion_tokens;
    usage.total_tokens += merged.usage.total_tokens;
  }
  return {
    kind: "answer",
    answer: merged.text,
    status,
    usage,
    duration_ms: Date.now() - startedAt,
    error: o.expired
      ? `the request's deadline passed with sub-tasks unfinished: ${unfinished.join(", ")}`
      : missing.length
        ? `required sub-task failed: ${missing.join(", ")}`
        : undefined,
  };
}
