// Turning a request into a plan: an explicit plan if given, else the LLM planner (validated, one retry),
// else the heuristic planner (the guide's code-review split, or the capabilities the request names).

import type { Config } from "../../lib/config.ts";
import type { ChatMessage, LlmProvider, LlmUsage } from "../../lib/llm-types.ts";
import { type Plan, PlanError, type PlanTask, planFromValue, titleOf, validatePlan } from "../../lib/plan.ts";
import type { OnlineCapabilities } from "../../lib/registry.ts";
import type { PlanSummary, RequestMsg } from "../../lib/task-messages.ts";

export interface PlanLimitsInput {
  maxFanout: number;
  maxDepth: number;
  maxPromptBytes: number;
}

/** Capabilities that run the swarm rather than sub-tasks. */
const NOT_FOR_TASKS = new Set(["coordination", "scheduling"]);

const REVIEW_WORDS = /\b(review(s|ed|ing)?|audit(s|ed|ing)?|look(ing)? over|pr|prs|pull request|diff(s)?|change(s|set)?|patch(es)?)\b/i;

interface ReviewArea {
  id: string;
  capabilities: string[];
  focus: string;
}

const REVIEW_AREAS: ReviewArea[] = [
  {
    id: "code",
    capabilities: ["code", "rust", "go", "python", "typescript", "javascript", "java", "cpp", "c"],
    focus: "the code itself: correctness, bugs, edge cases, error handling, readability and design",
  },
  {
    id: "security",
    capabilities: ["security", "audit"],
    focus: "security: injection, authentication and authorisation, secrets, unsafe input handling, unsafe defaults and risky dependencies",
  },
  {
    id: "docs",
    capabilities: ["docs", "writing", "documentation"],
    focus: "documentation: comments, docstrings, README and API docs, naming; what is missing, outdated or misleading",
  },
  {
    id: "testing",
    capabilities: ["testing", "qa", "test"],
    focus: "testing: which cases are covered, which are missing (edge cases, failures), and concrete tests to add",
  },
];

/** Online capabilities sub-tasks may use (nodes > 0, not the coordinator's own). */
export function taskCapabilities(online: OnlineCapabilities): Set<string> {
  return new Set([...online].filter(([cap, n]) => n > 0 && !NOT_FOR_TASKS.has(cap)).map(([cap]) => cap));
}

function onlineSet(online: OnlineCapabilities): Set<string> {
  return new Set([...online].filter(([, n]) => n > 0).map(([cap]) => cap));
}

function task(id: string, capability: string, prompt: string, title: string): PlanTask {
  return { id, capability, prompt, depends_on: [], priority: 1, required: true, title };
}

/** Slug of at most 40 characters, unique among `used`. */
function uniqueId(base: string, used: Set<string>): string {
  const slug = base.replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 40) || "task";
  let id = slug;
  for (let n = 2; used.has(id); n++) id = `${slug.slice(0, 40 - String(n).length - 1)}-${n}`;
  used.add(id);
  return id;
}

function focusPrompt(cap: string, request: string): string {
  return (
    `You are the ${cap} specialist of a swarm. Handle the part of this request that concerns ${cap}; ` +
    `other nodes cover the rest, and a coordinator merges the results.\n\n${request}`
  );
}

function reviewTasks(request: string, caps: Set<string>): PlanTask[] {
  const out: PlanTask[] = [];
  for (const area of REVIEW_AREAS) {
    const cap = area.capabilities.find((c) => caps.has(c)) ?? (caps.has("general") ? "general" : undefined);
    if (cap === undefined) continue;
    const prompt =
      `You are the ${area.id} reviewer of a swarm. Review only for ${area.focus}. Other reviewers ` +
      `cover the other areas. Be specific: name the file, function or line and suggest a fix.\n\n${request}`;
    out.push(task(area.id, cap, prompt, `${area.id} review`));
  }
  return out;
}

/** Online capabilities named as a word in the request, in the order the request names them. */
function namedTasks(request: string, caps: Set<string>): PlanTask[] {
  const found: { cap: string; at: number }[] = [];
  for (const cap of caps) {
    if (cap === "general") continue;
    const escaped = cap.replace(/[-\\^$*+?.()|[\]{}]/g, "\\$&");
    const m = new RegExp(`(?<![A-Za-z0-9_-])${escaped}(?![A-Za-z0-9_-])`, "i").exec(request);
    if (m) found.push({ cap, at: m.index });
  }
  found.sort((a, b) => a.at - b.at);
  return found.map(({ cap }) => task(cap, cap, focusPrompt(cap, request), `${cap} task`));
}

/**
 * The planner without an LLM: `capabilities` -> one task each; a review request -> the guide's code,
 * security, docs and testing reviews; else the capabilities the request names; else one task on
 * "general" (or the most common capability). At most `maxFanout` tasks, all parallel.
 */
