// Signed sub-tasks, results, answers, control requests and request records: only trusted coordinators'
// sub-tasks run, replays and stale messages are refused, results from untrusted nodes are not believed,
// drain/shutdown need a trusted admin key, submit and watch print only a trusted coordinator's answer,
// a forged request record is never resumed, no member can spoil a sub-task's nonce, and `picoclaw keygen` makes the keys.
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { connect, headers, type Msg, type MsgHdrs } from "nats";
import { createUser, fromSeed } from "nkeys.js";
import { createBadInputCounter } from "../lib/bad-input.ts";
import { createLogger } from "../lib/log.ts";
import { encode } from "../lib/messages.ts";
import { createRecordGuard } from "../lib/record-guard.ts";
import { ControlReplayGuard, type Signer, sealRecord, signMessage, verifyControl } from "../lib/signing.ts";
import { swarmNames } from "../lib/subjects.ts";
import { requestRecordSchema, type TaskMsg } from "../lib/task-messages.ts";
import { type LlmServer, startLlmServer } from "./helpers/llm-server.ts";
import { type NatsServer, startNatsServer } from "./helpers/nats-server.ts";
import { runRole, spawnRole, tempHome } from "./helpers/role-process.ts";
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
  for (const n of ["coord", "worker", "stranger", "admin"]) await keygen(n);
});
afterEach(async () => {
  await swarm?.stop();
  swarm = undefined;
});
afterAll(async () => {
  await Promise.all([nats.stop(), llm.stop()]);
});

const signing = (key: string, trusted: { coordinators?: string[]; workers?: string[]; admins?: string[] }) => [
  "--swarm.security.signing",
  "--swarm.security.key_file",
  keys[key]!.file,
  ...(trusted.coordinators ? ["--swarm.security.trusted_coordinators", trusted.coordinators.join(",")] : []),
  ...(trusted.workers ? ["--swarm.security.trusted_workers", trusted.workers.join(",")] : []),
  ...(trusted.admins ? ["--swarm.security.trusted_admins", trusted.admins.join(",")] : []),
];
/** A signer made in the test, for messages no picoclaw process would send. */
function testSigner(): Signer {
  const kp = createUser();
  return { publicKey: kp.getPublicKey(), sign: (d) => kp.sign(d) };
}
/** Sub-task signature headers as lib/signing.ts makes them, at a chosen time. */
function signedAt(kp: ReturnType<typeof fromSeed>, subject: string, payload: Uint8Array, msgId: string, time: number): MsgHdrs {
  const nonce = randomBytes(12).toString("hex");
  const head = new TextEncoder().encode(`${subject}\n${nonce}\n${time}\nmsgid:${msgId}\n`);
  const bytes = new Uint8Array(head.length + payload.length);
  bytes.set(head);
  bytes.set(payload, head.length);
  const h = headers();
  h.set("Picoclaw-Key", kp.getPublicKey());
  h.set("Picoclaw-Nonce", nonce);
  h.set("Picoclaw-Time", String(time));
  h.set("Picoclaw-Sig", Buffer.from(kp.sign(bytes)).toString("base64"));
  return h;
}
/** Publishes with header lines written exactly as given, over a plain NATS protocol connection. */
async function rawPublish(url: string, subject: string, headerLines: string[], payload: Uint8Array): Promise<void> {
  const { hostname, port } = new URL(url);
  const head = new TextEncoder().encode(`NATS/1.0\r\n${headerLines.join("\r\n")}\r\n\r\n`);
  let got = "";
  let done: () => void = () => {};
  const pong = new Promise<void>((r) => {
    done = r;
  });
  const socket = await Bun.connect({
    hostname,
    port: Number(port),
    socket: {
      data(_s, chunk) {
        got += chunk.toString();
        if (got.includes("PONG")) done();
      },
    },
  });
  const body = new Uint8Array(head.length + payload.length);
  body.set(head);
  body.set(payload, head.length);
  socket.write(`CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\nHPUB ${subject} ${head.length} ${body.length}\r\n`);
  socket.write(body);
  socket.write("\r\nPING\r\n");
  await Promise.race([pong, Bun.sleep(5_000).then(() => Promise.reject(new Error(`no PONG from ${url}: ${got}`)))]);
  socket.end();
}
const llmEnv = () => ({ PICOCLAW_LLM_BASE_URL: llm.url, PICOCLAW_LLM_MODEL: "m" });

