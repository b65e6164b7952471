// `picoclaw gateway`: the swarm as one OpenAI model, tested as a user would use it: the official `openai`
// npm client (streaming and not), curl, 50 chats at once, and every error a client can meet.
// Real nats-server, real LLM server, real role processes.
import { describe, expect, test } from "bun:test";
import { connect } from "nats";
import OpenAI, { APIError } from "openai";
import { swarmNames } from "../lib/subjects.ts";
import { FAST, type RoleProcess, reaper, runRole, spawnRole } from "./helpers/role-process.ts";
import { ECHO_ENV, swarmSuite } from "./helpers/suite.ts";
import type { Swarm } from "./helpers/swarm.ts";
import { waitFor } from "./helpers/wait.ts";

const suite = swarmSuite();
const procs = reaper();
const KEY = "sk-test-0123456789";

interface Gateway {
  proc: RoleProcess;
  /** e.g. http://127.0.0.1:PORT/v1 */
  base: string;
  client: OpenAI;
}

/** `picoclaw gateway` on a free loopback port beside `swarm`, ready once its /readyz says so. */
async function startGateway(common: string[], args: string[] = [], key?: string): Promise<Gateway> {
  const proc = procs.track(spawnRole("picoclaw.ts", ["gateway", "--swarm.http.listen", "127.0.0.1:0", ...common, ...args]));
  const line = await proc.waitForLine(/Gateway ready url=\S+/, 15_000);
  const base = /url=(\S+)/.exec(line)![1]!;
  await waitFor("the gateway's /readyz", async () => (await fetch(`${base.replace(/\/v1$/, "")}/readyz`)).status === 200);
  return { proc, base, client: new OpenAI({ baseURL: base, apiKey: key ?? "unused", maxRetries: 0, timeout: 60_000 }) };
}

function stopAfter<T>(run: () => Promise<T>): Promise<T> {
  return run().finally(() => procs.killAll());
}

/** The LLM server's usage for the calls whose messages mention `marker`. */
function servedTokens(marker: string): { calls: number; total: number } {
  const calls = suite.llm.requests.filter((r) => JSON.stringify(r.body.messages).includes(marker));
  return { calls: calls.length, total: calls.reduce((n, r) => n + r.usage!.total_tokens, 0) };
}

async function apiError(p: Promise<unknown>): Promise<APIError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof APIError) return err;
    throw err;
  }
  throw new Error("expected the call to fail");
}

