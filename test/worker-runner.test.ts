// The worker's runner (roles/worker/runner.ts): one sub-task from a real JetStream queue through a real
// OpenAI-style HTTP server to its recorded result, its events and its ack; transient failures come back
// later, permanent ones fail it, a repeat of a recorded sub-task is acked without an LLM call, and a
// stop hands a running one back at once.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect, type JsMsg, type KV, type NatsConnection } from "nats";
import { createBadInputCounter } from "../lib/bad-input.ts";
import { type Config, loadConfig } from "../lib/config.ts";
import { createLlm } from "../lib/llm.ts";
import { createLogger } from "../lib/log.ts";
import { decode, encode } from "../lib/messages.ts";
import { pullAvailable } from "../lib/pull.ts";
import { ensureConsumer, ensureStreams, openTasksKv } from "../lib/streams.ts";
import { type SwarmNames, swarmNames } from "../lib/subjects.ts";
import { type TaskEvent, type TaskMsg, taskEventSchema } from "../lib/task-messages.ts";
import { readResult } from "../lib/task-records.ts";
import { createRunner, type Runner } from "../roles/worker/runner.ts";
import { type LlmServer, startLlmServer } from "./helpers/llm-server.ts";
import { type NatsServer, startNatsServer } from "./helpers/nats-server.ts";
import { tempHome } from "./helpers/role-process.ts";
import { waitFor } from "./helpers/wait.ts";

let nats: NatsServer;
let llm: LlmServer;
let nc: NatsConnection;
let cfg: Config;
let names: SwarmNames;
let kv: KV;
let runner: Runner;
const events: TaskEvent[] = [];
const DURABLE = "q_code_1";

beforeAll(async () => {
  [nats, llm] = await Promise.all([startNatsServer(), startLlmServer()]);
  nc = await connect({ servers: nats.url });
  cfg = loadConfig({ flags: {}, env: {}, home: tempHome() }).config;
  cfg.swarm.tasks.max_deliver = 2;
  cfg.llm.base_url = llm.url;
  names = swarmNames("runner");
  const jsm = await ensureStreams(nc, names, cfg);
  await ensureConsumer(jsm, names.streams.tasks, DURABLE, names.taskQueue("code", 1), { ackWait: 30_000, maxDeliver: 2 });
  kv = await openTasksKv(nc, names, cfg);
  for (const subject of [names.taskLiveAll, names.taskEventsAll]) {
    nc.subscribe(subject, {
      callback: (_e, m) => {
        const d = decode(taskEventSchema, m.data, 1 << 20);
        if (d.ok) events.push(d.value);
      },
    });
  }
  runner = createRunner({
    nc,
    kv,
    names,
    cfg,
    node: "claw-runner1",
    llm: await createLlm(cfg.llm),
    log: createLogger("error"),
    bad: createBadInputCounter(createLogger("error")),
    onChange: () => {},
  });
});
afterAll(async () => {
  await nc.close();
  await Promise.all([nats.stop(), llm.stop()]);
});

let seq = 0;
/** Queues one sub-task whose prompt carries the LLM server's directives, and pulls it like the scheduler. */
async function queued(prompt: string): Promise<{ task: TaskMsg; msg: JsMsg }> {
  const task: TaskMsg = {
    v: 1,
    request: `r-runner${++seq}`,
    task: "t1",
    title: "t1 (code)",
    capability: "code",
    priority: 1,
    prompt,
    inputs: [],
    timeout_ms: 10_000,
    coordinator: "claw-coord",
  };
  await nc.jetstream().publish(names.taskQueue("code", 1), encode(task));
  return { task, msg: await pull() };
}

async function pull(): Promise<JsMsg> {
  const [msg] = await waitFor("a sub-task to pull", async () => {
    const got = await pullAvailable(nc, { stream: names.streams.tasks, durable: DURABLE, max: 1, waitMs: 100, timeoutMs: 2_000 });
    return got.length ? got : undefined;
  });
  return msg!;
}

const kinds = (task: TaskMsg) => events.filter((e) => e.request === task.request).map((e) => e.kind);
const pending = async () => {
  const info = await (await nc.jetstreamManager()).consumers.info(names.streams.tasks, DURABLE);
  return { queued: info.num_pending, unacked: info.num_ack_pending };
};

/** The server takes acks on a queue of its own, so consumer info can come back a moment before it counts one. */
const settled = () =>
  waitFor(
    "nothing queued or unacked",
    async () => {
      const p = await pending();
      return p.queued === 0 && p.unacked === 0;
    },
    5_000,
  );

