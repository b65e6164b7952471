// The tool contract every tool family implements (built-in files, exec, web, MCP adapters), the
// registry a node offers, and the one place a call runs: every failure (unknown tool, bad arguments,
// a refusal, a throw, a timeout) becomes a result the model sees, never an exception of the loop.

/** JSON Schema of a tool's arguments (an object schema), as OpenAI function calling takes it. */
export type JsonSchema = Record<string, unknown>;

/** What a call gave back. `isError`: the model is told the call failed (and may correct itself). */
export interface ToolResult {
  content: string;
  isError: boolean;
}

/** How a call ended, for metrics and progress lines. */
export type ToolOutcome = "ok" | "error" | "refused" | "unknown_tool" | "bad_arguments" | "timeout" | "interrupted";

export interface ToolContext {
  /** Aborted by the sub-task's deadline, its timeout, or the node stopping. */
  signal: AbortSignal;
}

export interface Tool {
  /** `read_file`, `exec`, `mcp_<server>_<tool>` (at most 64 characters). */
  name: string;
  description: string;
  parameters: JsonSchema;
  /**
   * Safe to run again when a call's outcome is unknown (its worker died before the result was
   * recorded): read-only or idempotent. Otherwise the model is told the call was interrupted.
   */
  replaySafe: boolean;
  /** Throws ToolError for a refusal the model should see; any other throw is reported as an error too. */
  execute(args: Record<string, unknown>, ctx: ToolContext): Promise<ToolResult>;
}

/**
 * A failure the model sees as the tool's result. `refused`: a policy said no (workspace escape,
 * denied command, internal address); counted apart in metrics.
 */
export class ToolError extends Error {
  override name = "ToolError";
  constructor(
    message: string,
    readonly outcome: "error" | "refused" | "bad_arguments" | "timeout" = "error",
  ) {
    super(message);
  }
}

/** The tools one node offers, by name, sorted so prompts stay the same from call to call. */
export interface ToolRegistry {
  get(name: string): Tool | undefined;
  list(): Tool[];
  names(): string[];
}

export function createRegistry(tools: Iterable<Tool>, dynamic: () => Iterable<Tool> = () => []): ToolRegistry {
  const fixed = [...tools];
  // Rebuilt only when the dynamic tools change (an MCP server went down or came back): a loop asks on every call.
  let seen: Tool[] = [];
  let sorted: Tool[] = [];
  let byName = new Map<string, Tool>();
  const all = () => {
    const now = [...dynamic()];
    if (sorted.length === 0 || now.length !== seen.length || now.some((t, i) => t !== seen[i])) {
      seen = now;
      byName = new Map([...fixed, ...now].map((t) => [t.name, t]));
      sorted = [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    }
    return sorted;
  };
  return {
    get(name) {
      all();
      return byName.get(name);
    },
    list: all,
    names: () => all().map((t) => t.name),
  };
}

/** A tool's definition as the chat completions API takes it. */
export function toolDefinition(t: Tool) {
  return { type: "function" as const, function: { name: t.name, description: t.description, parameters: t.parameters } };
}

export interface ToolRun extends ToolResult {
  outcome: ToolOutcome;
  duration_ms: number;
}

/**
 * Runs one call to its end and never throws: the arguments are parsed as JSON (the model's text),
 * the output is cut at `maxBytes` (the cut is said), and every failure is a result with `isError`.
 */
export async function runTool(
  registry: ToolRegistry,
  name: string,
  rawArgs: string,
  ctx: ToolContext & { maxBytes: number },
): Promise<ToolRun> {
  const started = performance.now();
  const done = (outcome: ToolOutcome, content: string, isError: boolean): ToolRun => ({
    outcome,
    content: capOutput(content, ctx.maxBytes),
    isError,
    duration_ms: Math.round(performance.now() - started),
  });
  const tool = registry.get(name);
  if (!tool) return done("unknown_tool", `error: no tool named "${name}"; the tools are: ${registry.names().join(", ")}`, true);
  let args: Record<string, unknown>;
  try {
    const parsed: unknown = rawArgs.trim() === "" ? {} : JSON.parse(rawArgs);
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("not a JSON object");
    args = parsed as Record<string, unknown>;
  } catch (err) {
    return done("bad_arguments", `error: the arguments of ${name} are not a JSON object (${(err as Error).message})`, true);
  }
  try {
    const r = await tool.execute(args, ctx);
    return done(r.isError ? "error" : "ok", r.content, r.isError);
  } catch (err) {
    if (err instanceof ToolError) return done(err.outcome, `error: ${err.message}`, true);
    if (ctx.signal.aborted) return done("timeout", `error: ${name} was stopped (${reasonOf(ctx.signal)})`, true);
    return done("error", `error: ${name} failed: ${(err as Error)?.message ?? String(err)}`, true);
  }
}

/** Cuts text at `maxBytes` of UTF-8 and says how much was cut. */
export function capOutput(text: string, maxBytes: number): string {
  const bytes = new TextEncoder().encode(text);
  if (bytes.length <= maxBytes) return text;
  const kept = new TextDecoder().decode(bytes.slice(0, maxBytes)).replace(/\uFFFD$/, "");
  return `${kept}\n[output cut: ${bytes.length - maxBytes} more bytes of ${bytes.length} not shown]`;
}

/** Reads a string argument, or throws a bad_arguments ToolError naming it. */
export function stringArg(args: Record<string, unknown>, key: string, opts: { optional?: boolean } = {}): string {
  const v = args[key];
  if (v === undefined && opts.optional) return "";
  if (typeof v !== "string") throw new ToolError(`argument "${key}" must be a string`, "bad_arguments");
  return v;
}

function reasonOf(signal: AbortSignal): string {
  const r: unknown = signal.reason;
  return r instanceof Error ? r.message : String(r ?? "aborted");
}
