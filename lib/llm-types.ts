// The contract between task execution and any LLM provider (OpenAI-compatible HTTP, or offline echo),
// and the little both providers share.
import { PicoclawError } from "./errors.ts";

/** One function call the model asked for: `arguments` is the model's JSON text, parsed by the tool runner. */
export interface ToolCall {
  id: string;
  name: string;
  arguments: string;
}

/** A chat message; an assistant turn may carry tool calls, and each call's result comes back as a `tool` message. */
export type ChatMessage =
  | { role: "system" | "user"; content: string }
  | { role: "assistant"; content: string; tool_calls?: ToolCall[] }
  | { role: "tool"; content: string; tool_call_id: string };

/** A function the model may call (OpenAI function calling). */
export interface ToolSpec {
  name: string;
  description: string;
  /** JSON Schema of the arguments object. */
  parameters: Record<string, unknown>;
}

export interface LlmUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface CompletionRequest {
  messages: ChatMessage[];
  /** Aborts the HTTP call (per-task timeout, node shutdown). */
  signal?: AbortSignal;
  /** Called as tokens stream in: total completion tokens so far (counted or estimated) and the new text. */
  onProgress?: (tokensSoFar: number, delta: string) => void;
  /** Ask the provider for a JSON object (planner). */
  json?: boolean;
  /**
   * What the call is for, in token counts: a sub-task's capability, or "(planning)" / "(synthesis)"
   * for the coordinator's own calls.
   */
  capability?: string;
  /** Functions the model may call; its reply then may be tool calls instead of (or beside) text. */
  tools?: ToolSpec[];
}

export interface Completion {
  text: string;
  usage: LlmUsage;
  model: string;
  /** The calls the model asked for (none: the text is its answer). */
  toolCalls?: ToolCall[];
}

export interface LlmProvider {
  /** "openai" or "echo". */
  kind: "openai" | "echo";
  model: string;
  /** Shown at start-up and in answers, e.g. "echo (offline, no LLM configured)" or "openai gpt-4o-mini at http://..." */
  label: string;
  complete(req: CompletionRequest): Promise<Completion>;
}

/**
 * Why a call failed, classified for retry: transient errors (429, 5xx, network, timeout) are retried
 * later (nak with `retryAfterMs` when the provider said how long); permanent ones fail the sub-task.
 */
export class LlmError extends PicoclawError {
  override name = "LlmError";
  constructor(
    message: string,
    readonly transient: boolean,
    readonly status?: number,
    readonly retryAfterMs?: number,
    options?: ErrorOptions,
  ) {
    super("E_LLM", message, options);
  }
}

/** chars/4, rounded up: what we report when the provider reports nothing. */
export function estimateUsage(messages: ChatMessage[], text: string): LlmUsage {
  const prompt = Math.ceil(messages.reduce((n, m) => n + m.content.length + callsLength(m), 0) / 4);
  const completion = Math.ceil(text.length / 4);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

/** The call was cut short by our own timeout or a stop: transient, so the sub-task is tried again. */
export function abortedError(signal: AbortSignal): LlmError {
  const r: unknown = signal.reason;
  const timedOut = r instanceof Error && (r.name === "TimeoutError" || /timeout|timed out/i.test(r.message));
  return new LlmError(timedOut ? "timed out" : "aborted", true);
}

function callsLength(m: ChatMessage): number {
  return m.role === "assistant" ? (m.tool_calls ?? []).reduce((n, c) => n + c.name.length + c.arguments.length, 0) : 0;
}
