// The contract between task execution and any LLM provider (OpenAI-compatible HTTP, or offline echo).

export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
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
}

export interface Completion {
  text: string;
  usage: LlmUsage;
  model: string;
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
export class LlmError extends Error {
  override name = "LlmError";
  constructor(
    message: string,
    readonly transient: boolean,
    readonly status?: number,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}
