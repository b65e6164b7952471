// A request's plan: a DAG of sub-tasks, each for one capability. Parsed from YAML/JSON, checked against
// the swarm's limits and the capabilities online now, and walked level by level. Pure: no I/O.
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { parseDuration } from "./duration.ts";
import { PicoclawError } from "./errors.ts";
import { ID_PATTERN } from "./ids.ts";

/** Task ids are at most 40 characters, so "<request id>_<task id>" still fits one 64-char subject token. */
export const TASK_ID_PATTERN = /^[A-Za-z0-9_-]{1,40}$/;
const TASK_ID_RULE = "1-40 characters from A-Z a-z 0-9 _ - (no dots, spaces, '*' or '>')";
const CAP_RULE = "1-64 characters from A-Z a-z 0-9 _ - (no dots, spaces, '*' or '>')";

export interface PlanTask {
  id: string;
  capability: string;
  prompt: string;
  depends_on: string[];
  /** 0-3; 3 is the most urgent. */
  priority: number;
  /** Per sub-task limit; files write `timeout: 30s`. */
  timeout_ms?: number;
  /** true: if it fails the request fails. false: the answer marks it and goes on. */
  required: boolean;
  /** Short human label, e.g. "security review". */
  title?: string;
  /** Pin to one node (`task.direct.<node>`); re-routed to the capability queue if that node goes offline. */
  node?: string;
  /** Tools the sub-task needs (`exec`, `mcp_github_search`): sent only to a node that has them all. */
  tools?: string[];
}

/** A sub-task's label: its title, or "id (capability)". */
export function titleOf(t: PlanTask): string {
  return t.title ?? `${t.id} (${t.capability})`;
}

export interface Plan {
  tasks: PlanTask[];
  /** The coordinator merges the results (default true). */
  synthesize: boolean;
}

export interface PlanLimits {
  /** Capabilities some online node offers now. */
  capabilities: Set<string>;
  /** Online node ids, for pinned tasks; unchecked when absent. */
  nodes?: Set<string>;
  /** Capability -> tools its online nodes offer, for tasks that need tools; unchecked when absent. */
  tools?: Map<string, Set<string>>;
  maxFanout: number;
  maxDepth: number;
  maxPromptBytes: number;
  /** Named in error messages, e.g. the plan file. */
  source?: string;
}

/** A plan that cannot run: says what is wrong and which task ids are involved. */
export class PlanError extends PicoclawError {
  override name = "PlanError";
  constructor(
    message: string,
    readonly ids: string[] = [],
  ) {
    super("E_PLAN", message);
  }
}

/** Dependencies of one task: what a sub-task message and the stored plan carry. */
export const MAX_DEPENDENCIES = 64;

const taskId = z.string({ message: TASK_ID_RULE }).regex(TASK_ID_PATTERN, { message: TASK_ID_RULE });
const duration = z.preprocess(
  (v) => (typeof v === "string" || typeof v === "number" ? (parseDuration(v) ?? v) : v),
  z.number({ message: "a duration like 500ms, 30s or 2m" }).positive({ message: "a duration above 0" }),
);

const taskSchema = z
  .strictObject({
    id: taskId,
    capability: z.string({ message: CAP_RULE }).regex(ID_PATTERN, { message: CAP_RULE }),
    prompt: z.string({ message: "a non-empty text" }).min(1, { message: "a non-empty text" }),
    // Repeats are one dependency; more than a sub-task message can carry is an error, not a broken record.
    depends_on: z
      .preprocess((v) => (typeof v === "string" ? [v] : v), z.array(taskId))
      .transform((a) => [...new Set(a)])
      .pipe(z.array(taskId).max(MAX_DEPENDENCIES, { message: `at most ${MAX_DEPENDENCIES} different tasks` }))
      .default([]),
    priority: z
      .number({ message: "an integer from 0 to 3" })
      .int({ message: "an integer from 0 to 3" })
      .min(0, { message: "an integer from 0 to 3" })
      .max(3, { message: "an integer from 0 to 3" })
      .default(1),
    timeout: duration.optional(),
    timeout_ms: duration.optional(),
    required: z.boolean({ message: "true or false" }).default(true),
    title: z.string({ message: "a short text" }).min(1).max(80, { message: "at most 80 characters" }).optional(),
    node: z
      .string({ message: CAP_RULE })
      .regex(ID_PATTERN, { message: `a node id: ${CAP_RULE}` })
      .optional(),
    tools: z
      .preprocess(
        (v) => (typeof v === "string" ? [v] : v),
        z.array(z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, { message: "tool names like exec or mcp_github_search" })).max(64),
      )
      .transform((a) => [...new Set(a)])
      .optional(),
  })
  .refine((t) => t.timeout === undefined || t.timeout_ms === undefined, {
    path: ["timeout"],
    message: "use timeout or timeout_ms, not both",
  })
  .transform(({ timeout, timeout_ms, ...rest }): PlanTask => {
    const ms = timeout_ms ?? timeout;
    return ms === undefined ? rest : { ...rest, timeout_ms: ms };
  });

