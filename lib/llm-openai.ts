// The OpenAI-compatible provider: streamed chat completions, errors classified for retry.
import OpenAI, { APIConnectionError, APIConnectionTimeoutError, APIError } from "openai";
import type { ChatCompletionMessageParam } from "openai/resources/chat/completions";
import type { Config } from "./config.ts";
import { abortedError, type ChatMessage, estimateUsage, LlmError, type LlmProvider, type LlmUsage, type ToolCall } from "./llm-types.ts";

export function openaiProvider(cfg: Config["llm"]): LlmProvider {
  // Retries belong to the swarm (JetStream nak with backoff), never to the SDK.
  const client = new OpenAI({ baseURL: cfg.base_url, apiKey: cfg.api_key || "not-needed", maxRetries: 0, timeout: 10 * 60_000 });
  const secret = cfg.api_key;
  return {
    kind: "openai",
    model: cfg.model,
    label: redact(`openai ${cfg.model} at ${withoutUserInfo(client.baseURL)}`, secret),
    async complete(req) {
      try {
        const stream = await client.chat.completions.create(
          {
            model: cfg.model,
            messages: req.messages.map(toOpenAiMessage),
            tools: req.tools?.length
              ? req.tools.map((t) => ({
                  type: "function" as const,
                  function: { name: t.name, description: t.description, parameters: t.parameters },
                }))
              : undefined,
            stream: true,
            stream_options: { include_usage: true },
            temperature: cfg.temperature,
            max_tokens: cfg.max_tokens,
            response_format: req.json ? { type: "json_object" } : undefined,
          },
          { signal: req.signal },
        );
        let text = "";
        let chunks = 0;
        let usage: LlmUsage | undefined;
        let finished = false;
        const calls = new ToolCallAssembler();
        for await (const chunk of stream) {
          if (chunk.choices[0]?.finish_reason) finished = true;
          for (const d of chunk.choices[0]?.delta?.tool_calls ?? []) calls.add(d);
          const delta = chunk.choices[0]?.delta?.content;
          if (delta) {
            text += delta;
            chunks++;
            req.onProgress?.(chunks, delta);
          }
          if (chunk.usage) {
            usage = {
              prompt_tokens: chunk.usage.prompt_tokens ?? 0,
              completion_tokens: chunk.usage.completion_tokens ?? 0,
              total_tokens: chunk.usage.total_tokens ?? 0,
            };
            // The server's own count replaces the chunk count.
            if (usage.completion_tokens !== chunks) req.onProgress?.(usage.completion_tokens, "");
          }
        }
        // An aborted or cut-off stream can end without an error: partial text is not an answer.
        if (req.signal?.aborted) throw abortedError(req.signal);
        if (!finished) throw new LlmError("the response stream ended before the model finished", true);
        const toolCalls = calls.done();
        const said = text + toolCalls.map((c) => c.name + c.arguments).join("");
        return {
          text,
          usage: usage ?? estimateUsage(req.messages, said),
          model: cfg.model,
          toolCalls: toolCalls.length ? toolCalls : undefined,
        };
      } catch (err) {
        throw classifyLlmError(err, req.signal, secret, withoutUserInfo(client.baseURL));
      }
    },
  };
}

function toOpenAiMessage(m: ChatMessage): ChatCompletionMessageParam {
  if (m.role === "assistant" && m.tool_calls?.length) {
    return {
      role: "assistant",
      content: m.content || null,
      tool_calls: m.tool_calls.map((c) => ({ id: c.id, type: "function" as const, function: { name: c.name, arguments: c.arguments } })),
    };
  }
  if (m.role === "tool") return { role: "tool", content: m.content, tool_call_id: m.tool_call_id };
  return { role: m.role, content: m.content };
}

interface ToolCallDelta {
  index: number;
  id?: string;
  function?: { name?: string; arguments?: string };
}

/** Streamed tool calls arrive in pieces keyed by index: the id and name first, the arguments in fragments. */
class ToolCallAssembler {
  private readonly byIndex = new Map<number, ToolCall>();
  add(d: ToolCallDelta): void {
    const cur = this.byIndex.get(d.index) ?? { id: "", name: "", arguments: "" };
    if (d.id) cur.id = d.id;
    if (d.function?.name) cur.name += d.function.name;
    if (d.function?.arguments) cur.arguments += d.function.arguments;
    this.byIndex.set(d.index, cur);
  }
  /** In index order; a call without an id gets one (some local servers send none). */
  done(): ToolCall[] {
    return [...this.byIndex.entries()].sort((a, b) => a[0] - b[0]).map(([i, c]) => ({ ...c, id: c.id || `call_${i}` }));
  }
}

/**
 * Transient (retry later): 429, 408, 409, 5xx, connection failures, our own timeout or abort.
 * Permanent (fail the sub-task): any other 4xx. The API key never appears in a message.
 */
export function classifyLlmError(err: unknown, signal?: AbortSignal, secret?: string, endpoint?: string): LlmError {
  if (err instanceof LlmError) return err;
  if (signal?.aborted) return abortedError(signal);
  if (err instanceof APIError && typeof err.status === "number") {
    const status = err.status;
    const msg = redact(err.message, secret);
    if (status === 429) return new LlmError(msg, true, status, retryAfterMs(err.headers));
    if (status === 408 || status === 409 || status >= 500) return new LlmError(msg, true, status);
    if (status >= 400) return new LlmError(msg, false, status);
    return new LlmError(msg, true, status);
  }
  if (err instanceof APIConnectionTimeoutError) return new LlmError("timed out", true);
  const cause = err instanceof APIConnectionError && err.cause instanceof Error ? err.cause : err;
  const detail = redact(describe(cause), secret);
  if (err instanceof APIConnectionError || isNetworkError(cause)) {
    return new LlmError(redact(`connection${endpoint ? ` to ${endpoint}` : ""} failed: ${detail}`, secret), true);
  }
  // An error the provider sent mid-stream, or one we do not recognise: let max_deliver bound the retries.
  return new LlmError(detail, true);
}

/** `retry-after-ms`, else `retry-after` as seconds or an HTTP date. */
export function retryAfterMs(headers: Headers | undefined, now = Date.now()): number | undefined {
  const ms = Number.parseFloat(headers?.get("retry-after-ms") ?? "");
  if (Number.isFinite(ms) && ms >= 0) return Math.round(ms);
  const raw = headers?.get("retry-after")?.trim();
  if (!raw) return undefined;
  if (/^\d+(\.\d+)?$/.test(raw)) return Math.round(Number(raw) * 1000);
  const at = Date.parse(raw);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

function isNetworkError(e: unknown): boolean {
  const code = typeof e === "object" && e !== null && "code" in e ? String(e.code) : "";
  return (
    /^(ECONNREFUSED|ECONNRESET|ECONNABORTED|EPIPE|ETIMEDOUT|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|ConnectionRefused|ConnectionClosed)$/.test(
      code,
    ) || /socket hang up|ECONNREFUSED|ECONNRESET|fetch failed|network|connection|Unable to connect/i.test(describe(e))
  );
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message || e.name : String(e);
}

function redact(s: string, secret?: string): string {
  return secret ? s.split(secret).join("***") : s;
}

function withoutUserInfo(url: string): string {
  try {
    const u = new URL(url);
    if (!u.username && !u.password) return url;
    u.username = "";
    u.password = "";
    return u.toString();
  } catch {
    return url;
  }
}
