// LLM providers against a real OpenAI-compatible HTTP server (streaming), plus the offline echo.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Config } from "../lib/config.ts";
import { freePort } from "../lib/embedded-nats.ts";
import { createLlm } from "../lib/llm.ts";
import { retryAfterMs } from "../lib/llm-openai.ts";
import { LlmError, type LlmProvider } from "../lib/llm-types.ts";
import { type LlmServer, startLlmServer } from "./helpers/llm-server.ts";

const llmConfig = (o: Partial<Config["llm"]> = {}): Config["llm"] => ({ provider: "auto", model: "test-model", ...o });

async function failure(llm: LlmProvider, content: string, signal?: AbortSignal): Promise<LlmError> {
  try {
    const got = await llm.complete({ messages: [{ role: "user", content }], signal });
    throw new Error(`expected an LlmError, got a completion: ${JSON.stringify(got)}`);
  } catch (err) {
    if (!(err instanceof LlmError)) throw new Error(`expected an LlmError, got ${String(err)}`);
    return err;
  }
}

describe("openai-compatible provider", () => {
  let server: LlmServer;
  let llm: LlmProvider;
  beforeAll(async () => {
    server = await startLlmServer();
    llm = await createLlm(llmConfig({ base_url: server.url }));
  });
  afterAll(() => server.stop());

  test("streams the text, reports progress and the server's usage", async () => {
    const progress: [number, string][] = [];
    const reply = "the quick brown fox jumps over the lazy dog";
    const out = await llm.complete({
      messages: [
        { role: "system", content: "be brief" },
        { role: "user", content: `say it [[tokens=7]] [[reply=${reply}]]` },
      ],
      onProgress: (n, delta) => progress.push([n, delta]),
    });
    expect(out.text).toBe(reply);
    expect(out.model).toBe("test-model");
    expect(out.usage.completion_tokens).toBe(7); // the server's count, not the chars/4 estimate (11)
    expect(out.usage.total_tokens).toBe(out.usage.prompt_tokens + 7);
    const counts = progress.map(([n]) => n);
    expect(counts).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(progress.map(([, d]) => d).join("")).toBe(reply);
    const body = server.requests.at(-1)?.body;
    expect(body?.stream).toBe(true);
    expect(body?.stream_options).toEqual({ include_usage: true });
  });

  test("chunks arrive spread over [[delay]], not all at the end; the server records start and end", async () => {
    const started = Date.now();
    const seen: number[] = [];
    await llm.complete({
      messages: [{ role: "user", content: "spread [[delay=600 tokens=3]]" }],
      onProgress: () => seen.push(Date.now() - started),
    });
    const rec = server.requests.at(-1);
    expect(seen.length).toBe(3);
    expect(seen[0]).toBeLessThan(400);
    expect((rec?.endedAt ?? 0) - (rec?.at ?? 0)).toBeGreaterThanOrEqual(550);
  });

  test("default reply echoes the message without directives; json mode asks for json_object", async () => {
    const out = await llm.complete({ messages: [{ role: "user", content: "hello  [[tokens=2]] world" }], json: true });
    expect(JSON.parse(out.text)).toEqual({ reply: "ok: hello world" });
    expect(server.requests.at(-1)?.body.response_format).toEqual({ type: "json_object" });
  });

  test("429 with retry_after=2 is transient with retryAfterMs 2000, then succeeds", async () => {
    const msg = "busy [[status=429 times=1 retry_after=2]]";
    const err = await failure(llm, msg);
    expect(err.transient).toBe(true);
    expect(err.status).toBe(429);
    expect(err.retryAfterMs).toBe(2000);
    const ok = await llm.complete({ messages: [{ role: "user", content: msg }] });
    expect(ok.text).toBe("ok: busy");
  });

  test("503 is transient", async () => {
    const err = await failure(llm, "[[status=503]]");
    expect({ transient: err.transient, status: err.status }).toEqual({ transient: true, status: 503 });
  });

  test("400 is permanent and carries the server's message", async () => {
    const err = await failure(llm, "[[status=400]]");
    expect(err.transient).toBe(false);
    expect(err.status).toBe(400);
    expect(err.message).toContain("400");
    expect(err.message).toContain("scripted failure 400");
  });

  test("an AbortSignal.timeout is a transient 'timed out', well before the reply", async () => {
    const started = Date.now();
    const err = await failure(llm, "slow [[delay=2000]]", AbortSignal.timeout(100));
    const took = Date.now() - started;
    expect(err.transient).toBe(true);
    expect(err.message).toBe("timed out");
    expect(took).toBeLessThan(1000);
  });

  test("a caller abort is a transient 'aborted'", async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 50);
    const err = await failure(llm, "slow [[delay=2000]]", ac.signal);
    expect({ transient: err.transient, message: err.message }).toEqual({ transient: true, message: "aborted" });
  });
});

