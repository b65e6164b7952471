// LLM providers behind one contract: any OpenAI-compatible endpoint (always streamed) or the offline echo.
// The OpenAI SDK is loaded only when that provider is used: `submit`, the dashboard and a coordinator
// without an LLM start without it.
import type { Config } from "./config.ts";
import { abortedError, estimateUsage, type LlmProvider } from "./llm-types.ts";
import type { Logger } from "./log.ts";
import { LLM_SECONDS_BUCKETS, type Metrics } from "./metrics.ts";

export const ECHO_LABEL = "echo (offline, no LLM configured)";

/** "openai" and "echo" are explicit; "auto" talks to an endpoint only when one (or a key) is configured. */
export async function createLlm(cfg: Config["llm"]): Promise<LlmProvider> {
  const configured = Boolean(cfg.base_url) || Boolean(cfg.api_key);
  if (cfg.provider === "openai" || (cfg.provider === "auto" && configured)) {
    const { openaiProvider } = await import("./llm-openai.ts");
    return openaiProvider(cfg);
  }
  return echoProvider();
}

/**
 * A node's LLM, said once at start-up (the echo provider as a warning: answers will only repeat
 * prompts), with every call's duration and tokens in the node's metrics.
 */
export async function nodeLlm(cfg: Config["llm"], log: Logger, metrics: Metrics): Promise<LlmProvider> {
  const llm = await createLlm(cfg);
  if (llm.kind === "echo") {
    log.warn(
      "LLM: echo provider (offline, no LLM configured); set PICOCLAW_LLM_BASE_URL / PICOCLAW_LLM_MODEL / PICOCLAW_LLM_API_KEY for a real one",
    );
  } else log.info("LLM provider", { llm: llm.label });
  const seconds = metrics.histogram(
    "picoclaw_llm_request_duration_seconds",
    "LLM calls made by this node, by model and outcome.",
    LLM_SECONDS_BUCKETS,
  );
  const tokens = metrics.counter("picoclaw_llm_tokens_total", "Tokens of this node's LLM calls, by model and type (prompt, completion).");
  return {
    ...llm,
    async complete(req) {
      const started = performance.now();
      try {
        const c = await llm.complete(req);
        seconds.observe((performance.now() - started) / 1000, { model: llm.model, outcome: "ok" });
        tokens.inc({ model: llm.model, type: "prompt" }, c.usage.prompt_tokens);
        tokens.inc({ model: llm.model, type: "completion" }, c.usage.completion_tokens);
        return c;
      } catch (err) {
        seconds.observe((performance.now() - started) / 1000, { model: llm.model, outcome: "error" });
        throw err;
      }
    },
  };
}

function echoProvider(): LlmProvider {
  return {
    kind: "echo",
    model: "echo",
    label: ECHO_LABEL,
    async complete(req) {
      if (req.signal?.aborted) throw abortedError(req.signal);
      const last = [...req.messages].reverse().find((m) => m.role === "user")?.content ?? "";
      const said = Array.from(last.replace(/\s+/g, " ").trim()).slice(0, 400).join("");
      const text = req.json ? "{}" : `[echo] ${said}`;
      let sent = 0;
      for (const word of text.match(/\S+\s*/g) ?? []) {
        sent += word.length;
        req.onProgress?.(Math.ceil(sent / 4), word);
      }
      return { text, usage: estimateUsage(req.messages, text), model: "echo" };
    },
  };
}
