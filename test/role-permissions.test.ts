// One NATS user per role (docs/nats-server.conf, run as shipped): every role, as its own user and with
// signing on, does what it is for (a request answered end to end, a pinned sub-task, an answer too large
// for one message, watch, the dashboard, dead letters, ping, a signed drain and shutdown, a coordinator
// hand-over), and the server itself refuses
// what each role must not do: a worker publishing a request, an answer or a request record, a submitter
// publishing a result or a sub-task, an observer publishing anything, anyone but admin sending control.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { connect, type NatsConnection } from "nats";
import { encode } from "../lib/messages.ts";
import { type LlmServer, startLlmServer } from "./helpers/llm-server.ts";
import { asUser, passwordOf, type RoleUser, shippedConfigForTests } from "./helpers/nats-conf.ts";
import { type NatsServer, startNatsServer } from "./helpers/nats-server.ts";
import { FAST, reaper, runRole, spawnRole, tempHome } from "./helpers/role-process.ts";
import { planFile, selfId } from "./helpers/swarm.ts";
import { waitFor } from "./helpers/wait.ts";

const HID = "alpha";
/** Room for an answer too large for one message (it goes through the answers object store). */
const BIG = ["--swarm.tasks.max_prompt_bytes", "524288", "--swarm.tasks.max_result_bytes", "524288"];
const ECHO = { PICOCLAW_LLM_PROVIDER: "echo" };
let server: NatsServer;
let llm: LlmServer;
const procs = reaper();
const conns: NatsConnection[] = [];
const dir = tempHome();
const keys: Record<string, { file: string; pub: string }> = {};

beforeAll(async () => {
  [server, llm] = await Promise.all([startNatsServer({ config: shippedConfigForTests() }), startLlmServer()]);
  for (const name of ["coord", "worker", "admin", "approver"]) {
    const file = join(dir, `${name}.nk`);
    const r = await runRole("picoclaw.ts", ["keygen", file]);
    const pub = /public key: (U[A-Z2-7]{55})/.exec(r.stdout)?.[1];
    if (!pub) throw new Error(`no public key in: ${r.output}`);
    keys[name] = { file, pub };
  }
});
afterAll(async () => {
  await procs.killAll();
  await Promise.all(conns.map((nc) => nc.close().catch(() => {})));
  await Promise.all([server.stop(), llm.stop()]);
});

/** Signing on, this key, and every trusted list (each role uses the ones it needs). */
const signing = (key: string) => [
  "--swarm.security.signing",
  "--swarm.security.key_file",
  keys[key]!.file,
  "--swarm.security.trusted_coordinators",
  keys.coord!.pub,
  "--swarm.security.trusted_workers",
  keys.worker!.pub,
  "--swarm.security.trusted_admins",
  keys.admin!.pub,
  "--swarm.security.trusted_approvers",
  keys.approver!.pub,
];
const as = (role: RoleUser, key?: string) => [...asUser(server.url, HID, role), ...(key ? signing(key) : [])];

/** A nats.js client as `alpha-<role>`, with the H-id's inbox prefix (as picoclaw connects). */
async function client(role: RoleUser): Promise<NatsConnection> {
  const nc = await connect({
    servers: server.url,
    user: `${HID}-${role}`,
    pass: passwordOf(HID, role),
    inboxPrefix: `_INBOX_${HID}`,
    reconnect: false,
  });
  conns.push(nc);
  return nc;
}

/**
 * Publishes `subject` as a request and returns what came back: the server's permissions violation for
 * a refused publish, "allowed" for anything else (a reply, no responders, a time-out). JetStream
 * subjects answer with a PubAck, others with no responders: both mean the server let it through.
 */
async function publishAs(nc: NatsConnection, subject: string, data: unknown = { v: 1 }): Promise<string> {
  return nc.request(subject, encode(data), { timeout: 2_000 }).then(
    () => "allowed",
    (err: Error) => (/permissions violation/i.test(err.message) ? err.message : "allowed"),
  );
}

const refusal = (subject: string) => `Permissions Violation for Publish to "${subject}"`;

