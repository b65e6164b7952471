// The tool loop of one sub-task: chat completions with function calling until the model answers without
// a tool call or max_tool_iterations is reached. Each finished model turn and each tool result is a
// step, recorded once before the loop goes on, so the next attempt (on any worker) resumes from the last
// one: a finished call is never run again, and a call whose result was not recorded is run again only
// when its tool is replay-safe, else the model is told its outcome is unknown.
import type { KV } from "nats";
import type { ChatMessage, LlmProvider, LlmUsage, ToolCall } from "../../lib/llm-types.ts";
import type { RecordGuard } from "../../lib/record-guard.ts";
import { type RecordedTurn, readSteps, recordStep, type ToolStep, type TurnStep } from "../../lib/steps.ts";
import { type ApprovalNote, briefArgs, type ToolCallSummary } from "../../lib/task-messages.ts";
import { type ApprovalGate, ParkedError } from "./approval-gate.ts";
import { runTool, type ToolRegistry, type ToolRun } from "./tools/index.ts";

export interface AgentTask {
  request: string;
  task: string;
  capability: string;
}

export interface AgentOptions {
  llm: LlmProvider;
  tools: ToolRegistry;
  kv: KV;
  guard: RecordGuard;
  node: string;
  maxIterations: number;
  maxOutputBytes: number;
  /** The sub-task's deadline, its timeout and the node stopping: aborts the model call and running tools. */
  signal: AbortSignal;
  /** Tokens of the whole loop so far (every iteration's), as the current call streams. */
  onTokens(total: number): void;
  /** The step the loop is at, for heartbeats (`exec "bun test"`, `thinking`). */
  onStep(step: string): void;
  /**
   * Read the steps an earlier attempt recorded (a redelivery). A first delivery reads nothing: should an
   * earlier run have left steps after all (a re-routed copy), recording step 1 fails and it comes back.
   */
  resume: boolean;
  /** Each tool call's end (metrics, progress events), with its arguments in a few words. */
  onToolDone?(step: ToolStep & { args: string }): void;
  /** tools.approval.required: calls it names wait for a person (the loop throws ParkedError meanwhile). */
  approvals?: ApprovalGate;
}

export interface AgentAnswer {
  text: string;
  usage: LlmUsage;
  model: string;
  iterations: number;
  toolCalls: ToolCallSummary[];
  /** True when max_tool_iterations ended the loop before the model answered. */
  stoppedAtLimit: boolean;
}

/** What the model is told of a call whose worker died before its result was recorded. */
export const INTERRUPTED =
  "interrupted: the worker running this call stopped before its result was recorded, so it may or may not have taken effect. Check before repeating it.";

/** Runs (or resumes) the loop for `task` from its system and user messages. */
export async function runAgent(task: AgentTask, start: ChatMessage[], o: AgentOptions): Promise<AgentAnswer> {
  const usage: LlmUsage = { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };
  const calls: ToolCallSummary[] = [];
  const messages = [...start];
  let next = 1; // the next step number
  let lastText = "";
  let model = o.llm.model;
  const recorded = o.resume && o.tools.names().length ? await readSteps(o.kv, task.request, task.task, o.guard) : [];
  for (const [i, r] of recorded.entries()) {
    addUsage(usage, r.turn.usage);
    messages.push({ role: "assistant", content: r.turn.content, tool_calls: r.turn.calls });
    lastText = r.turn.content;
    const results = i === recorded.length - 1 ? await finishTurn(task, r, o) : r.results;
    for (const [k, c] of r.turn.calls.entries()) {
      const s = results.get(c.id);
      messages.push({ role: "tool", tool_call_id: c.id, content: s?.content ?? INTERRUPTED });
      calls.push(summaryOf(c, s, s?.n ?? r.turn.n + 1 + k));
    }
    next = r.turn.results ? r.turn.n + 1 : r.turn.n + 1 + r.turn.calls.length;
  }
  const writes = laterWrites();
  const definitions = () => o.tools.list().map((t) => ({ name: t.name, description: t.description, parameters: t.parameters }));
  for (let iteration = recorded.length; iteration < o.maxIterations; iteration++) {
    o.onStep(iteration === 0 ? "thinking" : `thinking (iteration ${iteration + 1})`);
    const before = usage.total_tokens;
    const c = await o.llm.complete({
      messages,
      tools: definitions(),
      capability: task.capability,
      signal: o.signal,
      onProgress: (tokens) => o.onTokens(before + tokens),
    });
    addUsage(usage, c.usage);
    o.onTokens(usage.total_tokens);
    model = c.model;
    const asked = c.toolCalls ?? [];
    if (asked.length === 0) {
      await writes.flush();
      return { text: c.text, usage, model, iterations: iteration + 1, toolCalls: calls, stoppedAtLimit: false };
    }
    lastText = c.text;
    messages.push({ role: "assistant", content: c.text, tool_calls: asked });
    const taken = await takeTurn(task, { n: next, content: c.text, calls: asked, usage: c.usage }, o, writes);
    for (const [k, call] of asked.entries()) {
      const s = taken.results[k]!;
      messages.push({ role: "tool", tool_call_id: call.id, content: s.content });
      calls.push(summaryOf(call, s, s.n));
    }
    next = taken.next;
  }
  await writes.flush();
  const note = `[Stopped after ${o.maxIterations} tool iterations (agents.defaults.max_tool_iterations); this answer may be incomplete.]`;
  return {
    text: lastText ? `${lastText}\n\n${note}` : note,
    usage,
    model,
    iterations: o.maxIterations,
    toolCalls: calls,
    stoppedAtLimit: true,
  };
}

