// A real local HTTP server speaking the OpenAI chat completions API (streaming and not), for tests.
// Steered by directives in the last user message, so a test can script it through role processes:
//   [[delay=MS]]        total response time, spread across the chunks
//   [[tokens=N]]        number of content chunks (default 5)
//   [[status=CODE]]     answer with that HTTP error and an OpenAI-style error body
//   [[status=429 times=N retry_after=S]]  fail only the first N requests carrying this exact directive,
//                       with Retry-After: S; later ones succeed
//   [[reply=TEXT]]      the reply content (else "ok: " + first 80 chars of the message without directives)
//   [[size=N]]          a reply of exactly N bytes
// With function calling, a responder may return `{ tool_calls: [{ name, arguments }] }` instead of text:
// streamed, each call's id and name come in one chunk and its arguments in fragments, as OpenAI sends them.

export interface ChatRequestBody {
  model?: string;
  messages?: { role: string; content: string; tool_calls?: ScriptedCall[]; tool_call_id?: string }[];
  tools?: { type: string; function: { name: string; description?: string; parameters?: unknown } }[];
  stream?: boolean;
  stream_options?: { include_usage?: boolean };
  response_format?: { type: string };
  [key: string]: unknown;
}

export interface RecordedRequest {
  /** Date.now() when the request arrived. */
  at: number;
  body: ChatRequestBody;
  /** Date.now() when the response was complete (or the client went away). */
  endedAt?: number;
  /** The token counts the server reported for it (prompt: characters ÷ 4; completion: content chunks). */
  usage?: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
}

/** A tool call as the scripted model makes it (`id` is made up when absent). */
export interface ScriptedCall {
  id?: string;
  type?: string;
  function?: { name: string; arguments: string };
  name?: string;
  arguments?: string;
}

/** What a responder may answer: text, tool calls, or undefined to fall back to the directives. */
export type Reply = string | { tool_calls: { name: string; arguments: string; id?: string }[]; content?: string } | undefined;

/** Returns the reply, or undefined to fall back to the directives. */
export type Responder = (body: ChatRequestBody) => Reply;

export interface LlmServerOptions {
  respond?: Responder;
  /** Address to listen on (default 127.0.0.1), e.g. a network namespace's own address. */
  hostname?: string;
  /** Port to listen on (default 0: any free port). */
  port?: number;
}

export interface LlmServer {
  /** Base URL for the SDK, e.g. "http://127.0.0.1:PORT/v1". */
  url: string;
  requests: RecordedRequest[];
  /** Replaces the responder (same contract as `opts.respond`). */
  script(fn: Responder | undefined): void;
  stop(): Promise<void>;
}

interface Directives {
  delay: number;
  tokens: number;
  status?: number;
  /** The exact directive text that carried `status`, counted across requests. */
  statusKey?: string;
  times?: number;
  retryAfter?: number;
  reply?: string;
  /** A reply of exactly this many bytes (ASCII), for payload-size tests. */
  size?: number;
}

const DIRECTIVE = /\[\[([^\]]*)\]\]/g;

export function parseDirectives(message: string): Directives {
  const d: Directives = { delay: 0, tokens: 5 };
  for (const [raw, inner = ""] of message.matchAll(DIRECTIVE)) {
    const text = inner.trim();
    if (text.startsWith("reply=")) {
      d.reply = text.slice("reply=".length);
      continue;
    }
    const kv = new Map(text.split(/\s+/).map((p) => p.split("=", 2) as [string, string | undefined]));
    const num = (k: string) => (kv.get(k) !== undefined ? Number(kv.get(k)) : undefined);
    if (kv.has("delay")) d.delay = num("delay") ?? 0;
    if (kv.has("tokens")) d.tokens = Math.max(1, num("tokens") ?? 5);
    if (kv.has("size")) d.size = num("size");
    if (kv.has("status")) {
      d.status = num("status");
      d.statusKey = raw;
      d.times = num("times");
      d.retryAfter = num("retry_after");
    }
  }
  return d;
}