describe("one NATS user per role (docs/nats-server.conf)", () => {
  test("every role as its own user, signing on: submit, pinned sub-task, watch, dashboard, ping, drain, shutdown, hand-over", async () => {
    const home = tempHome();
    const start = (script: string, role: RoleUser, key: string, extra: string[] = []) =>
      procs.track(spawnRole(script, [...as(role, key), ...FAST, ...BIG, ...extra], { env: ECHO, home }));
    const c1 = start("coordinator.ts", "coordinator", "coord");
    await c1.waitForLine(/Coordinator leading/, 20_000);
    const c2 = start("coordinator.ts", "coordinator", "coord");
    const worker = start("worker.ts", "worker", "worker");
    const specialist = start("specialist.ts", "worker", "worker", ["--swarm.capabilities", "rust"]);
    // A specialist with a real (test) LLM: it can give an answer too large for one message.
    const bulk = procs.track(
      spawnRole("specialist.ts", [...as("worker", "worker"), ...FAST, ...BIG, "--swarm.capabilities", "bulk"], {
        env: { PICOCLAW_LLM_BASE_URL: llm.url, PICOCLAW_LLM_MODEL: "m" },
        home,
      }),
    );
    for (const p of [c1, c2, worker, specialist, bulk]) await p.waitForLine(/Node joined swarm .*self=true/, 20_000);
    for (const p of [c2, worker, specialist, bulk]) await c1.waitForLine(new RegExp(`Node joined swarm node=${selfId(p)}\\b`), 10_000);

    // Submitter: a request over two capabilities, and one pinned to the worker.
    const r = await runRole(
      "picoclaw.ts",
      ["submit", ...as("submitter"), ...signing("worker"), "--capabilities", "general,rust", "role-marker-1"],
      {
        env: ECHO,
        timeoutMs: 40_000,
      },
    );
    expect({ code: r.code, out: r.output }).toEqual({
      code: 0,
      out: expect.stringMatching(/2 completed, 0 failed[\s\S]*\[echo\] .*role-marker-1/),
    });
    const request = /submitted request (r-\S+)/.exec(r.output)?.[1];
    expect(request).toBeDefined();
    const pinned = planFile(`tasks:\n  - { id: a, capability: general, node: ${selfId(worker)}, prompt: role-marker-2 }\n`);
    const p = await runRole("picoclaw.ts", ["submit", ...as("submitter"), ...signing("worker"), "--plan", pinned], {
      env: ECHO,
      timeoutMs: 40_000,
    });
    expect({ code: p.code, out: p.output }).toEqual({
      code: 0,
      out: expect.stringMatching(/1 completed, 0 failed[\s\S]*\[echo\] .*role-marker-2/),
    });

    // Submitter: watch re-attaches to the answered request.
    const w = await runRole("picoclaw.ts", ["watch", request!, ...as("submitter"), ...signing("worker")], { env: ECHO });
    expect({ code: w.code, out: w.stdout }).toEqual({ code: 0, out: expect.stringMatching(/\[echo\] .*role-marker-1/) });

    // Submitter: an answer too large for one message is read from the answers object store.
    const bigText = `[[reply=big-marker ${"y".repeat(300_000)}]] big`;
    const big = await runRole("picoclaw.ts", ["submit", ...as("submitter"), ...signing("worker"), ...BIG, "--capabilities", "bulk", "-"], {
      env: ECHO,
      timeoutMs: 40_000,
      stdin: bigText,
    });
    if (big.code !== 0) console.log(`submit of the large answer said:\n${big.output.slice(-2500)}`);
    expect({ code: big.code, stored: big.stdout.length > 300_000, violation: /permissions violation/i.test(big.output) }).toEqual({
      code: 0,
      stored: true,
      violation: false,
    });
    expect(c1.output()).not.toMatch(/permissions violation/i);

    // Admin: the dead letters (none here).
    const dead = await runRole("picoclaw.ts", ["requests", "--failed", ...as("admin")]);
    expect({ code: dead.code, out: dead.output }).toEqual({
      code: 0,
      out: expect.stringContaining("no failed requests kept in swarm alpha"),
    });

    // Observer: the dashboard sees every member.
    const d = await runRole("dashboard.ts", ["--json", ...as("observer")]);
    expect(d.code).toBe(0);
    const seen = (JSON.parse(d.stdout) as { nodes: { node: string }[] }).nodes.map((n) => n.node).sort();
    expect(seen).toEqual([c1, c2, worker, specialist, bulk].map(selfId).sort());

    // Admin: ping, a signed drain, a signed shutdown.
    const ping = await runRole("picoclaw.ts", ["ping", selfId(worker), ...as("admin")]);
    expect({ code: ping.code, out: ping.output }).toEqual({ code: 0, out: expect.stringContaining("pong") });
    const drain = await runRole("picoclaw.ts", ["drain", selfId(specialist), ...as("admin", "admin")]);
    expect({ code: drain.code, out: drain.output }).toEqual({ code: 0, out: expect.stringContaining("drain started") });
    expect(await specialist.exited(20_000)).toBe(0);
    const shutdown = await runRole("picoclaw.ts", ["shutdown", selfId(worker), ...as("admin", "admin")]);
    expect({ code: shutdown.code, out: shutdown.output }).toEqual({ code: 0, out: expect.stringContaining("shutdown started") });
    expect(await worker.exited(20_000)).toBe(0);

    bulk.signal("SIGTERM");
    expect(await bulk.exited(20_000)).toBe(0);

    // Coordinator hand-over: the leader stops, the standby takes the lease (leader bucket, its own consumer).
    c1.signal("SIGTERM");
    expect(await c1.exited(20_000)).toBe(0);
    await c2.waitForLine(/Coordinator leading/, 20_000);
    c2.signal("SIGTERM");
    expect(await c2.exited(20_000)).toBe(0);

    for (const out of [
      c1.output(),
      c2.output(),
      worker.output(),
      specialist.output(),
      bulk.output(),
      r.output,
      p.output,
      w.output,
      d.output,
      ping.output,
    ]) {
      expect(out).not.toMatch(/permissions violation/i);
    }
  }, 120_000);

  test("the server refuses what each role must not do", async () => {
    const [coordinator, worker, submitter, observer, admin] = (await Promise.all(
      (["coordinator", "worker", "submitter", "observer", "admin"] as const).map(client),
    )) as [NatsConnection, NatsConnection, NatsConnection, NatsConnection, NatsConnection];
    const P = `picoclaw.${HID}`;
    const KV = `$KV.picoclaw_${HID}_tasks`;
    const forbidden: Record<string, [NatsConnection, string][]> = {
      "a worker publishing a request, an answer, a sub-task, a request record or the lease, or a reply into an inbox": [
        [worker, `${P}.request.submit`],
        [worker, `${P}.event.request.r-forged0001`],
        [worker, `${P}.task.queue.general.1`],
        [worker, `${P}.task.direct.claw-00000001`],
        [worker, `${KV}.request.r-forged0001`],
        [worker, `$KV.picoclaw_${HID}_leader.coordinator`],
        [worker, `_INBOX_${HID}.forged.reply`],
      ],
      "a submitter publishing a result, a task event, a sub-task or an answer": [
        [submitter, `${KV}.result.r-forged0001.a`],
        [submitter, `${P}.event.task.r-forged0001.a`],
        [submitter, `${P}.task.queue.general.1`],
        [submitter, `${P}.event.request.r-forged0001`],
        [submitter, `${KV}.request.r-forged0001`],
      ],
      "an observer publishing any work, event, record or control": [
        [observer, `${P}.request.submit`],
        [observer, `${P}.task.queue.general.1`],
        [observer, `${P}.event.request.r-forged0001`],
        [observer, `${P}.event.task.r-forged0001.a`],
        [observer, `${P}.node.heartbeat.claw-00000001`],
        [observer, `${P}.node.announce`],
        [observer, `${KV}.result.r-forged0001.a`],
      ],
      "anyone but admin sending drain or shutdown": [
        [coordinator, `${P}.node.claw-00000001.control`],
        [worker, `${P}.node.claw-00000001.control`],
        [submitter, `${P}.node.claw-00000001.control`],
        [observer, `${P}.node.claw-00000001.control`],
      ],
      "a coordinator publishing a request or writing attempt errors": [
        [coordinator, `${P}.request.submit`],
        [coordinator, `${KV}.errors.r-forged0001.a`],
      ],
      "a worker creating or changing a stream or bucket, or recording a nonce (nobody writes nonces)": [
        [worker, `$JS.API.STREAM.UPDATE.PICOCLAW_${HID}_TASKS`],
        [worker, `$JS.API.STREAM.CREATE.PICOCLAW_${HID}_TASKS`],
        [worker, `$JS.API.STREAM.UPDATE.PICOCLAW_${HID}_REQUESTS`],
        [worker, `$JS.API.STREAM.CREATE.KV_picoclaw_${HID}_tasks`],
        [worker, `${KV}.nonce.0123456789abcdef01234567`],
        [coordinator, `${KV}.nonce.0123456789abcdef01234567`],
      ],
    };
    const got: Record<string, string[]> = {};
    const want: Record<string, string[]> = {};
    for (const [what, cases] of Object.entries(forbidden)) {
      got[what] = await Promise.all(cases.map(([nc, subject]) => publishAs(nc, subject, { v: 1, action: "shutdown" })));
      want[what] = cases.map(([, subject]) => expect.stringContaining(refusal(subject)) as unknown as string);
    }
    expect(got).toEqual(want);

    // The same subjects are open to the role they belong to (refusals above are about the role, not the subject).
    const allowed: [NatsConnection, string][] = [
      [admin, `${P}.node.claw-00000001.control`],
      [coordinator, `${P}.event.request.r-allowed001`],
      [worker, `${P}.event.task.r-allowed001.a`],
      [submitter, `${P}.request.submit`],
      [observer, `${P}.node.query`],
    ];
    expect(await Promise.all(allowed.map(([nc, s]) => publishAs(nc, s)))).toEqual(allowed.map(() => "allowed"));

    // Reading: a submitter and an observer cannot read the tasks bucket; an observer cannot follow events.
    const kvRead = async (nc: NatsConnection) => {
      const kv = await nc.jetstream().views.kv(`picoclaw_${HID}_tasks`, { bindOnly: true });
      return kv.get("request.r-allowed001").then(
        () => "read",
        (err: Error) => err.message,
      );
    };
    expect(await kvRead(submitter)).toMatch(
      /Permissions Violation for Publish to "\$JS\.API\.(STREAM\.MSG|DIRECT)\.GET\.KV_picoclaw_alpha_tasks/,
    );
    expect(await kvRead(observer)).toMatch(
      /Permissions Violation for Publish to "\$JS\.API\.(STREAM\.MSG|DIRECT)\.GET\.KV_picoclaw_alpha_tasks/,
    );
    const follow = await observer
      .jetstream()
      .consumers.get(`PICOCLAW_${HID}_EVENTS`)
      .then(
        () => "followed",
        (err: Error) => err.message,
      );
    expect(follow).toMatch(/Permissions Violation for Publish to "\$JS\.API\.(STREAM\.INFO|CONSUMER\.CREATE)\.PICOCLAW_alpha_EVENTS/);
    await waitFor("every connection to stay open after its refusals", () => conns.every((nc) => !nc.isClosed()), 2_000);

    // What the review did as a worker: set TASKS' max_msg_size to 1. The server refuses; TASKS is unchanged.
    const tasks = `PICOCLAW_${HID}_TASKS`;
    const wjsm = await worker.jetstreamManager();
    const before = (await wjsm.streams.info(tasks)).config;
    const update = await wjsm.streams.update(tasks, { ...before, max_msg_size: 1 }).then(
      () => "updated",
      (err: Error) => err.message,
    );
    expect(update).toContain(refusal(`$JS.API.STREAM.UPDATE.${tasks}`));
    expect((await wjsm.streams.info(tasks)).config.max_msg_size).toBe(before.max_msg_size);
  }, 60_000);

  test("a worker started before any coordinator waits for the streams, naming them; then it runs work", async () => {
    // H-id beta: nothing of it exists yet. Its worker may not create streams (only its coordinator may).
    const home = tempHome();
    const beta = (role: RoleUser, key: string) => [...asUser(server.url, "beta", role), ...signing(key), ...FAST];
    const worker = procs.track(spawnRole("worker.ts", beta("worker", "worker"), { env: ECHO, home }));
    await worker.waitForLine(
      /Waiting for a coordinator to create a JetStream stream: this NATS user may not create it stream=PICOCLAW_beta_/,
      20_000,
    );
    expect(worker.proc.exitCode).toBeNull();
    // A stop signal ends the wait: a second waiting worker, SIGTERMed, exits at once and cleanly.
    const other = procs.track(spawnRole("worker.ts", beta("worker", "worker"), { env: ECHO, home }));
    await other.waitForLine(/Waiting for a coordinator to create a JetStream stream/, 20_000);
    other.signal("SIGTERM");
    expect(await other.exited(10_000)).toBe(0);
    // A submit before any coordinator stops with what to do, instead of waiting or creating.
    const early = await runRole("picoclaw.ts", ["submit", ...beta("submitter", "worker"), "too-early"], { env: ECHO, timeoutMs: 30_000 });
    expect(early.code).not.toBe(0);
    expect(early.output).toMatch(
      /JetStream stream PICOCLAW_beta_\w+ does not exist and this NATS user may not create it .*start a coordinator first/,
    );
    const coordinator = procs.track(spawnRole("coordinator.ts", beta("coordinator", "coord"), { env: ECHO, home }));
    await coordinator.waitForLine(/Coordinator leading/, 20_000);
    await worker.waitForLine(/Node joined swarm .*self=true/, 30_000);
    const r = await runRole("picoclaw.ts", ["submit", ...beta("submitter", "worker"), "beta-after-wait"], { env: ECHO, timeoutMs: 40_000 });
    expect({ code: r.code, out: r.output }).toEqual({ code: 0, out: expect.stringMatching(/\[echo\] .*beta-after-wait/) });
    expect(worker.output()).not.toMatch(/permissions violation/i);
  }, 90_000);
  test("the gateway and the web dashboard as their own users: a chat answered (plain and streamed), the dashboard shows it; nothing else allowed", async () => {
    const home = tempHome();
    const start = (script: string, role: RoleUser, key: string, extra: string[] = []) =>
      procs.track(spawnRole(script, [...as(role, key), ...FAST, ...extra], { env: ECHO, home }));
    const coordinator = start("coordinator.ts", "coordinator", "coord");
    const worker = start("worker.ts", "worker", "worker");
    for (const p of [coordinator, worker]) await p.waitForLine(/Node joined swarm .*self=true/, 20_000);
    await coordinator.waitForLine(new RegExp(`Node joined swarm node=${selfId(worker)}\\b`), 10_000);
    const listen = ["--swarm.http.listen", "127.0.0.1:0"];
    const web = procs.track(spawnRole("dashboard.ts", [...as("web", "worker"), ...FAST, ...listen], { home }));
    const webUrl = /HTTP listening url=(\S+)/.exec(await web.waitForLine(/HTTP listening url=/, 20_000))![1]!;
    const gateway = procs.track(spawnRole("picoclaw.ts", ["gateway", ...as("gateway", "worker"), ...FAST, ...listen], { home }));
    const base = /url=(\S+)/.exec(await gateway.waitForLine(/Gateway ready url=\S+/, 20_000))![1]!;
    const chat = (content: string, stream: boolean) =>
      fetch(`${base}/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "picoclaw-swarm/general", stream, messages: [{ role: "user", content }] }),
      });
    const plain = await chat("gateway-user-marker-1", false);
    expect(plain.status).toBe(200);
    const body = (await plain.json()) as { choices: { message: { content: string } }[] };
    expect(body.choices[0]!.message.content).toContain("gateway-user-marker-1");
    const streamed = await chat("gateway-user-marker-2", true);
    expect(streamed.status).toBe(200);
    const sse = await streamed.text();
    expect(sse).toContain("gateway-user-marker-2");
    expect(sse).toContain("data: [DONE]");
    // A2A (0.3 JSON-RPC, as a plain fetch): the task is answered under the gateway's rights too.
    const a2a = await fetch(`${base.replace(/\/v1$/, "")}/a2a`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "message/send",
        params: { message: { kind: "message", messageId: "m-1", role: "user", parts: [{ kind: "text", text: "gateway-user-marker-3" }] } },
      }),
    });
    const task = (await a2a.json()) as { result?: { status?: { state?: string }; artifacts?: { parts: { text?: string }[] }[] } };
    expect(task.result?.status?.state).toBe("completed");
    expect(JSON.stringify(task.result?.artifacts)).toContain("gateway-user-marker-3");
    // The web dashboard heard both requests' events and shows their answers.
    await waitFor(
      "both answers on the web dashboard's /api/state",
      async () => {
        const state = JSON.stringify(await (await fetch(`${webUrl}/api/state`)).json());
        return state.includes("gateway-user-marker-1") && state.includes("gateway-user-marker-2");
      },
      20_000,
    );
    for (const p of [gateway, web]) expect(p.output()).not.toMatch(/permissions.violation/i);

    // Neither may do what is not theirs.
    const [gw, wb] = await Promise.all([client("gateway"), client("web")]);
    const P = `picoclaw.${HID}`;
    const KV = `$KV.picoclaw_${HID}_tasks`;
    const cases: [NatsConnection, string][] = [
      [gw, `${P}.task.queue.general.1`],
      [gw, `${P}.event.request.r-forged0001`],
      [gw, `${P}.event.task.r-forged0001.a`],
      [gw, `${KV}.result.r-forged0001.a`],
      [gw, `${P}.node.claw-00000001.control`],
      [gw, `$JS.API.STREAM.UPDATE.PICOCLAW_${HID}_TASKS`],
      [wb, `${P}.request.submit`],
      [wb, `${P}.task.queue.general.1`],
      [wb, `${P}.event.request.r-forged0001`],
      [wb, `${P}.node.claw-00000001.control`],
      [wb, `${KV}.result.r-forged0001.a`],
    ];
    expect(await Promise.all(cases.map(([nc, subject]) => publishAs(nc, subject)))).toEqual(
      cases.map(([, subject]) => expect.stringContaining(refusal(subject))),
    );
  }, 90_000);

  test("a worker user runs a tool loop: its steps are stored, and read back by the worker that resumes it after a kill", async () => {
    // The first test's nodes of the same swarm may still run: this one needs its own workers alone.
    await procs.killAll();
    const home = tempHome();
    const workspace = join(home, "ws");
    llm.script((b) => {
      const user = String(b.messages?.find((m) => m.role === "user")?.content ?? "");
      if (!user.includes("<perm-loop>")) return undefined;
      const seen = (b.messages ?? []).filter((m) => m.role === "tool").length;
      if (seen < 6)
        return { tool_calls: [{ name: "append_file", arguments: JSON.stringify({ path: "log.txt", content: `line ${seen + 1}\n` }) }] };
      return `six lines written after ${seen} tool results`;
    });
    try {
      const fast = [...FAST, "--swarm.tasks.ack_wait", "2s", "--agents.defaults.workspace", workspace];
      const llmEnv = { PICOCLAW_LLM_BASE_URL: llm.url, PICOCLAW_LLM_MODEL: "m" };
      const coord = procs.track(spawnRole("coordinator.ts", [...as("coordinator", "coord"), ...fast], { env: ECHO, home }));
      const first = procs.track(spawnRole("worker.ts", [...as("worker", "worker"), ...fast], { env: llmEnv, home }));
      for (const p of [coord, first]) await p.waitForLine(/Node joined swarm .*self=true/, 20_000);
      await coord.waitForLine(new RegExp(`Node joined swarm node=${selfId(first)}\\b`), 10_000);
      const submitted = runRole("picoclaw.ts", ["submit", ...as("submitter"), ...signing("worker"), "<perm-loop> [[delay=300]] write"], {
        env: ECHO,
        timeoutMs: 60_000,
      });
      const lines = () =>
        Bun.file(join(workspace, "log.txt"))
          .text()
          .then(
            (t) => t.split("\n").filter(Boolean).length,
            () => 0,
          );
      await waitFor("two lines written", async () => (await lines()) >= 2, 30_000);
      first.signal("SIGKILL");
      const second = procs.track(spawnRole("worker.ts", [...as("worker", "worker"), ...fast], { env: llmEnv, home }));
      const r = await submitted;
      expect({ code: r.code, out: r.output }).toEqual({ code: 0, out: expect.stringContaining("six lines written after 6 tool results") });
      for (const p of [coord, first, second]) expect(p.output()).not.toMatch(/permissions violation/i);
      // Each line at most once: a call whose result was recorded is not run again by the second worker.
      const text = await Bun.file(join(workspace, "log.txt")).text();
      for (let i = 1; i <= 6; i++) expect(text.split(`line ${i}\n`).length - 1).toBeLessThanOrEqual(1);
    } finally {
      llm.script(undefined);
    }
  });

  test("approvals as their own users: the server refuses a worker's decision; an unsealed one is ignored (the call times out); the approver's signed approve lets it run", async () => {
    await procs.killAll();
    const home = tempHome();
    const workspace = join(home, "ws");
    llm.script((b) => {
      const user = String(b.messages?.find((m) => m.role === "user")?.content ?? "");
      const file = /<perm-approve (\w+)>/.exec(user)?.[1];
      if (!file) return undefined;
      const seen = (b.messages ?? []).filter((m) => m.role === "tool");
      if (seen.length === 0)
        return { tool_calls: [{ name: "write_file", arguments: JSON.stringify({ path: `${file}.txt`, content: file }) }] };
      return `tool said: ${seen[0]!.content}`;
    });
    try {
      const fast = [
        ...FAST,
        "--agents.defaults.workspace",
        workspace,
        "--tools.approval.required",
        "write_file",
        "--tools.approval.timeout",
        "6s",
      ];
      const llmEnv = { PICOCLAW_LLM_BASE_URL: llm.url, PICOCLAW_LLM_MODEL: "m" };
      const coord = procs.track(spawnRole("coordinator.ts", [...as("coordinator", "coord"), ...FAST], { env: ECHO, home }));
      const worker = procs.track(spawnRole("worker.ts", [...as("worker", "worker"), ...fast], { env: llmEnv, home }));
      for (const p of [coord, worker]) await p.waitForLine(/Node joined swarm .*self=true/, 20_000);
      await coord.waitForLine(new RegExp(`Node joined swarm node=${selfId(worker)}\\b`), 10_000);
      const ask = (file: string) => {
        const p = procs.track(
          spawnRole(
            "picoclaw.ts",
            ["submit", ...as("submitter"), ...signing("worker"), "--capabilities", "general", `<perm-approve ${file}> write`],
            {
              env: ECHO,
            },
          ),
        );
        return p.waitForLine(/waiting for approval of write_file/, 30_000).then((l) => ({ p, id: /\((ap-[0-9a-f]{10}),/.exec(l)![1]! }));
      };

      // 1. The worker user may ask, never decide: the server refuses its decision. An approver user's
      // decision without a seal (signing is on) is ignored by coordinator and worker: the call times out.
      const forged = await ask("forged");
      const asWorker = await client("worker");
      const decision = {
        v: 1,
        id: forged.id,
        request: "r-x",
        task: "general",
        tool: "write_file",
        outcome: "approved",
        by: "me",
        at: 1,
        asked_at: 1,
      };
      expect(await publishAs(asWorker, `$KV.picoclaw_alpha_tasks.decision.${forged.id}`, decision)).toMatch(/permissions violation/i);
      const asApprover = await client("approver");
      const kv = await asApprover.jetstream().views.kv("picoclaw_alpha_tasks", { bindOnly: true });
      await kv.create(`decision.${forged.id}`, encode(decision));
      expect(await forged.p.exited(30_000)).toBe(0);
      expect(forged.p.output()).toContain("denied: approval timed out");
      expect(existsSync(join(workspace, "forged.txt"))).toBe(false);

      // 2. The approver user with a trusted approver key: its sealed approval counts.
      const real = await ask("real");
      const listed = await runRole("picoclaw.ts", ["approvals", "--json", ...as("approver")], { timeoutMs: 20_000 });
      expect(listed.stdout).toContain(real.id);
      const ok = await runRole("picoclaw.ts", ["approve", real.id, ...as("approver", "approver")], { timeoutMs: 20_000 });
      expect({ code: ok.code, out: ok.output }).toEqual({ code: 0, out: expect.stringContaining(`approved ${real.id}`) });
      expect(await real.p.exited(30_000)).toBe(0);
      expect(real.p.output()).toContain("tool said: wrote 4 bytes to real.txt");
      expect(readFileSync(join(workspace, "real.txt"), "utf8")).toBe("real");
      for (const p of [coord, worker]) expect(p.output()).not.toMatch(/permissions violation/i);
    } finally {
      llm.script(undefined);
    }
  });
});