async function post(base: string, body: string | object, headers: Record<string, string> = {}) {
  const res = await fetch(`${base}/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return {
    status: res.status,
    headers: res.headers,
    json: (await res.json()) as { error?: { message: string; type: string; code: string | null } },
  };
}

describe("gateway", () => {
  test("models, a non-streaming and a streaming chat with the openai client, and curl", () =>
    stopAfter(async () => {
      const swarm = await suite.start("gw1", [
        { script: "coordinator.ts", env: suite.llmEnv() },
        { script: "specialist.ts", args: ["--swarm.capabilities", "code"], env: suite.llmEnv() },
        { script: "specialist.ts", args: ["--swarm.capabilities", "security"], env: suite.llmEnv() },
        { script: "worker.ts", env: suite.llmEnv() },
      ]);
      const gw = await startGateway(swarm.common);

      // Every online capability is a model of its own.
      const models = (await gw.client.models.list()).data.map((m) => m.id).sort();
      expect(models).toEqual(["picoclaw-swarm", "picoclaw-swarm/code", "picoclaw-swarm/general", "picoclaw-swarm/security"]);
      expect((await gw.client.models.retrieve("picoclaw-swarm/code")).owned_by).toBe("picoclaw");

      // Non-streaming, one capability: one sub-task on a code node; usage is what the LLM server counted.
      const one = await gw.client.chat.completions.create({
        model: "picoclaw-swarm/code",
        messages: [{ role: "user", content: "Explain the retry loop gw-one [[tokens=6]]" }],
      });
      expect(one.object).toBe("chat.completion");
      expect(one.choices[0]!.finish_reason).toBe("stop");
      expect(one.choices[0]!.message.content).toContain("ok: You are the code specialist");
      expect(one.choices[0]!.message.content).toContain("code task — completed");
      const oneServed = servedTokens("gw-one");
      expect(oneServed.calls).toBe(1);
      expect(one.usage).toMatchObject({ total_tokens: oneServed.total, completion_tokens: 6 });

      // Streaming with include_usage: the LLM planner (two tries, then the heuristic) splits it into code and
      // security, and the coordinator's merge arrives chunk by chunk while the LLM produces it.
      const stream = await gw.client.chat.completions.create({
        model: "picoclaw-swarm",
        messages: [
          { role: "system", content: "You are terse." },
          { role: "user", content: "Check code and security of gw-two [[tokens=6]] [[delay=1500]]" },
        ],
        stream: true,
        stream_options: { include_usage: true },
      });
      let content = "";
      const arrivals: number[] = [];
      let finish: string | null = null;
      let usage: OpenAI.CompletionUsage | null | undefined;
      for await (const c of stream) {
        const piece = c.choices[0]?.delta?.content;
        if (piece) {
          content += piece;
          arrivals.push(Date.now());
        }
        finish = c.choices[0]?.finish_reason ?? finish;
        if (c.usage) usage = c.usage;
      }
      expect(finish).toBe("stop");
      expect(content).toContain("ok: Request:"); // the merge's own reply comes first...
      expect(content).toContain("Sub-tasks:\n- code task: completed"); // ...then the status lines
      // The merge took 1.5 s and its chunks were forwarded as they came, not all at the end.
      expect(arrivals.length).toBeGreaterThan(3);
      expect(arrivals.at(-1)! - arrivals[0]!).toBeGreaterThan(500);
      const twoServed = servedTokens("gw-two");
      expect(twoServed.calls).toBe(5); // planner twice, two sub-tasks, the merge
      expect(usage?.total_tokens).toBe(twoServed.total);

      // curl, as in the README.
      const curl = Bun.spawn(
        [
          "curl",
          "-sS",
          `${gw.base}/chat/completions`,
          "-H",
          "Content-Type: application/json",
          "-d",
          JSON.stringify({ model: "picoclaw-swarm", messages: [{ role: "user", content: "Hello from curl gw-three" }] }),
        ],
        { stdout: "pipe", stderr: "pipe" },
      );
      const [out, code] = await Promise.all([new Response(curl.stdout).text(), curl.exited]);
      expect(code).toBe(0);
      const viaCurl = JSON.parse(out);
      expect(viaCurl.choices[0].message.content).toContain("ok: Hello from curl gw-three");
      expect(viaCurl.usage.total_tokens).toBe(servedTokens("gw-three").total);
      expect(viaCurl.picoclaw.request).toMatch(/^r-[0-9a-f]{10}$/);

      const metrics = await (await fetch(`${gw.base.replace(/\/v1$/, "")}/metrics`)).text();
      expect(metrics).toContain('picoclaw_gateway_chats_total{code="200",stream="false"} 2');
      expect(metrics).toContain('picoclaw_gateway_chats_total{code="200",stream="true"} 1');
      expect(gw.proc.output()).toMatch(/Chat answered request=r-\w+ model=picoclaw-swarm status=200 stream=true/);
    }));

  test("50 chats at once all get their own answer", () =>
    stopAfter(async () => {
      const swarm = await suite.start("gw2", [
        { script: "coordinator.ts", args: ["--swarm.max_concurrent", "50"], env: { PICOCLAW_LLM_PROVIDER: "echo" } },
        { script: "worker.ts", args: ["--swarm.max_concurrent", "25"], env: suite.llmEnv() },
        { script: "worker.ts", args: ["--swarm.max_concurrent", "25"], env: suite.llmEnv() },
      ]);
      const gw = await startGateway(swarm.common);
      const chats = await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          gw.client.chat.completions.create({
            model: "picoclaw-swarm",
            messages: [{ role: "user", content: `Concurrent chat number ${i} please [[delay=300]]` }],
          }),
        ),
      );
      chats.forEach((c, i) => {
        expect(c.choices[0]!.message.content).toContain(`ok: Concurrent chat number ${i} please`);
        expect(c.usage!.total_tokens).toBe(servedTokens(`Concurrent chat number ${i} please`).total);
      });
      expect(new Set(chats.map((c) => c.id)).size).toBe(50);
    }));

  test("errors in OpenAI's shape: 401 without the key, 400 bad JSON or too large, 404 unknown model, 504 past the deadline", () =>
    stopAfter(async () => {
      const swarm = await suite.start("gw3", [
        { script: "coordinator.ts", env: { PICOCLAW_LLM_PROVIDER: "echo" } },
        { script: "worker.ts", env: suite.llmEnv() },
      ]);
      const gw = await startGateway(
        swarm.common,
        ["--swarm.gateway.api_keys", KEY, "--swarm.tasks.max_prompt_bytes", "2048", "--swarm.tasks.request_timeout", "2s"],
        KEY,
      );
      const auth = { authorization: `Bearer ${KEY}` };
      const chat = { model: "picoclaw-swarm", messages: [{ role: "user" as const, content: "hello" }] };

      const noKey = await post(gw.base, chat);
      expect(noKey.status).toBe(401);
      expect(noKey.json.error).toMatchObject({ type: "authentication_error", code: "invalid_api_key" });
      const wrong = await apiError(new OpenAI({ baseURL: gw.base, apiKey: "sk-wrong-key-000", maxRetries: 0 }).models.list());
      expect(wrong.status).toBe(401);
      expect(wrong.message).toContain("incorrect API key provided");

      const badJson = await post(gw.base, "{ not json", auth);
      expect(badJson.status).toBe(400);
      expect(badJson.json.error).toMatchObject({ type: "invalid_request_error", code: "invalid_json" });
      const noMessages = await post(gw.base, { model: "picoclaw-swarm" }, auth);
      expect(noMessages.status).toBe(400);
      expect(noMessages.json.error!.message).toContain("messages");
      const tooLarge = await post(gw.base, { ...chat, messages: [{ role: "user", content: "x".repeat(10_000) }] }, auth);
      expect(tooLarge.status).toBe(400);
      expect(tooLarge.json.error).toMatchObject({ code: "request_too_large" });
      expect(tooLarge.json.error!.message).toContain("larger than 8192 bytes");
      const longText = await post(gw.base, { ...chat, messages: [{ role: "user", content: "y".repeat(3_000) }] }, auth);
      expect(longText.status).toBe(400);
      expect(longText.json.error!.message).toBe("the chat is 3000 bytes of text, more than swarm.tasks.max_prompt_bytes (2048)");

      const unknown = await apiError(gw.client.chat.completions.create({ ...chat, model: "picoclaw-swarm/rust" }));
      expect(unknown.status).toBe(404);
      expect(unknown.code).toBe("model_not_found");
      expect(unknown.message).toContain("picoclaw-swarm/general");

      // The request's deadline (swarm.tasks.request_timeout on the gateway, 2 s) passes while the LLM works.
      const started = Date.now();
      const late = await apiError(
        gw.client.chat.completions.create({ ...chat, messages: [{ role: "user" as const, content: "slow [[delay=8000]]" }] }),
      );
      expect(late.status).toBe(504);
      expect(late.code).toBe("deadline_exceeded");
      // The coordinator ends the request at its deadline and says so; the gateway maps that to 504.
      expect(late.message).toMatch(
        /^504 request r-\w+ passed its deadline: the request's deadline passed with sub-tasks unfinished: general$/,
      );
      expect(Date.now() - started).toBeLessThan(8_000);
    }));

  test("503 with no coordinator online, 429 once the work waiting reaches swarm.gateway.max_pending", () =>
    stopAfter(async () => {
      // No coordinator: the chat would only wait, so it is refused at once.
      const lonely = await suite.start("gw4", [{ script: "worker.ts", env: suite.llmEnv() }]);
      const gw0 = await startGateway(lonely.common);
      const none = await apiError(
        gw0.client.chat.completions.create({ model: "picoclaw-swarm", messages: [{ role: "user", content: "hi" }] }),
      );
      expect(none.status).toBe(503);
      expect(none.code).toBe("no_coordinator");
      expect(none.headers?.get("retry-after")).toBe("5");

      // A worker that runs one sub-task at a time, a gateway that lets one unit of work wait: with the
      // worker busy and one sub-task queued behind it, the next chat is refused.
      const swarm: Swarm = await suite.start("gw5", [
        { script: "coordinator.ts", env: { PICOCLAW_LLM_PROVIDER: "echo" } },
        { script: "worker.ts", args: ["--swarm.max_concurrent", "1"], env: suite.llmEnv() },
      ]);
      const gw = await startGateway(swarm.common, ["--swarm.gateway.max_pending", "1"]);
      const slow = (tag: string) =>
        gw.client.chat.completions.create({ model: "picoclaw-swarm", messages: [{ role: "user", content: `${tag} [[delay=6000]]` }] });
      const first = slow("gw5-first");
      await waitFor("the first chat running on the worker", () => servedTokens("gw5-first").calls === 1);
      const second = slow("gw5-second");
      const nc = await connect({ servers: suite.nats.url });
      const jsm = await nc.jetstreamManager();
      const names = swarmNames("gw5");
      await waitFor(
        "the second chat's sub-task waiting for the worker",
        async () => (await jsm.consumers.info(names.streams.tasks, names.consumers.queue("general", 1))).num_pending === 1,
      );
      await nc.close();
      // The gateway reads the waiting work at most every 250 ms: ask (streaming, so an admitted probe
      // answers at once and is let go) until it has seen it.
      const refused = await waitFor("a chat refused with 429", async () => {
        const res = await fetch(`${gw.base}/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model: "picoclaw-swarm", stream: true, messages: [{ role: "user", content: "gw5-probe" }] }),
        });
        if (res.status === 429) return res;
        await res.body?.cancel();
        return undefined;
      });
      expect(refused.headers.get("retry-after")).toBe("2");
      const third = await apiError(slow("gw5-third"));
      expect(third.status).toBe(429);
      expect(third.code).toBe("swarm_saturated");
      expect(third.message).toMatch(
        /\d+ requests wait for a coordinator and [1-9]\d* sub-tasks for a node \(swarm\.gateway\.max_pending is 1\)/,
      );
      // The admitted ones are still answered.
      const answers = await Promise.all([first, second]);
      expect(answers.map((a) => a.choices[0]!.finish_reason)).toEqual(["stop", "stop"]);
    }));

  test("listening beyond loopback without keys is refused at start, naming the key", async () => {
    const r = await runRole("picoclaw.ts", ["gateway", "--swarm.http.listen", "0.0.0.0:0", "--swarm.nats.urls", suite.nats.url, ...FAST]);
    expect(r.code).toBe(2);
    expect(r.output).toContain(
      "invalid config swarm.gateway.api_keys from default: at least one key when the gateway listens beyond loopback",
    );
    const noListen = await runRole("picoclaw.ts", ["gateway", "--swarm.nats.urls", suite.nats.url]);
    expect(noListen.code).toBe(2);
    expect(noListen.output).toContain("invalid config swarm.http.listen from default: the HOST:PORT the gateway listens on");
  });
  test("a streaming client that goes away mid-stream: the gateway lets go of the chat at once, not at the answer", () =>
    stopAfter(async () => {
      const swarm: Swarm = await suite.start("gw9", [
        { script: "coordinator.ts", env: ECHO_ENV },
        { script: "worker.ts", env: suite.llmEnv() },
      ]);
      const gw = await startGateway(swarm.common);
      const root = gw.base.replace(/\/v1$/, "");
      const ctl = new AbortController();
      const res = await fetch(`${gw.base}/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "picoclaw-swarm", stream: true, messages: [{ role: "user", content: "[[delay=8000]] gw-gone" }] }),
        signal: ctl.signal,
      });
      const reader = res.body!.getReader();
      await reader.read(); // the first chunk: the chat is under way
      const openChats = async () => Number(/^picoclaw_gateway_open_chats (\d+)$/m.exec(await (await fetch(`${root}/metrics`)).text())?.[1]);
      expect(await openChats()).toBe(1);
      ctl.abort();
      await waitFor("the gateway to let go of the chat", async () => (await openChats()) === 0, 5_000, 50);
      await gw.proc.waitForLine(/Chat client went away; the request goes on in the swarm/, 5_000);
      // Let go while the model was still answering: the LLM call for it has not ended.
      const call = suite.llm.requests.find((r) => JSON.stringify(r.body.messages).includes("gw-gone"));
      expect(call?.endedAt).toBeUndefined();
    }));
  test("a streamed chat whose tool call waits for approval says so, with the command; approved, the answer follows", () =>
    stopAfter(async () => {
      suite.llm.script((b) => {
        if (!JSON.stringify(b.messages).includes("gw-approve")) return undefined;
        const seen = (b.messages ?? []).filter((m) => m.role === "tool");
        return seen.length === 0
          ? { tool_calls: [{ name: "write_file", arguments: JSON.stringify({ path: "gw.txt", content: "from the gateway" }) }] }
          : `file tool said: ${seen[0]!.content}`;
      });
      try {
        const swarm: Swarm = await suite.start("gw12", [
          { script: "coordinator.ts", env: ECHO_ENV },
          { script: "worker.ts", args: ["--tools.approval.required", "write_file"], env: suite.llmEnv() },
        ]);
        const gw = await startGateway(swarm.common);
        const stream = await gw.client.chat.completions.create({
          model: "picoclaw-swarm",
          messages: [{ role: "user", content: "gw-approve: write the file" }],
          stream: true,
        });
        let content = "";
        let approved = false;
        for await (const c of stream) {
          content += c.choices[0]?.delta?.content ?? "";
          const id = /waiting for approval: write_file "gw.txt" on \S+ \((ap-[0-9a-f]{10})\); approve with `picoclaw approve \1`/.exec(
            content,
          )?.[1];
          if (id && !approved) {
            approved = true;
            expect((await runRole("picoclaw.ts", ["approve", id, ...swarm.common])).code).toBe(0);
          }
        }
        expect(approved).toBe(true);
        expect(content).toMatch(/> ap-[0-9a-f]{10}: approved by \S+/);
        expect(content).toContain("file tool said: wrote 16 bytes to gw.txt");
        // The answer follows the notices once, not twice.
        expect(content.split("file tool said: wrote 16 bytes to gw.txt").length - 1).toBe(1);
      } finally {
        suite.llm.script(undefined);
      }
    }));

  test("keyless on loopback: no CORS for web pages, and a chat must be JSON (a form or text/plain POST is refused)", () =>
    stopAfter(async () => {
      const swarm: Swarm = await suite.start("gw10", [
        { script: "coordinator.ts", env: ECHO_ENV },
        { script: "worker.ts", env: ECHO_ENV },
      ]);
      const gw = await startGateway(swarm.common);
      const pre = await fetch(`${gw.base}/chat/completions`, {
        method: "OPTIONS",
        headers: { origin: "http://evil.example", "access-control-request-method": "POST" },
      });
      expect(pre.headers.get("access-control-allow-origin")).toBeNull();
      const simple = await fetch(`${gw.base}/chat/completions`, {
        method: "POST",
        headers: { "content-type": "text/plain", origin: "http://evil.example" },
        body: JSON.stringify({ model: "picoclaw-swarm", messages: [{ role: "user", content: "from a web page" }] }),
      });
      expect(simple.status).toBe(415);
      expect(simple.headers.get("access-control-allow-origin")).toBeNull();
      expect(((await simple.json()) as { error: { code: string } }).error.code).toBe("unsupported_media_type");
    }));

  test("with keys, CORS is on for chat UIs in a browser", () =>
    stopAfter(async () => {
      const swarm: Swarm = await suite.start("gw11", [{ script: "coordinator.ts", env: ECHO_ENV }]);
      const gw = await startGateway(swarm.common, ["--swarm.gateway.api_keys", KEY], KEY);
      const pre = await fetch(`${gw.base}/chat/completions`, { method: "OPTIONS", headers: { origin: "http://ui.example" } });
      expect(pre.headers.get("access-control-allow-origin")).toBe("*");
    }));
});