export function heuristicPlan(request: string, online: OnlineCapabilities, opts: { capabilities?: string[]; maxFanout: number }): Plan {
  const caps = taskCapabilities(online);
  let tasks: PlanTask[] = [];
  if (opts.capabilities && opts.capabilities.length > 0) {
    const used = new Set<string>();
    for (const cap of new Set(opts.capabilities)) tasks.push(task(uniqueId(cap, used), cap, focusPrompt(cap, request), `${cap} task`));
  } else {
    if (REVIEW_WORDS.test(request)) tasks = reviewTasks(request, caps);
    if (tasks.length === 0) tasks = namedTasks(request, caps);
    if (tasks.length === 0) {
      // A request that names no capability is general work: specialists take only their own
      // capabilities, so with no general worker online validation rejects it with a clear message.
      tasks = [task("general", "general", request, "general task")];
    }
  }
  return { tasks: tasks.slice(0, Math.max(1, opts.maxFanout)), synthesize: true };
}

function systemPrompt(caps: string[], limits: PlanLimitsInput, tools?: Map<string, Set<string>>): string {
  const withTools = caps.filter((c) => (tools?.get(c)?.size ?? 0) > 0);
  const toolLines = withTools.length
    ? [
        "- tools (optional): tools the task cannot do without; it then runs only on a node that has them. Tools online now, by capability:",
        ...withTools.map((c) => `  ${c}: ${[...tools!.get(c)!].sort().join(", ")}`),
      ]
    : [];
  return [
    "You are the planner of PicoClaw Swarm, a swarm of AI agent nodes. Split the user's request into sub-tasks.",
    "Tasks without dependencies run in parallel on different nodes; a coordinator merges all results afterwards,",
    "so do not add a final summary or synthesis task. Use one task when the request is simple.",
    "Reply with ONLY a JSON object of this shape, no prose:",
    '{"tasks":[{"id":"security","capability":"security","prompt":"...","depends_on":[],"priority":1,"title":"security review"}]}',
    "Rules:",
    "- id: 1-40 characters from A-Z a-z 0-9 _ - (no dots or spaces), unique within the plan.",
    `- capability: exactly one of the capabilities online now: ${caps.join(", ") || "(none)"}. No other value is allowed.`,
    "- prompt: a complete, self-contained instruction, including the parts of the request the task needs.",
    "- depends_on: ids of tasks whose results this task needs ([] when none); no cycles.",
    '- priority: integer 0-3, 3 most urgent (default 1). title: a short label like "security review".',
    `- At most ${limits.maxFanout} tasks can run at once, dependency chains at most ${limits.maxDepth} tasks long, ` +
      `at most ${limits.maxFanout * limits.maxDepth} tasks in all, each prompt under ${limits.maxPromptBytes} bytes.`,
    ...toolLines,
  ].join("\n");
}

/** The JSON object in a reply, tolerating a ```json fenced block or prose around it. */
function replyJson(text: string): unknown {
  const fenced = /```(?:json)?\s*([\s\S]*?)```/i.exec(text);
  let body = (fenced?.[1] ?? text).trim();
  if (!body.startsWith("{")) {
    const start = body.indexOf("{");
    const end = body.lastIndexOf("}");
    if (start >= 0 && end > start) body = body.slice(start, end + 1);
  }
  try {
    return JSON.parse(body);
  } catch (err) {
    throw new PlanError(`the reply is not JSON (${err instanceof Error ? err.message : String(err)})`);
  }
}

/** Priorities an LLM plan may ask for: the default and below (a chat cannot jump other requests' queues). */
const MAX_LLM_PRIORITY = 1;

/**
 * An LLM plan is written by a model reading the user's chat: it may not pin a sub-task to a node (a
 * pinned sub-task waits for that node alone) nor raise priority above the default. Both are dropped.
 */
function fromChat(plan: Plan): Plan {
  return {
    ...plan,
    tasks: plan.tasks.map(({ node: _node, ...t }) => ({ ...t, priority: Math.min(t.priority, MAX_LLM_PRIORITY) })),
  };
}

/** Asks the LLM for a plan; validates it; retries once telling the model what was wrong. */
export async function llmPlan(
  request: string,
  online: OnlineCapabilities,
  llm: LlmProvider,
  opts: PlanLimitsInput & { signal?: AbortSignal; onUsage?: (u: LlmUsage) => void; tools?: Map<string, Set<string>> },
): Promise<{ plan: Plan; attempts: number; usage: LlmUsage }> {
  const caps = taskCapabilities(online);
  const limits = {
    capabilities: caps,
    tools: opts.tools,
    maxFanout: opts.maxFanout,
    maxDepth: opts.maxDepth,
    maxPromptBytes: opts.maxPromptBytes,
  };
  const messages: ChatMessage[] = [
    { role: "system", content: systemPrompt([...caps].sort(), opts, opts.tools) },
    { role: "user", content: request },
  ];
  let reason = "";
  const usage = { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };
  for (let attempt = 1; attempt <= 2; attempt++) {
    const reply = await llm.complete({ messages: [...messages], json: true, signal: opts.signal, capability: PLANNING });
    addUsage(usage, reply.usage);
    opts.onUsage?.(usage);
    try {
      const plan = fromChat(planFromValue(replyJson(reply.text), "the LLM reply"));
      validatePlan(plan, limits);
      return { plan, attempts: attempt, usage };
    } catch (err) {
      if (!(err instanceof PlanError)) throw err;
      reason = err.message;
      messages.push({ role: "assistant", content: reply.text });
      messages.push({ role: "user", content: `That plan is invalid: ${reason}\nReply with the corrected JSON object only.` });
    }
  }
  throw new PlanError(`LLM planner returned an invalid plan twice: ${reason}`);
}