test("connection refused is transient and names the endpoint", async () => {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}/v1`;
  const llm = await createLlm(llmConfig({ provider: "openai", base_url: url }));
  const err = await failure(llm, "hello");
  expect(err.transient).toBe(true);
  expect(err.status).toBeUndefined();
  expect(err.message).toContain(`connection to ${url} failed`);
});

test("retry-after: seconds, an HTTP date, or retry-after-ms", () => {
  const now = Date.parse("2025-01-01T00:00:00Z");
  expect(retryAfterMs(new Headers({ "retry-after": "2" }), now)).toBe(2000);
  expect(retryAfterMs(new Headers({ "retry-after": "Wed, 01 Jan 2025 00:00:05 GMT" }), now)).toBe(5000);
  expect(retryAfterMs(new Headers({ "retry-after-ms": "250", "retry-after": "9" }), now)).toBe(250);
  expect(retryAfterMs(new Headers({ "retry-after": "soon" }), now)).toBeUndefined();
  expect(retryAfterMs(undefined, now)).toBeUndefined();
});

describe("echo provider", () => {
  test("replies with the last user message, streamed as words, with usage", async () => {
    const llm = await createLlm(llmConfig());
    const progress: [number, string][] = [];
    const out = await llm.complete({
      messages: [
        { role: "user", content: "first" },
        { role: "assistant", content: "x" },
        { role: "user", content: "  review\n the   code " },
      ],
      onProgress: (n, d) => progress.push([n, d]),
    });
    expect(out.text).toBe("[echo] review the code");
    expect(out.model).toBe("echo");
    expect(out.usage.completion_tokens).toBe(Math.ceil(out.text.length / 4));
    expect(out.usage.total_tokens).toBe(out.usage.prompt_tokens + out.usage.completion_tokens);
    expect(progress.map(([, d]) => d).join("")).toBe(out.text);
    expect(progress.length).toBe(4);
    expect(progress.at(-1)?.[0]).toBe(out.usage.completion_tokens);
  });

  test("caps the echo at 400 characters and returns {} for json", async () => {
    const llm = await createLlm(llmConfig({ provider: "echo", base_url: "http://127.0.0.1:1/v1" }));
    const long = await llm.complete({ messages: [{ role: "user", content: "a".repeat(1000) }] });
    expect(long.text).toBe(`[echo] ${"a".repeat(400)}`);
    const json = await llm.complete({ messages: [{ role: "user", content: "plan" }], json: true });
    expect(json.text).toBe("{}");
  });

  test("an already-aborted signal is a transient 'aborted'", async () => {
    const ac = new AbortController();
    ac.abort();
    const err = await failure(await createLlm(llmConfig()), "hi", ac.signal);
    expect({ transient: err.transient, message: err.message }).toEqual({ transient: true, message: "aborted" });
  });
});

describe("createLlm", () => {
  test("auto picks echo without base_url or api_key, openai with either", async () => {
    const echo = await createLlm(llmConfig());
    expect({ kind: echo.kind, model: echo.model, label: echo.label }).toEqual({
      kind: "echo",
      model: "echo",
      label: "echo (offline, no LLM configured)",
    });
    const byUrl = await createLlm(llmConfig({ base_url: "http://127.0.0.1:11434/v1" }));
    expect(byUrl.kind).toBe("openai");
    expect(byUrl.label).toBe("openai test-model at http://127.0.0.1:11434/v1");
    expect((await createLlm(llmConfig({ api_key: "sk-abc" }))).kind).toBe("openai");
    expect((await createLlm(llmConfig({ provider: "openai" }))).kind).toBe("openai");
  });

  test("the label and errors never contain the api key", async () => {
    const server = await startLlmServer();
    try {
      const key = "sk-secret-0123456789";
      const llm = await createLlm(llmConfig({ base_url: server.url, api_key: key }));
      expect(llm.label).not.toContain(key);
      expect(llm.label).toContain(server.url);
      const err = await failure(llm, "[[status=401]]");
      expect(err.transient).toBe(false);
      expect(err.message).not.toContain(key);
      expect(String(err.stack)).not.toContain(key);
    } finally {
      await server.stop();
    }
  });
});