export const planSchema = z.strictObject({
  tasks: z.array(taskSchema, { message: "a list of tasks" }),
  synthesize: z.boolean({ message: "true or false" }).default(true),
});

function pathText(path: PropertyKey[]): string {
  let out = "";
  for (const p of path) out += typeof p === "number" ? `[${p}]` : `${out === "" ? "" : "."}${String(p)}`;
  return out === "" ? "(plan)" : out;
}

/** A parsed value (object, or a bare list of tasks) as a Plan, or a PlanError naming the first problem. */
export function planFromValue(value: unknown, source: string): Plan {
  const input = Array.isArray(value) ? { tasks: value } : value;
  if (input === null || typeof input !== "object") {
    throw new PlanError(`invalid plan in ${source}: expected an object with a "tasks" list`);
  }
  const result = planSchema.safeParse(input);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const path = issue?.path ?? [];
  const ids: string[] = [];
  if (path[0] === "tasks" && typeof path[1] === "number") {
    const raw = (input as { tasks?: unknown[] }).tasks?.[path[1]] as { id?: unknown } | undefined;
    if (raw && typeof raw.id === "string") ids.push(raw.id);
  }
  throw new PlanError(`invalid plan in ${source}: ${pathText(path)}: ${issue?.message ?? "invalid"}`, ids);
}

/** A plan file's text (YAML or JSON). */
export function parsePlanText(text: string, source: string): Plan {
  let value: unknown;
  try {
    value = parseYaml(text);
  } catch (err) {
    const msg = err instanceof Error ? (err.message.split("\n")[0] ?? "").replace(/:\s*$/, "") : String(err);
    throw new PlanError(`invalid plan in ${source}: not YAML or JSON: ${msg}`);
  }
  return planFromValue(value, source);
}

/** Task ids by level: level 0 has no dependencies; a task sits one level below its deepest dependency. */
export function topoLevels(plan: Plan): string[][] {
  const placed = new Set<string>();
  const levels: string[][] = [];
  let rest = plan.tasks;
  while (rest.length > 0) {
    const level = rest.filter((t) => t.depends_on.every((d) => placed.has(d)));
    if (level.length === 0) break; // a cycle or an unknown dependency: validatePlan names it
    for (const t of level) placed.add(t.id);
    levels.push(level.map((t) => t.id));
    rest = rest.filter((t) => !placed.has(t.id));
  }
  return levels;
}

/** The ids on one dependency cycle, first id repeated at the end, or undefined. */
function findCycle(plan: Plan): string[] | undefined {
  const deps = new Map(plan.tasks.map((t) => [t.id, t.depends_on]));
  const state = new Map<string, "open" | "closed">();
  const stack: string[] = [];
  const visit = (id: string): string[] | undefined => {
    if (state.get(id) === "closed") return undefined;
    if (state.get(id) === "open") return [...stack.slice(stack.indexOf(id)), id];
    state.set(id, "open");
    stack.push(id);
    for (const d of deps.get(id) ?? []) {
      const found = deps.has(d) ? visit(d) : undefined;
      if (found) return found;
    }
    stack.pop();
    state.set(id, "closed");
    return undefined;
  };
  for (const t of plan.tasks) {
    const found = visit(t.id);
    if (found) return found;
  }
  return undefined;
}

const utf8 = new TextEncoder();