export async function startLlmServer(opts: LlmServerOptions = {}): Promise<LlmServer> {
  let respond = opts.respond;
  const requests: RecordedRequest[] = [];
  const failures = new Map<string, number>();
  let seq = 0;

  const server = Bun.serve({
    hostname: opts.hostname ?? "127.0.0.1",
    port: opts.port ?? 0,
    idleTimeout: 0,
    async fetch(httpReq) {
      const path = new URL(httpReq.url).pathname;
      if (httpReq.method === "GET" && path === "/v1/models") {
        return Response.json({ object: "list", data: [{ id: "test-model", object: "model", owned_by: "test" }] });
      }
      if (httpReq.method !== "POST" || path !== "/v1/chat/completions") return errorResponse(404, `no route ${httpReq.method} ${path}`);
      let body: ChatRequestBody;
      try {
        body = (await httpReq.json()) as ChatRequestBody;
      } catch {
        return errorResponse(400, "request body is not JSON");
      }
      const rec: RecordedRequest = { at: Date.now(), body };
      requests.push(rec);
      const end = () => (rec.endedAt ??= Date.now());

      const messages = body.messages ?? [];
      const lastUser = String([...messages].reverse().find((m) => m.role === "user")?.content ?? "");
      const d = parseDirectives(lastUser);

      if (d.status !== undefined) {
        const key = d.statusKey ?? "";
        const seen = failures.get(key) ?? 0;
        if (d.times === undefined || seen < d.times) {
          failures.set(key, seen + 1);
          await Bun.sleep(d.delay);
          end();
          const headers: Record<string, string> = d.retryAfter !== undefined ? { "retry-after": String(d.retryAfter) } : {};
          return errorResponse(d.status, `scripted failure ${d.status}`, headers);
        }
      }

      const plain = lastUser.replace(DIRECTIVE, "").replace(/\s+/g, " ").trim();
      const json = body.response_format?.type === "json_object";
      const fallback = `ok: ${plain.slice(0, 80)}`;
      const sized = d.size === undefined ? undefined : "x".repeat(Math.max(0, d.size));
      const scripted = respond?.(body);
      const calls = typeof scripted === "object" ? scripted.tool_calls.map((c, i) => ({ id: c.id ?? `call_${seq + 1}_${i}`, ...c })) : [];
      const content =
        (typeof scripted === "object" ? (scripted.content ?? "") : scripted) ??
        d.reply ??
        sized ??
        (json ? JSON.stringify({ reply: fallback }) : fallback);
      const model = body.model ?? "test-model";
      const id = `chatcmpl-${++seq}`;
      const created = Math.floor(Date.now() / 1000);
      const pieces = content === "" && calls.length ? [] : split(content, d.tokens);
      const promptTokens = Math.ceil(messages.reduce((n, m) => n + String(m.content ?? "").length, 0) / 4);
      const completionTokens = pieces.length + calls.length;
      const usage = { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
      const finishReason = calls.length ? "tool_calls" : "stop";
      rec.usage = usage;

      if (!body.stream) {
        await Bun.sleep(d.delay);
        end();
        return Response.json({
          id,
          object: "chat.completion",
          created,
          model,
          choices: [
            {
              index: 0,
              message: {
                role: "assistant",
                content: content || null,
                ...(calls.length
                  ? { tool_calls: calls.map((c) => ({ id: c.id, type: "function", function: { name: c.name, arguments: c.arguments } })) }
                  : {}),
              },
              finish_reason: finishReason,
              logprobs: null,
            },
          ],
          usage,
        });
      }

      const withUsage = body.stream_options?.include_usage === true;
      const step = d.delay / (pieces.length + 1);
      const chunk = (delta: object, finish: string | null) =>
        sse({
          id,
          object: "chat.completion.chunk",
          created,
          model,
          choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }],
          ...(withUsage ? { usage: null } : {}),
        });
      const stream = new ReadableStream<Uint8Array>({
        async start(ctl) {
          try {
            for (const [i, piece] of pieces.entries()) {
              await Bun.sleep(step);
              ctl.enqueue(chunk(i === 0 ? { role: "assistant", content: piece } : { content: piece }, null));
            }
            for (const [index, c] of calls.entries()) {
              ctl.enqueue(chunk({ tool_calls: [{ index, id: c.id, type: "function", function: { name: c.name, arguments: "" } }] }, null));
              for (const part of split(c.arguments, 3))
                ctl.enqueue(chunk({ tool_calls: [{ index, function: { arguments: part } }] }, null));
            }
            await Bun.sleep(step);
            ctl.enqueue(chunk({}, finishReason));
            if (withUsage) ctl.enqueue(sse({ id, object: "chat.completion.chunk", created, model, choices: [], usage }));
            ctl.enqueue(new TextEncoder().encode("data: [DONE]\n\n"));
            ctl.close();
          } catch {
            // The client went away mid-stream.
          } finally {
            end();
          }
        },
        cancel() {
          end();
        },
      });
      return new Response(stream, { headers: { "content-type": "text/event-stream", "cache-control": "no-cache" } });
    },
  });

  return {
    url: `http://${opts.hostname ?? "127.0.0.1"}:${server.port}/v1`,
    requests,
    script(fn) {
      respond = fn;
    },
    async stop() {
      await server.stop(true);
    },
  };
}

/** `n` contiguous pieces of `text` (fewer when the text is shorter than n; one for empty text). */
function split(text: string, n: number): string[] {
  const chars = Array.from(text);
  const count = Math.max(1, Math.min(n, chars.length));
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    out.push(chars.slice(Math.floor((i * chars.length) / count), Math.floor(((i + 1) * chars.length) / count)).join(""));
  }
  return out;
}

function sse(obj: object): Uint8Array {
  return new TextEncoder().encode(`data: ${JSON.stringify(obj)}\n\n`);
}

function errorResponse(status: number, message: string, headers: Record<string, string> = {}): Response {
  const type = status === 429 ? "rate_limit_error" : status >= 500 ? "server_error" : "invalid_request_error";
  const code = status === 429 ? "rate_limit_exceeded" : status === 404 ? "not_found" : null;
  return Response.json({ error: { message, type, code, param: null } }, { status, headers });
}
