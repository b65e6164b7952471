// LLM providers behind one contract: any OpenAI-compatible endpoint (always streamed) or the offline echo.
// The OpenAI SDK is loaded only when that provider is used: `submit`, the dashboard and a coordinator
// without an LLM start without it.
import type { NatsConnection } from "nats";
import type { Config } from "./config.ts";
import { abortedError, type CompletionRequest, estimateUsage, type LlmProvider } from "./llm-types.ts";
import type { Logger } from "./log.ts";
import { LLM_SECONDS_BUCKETS, LLM_TOKENS_METRIC, type Metrics } from "./metrics.ts";
import type { SwarmNames } from "./subjects.ts";
import { openTokenBudget, type TokenBudget } from "./token-budget.ts";

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

/** What a node's LLM needs from the node: its config, log and metrics, and NATS for the swarm's token budget. */
export interface LlmHost {
  config: Config;
  log: Logger;
  metrics: Metrics;
  link?: { nc: NatsConnection };
  names?: SwarmNames;
}

/** Tokens reserved for a reply when llm.max_tokens does not bound it (the real count is charged afterwards). */
const DEFAULT_REPLY_ESTIMATE = 512;

/**
 * A node's LLM, said once at start-up (the echo provider as a warning: answers will only repeat
 * prompts), with every call's duration and tokens (by capability, model and type) in the node's
 * metrics. With swarm.llm.tokens_per_minute set, every call first waits for room in the swarm's
 * shared token budget; without it nothing else happens on the call's path.
 */
export async function nodeLlm(node: LlmHost): Promise<LlmProvider> {
  const { log, metrics } = node;
  const cfg = node.config.llm;
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
  const tokens = metrics.counter(
    LLM_TOKENS_METRIC,
    "Tokens of this node's LLM calls, by capability (a sub-task's, or (planning) and (synthesis) on coordinators), model and type (prompt, completion).",
  );
  const budget = tokenBudgetOf(node);
  return {
    ...llm,
    async complete(req) {
      const settle = budget ? await budget.take(promptEstimate(req) + (cfg.max_tokens ?? DEFAULT_REPLY_ESTIMATE), req.signal) : undefined;
      const started = performance.now();
      const capability = req.capability ?? "(other)";
      try {
        const c = await llm.complete(req);
        seconds.observe((performance.now() - started) / 1000, { model: llm.model, outcome: "ok" });
        tokens.inc({ capability, model: llm.model, type: "prompt" }, c.usage.prompt_tokens);
        tokens.inc({ capability, model: llm.model, type: "completion" }, c.usage.completion_tokens);
        settle?.(c.usage.total_tokens);
        return c;
      } catch (err) {
        seconds.observe((performance.now() - started) / 1000, { model: llm.model, outcome: "error" });
        // A failed call may still have cost tokens, but the provider did not say how many: the
        // estimate stays charged.
        throw err;
      }
    },
  };
}

/** The prompt's tokens before the call: its messages and, for a tool loop, the tools' definitions the model is sent. */
function promptEstimate(req: CompletionRequest): number {
  const tools = req.tools?.length ? Math.ceil(JSON.stringify(req.tools).length / 4) : 0;
  return estimateUsage(req.messages, "").prompt_tokens + tools;
}

function tokenBudgetOf(node: LlmHost): TokenBudget | undefined {
  const limits = node.config.swarm.llm;
  if (limits.tokens_per_minute <= 0 || !node.link || !node.names) return undefined;
  const budget = openTokenBudget({
    nc: node.link.nc,
    names: node.names,
    log: node.log,
    tokensPerMinute: limits.tokens_per_minute,
    windowMs: limits.token_window,
    replicas: node.config.swarm.nats.replicas,
  });
  node.log.info("LLM token budget shared by the swarm", {
    tokens_per_minute: limits.tokens_per_minute,
    window_ms: limits.token_window,
    window_tokens: budget.perWindow,
  });
  node.metrics.counterOf(
    "picoclaw_llm_budget_wait_seconds_total",
    "Time this node's LLM calls waited for the swarm's token budget.",
    () => [{ value: budget.waitedMs() / 1000 }],
  );
  return budget;
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
