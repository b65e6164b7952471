// The OpenAI API as the gateway speaks it: the chat request it accepts, the completion and chunk shapes
// it answers with, and errors in OpenAI's shape. Pure: no NATS, no HTTP server.
import { z } from "zod";
import { isValidId } from "../../lib/ids.ts";
import type { LlmUsage } from "../../lib/llm-types.ts";
import type { UsageRow } from "../../lib/task-messages.ts";

/** The swarm as one model; `picoclaw-swarm/<capability>` sends the chat as one sub-task on that capability. */
export const SWARM_MODEL = "picoclaw-swarm";

/** An error the client sees, in OpenAI's shape: `{ "error": { message, type, param, code } }`. */
export class ApiError extends Error {
  override name = "ApiError";
  constructor(
    readonly status: number,
    message: string,
    readonly code: string | null,
    readonly param: string | null = null,
    /** Extra response headers (Retry-After). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  get type(): string {
    if (this.status === 401) return "authentication_error";
    if (this.status === 429) return "rate_limit_error";
    if (this.status === 404) return "not_found_error";
    return this.status >= 500 ? "server_error" : "invalid_request_error";
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }

  response(cors: Record<string, string>): Response {
    return Response.json(this.body(), { status: this.status, headers: { ...cors, ...this.headers } });
  }
}

const textPart = z.looseObject({ type: z.string(), text: z.string().optional() });
const messageSchema = z.looseObject({
  role: z.enum(["system", "developer", "user", "assistant", "tool"]),
  content: z.union([z.string(), z.array(textPart), z.null()]).optional(),
});

/** What a chat completion request must hold; everything else (temperature, max_tokens, ...) is accepted and ignored. */
export const chatRequestSchema = z.looseObject({
  model: z.string().min(1).max(200),
  messages: z.array(messageSchema).min(1).max(10_000),
  stream: z.boolean().nullish(),
  stream_options: z.looseObject({ include_usage: z.boolean().nullish() }).nullish(),
  n: z.number().int().min(1).max(1).nullish(),
});
export type ChatRequest = z.infer<typeof chatRequestSchema>;

/** The parsed body, or an ApiError naming the first field that is wrong. */
export function parseChatRequest(body: string): ChatRequest {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch (err) {
    throw new ApiError(400, `the request body is not valid JSON (${(err as Error).message})`, "invalid_json");
  }
  const parsed = chatRequestSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const param = issue?.path.join(".") || null;
    throw new ApiError(400, `invalid request: ${param ?? "body"}: ${issue?.message ?? "invalid"}`, "invalid_request", param);
  }
  return parsed.data;
}

/** `picoclaw-swarm` -> no capability (the coordinator plans); `picoclaw-swarm/code` -> ["code"]. */
export function capabilitiesOf(model: string): string[] | undefined {
  if (model === SWARM_MODEL) return undefined;
  const cap = model.startsWith(`${SWARM_MODEL}/`) ? model.slice(SWARM_MODEL.length + 1) : "";
  if (!isValidId(cap)) throw modelNotFound(model);
  return [cap];
}

export function modelNotFound(model: string, online: string[] = []): ApiError {
  const known = [SWARM_MODEL, ...online.map((c) => `${SWARM_MODEL}/${c}`)].join(", ");
  return new ApiError(404, `The model \`${model}\` does not exist or is not online; models now: ${known}`, "model_not_found", "model");
}

const ROLE_LABEL = { system: "System", developer: "System", user: "User", assistant: "Assistant", tool: "Tool" } as const;

/**
 * The swarm request's text: the one user message as it is, or the conversation as a transcript
 * (`System: ...`, `User: ...`, `Assistant: ...`) ending with the last message. Only text is accepted.
 */
export function requestText(messages: ChatRequest["messages"]): string {
  const turns = messages.map((m, i) => {
    const content = m.content ?? "";
    let text: string;
    if (typeof content === "string") text = content;
    else {
      const other = content.find((p) => p.type !== "text");
      if (other)
        throw new ApiError(
          400,
          `only text content is supported (messages.${i} has a ${other.type} part)`,
          "unsupported_content",
          `messages.${i}.content`,
        );
      text = content.map((p) => p.text ?? "").join("");
    }
    return { role: m.role, text };
  });
  if (!turns.some((t) => t.role === "user" && t.text.trim() !== "")) {
    throw new ApiError(400, "the chat needs a user message with text", "invalid_request", "messages");
  }
  if (turns.length === 1) return turns[0]!.text;
  return turns.map((t) => `${ROLE_LABEL[t.role]}: ${t.text}`).join("\n\n");
}

export interface Completed {
  request: string;
  model: string;
  created: number;
  content: string;
  finishReason: "stop" | "length";
  usage: LlmUsage;
  /** The swarm's own account, beside OpenAI's fields: the request id, its status and tokens by node. */
  status?: string;
  usageBy?: UsageRow[];
}

export const completionId = (request: string) => `chatcmpl-${request}`;

/** A non-streaming `chat.completion`. */
export function completionBody(c: Completed) {
  return {
    id: completionId(c.request),
    object: "chat.completion",
    created: c.created,
    model: c.model,
    system_fingerprint: null,
    choices: [
      { index: 0, message: { role: "assistant", content: c.content, refusal: null }, finish_reason: c.finishReason, logprobs: null },
    ],
    usage: c.usage,
    picoclaw: { request: c.request, status: c.status, usage_by: c.usageBy ?? [] },
  };
}

/** One `chat.completion.chunk` of a stream, as an SSE `data:` line. */
export function chunk(
  head: { request: string; model: string; created: number; withUsage: boolean },
  choice: { delta: { role?: "assistant"; content?: string }; finish_reason: "stop" | "length" | null } | undefined,
  usage?: LlmUsage,
): string {
  const body = {
    id: completionId(head.request),
    object: "chat.completion.chunk",
    created: head.created,
    model: head.model,
    system_fingerprint: null,
    choices: choice ? [{ index: 0, delta: choice.delta, finish_reason: choice.finish_reason, logprobs: null }] : [],
    ...(head.withUsage ? { usage: usage ?? null } : {}),
  };
  return sse(body);
}

export function sse(body: unknown): string {
  return `data: ${JSON.stringify(body)}\n\n`;
}

/** Splits an answer that arrived whole into pieces a client can render as they come. */
export function pieces(text: string, size = 256): string[] {
  const out: string[] = [];
  for (let i = 0; i < text.length; i += size) out.push(text.slice(i, i + size));
  return out;
}