/**
 * Runs a turn's calls together (they are independent by the API's contract) and records the turn. When
 * every call is replay-safe, the turn is recorded once, with the results, after the calls ran (one
 * write: a crash before it only means they run again), and the loop does not wait for that write.
 * Otherwise every earlier write is waited for and the turn is recorded first, so a worker that dies
 * mid-call leaves the call's intent behind (never after a gap a resume would stop at), then each result.
 */
async function takeTurn(
  task: AgentTask,
  t: Pick<TurnStep, "n" | "content" | "calls" | "usage">,
  o: AgentOptions,
  writes: LaterWrites,
): Promise<{ results: ToolStep[]; next: number }> {
  const turn: TurnStep = { v: 1, kind: "turn", node: o.node, at: Date.now(), ...t };
  if (t.calls.every((c) => o.tools.get(c.name)?.replaySafe === true && !o.approvals?.needs(c.name))) {
    const results = await Promise.all(t.calls.map((c) => runCall(c, t.n, o)));
    writes.later(() => recordStep(o.kv, task.request, task.task, { ...turn, results }, o.guard));
    return { results, next: t.n + 1 };
  }
  await writes.flush();
  await recordStep(o.kv, task.request, task.task, turn, o.guard);
  const results = await allCalls(t.calls.map((c, k) => () => runAndRecord(task, t.n + 1 + k, c, o, t.content)));
  return { results, next: t.n + 1 + t.calls.length };
}

/**
 * Runs a turn's calls together to their ends. Calls that wait for approval do not stop the others:
 * once every other call has its result recorded, the loop parks (ParkedError with every waiting call).
 */
async function allCalls<T>(calls: (() => Promise<T>)[]): Promise<T[]> {
  const settled = await Promise.allSettled(calls.map((c) => c()));
  const failed = settled.find((r) => r.status === "rejected" && !(r.reason instanceof ParkedError));
  if (failed?.status === "rejected") throw failed.reason;
  const parked = settled.flatMap((r) => (r.status === "rejected" ? (r.reason as ParkedError).pending : []));
  if (parked.length) throw new ParkedError(parked);
  return settled.map((r) => (r as PromiseFulfilledResult<T>).value);
}

interface LaterWrites {
  /** Starts `write` after the ones before it; its failure surfaces at the next flush. */
  later(write: () => Promise<void>): void;
  /** Waits for every write so far; throws the first that failed. */
  flush(): Promise<void>;
}

/** Step writes the loop need not wait for, kept in order (a step is created only after the one before). */
function laterWrites(): LaterWrites {
  let chain: Promise<void> = Promise.resolve();
  let failed: unknown;
  return {
    later(write) {
      chain = chain
        .then(() => (failed === undefined ? write() : undefined))
        .catch((err) => {
          failed ??= err;
        });
    },
    async flush() {
      await chain;
      if (failed !== undefined) throw failed;
    },
  };
}

