// Signed sub-tasks and results: only trusted coordinators' sub-tasks run, replays and stale messages
// are refused, results from untrusted nodes are not believed, and `picoclaw keygen` makes the keys.
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { statSync } from "node:fs";
import { join } from "node:path";
import { connect, headers, type Msg } from "nats";
import { encode } from "../lib/messages.ts";
import { swarmNames } from "../lib/subjects.ts";
import type { TaskMsg } from "../lib/task-messages.ts";
import { type LlmServer, startLlmServer } from "./helpers/llm-server.ts";
import { type NatsServer, startNatsServer } from "./helpers/nats-server.ts";
import { runRole, tempHome } from "./helpers/role-process.ts";
import { type Swarm, startSwarm, submit } from "./helpers/swarm.ts";
import { waitFor } from "./helpers/wait.ts";

let nats: NatsServer;
let llm: LlmServer;
let swarm: Swarm | undefined;
const dir = tempHome();
const keys: Record<string, { file: string; pub: string }> = {};

async function keygen(name: string) {
  const file = join(dir, `${name}.nk`);
  const r = await runRole("picoclaw.ts", ["keygen", file]);
  expect(r.code).toBe(0);
  const pub = r.stdout.match(/public key: (U[A-Z2-7]{55})/)?.[1];
  if (!pub) throw new Error(`no public key in: ${r.output}`);
  keys[name] = { file, pub };
}

beforeAll(async () => {
  [nats, llm] = await Promise.all([startNatsServer(), startLlmServer()]);
  for (const n of ["coord", "worker", "stranger"]) await keygen(n);
});
afterEach(async () => {
  await swarm?.stop();
  swarm = undefined;
});
afterAll(async () => {
  await Promise.all([nats.stop(), llm.stop()]);
});

const signing = (key: string, trusted: { coordinators?: string[]; workers?: string[] }) => [
  "--swarm.security.signing",
  "--swarm.security.key_file",
  keys[key]!.file,
  ...(trusted.coordinators ? ["--swarm.security.trusted_coordinators", trusted.coordinators.join(",")] : []),
  ...(trusted.workers ? ["--swarm.security.trusted_workers", trusted.workers.join(",")] : []),
];
const llmEnv = () => ({ PICOCLAW_LLM_BASE_URL: llm.url, PICOCLAW_LLM_MODEL: "m" });

describe("keygen", () => {
  test("writes a seed readable by its owner only, prints the public key, never overwrites", async () => {
    expect(statSync(keys.coord!.file).mode & 0o777).toBe(0o600);
    const again = await runRole("picoclaw.ts", ["keygen", keys.coord!.file]);
    expect(again.code).toBe(2);
    expect(again.output).toContain("refusing to overwrite");
  });
});

describe("signed sub-tasks", () => {
  test("a signed swarm answers; unsigned, untrusted, replayed and stale sub-tasks are refused and never run", async () => {
    const hid = "sig1";
    swarm = await startSwarm(nats, hid, [
      { script: "coordinator.ts", args: signing("coord", { workers: [keys.worker!.pub] }), env: { PICOCLAW_LLM_PROVIDER: "echo" } },
      {
        script: "worker.ts",
        args: [...signing("worker", { coordinators: [keys.coord!.pub] }), "--swarm.security.max_skew", "2s"],
        env: llmEnv(),
      },
    ]);
    const names = swarmNames(hid);
    const nc = await connect({ servers: nats.url });
    try {
      // Capture a real signed sub-task (core subscribers see the JetStream publish, headers included).
      let captured: Msg | undefined;
      const sub = nc.subscribe(names.taskQueue("general", 1), { callback: (_e, m) => (captured ??= m) });
      const ok = await submit(swarm, ["--capabilities", "general", "signed-work-1"]);
      expect(ok.code).toBe(0);
      expect(ok.answer?.status).toBe("completed");
      await waitFor("a captured signed sub-task", () => captured);
      sub.unsubscribe();
      const worker = swarm.nodes[1]!;
      const js = nc.jetstream();
      const before = llm.requests.length;

      const forged: TaskMsg = {
        v: 1,
        request: "r-forged0001",
        task: "t",
        title: "forged",
        capability: "general",
        priority: 1,
        prompt: "forged-prompt",
        inputs: [],
        timeout_ms: 10_000,
        coordinator: "claw-00000000",
      };
      await js.publish(names.taskQueue("general", 1), encode(forged));
      await worker.waitForLine(/Rejected sub-task task=t request=r-forged0001 .*reason=unsigned/);

      // Replay: the same signed bytes published again as a new message (without the dedupe id, which
      // JetStream would otherwise use to drop it).
      const replayHeaders = headers();
      for (const [k, v] of captured!.headers!) if (k.startsWith("Picoclaw-")) replayHeaders.set(k, v[0]!);
      await js.publish(captured!.subject, captured!.data, { headers: replayHeaders });
      await worker.waitForLine(/Rejected sub-task .*reason="replay \(nonce already used\)"/);

      // Stale: once the time window has passed, the captured message is refused for its age.
      await Bun.sleep(2_100); // let the 2 s window pass: the age of the message is what is tested
      await js.publish(captured!.subject, captured!.data, { headers: replayHeaders });
      await worker.waitForLine(/Rejected sub-task .*reason="outside the 2000ms time window"/);
      expect(llm.requests.length).toBe(before); // none of them ran
    } finally {
      await nc.close();
    }
  });

  test("a sub-task signed by an untrusted coordinator is refused", async () => {
    swarm = await startSwarm(nats, "sig2", [
      { script: "coordinator.ts", args: signing("stranger", { workers: [keys.worker!.pub] }), env: { PICOCLAW_LLM_PROVIDER: "echo" } },
      {
        script: "worker.ts",
        args: [...signing("worker", { coordinators: [keys.coord!.pub] }), "--swarm.tasks.max_deliver", "1"],
        env: llmEnv(),
      },
    ]);
    const r = submit(swarm, ["--capabilities", "general", "--timeout", "6s", "untrusted-work"], 20_000);
    await swarm.nodes[1]!.waitForLine(/Rejected sub-task .*reason="signed by untrusted key U/);
    expect((await r).code).not.toBe(0);
    expect(llm.requests.some((q) => q.body.messages?.at(-1)?.content.includes("untrusted-work"))).toBe(false);
  });

  test("a result signed by a node the coordinator does not trust is rejected, and the answer says so", async () => {
    swarm = await startSwarm(nats, "sig3", [
      { script: "coordinator.ts", args: signing("coord", { workers: [keys.stranger!.pub] }), env: { PICOCLAW_LLM_PROVIDER: "echo" } },
      { script: "worker.ts", args: signing("worker", { coordinators: [keys.coord!.pub] }), env: llmEnv() },
    ]);
    const r = await submit(swarm, ["--capabilities", "general", "result-check"]);
    expect(r.code).toBe(1);
    expect(r.answer?.answer).toContain("result rejected: result signed by untrusted key");
    await swarm.nodes[0]!.waitForLine(/Result rejected/);
  });

  test("signing needs a key file and trusted keys: start-up stops naming the key", async () => {
    const noKey = await runRole("worker.ts", ["--swarm.security.signing", "--swarm.nats.urls", nats.url]);
    expect(noKey.code).toBe(2);
    expect(noKey.output).toContain("swarm.security.key_file");
    const noTrust = await runRole("worker.ts", [...signing("worker", {}), "--swarm.nats.urls", nats.url, "--swarm.hid", "sig4"]);
    expect(noTrust.code).toBe(2);
    expect(noTrust.output).toContain("swarm.security.trusted_coordinators");
  });
});
