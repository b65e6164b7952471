// The set-up most pipeline suites share: one nats-server and one OpenAI-style LLM server per file,
// swarms started per test and stopped after it.
import { afterAll, afterEach, beforeAll } from "bun:test";
import { type LlmServer, startLlmServer } from "./llm-server.ts";
import { type NatsServer, startNatsServer } from "./nats-server.ts";
import { type NodeSpec, type Swarm, startSwarm } from "./swarm.ts";

/** Nodes that plan or work without any LLM (the offline echo provider). */
export const ECHO_ENV = { PICOCLAW_LLM_PROVIDER: "echo" };

export interface SwarmSuite {
  readonly nats: NatsServer;
  readonly llm: LlmServer;
  /** Environment pointing a node at this suite's LLM server. */
  llmEnv(): Record<string, string>;
  /** Starts a swarm (see startSwarm); it is stopped after the test. */
  start(hid: string, specs: NodeSpec[]): Promise<Swarm>;
}

export function swarmSuite(): SwarmSuite {
  let nats: NatsServer | undefined;
  let llm: LlmServer | undefined;
  const running: Swarm[] = [];
  beforeAll(async () => {
    [nats, llm] = await Promise.all([startNatsServer(), startLlmServer()]);
  });
  afterEach(async () => {
    await Promise.all(running.splice(0).map((s) => s.stop()));
  });
  afterAll(async () => {
    await Promise.all([nats?.stop(), llm?.stop()]);
  });
  const suite: SwarmSuite = {
    get nats() {
      if (!nats) throw new Error("the suite's nats-server is not started yet (use it inside a test)");
      return nats;
    },
    get llm() {
      if (!llm) throw new Error("the suite's LLM server is not started yet (use it inside a test)");
      return llm;
    },
    llmEnv: () => ({ PICOCLAW_LLM_BASE_URL: suite.llm.url, PICOCLAW_LLM_MODEL: "test-model" }),
    async start(hid, specs) {
      const s = await startSwarm(suite.nats, hid, specs);
      running.push(s);
      return s;
    },
  };
  return suite;
}
