// LLM providers behind one contract: any OpenAI-compatible endpoint (always streamed) or the offline echo.
// The OpenAI SDK is loaded only when that provider is used: `submit`, the dashboard and a coordinator
// without an LLM start without it.
import type { Config } from "./config.ts";
import { abortedError, estimateUsage, type LlmProvider } from "./llm-types.ts";
import type { Logger } from "./log.ts";

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

/** A node's LLM, said once at start-up (the echo provider as a warning: answers will only repeat prompts). */
export async function nodeLlm(cfg: Config["llm"], log: Logger): Promise<LlmProvider> {
  const llm = await createLlm(cfg);
  if (llm.kind === "echo") {
    log.warn(
      "LLM: echo provider (offline, no LLM configured); set PICOCLAW_LLM_BASE_URL / PICOCLAW_LLM_MODEL / PICOCLAW_LLM_API_KEY for a real one",
    );
  } else log.info("LLM provider", { llm: llm.label });
  return llm;
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