describe("runner", () => {
  test("completed: the result is recorded once, started and completed are reported, the message is acked", async () => {
    const { task, msg } = await queued("review this [[reply=looks good]]");
    await runner.run(msg);
    const result = await readResult(kv, task.request, task.task);
    expect(result).toMatchObject({ status: "completed", text: "looks good", node: "claw-runner1", attempts: 1 });
    await waitFor("the completed event", () => kinds(task).includes("completed"));
    expect(kinds(task)[0]).toBe("started");
    expect(events.find((e) => e.request === task.request && e.kind === "completed")?.result?.text).toBe("looks good");
    await settled();
    expect(runner.counts().done).toBeGreaterThanOrEqual(1);
  });

  test("transient (503): not recorded, 'retrying' with the backoff delay, and the message comes back", async () => {
    const { task, msg } = await queued("flaky [[status=503]]");
    await runner.run(msg);
    expect(await readResult(kv, task.request, task.task)).toBeUndefined();
    await waitFor("the retrying event", () => kinds(task).includes("retrying"));
    const retry = events.find((e) => e.request === task.request && e.kind === "retrying")!;
    expect(retry.retry_in_ms).toBeGreaterThanOrEqual(800); // first backoff step, 1 s -20 %
    // Redelivered after the backoff: the second (last, max_deliver 2) attempt fails it for good.
    const again = await pull();
    expect(again.info.deliveryCount).toBe(2);
    await runner.run(again);
    expect(await readResult(kv, task.request, task.task)).toMatchObject({ status: "failed", attempts: 2 });
    expect((await readResult(kv, task.request, task.task))?.errors).toHaveLength(2);
  });

  test("permanent (400): failed at once with the provider's message, never redelivered", async () => {
    const { task, msg } = await queued("bad [[status=400]]");
    await runner.run(msg);
    const result = await readResult(kv, task.request, task.task);
    expect(result).toMatchObject({ status: "failed", attempts: 1 });
    expect(result?.error).toContain("scripted failure 400");
    await waitFor("the failed event", () => kinds(task).includes("failed"));
    await settled();
  });

  test("a redelivery of a sub-task that already has a result is acked without calling the LLM", async () => {
    const { task, msg } = await queued("once [[reply=first]]");
    await runner.run(msg);
    // The same sub-task queued again (as a resumed request might), and delivered a second time.
    await nc.jetstream().publish(names.taskQueue("code", 1), encode(task));
    const again = await pull();
    again.nak();
    const third = await pull();
    const calls = llm.requests.length;
    await runner.run(third);
    expect(llm.requests.length).toBe(calls);
    expect((await readResult(kv, task.request, task.task))?.text).toBe("first");
    await settled();
  });

  test("delivered again while it runs (a consumer leader moved): the run in hand finishes it, no delivery is spent", async () => {
    const exhausted: string[] = [];
    const advisories = nc.subscribe(names.maxDeliveriesAdvisory, { callback: (_e, m) => exhausted.push(m.string()) });
    const { task, msg } = await queued("slow [[delay=3000]] [[reply=done once]]");
    const first = runner.run(msg);
    await waitFor("it is running", () => runner.running().some((r) => r.request === task.request));
    // What a new consumer leader does with a message whose progress acks went to the old one: deliver it
    // again (sent on the ack subject by hand: the runner's handle must not learn of it). Here the second
    // delivery is also the last (max_deliver 2).
    nc.publish((msg as JsMsg & { reply: string }).reply, "-NAK");
    const again = await pull();
    expect(again.info.deliveryCount).toBe(2);
    await runner.run(again);
    // A pull, as the worker's next one: a delivery spent here (a nak) would now reach JetStream's limit.
    expect(await pullAvailable(nc, { stream: names.streams.tasks, durable: DURABLE, max: 1, waitMs: 2_000, timeoutMs: 4_000 })).toEqual([]);
    await first;
    expect(await readResult(kv, task.request, task.task)).toMatchObject({ status: "completed", text: "done once", attempts: 1 });
    await settled();
    await nc.flush();
    advisories.unsubscribe();
    expect(exhausted, "max-deliveries advisories (the coordinator fails such a sub-task)").toEqual([]);
  });

  test("stop(0) while a sub-task runs hands it back at once for another node", async () => {
    const { task, msg } = await queued("slow [[delay=8000]]");
    const run = runner.run(msg);
    await waitFor("it is running", () => runner.running().some((r) => r.request === task.request));
    await runner.stop(0);
    await run;
    expect(await readResult(kv, task.request, task.task)).toBeUndefined();
    const back = await pull();
    expect(back.info.deliveryCount).toBe(2);
    back.term();
  });
});