describe("keygen", () => {
  test("writes a seed readable by its owner only, prints the public key, never overwrites", async () => {
    expect(statSync(keys.coord!.file).mode & 0o777).toBe(0o600);
    const again = await runRole("picoclaw.ts", ["keygen", keys.coord!.file]);
    expect(again.code).toBe(2);
    expect(again.output).toContain(`picoclaw keygen: ${keys.coord!.file} exists already; keygen never overwrites a key`);
  });
});

/** The worker's max_skew: the replay must reach it inside this window (after a whole request), the stale copy after it. */
const SKEW_MS = 6_000;

describe("signed sub-tasks", () => {
  test("a signed swarm answers; unsigned, untrusted, replayed and stale sub-tasks are refused and never run", async () => {
    const hid = "sig1";
    swarm = await startSwarm(nats, hid, [
      { script: "coordinator.ts", args: signing("coord", { workers: [keys.worker!.pub] }), env: { PICOCLAW_LLM_PROVIDER: "echo" } },
      {
        script: "worker.ts",
        args: [...signing("worker", { coordinators: [keys.coord!.pub] }), "--swarm.security.max_skew", `${SKEW_MS}ms`],
        env: llmEnv(),
      },
    ]);
    const names = swarmNames(hid);
    const nc = await connect({ servers: nats.url });
    try {
      // Capture a real signed sub-task (core subscribers see the JetStream publish, headers included).
      let captured: Msg | undefined;
      const sub = nc.subscribe(names.taskQueue("general", 1), {
        callback: (_e, m) => {
          if (captured) return;
          captured = m;
        },
      });
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

      // Replays: a copy without the signed dedupe id, or with another one, does not verify; with the
      // same id the stream itself drops it as a duplicate (its dedupe window outlasts max_skew).
      const replayHeaders = headers();
      for (const [k, v] of captured!.headers!) if (k.startsWith("Picoclaw-")) replayHeaders.set(k, v[0]!);
      await js.publish(captured!.subject, captured!.data, { headers: replayHeaders });
      await worker.waitForLine(/Rejected sub-task .*reason="no message id \(a copy of a signed sub-task\?\)"/);
      await js.publish(captured!.subject, captured!.data, { headers: replayHeaders, msgID: "another-id" });
      await worker.waitForLine(/Rejected sub-task .*reason="bad signature"/);
      const sameId = captured!.headers!.get("Nats-Msg-Id");
      expect(sameId).toBeTruthy();
      const dup = await js.publish(captured!.subject, captured!.data, { headers: replayHeaders, msgID: sameId });
      expect(dup.duplicate).toBe(true);
      // The same id with a trailing space, written on the wire by hand (nats.js trims values, the server
      // does not): a new id to the stream, so it is stored; the worker refuses it.
      const before2 = (await nc.jetstreamManager().then((m) => m.streams.info(names.streams.tasks))).state.last_seq;
      const lines = [
        ...[...captured!.headers!].filter(([k]) => k.startsWith("Picoclaw-")).map(([k, v]) => `${k}: ${v[0]}`),
        `Nats-Msg-Id: ${sameId} `,
      ];
      await rawPublish(nats.url, captured!.subject, lines, captured!.data);
      await worker.waitForLine(/Rejected sub-task .*reason="message id not as signed"/);
      expect((await nc.jetstreamManager().then((m) => m.streams.info(names.streams.tasks))).state.last_seq).toBe(before2 + 1);

      // Stale: signed by the trusted coordinator's key, but longer ago than the worker's window.
      const coordKey = fromSeed(new TextEncoder().encode(readFileSync(keys.coord!.file, "utf8").trim()));
      const stale = signedAt(coordKey, captured!.subject, captured!.data, "stale-1", Date.now() - SKEW_MS - 5_000);
      await js.publish(captured!.subject, captured!.data, { headers: stale, msgID: "stale-1" });
      await worker.waitForLine(new RegExp(`Rejected sub-task .*reason="outside the ${SKEW_MS}ms time window"`));
      expect(llm.requests.length).toBe(before); // none of them ran
    } finally {
      await nc.close();
    }
  });

  test("no member can spoil a sub-task by recording its nonce first: the worker still runs it", async () => {
    // The worker is paused (SIGSTOP) while the sub-task is queued, so the nonce is recorded before it looks.
    const hid = "sig8";
    swarm = await startSwarm(nats, hid, [
      {
        script: "coordinator.ts",
        args: [...signing("coord", { workers: [keys.worker!.pub] }), "--swarm.nats.node_timeout", "60s"],
        env: { PICOCLAW_LLM_PROVIDER: "echo" },
      },
      {
        script: "worker.ts",
        args: [...signing("worker", { coordinators: [keys.coord!.pub] }), "--swarm.capabilities", "review"],
        env: llmEnv(),
      },
    ]);
    const names = swarmNames(hid);
    const worker = swarm.nodes[1]!;
    const nc = await connect({ servers: nats.url });
    try {
      let nonce: string | undefined;
      const sub = nc.subscribe(names.taskQueue("review", 1), {
        callback: (_e, m) => {
          nonce ??= m.headers?.get("Picoclaw-Nonce");
        },
      });
      worker.proc.kill("SIGSTOP");
      const run = submit(swarm, ["--capabilities", "review", "preclaimed-work"], 60_000);
      try {
        await waitFor("the signed sub-task's nonce", () => nonce, 20_000);
        // What a worker credential could do before: mark the nonce used before its real recipient sees it.
        const kv = await nc.jetstream().views.kv(names.buckets.tasks, { history: 1 });
        await kv.put(`nonce.${nonce}`, "forged-claim");
      } finally {
        sub.unsubscribe();
        worker.proc.kill("SIGCONT");
      }
      const r = await run;
      expect(r.code).toBe(0);
      expect(r.answer?.status).toBe("completed");
      expect(worker.output()).not.toContain("Rejected sub-task");
      expect(llm.requests.some((q) => q.body.messages?.at(-1)?.content.includes("preclaimed-work"))).toBe(true);
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

describe("signed control requests", () => {
  test("drain and shutdown need a trusted admin's signature; ping stays open; refusals are counted", async () => {
    const hid = "sig5";
    swarm = await startSwarm(nats, hid, [
      {
        script: "coordinator.ts",
        args: signing("coord", { workers: [keys.worker!.pub], admins: [keys.admin!.pub] }),
        env: { PICOCLAW_LLM_PROVIDER: "echo" },
      },
      { script: "worker.ts", args: signing("worker", { coordinators: [keys.coord!.pub], admins: [keys.admin!.pub] }), env: llmEnv() },
    ]);
    const worker = swarm.ids[1]!;
    const unsigned = await runRole("picoclaw.ts", ["drain", worker, ...swarm.common]);
    expect({ code: unsigned.code, out: unsigned.output }).toEqual({
      code: 1,
      out: expect.stringContaining(
        `${worker}: refused: drain unsigned (signing is on: it must be signed by a key in swarm.security.trusted_admins)`,
      ),
    });
    // Clients with signing on believe only replies signed by a node key they trust.
    const nodeKeys = { coordinators: [keys.coord!.pub], workers: [keys.worker!.pub] };
    const stranger = await runRole("picoclaw.ts", ["shutdown", worker, ...swarm.common, ...signing("stranger", nodeKeys)]);
    expect({ code: stranger.code, out: stranger.output }).toEqual({
      code: 1,
      out: expect.stringContaining("refused: shutdown signed by untrusted key"),
    });
    const ping = await runRole("picoclaw.ts", ["ping", worker, ...swarm.common]);
    expect({ code: ping.code, out: ping.output }).toEqual({ code: 0, out: expect.stringContaining(`${worker}: pong`) });
    await swarm.nodes[1]!.waitForLine(/Control request refused .*action=shutdown .*reason="signed by untrusted key/);

    // The refusals show in the node's heartbeat, as the dashboard reports it.
    const view = await runRole("dashboard.ts", ["--json", ...swarm.common]);
    const node = (
      JSON.parse(view.stdout) as {
        nodes: { node: string; bad_messages: { by_subject: Record<string, number>; refused: Record<string, number> } }[];
      }
    ).nodes.find((n) => n.node === worker)!;
    expect(node.bad_messages.refused.control).toBe(2);
    expect(node.bad_messages.by_subject[`picoclaw.${hid}.node.${worker}.control`]).toBe(2);
    expect(swarm.nodes[1]!.proc.exitCode).toBeNull();

    // A trusted admin's drain is obeyed.
    const drain = await runRole("picoclaw.ts", ["drain", worker, ...swarm.common, ...signing("admin", nodeKeys)]);
    expect({ code: drain.code, out: drain.output }).toEqual({ code: 0, out: expect.stringContaining(`${worker}: drain started`) });
    expect(await swarm.nodes[1]!.exited(20_000)).toBe(0);
  }, 60_000);

  test("a member forging the reply to drain or shutdown is refused: the client prints the node's own signed answer, never the forgery", async () => {
    const hid = "sig10";
    swarm = await startSwarm(nats, hid, [
      {
        script: "coordinator.ts",
        args: signing("coord", { workers: [keys.worker!.pub], admins: [keys.admin!.pub] }),
        env: { PICOCLAW_LLM_PROVIDER: "echo" },
      },
      { script: "worker.ts", args: signing("worker", { coordinators: [keys.coord!.pub], admins: [keys.admin!.pub] }), env: llmEnv() },
    ]);
    const worker = swarm.ids[1]!;
    // Any member may answer on a control subject: this one says "shutdown started" for the worker, at once.
    const nc = await connect({ servers: nats.url });
    const names = swarmNames(hid);
    nc.subscribe(names.control(worker), {
      callback: (_e, m) => m.respond(encode({ v: 1, ok: true, node: worker, detail: "shutdown started" })),
    });
    nc.subscribe(names.control(worker), {
      callback: (_e, m) => m.respond(encode({ v: 1, ok: true, node: "claw-00000bad", detail: "shutdown started" })),
    });
    await nc.flush();
    try {
      const nodeKeys = { coordinators: [keys.coord!.pub], workers: [keys.worker!.pub] };
      // A stranger's shutdown: the worker refuses it; the forged "started" must not win.
      const r = await runRole("picoclaw.ts", ["shutdown", worker, ...swarm.common, ...signing("stranger", nodeKeys)]);
      expect(r.code).toBe(1);
      expect(r.stdout).toContain(`${worker}: refused: shutdown signed by untrusted key`);
      expect(r.stdout).not.toContain("shutdown started");
      expect(r.output).toContain(`picoclaw: refused a reply to the control request for ${worker}: unsigned`);
      expect(r.output).toContain(`picoclaw: refused a reply to the control request for ${worker}: it names node claw-00000bad`);
      expect(swarm.nodes[1]!.proc.exitCode).toBeNull();
      // Without signing the client cannot tell two different answers apart, and says so instead of choosing.
      const plain = await runRole("picoclaw.ts", ["ping", worker, ...swarm.common]);
      expect(plain.code).toBe(1);
      expect(plain.output).toContain(`different replies claim to be ${worker}`);
    } finally {
      await nc.close();
    }
  }, 60_000);

  test("a control request is accepted once by its node, and never when signed before the node started", () => {
    const admin = testSigner();
    const subject = swarmNames("sig6").control("claw-00000001");
    const payload = encode({ v: 1, action: "shutdown" });
    const trusted = new Set([admin.publicKey]);
    const before = signMessage(admin, subject, payload);
    const guard = new ControlReplayGuard(Date.now() + 1);
    expect(verifyControl(subject, payload, before, trusted, 60_000, guard)).toEqual({
      ok: false,
      reason: "signed before this node started (a replay?)",
    });
    const started = new ControlReplayGuard(0);
    const h = signMessage(admin, subject, payload);
    expect(verifyControl(subject, payload, h, trusted, 60_000, started)).toEqual({ ok: true });
    expect(verifyControl(subject, payload, h, trusted, 60_000, started)).toEqual({ ok: false, reason: "replay (nonce already used)" });
    // Another node's subject: the signature covers the node it was sent to.
    expect(verifyControl(swarmNames("sig6").control("claw-00000002"), payload, h, trusted, 60_000, started)).toEqual({
      ok: false,
      reason: "bad signature",
    });
    // Full: refused for now, never forgotten while its window lasts.
    const small = new ControlReplayGuard(0, 1);
    expect(verifyControl(subject, payload, signMessage(admin, subject, payload), trusted, 60_000, small)).toEqual({ ok: true });
    expect(verifyControl(subject, payload, signMessage(admin, subject, payload), trusted, 60_000, small)).toMatchObject({
      ok: false,
      transient: true,
    });
  });
});

describe("signed answers", () => {
  test("submit and watch refuse a forged answer stored before the real one, with a clear line, and print the real one", async () => {
    const hid = "sig7";
    swarm = await startSwarm(nats, hid, [
      { script: "coordinator.ts", args: signing("coord", { workers: [keys.worker!.pub] }), env: { PICOCLAW_LLM_PROVIDER: "echo" } },
      { script: "worker.ts", args: signing("worker", { coordinators: [keys.coord!.pub] }), env: llmEnv() },
    ]);
    const names = swarmNames(hid);
    const client = ["submit", ...swarm.common, ...signing("worker", { coordinators: [keys.coord!.pub] })];
    // Connected first, and the real answer 4 s away: both forged ones are stored before it even under load.
    const nc = await connect({ servers: nats.url });
    const sub = spawnRole("picoclaw.ts", [...client, "--capabilities", "general", "[[delay=4000]] answer-check"], { home: tempHome() });
    try {
      const request = (await sub.waitForLine(/submitted request r-/, 20_000)).match(/(r-\S+)/)![1]!;
      const js = nc.jetstream();
      const forged = (coordinator: string) =>
        encode({ v: 1, request, kind: "answer", at: Date.now(), coordinator, answer: "FORGED ANSWER", status: "completed" });
      const subject = names.requestEvents(request);
      await js.publish(subject, forged("claw-00000000"));
      const stranger = testSigner();
      const signedForged = forged("claw-00000001");
      await js.publish(subject, signedForged, { headers: signMessage(stranger, subject, signedForged) });
      expect(await sub.exited(30_000)).toBe(0);
      expect(sub.output()).toContain(
        `picoclaw: refused an answer on ${subject} (unsigned; it names coordinator claw-00000000); still waiting for the real one`,
      );
      expect(sub.output()).toMatch(new RegExp(`refused an answer on ${subject.replace(/\./g, "\\.")} \\(signed by untrusted key U`));
      expect(sub.stdout.join("\n")).toContain("answer-check");
      expect(sub.stdout.join("\n")).not.toContain("FORGED");

      // watch replays the stream from the start: both forged answers come first, the real one wins.
      const w = await runRole("picoclaw.ts", [
        "watch",
        request,
        ...swarm.common,
        ...signing("worker", { coordinators: [keys.coord!.pub] }),
      ]);
      expect(w.code).toBe(0);
      expect(w.stdout).toContain("answer-check");
      expect(w.stdout).not.toContain("FORGED");
      expect(w.output.match(/refused an answer on/g)?.length).toBe(2);
    } finally {
      await nc.close();
    }
  }, 60_000);
});

describe("signed progress", () => {
  test("a forged progress event with a huge token count does not stop a request at max_tokens_per_request", async () => {
    const hid = "sig13";
    swarm = await startSwarm(nats, hid, [
      {
        script: "coordinator.ts",
        args: [...signing("coord", { workers: [keys.worker!.pub] }), "--swarm.tasks.max_tokens_per_request", "100000"],
        env: { PICOCLAW_LLM_PROVIDER: "echo" },
      },
      { script: "worker.ts", args: signing("worker", { coordinators: [keys.coord!.pub] }), env: llmEnv() },
    ]);
    const client = ["submit", "--json", ...swarm.common, ...signing("worker", { coordinators: [keys.coord!.pub] })];
    const sub = spawnRole("picoclaw.ts", [...client, "--capabilities", "general", "[[delay=4000]] token-forgery"], { home: tempHome() });
    const nc = await connect({ servers: nats.url });
    try {
      const request = (await waitFor("the request id", () => sub.lines.join("\n").match(/"request":"(r-[^"]+)"/)?.[1], 20_000))!;
      await swarm.nodes[0]!.waitForLine(new RegExp(`Task assigned task=general request=${request}`), 20_000);
      // As the running node would say it, unsigned: a worker credential can publish task events.
      const forged = {
        v: 1,
        request,
        task: "general",
        kind: "progress",
        node: swarm.ids[1]!,
        capability: "general",
        at: Date.now(),
        attempt: 1,
        tokens: 999_999_999,
      };
      // On the subject real progress uses (live), and on the stored one.
      nc.publish(swarmNames(hid).taskLive(request, "general"), encode(forged));
      nc.publish(swarmNames(hid).taskEvents(request, "general"), encode(forged));
      await nc.flush();
      expect(await sub.exited(30_000)).toBe(0);
      expect(sub.stdout.join("\n")).toContain("token-forgery");
      expect(swarm.nodes[0]!.output()).not.toContain("Request stopped at its token limit");
    } finally {
      await nc.close();
    }
  }, 60_000);
});

describe("the gateway with signing on", () => {
  test("a forged answer and forged streamed pieces never reach an OpenAI client; the real answer does", async () => {
    const hid = "sig11";
    swarm = await startSwarm(nats, hid, [
      { script: "coordinator.ts", args: signing("coord", { workers: [keys.worker!.pub] }), env: { PICOCLAW_LLM_PROVIDER: "echo" } },
      { script: "worker.ts", args: signing("worker", { coordinators: [keys.coord!.pub] }), env: llmEnv() },
    ]);
    const gw = spawnRole(
      "picoclaw.ts",
      ["gateway", "--swarm.http.listen", "127.0.0.1:0", ...swarm.common, ...signing("worker", { coordinators: [keys.coord!.pub] })],
      { home: tempHome() },
    );
    const nc = await connect({ servers: nats.url });
    try {
      const base = /url=(\S+)/.exec(await gw.waitForLine(/Gateway ready url=\S+/, 20_000))![1]!;
      const names = swarmNames(hid);
      const res = await fetch(`${base}/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          model: "picoclaw-swarm",
          stream: true,
          messages: [{ role: "user", content: "[[delay=4000]] gateway-check" }],
        }),
      });
      // The stream has begun (its headers name the request); the real answer is 4 s away. Forge now: an
      // unsigned piece, an unsigned answer and one signed by a stranger, all before the real one.
      const request = res.headers.get("x-picoclaw-request")!;
      const js = nc.jetstream();
      const subject = names.requestEvents(request);
      const ev = (body: object) => encode({ v: 1, request, at: Date.now(), coordinator: "claw-00000000", ...body });
      nc.publish(subject, ev({ kind: "answer_delta", seq: 0, delta: "FORGED PIECE " }));
      await js.publish(subject, ev({ kind: "answer", answer: "FORGED ANSWER", status: "completed" }));
      const signed = ev({ kind: "answer", answer: "FORGED SIGNED ANSWER", status: "completed" });
      await js.publish(subject, signed, { headers: signMessage(testSigner(), subject, signed) });
      const text = await res.text();
      expect(res.status).toBe(200);
      expect(text).toContain("gateway-check");
      expect(text).not.toContain("FORGED");
      expect(gw.output()).toMatch(/Answer refused .*kind=answer_delta .*reason=unsigned/);
      expect(gw.output()).toMatch(/Answer refused .*kind=answer .*reason="?signed by untrusted key/);
    } finally {
      await nc.close();
      gw.signal("SIGTERM");
      await gw.exited(15_000).catch(() => gw.proc.kill("SIGKILL"));
    }
  }, 60_000);
});

describe("the web dashboard with signing on", () => {
  test("shows only answers a trusted coordinator signed; a forged one is refused and counted", async () => {
    const hid = "sig12";
    swarm = await startSwarm(nats, hid, [
      { script: "coordinator.ts", args: signing("coord", { workers: [keys.worker!.pub] }), env: { PICOCLAW_LLM_PROVIDER: "echo" } },
      { script: "worker.ts", args: signing("worker", { coordinators: [keys.coord!.pub] }), env: llmEnv() },
    ]);
    const dash = spawnRole(
      "dashboard.ts",
      [...swarm.common, "--swarm.http.listen", "127.0.0.1:0", ...signing("worker", { coordinators: [keys.coord!.pub] })],
      { home: tempHome() },
    );
    const nc = await connect({ servers: nats.url });
    try {
      const url = /HTTP listening url=(\S+)/.exec(await dash.waitForLine(/HTTP listening url=/, 20_000))![1]!;
      const subject = swarmNames(hid).requestEvents("r-f0f0f0f0f0");
      const forged = encode({
        v: 1,
        request: "r-f0f0f0f0f0",
        kind: "answer",
        at: Date.now(),
        coordinator: "claw-00000000",
        answer: "FORGED ON THE PAGE",
        status: "completed",
      });
      const r = await submit(swarm, ["--capabilities", "general", "dashboard-check"]);
      expect(r.code).toBe(0);
      const state = async () => (await (await fetch(`${url}/api/state`)).json()) as { live: { answers: { answer: string }[] } };
      // The real answer shows (so the page is following); then a forged one is published, and refused.
      await waitFor(
        "the real answer on /api/state",
        async () => (await state()).live.answers.some((a) => a.answer.includes("dashboard-check")),
        20_000,
        100,
      );
      nc.publish(subject, forged);
      await nc.flush();
      await waitFor(
        "the forged answer counted as refused",
        async () => (await (await fetch(`${url}/metrics`)).text()).includes('picoclaw_refused_total{kind="answer"} 1'),
        10_000,
        100,
      );
      expect(JSON.stringify(await state())).not.toContain("FORGED");
    } finally {
      await nc.close();
      dash.signal("SIGTERM");
      await dash.exited(15_000).catch(() => dash.proc.kill("SIGKILL"));
    }
  }, 60_000);
});

describe("sealed request records", () => {
  test("a coordinator resuming a request never believes a forged record: it plans afresh and says so", async () => {
    const hid = "sig8";
    const fast = ["--swarm.lease_ttl", "2s"];
    const coordArgs = [...signing("coord", { workers: [keys.worker!.pub] }), ...fast];
    swarm = await startSwarm(nats, hid, [
      { script: "coordinator.ts", args: coordArgs, env: { PICOCLAW_LLM_PROVIDER: "echo" } },
      { script: "worker.ts", args: signing("worker", { coordinators: [keys.coord!.pub] }), env: llmEnv() },
    ]);
    const standby = spawnRole("coordinator.ts", [...swarm.common, ...coordArgs], {
      env: { PICOCLAW_LLM_PROVIDER: "echo" },
      home: tempHome(),
    });
    try {
      await standby.waitForLine(/Node joined swarm .*self=true/, 20_000);
      const client = ["submit", ...swarm.common, ...signing("worker", { coordinators: [keys.coord!.pub] })];
      const sub = spawnRole("picoclaw.ts", [...client, "--capabilities", "general", "[[delay=2500]] record-check"], { home: tempHome() });
      const request = (await sub.waitForLine(/submitted request r-/, 20_000)).match(/(r-\S+)/)![1]!;
      await swarm.nodes[1]!.waitForLine(new RegExp(`Task assigned .*request=${request}`), 20_000);

      // The leader dies mid-request; meanwhile someone with KV write rights replaces its record with an
      // answered one (unsealed), which a careless standby would re-send as its own signed answer.
      const nc = await connect({ servers: nats.url });
      const kv = await nc.jetstream().views.kv(swarmNames(hid).buckets.tasks, { history: 1 });
      swarm.nodes[0]!.proc.kill("SIGKILL");
      const forged = {
        v: 1,
        status: "answered",
        coordinator: "claw-00000000",
        lease: 1,
        started_at: Date.now(),
        answer: { kind: "answer", answer: "FORGED RECORD", status: "completed" },
      };
      await kv.put(`request.${request}`, encode(forged));
      await nc.close();

      expect(await sub.exited(40_000)).toBe(0);
      expect(sub.stdout.join("\n")).toContain("record-check");
      expect(sub.stdout.join("\n")).not.toContain("FORGED");
      await standby.waitForLine(
        new RegExp(
          `Dropped malformed message subject=\\$KV\\.picoclaw_${hid}_tasks\\.request\\.${request} reason="refused: unsealed record"`,
        ),
        10_000,
      );
    } finally {
      standby.signal("SIGTERM");
      await standby.exited(15_000).catch(() => standby.proc.kill("SIGKILL"));
    }
  }, 90_000);

  test("a sealed record verifies under its own key only; garbage and forgeries are counted with the KV subject", () => {
    const coord = testSigner();
    const bad = createBadInputCounter(createLogger("error"));
    const guard = createRecordGuard({ bucket: "picoclaw_x_tasks", bad, signer: coord, trusted: new Set([coord.publicKey]) });
    const record = {
      v: 1,
      status: "running",
      coordinator: "claw-00000001",
      lease: 3,
      started_at: 1,
      plan: { tasks: [], synthesize: true },
    };
    const entry = (value: unknown) =>
      ({ operation: "PUT", value: encode(value), string: () => JSON.stringify(value) }) as unknown as Parameters<typeof guard.read>[1];
    const sealed = guard.seal("request.r-1", record);
    expect(guard.read("request.r-1", entry(sealed), requestRecordSchema, { sealed: true }).state).toBe("ok");
    // Key order does not matter (JSON written and read by different code), content and key do.
    const reordered = Object.fromEntries(Object.entries(sealed).reverse());
    expect(guard.read("request.r-1", entry(reordered), requestRecordSchema, { sealed: true }).state).toBe("ok");
    expect(guard.read("request.r-2", entry(sealed), requestRecordSchema, { sealed: true })).toEqual({
      state: "bad",
      reason: "bad record seal",
    });
    expect(guard.read("request.r-1", entry({ ...sealed, lease: 4 }), requestRecordSchema, { sealed: true })).toEqual({
      state: "bad",
      reason: "bad record seal",
    });
    const other = sealRecord(testSigner(), "request.r-1", record);
    expect(guard.read("request.r-1", entry(other), requestRecordSchema, { sealed: true })).toMatchObject({
      state: "bad",
      reason: expect.stringContaining("untrusted key"),
    });
    expect(guard.read("request.r-1", entry("garbage"), requestRecordSchema, { sealed: true })).toMatchObject({ state: "bad" });
    expect(bad.refused()).toEqual({ record: 4 });
    expect(bad.counts()).toEqual({ "$KV.picoclaw_x_tasks.request.r-2": 1, "$KV.picoclaw_x_tasks.request.r-1": 3 });
  });
});

describe("signed results", () => {
  test("a signed result whose usage or model was changed after signing is rejected: the sub-task fails saying so, none of its figures counted", async () => {
    const hid = "sig9";
    swarm = await startSwarm(nats, hid, [
      { script: "coordinator.ts", args: signing("coord", { workers: [keys.worker!.pub] }), env: { PICOCLAW_LLM_PROVIDER: "echo" } },
      { script: "worker.ts", args: signing("worker", { coordinators: [keys.coord!.pub] }), env: llmEnv() },
    ]);
    const names = swarmNames(hid);
    const nc = await connect({ servers: nats.url });
    try {
      const client = ["submit", "--json", ...swarm.common, ...signing("worker", { coordinators: [keys.coord!.pub] })];
      const sub = spawnRole("picoclaw.ts", [...client, "--capabilities", "general", "[[delay=4000]] tamper-check"], { home: tempHome() });
      const request = (await waitFor("the request id", () => sub.lines.join("\n").match(/"request":"(r-[^"]+)"/)?.[1], 20_000))!;
      // A result as the trusted worker signs it, then altered: what a holder of a worker credential could
      // write before the real result. Stored first, it is the one the coordinator reads.
      const { signResult } = await import("../lib/signing.ts");
      const { fromSeed } = await import("nkeys.js");
      const kp = fromSeed(new TextEncoder().encode((await Bun.file(keys.worker!.file).text()).trim()));
      const signed = signResult(
        { publicKey: kp.getPublicKey(), sign: (d) => kp.sign(d) },
        {
          v: 1,
          request,
          task: "general",
          status: "completed",
          node: "claw-00000042",
          capability: "general",
          text: "tamper-check result",
          errors: [],
          attempts: 1,
          started_at: Date.now(),
          finished_at: Date.now(),
          usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
          llm: "x",
          model: "m",
          truncated: false,
        },
      );
      const altered = { ...signed, usage: { prompt_tokens: 1, completion_tokens: 999_998, total_tokens: 999_999 }, model: "forged" };
      const kv = await nc.jetstream().views.kv(names.buckets.tasks);
      await kv.create(`result.${request}.general`, encode(altered));
      expect(await sub.exited(30_000)).toBe(1);
      const out = sub.stdout.join("\n");
      expect(out).toContain("result rejected: bad result signature");
      expect(out).not.toContain("999999");
      expect(out).not.toContain("forged");
      await swarm.nodes[0]!.waitForLine(/Result rejected .*reason="?bad result signature/);
    } finally {
      await nc.close();
    }
  }, 60_000);
});