export interface MadePlan {
  plan: Plan;
  planner: "explicit" | "llm" | "heuristic";
  /** Why a fallback happened, for the answer and the log. */
  note?: string;
  /** Tokens the LLM planner used, also when it failed and the heuristic planned. */
  usage?: LlmUsage;
}

/** The coordinator's planning calls, in token counts. */
export const PLANNING = "(planning)";

function addUsage(to: LlmUsage, u: LlmUsage): void {
  to.prompt_tokens += u.prompt_tokens;
  to.completion_tokens += u.completion_tokens;
  to.total_tokens += u.total_tokens;
}

/** Whether makePlan will ask the LLM (so planning may take a while): no explicit plan or capability list, a real LLM. */
export function plansWithLlm(input: { explicit?: unknown; capabilities?: string[]; llm?: LlmProvider }): boolean {
  const listed = input.capabilities !== undefined && input.capabilities.length > 0;
  return input.explicit === undefined && !listed && input.llm !== undefined && input.llm.kind !== "echo";
}

/** Explicit plan > LLM planner (unless the provider is the offline echo) > heuristic. Throws PlanError. */
export async function makePlan(input: {
  request: string;
  online: OnlineCapabilities;
  limits: PlanLimitsInput;
  explicit?: Plan;
  llm?: LlmProvider;
  /** `--capabilities`: one sub-task per listed capability (heuristic rule, no LLM). */
  capabilities?: string[];
  /** Online node ids, for explicit plans that pin a task to a node. */
  nodes?: Set<string>;
  /** Capability -> tools its online nodes offer: plans that need tools are checked, the LLM planner is told. */
  tools?: Map<string, Set<string>>;
  signal?: AbortSignal;
}): Promise<MadePlan> {
  const { request, online, limits } = input;
  if (input.explicit) {
    validatePlan(input.explicit, {
      ...limits,
      capabilities: onlineSet(online),
      nodes: input.nodes,
      tools: input.tools,
      source: "the explicit plan",
    });
    return { plan: input.explicit, planner: "explicit" };
  }
  let note: string | undefined;
  let usage: LlmUsage | undefined;
  if (input.llm && plansWithLlm(input)) {
    try {
      const made = await llmPlan(request, online, input.llm, {
        ...limits,
        tools: input.tools,
        signal: input.signal,
        onUsage: (u) => {
          usage = u;
        },
      });
      return { plan: made.plan, planner: "llm", usage: made.usage };
    } catch (err) {
      if (input.signal?.aborted) throw err;
      const msg = err instanceof Error ? err.message : String(err);
      const prefix = "LLM planner returned an invalid plan twice: ";
      note = msg.startsWith(prefix)
        ? `LLM planner returned an invalid plan twice (${msg.slice(prefix.length)}); used the heuristic plan`
        : `LLM planner failed (${msg}); used the heuristic plan`;
    }
  }
  const plan = heuristicPlan(request, online, { capabilities: input.capabilities, maxFanout: limits.maxFanout });
  validatePlan(plan, { ...limits, capabilities: onlineSet(online) });
  const made: MadePlan = { plan, planner: "heuristic" };
  if (note !== undefined) made.note = note;
  if (usage !== undefined) made.usage = usage;
  return made;
}

/** A submitted request's plan, against what is online now, and the summary followers see. */
export async function planRequest(
  req: RequestMsg,
  online: { capabilities: OnlineCapabilities; nodes: Set<string>; tools?: Map<string, Set<string>> },
  tasks: Config["swarm"]["tasks"],
  llm: LlmProvider,
  signal?: AbortSignal,
): Promise<{ plan: Plan; summary: PlanSummary }> {
  const made = await makePlan({
    request: req.text,
    online: online.capabilities,
    nodes: online.nodes,
    tools: online.tools,
    limits: { maxFanout: tasks.max_fanout, maxDepth: tasks.max_depth, maxPromptBytes: tasks.max_prompt_bytes },
    explicit: req.plan === undefined ? undefined : planFromValue(req.plan, "the submitted plan"),
    llm,
    capabilities: req.capabilities,
    signal,
  });
  const summary: PlanSummary = {
    planner: made.planner,
    note: made.note,
    usage: made.usage,
    tasks: made.plan.tasks.map((t) => ({
      id: t.id,
      title: titleOf(t),
      capability: t.capability,
      priority: t.priority,
      depends_on: t.depends_on,
      required: t.required,
    })),
  };
  return { plan: made.plan, summary };
}