/** Runs one call and records its result; a call that needs approval passes the gate first. */
async function runAndRecord(task: AgentTask, n: number, call: ToolCall, o: AgentOptions, reason = ""): Promise<ToolStep> {
  let approval: ApprovalNote | undefined;
  if (o.approvals?.needs(call.name)) {
    const v = await o.approvals.check(task, call, n, reason);
    if (v.kind === "park") throw new ParkedError([v.pending]);
    if (v.kind === "refuse") {
      const step: ToolStep = {
        ...{ v: 1, kind: "tool", n, node: o.node, at: Date.now(), call_id: call.id, tool: call.name },
        ...{ content: v.content, is_error: true, outcome: v.outcome, duration_ms: 0, approval: v.approval },
      };
      await recordStep(o.kv, task.request, task.task, step, o.guard);
      o.onToolDone?.({ ...step, args: briefArgs(call.arguments) });
      return step;
    }
    approval = v.approval;
  }
  const step = await runCall(call, n, o, approval);
  await recordStep(o.kv, task.request, task.task, step, o.guard);
  return step;
}

/** One call, run to its end, as the step that records it (numbered `n`). */
async function runCall(call: ToolCall, n: number, o: AgentOptions, approval?: ApprovalNote): Promise<ToolStep> {
  o.onStep(`${call.name} ${briefArgs(call.arguments)}`);
  const r: ToolRun = await runTool(o.tools, call.name, call.arguments, { signal: o.signal, maxBytes: o.maxOutputBytes });
  const step: ToolStep = {
    v: 1,
    kind: "tool",
    n,
    node: o.node,
    at: Date.now(),
    call_id: call.id,
    tool: call.name,
    content: r.content,
    is_error: r.isError,
    outcome: r.outcome,
    duration_ms: r.duration_ms,
    approval,
  };
  o.onToolDone?.({ ...step, args: briefArgs(call.arguments) });
  // A stop mid-call is not a result: the call is left unrecorded, and the next attempt decides.
  if (o.signal.aborted) throw o.signal.reason ?? new Error("aborted");
  return step;
}

/**
 * The last recorded turn of a resumed loop: its calls without a recorded result are run again when
 * their tool is replay-safe, else recorded as interrupted (outcome unknown), so every call has an answer.
 */
async function finishTurn(task: AgentTask, r: RecordedTurn, o: AgentOptions): Promise<Map<string, ToolStep>> {
  const results = new Map(r.results);
  const missing = r.turn.calls.map((c, k) => ({ c, n: r.turn.n + 1 + k })).filter(({ c }) => !results.has(c.id));
  await allCalls(
    missing.map(({ c, n }) => async () => {
      // Never run: a call waiting for approval (or decided meanwhile) passes the gate now.
      if (o.tools.get(c.name)?.replaySafe || o.approvals?.needs(c.name)) {
        results.set(c.id, await runAndRecord(task, n, c, o, r.turn.content));
        return;
      }
      const step: ToolStep = {
        v: 1,
        kind: "tool",
        n,
        node: o.node,
        at: Date.now(),
        call_id: c.id,
        tool: c.name,
        content: INTERRUPTED,
        is_error: true,
        outcome: "interrupted",
        duration_ms: 0,
      };
      await recordStep(o.kv, task.request, task.task, step, o.guard);
      results.set(c.id, step);
    }),
  );
  return results;
}

function summaryOf(call: ToolCall, s: ToolStep | undefined, n: number): ToolCallSummary {
  return {
    step: n,
    tool: call.name,
    args: briefArgs(call.arguments),
    outcome: s?.outcome ?? "interrupted",
    duration_ms: s?.duration_ms ?? 0,
    node: s?.node ?? "",
    approval: s?.approval,
  };
}

function addUsage(to: LlmUsage, u: LlmUsage): void {
  to.prompt_tokens += u.prompt_tokens;
  to.completion_tokens += u.completion_tokens;
  to.total_tokens += u.total_tokens;
}