/** Throws PlanError for the first problem found: the plan could not run, or runs wider/deeper than allowed. */
export function validatePlan(plan: Plan, limits: PlanLimits): void {
  const fail = (message: string, ids: string[]): never => {
    throw new PlanError(`invalid plan${limits.source ? ` in ${limits.source}` : ""}: ${message}`, ids);
  };
  const { tasks } = plan;
  if (tasks.length === 0) fail("the plan has no tasks", []);
  // First, before any check that costs more than linear time: a hostile ~1 MB plan of 12 000 chained
  // tasks would otherwise block the coordinator for seconds (topoLevels and longestChain are quadratic).
  if (tasks.length > limits.maxFanout * limits.maxDepth) {
    fail(
      `${tasks.length} tasks, more than max_fanout x max_depth = ${limits.maxFanout * limits.maxDepth}`,
      tasks.map((t) => t.id),
    );
  }

  const badIds = tasks.filter((t) => !TASK_ID_PATTERN.test(t.id));
  if (badIds.length > 0)
    fail(
      `task id ${badIds.map((t) => JSON.stringify(t.id)).join(", ")}: use ${TASK_ID_RULE}`,
      badIds.map((t) => t.id),
    );
  const badCaps = tasks.filter((t) => !ID_PATTERN.test(t.capability));
  if (badCaps.length > 0)
    fail(
      `capability ${JSON.stringify(badCaps[0]?.capability)} of task ${badCaps[0]?.id}: use ${CAP_RULE}`,
      badCaps.map((t) => t.id),
    );

  const seen = new Set<string>();
  const dups = new Set<string>();
  for (const t of tasks) (seen.has(t.id) ? dups : seen).add(t.id);
  if (dups.size > 0) fail(`duplicate task id ${[...dups].join(", ")}`, [...dups]);

  const self = tasks.filter((t) => t.depends_on.includes(t.id));
  if (self.length > 0)
    fail(
      `self-dependency: ${self.map((t) => `${t.id} depends on itself`).join("; ")}`,
      self.map((t) => t.id),
    );

  const unknown = tasks.flatMap((t) => t.depends_on.filter((d) => !seen.has(d)).map((d) => ({ task: t.id, dep: d })));
  if (unknown.length > 0) {
    fail(unknown.map((u) => `task ${u.task} depends on unknown task ${u.dep}`).join("; "), [...new Set(unknown.map((u) => u.task))]);
  }

  const cycle = findCycle(plan);
  if (cycle) fail(`cycle: ${cycle.join(" -> ")}`, [...new Set(cycle)]);

  const nodes = limits.nodes;
  const unpinnable = nodes ? tasks.filter((t) => t.node !== undefined && !nodes.has(t.node)) : [];
  if (unpinnable.length > 0) {
    fail(
      `${unpinnable.map((t) => `task ${t.id} is pinned to node ${t.node}`).join("; ")}, which is not online`,
      unpinnable.map((t) => t.id),
    );
  }
  const missing = tasks.filter((t) => !limits.capabilities.has(t.capability));
  if (missing.length > 0) {
    const online = [...limits.capabilities].sort().join(", ") || "(none)";
    fail(
      `${missing.map((t) => `task ${t.id} needs capability ${t.capability}`).join("; ")}, which no online node offers ` +
        `(online capabilities: ${online})`,
      missing.map((t) => t.id),
    );
  }

  const offered = limits.tools;
  const toolless = offered
    ? tasks.flatMap((t) => (t.tools ?? []).filter((x) => !offered.get(t.capability)?.has(x)).map((tool) => ({ t, tool })))
    : [];
  if (toolless.length > 0) {
    fail(
      `${toolless.map(({ t, tool }) => `task ${t.id} needs tool ${tool}`).join("; ")}, which no online node offers ` +
        `with capability ${toolless[0]!.t.capability}`,
      [...new Set(toolless.map(({ t }) => t.id))],
    );
  }

  const big = tasks.filter((t) => utf8.encode(t.prompt).length > limits.maxPromptBytes);
  if (big.length > 0) {
    fail(
      `prompt of task ${big.map((t) => `${t.id} is ${utf8.encode(t.prompt).length} bytes`).join(", ")}; ` +
        `the limit is ${limits.maxPromptBytes} bytes (swarm.tasks.max_prompt_bytes)`,
      big.map((t) => t.id),
    );
  }

  const levels = topoLevels(plan);
  if (levels.length > limits.maxDepth) {
    const chain = longestChain(plan);
    fail(
      `dependency chain of ${levels.length} tasks (${chain.join(" -> ")}) is deeper than ` + `swarm.tasks.max_depth ${limits.maxDepth}`,
      chain,
    );
  }
  const wide = levels.find((l) => l.length > limits.maxFanout);
  if (wide) {
    fail(`${wide.length} tasks could run at once (${wide.join(", ")}), more than swarm.tasks.max_fanout ` + `${limits.maxFanout}`, wide);
  }
}

/** One longest dependency chain, root first (the plan must be acyclic). */
function longestChain(plan: Plan): string[] {
  const byId = new Map(plan.tasks.map((t) => [t.id, t]));
  const memo = new Map<string, string[]>();
  const chainTo = (id: string): string[] => {
    const known = memo.get(id);
    if (known) return known;
    let best: string[] = [];
    for (const d of byId.get(id)?.depends_on ?? []) {
      const c = chainTo(d);
      if (c.length > best.length) best = c;
    }
    const out = [...best, id];
    memo.set(id, out);
    return out;
  };
  let longest: string[] = [];
  for (const t of plan.tasks) {
    const c = chainTo(t.id);
    if (c.length > longest.length) longest = c;
  }
  return longest;
}
