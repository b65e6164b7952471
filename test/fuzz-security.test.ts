// Fuzz, signing on: while a workload runs, every node's control subject gets malformed requests and
// well-formed but unsigned, untrusted, stale and tampered drain/shutdown requests, and the tasks KV
// bucket gets garbage and forged result records for requests the fuzzer submits. Nodes stay up, the
// workload is answered (by signed answers), every control request is refused with a reply, every
// fuzzed request ends as failed with the reason, and the refusals show in heartbeats
// (`dashboard --json`), /metrics and the logs. Real nats-server, real role processes.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { connect, headers, type MsgHdrs, type NatsConnection } from "nats";
import { createUser } from "nkeys.js";
import type { DashboardSnapshot } from "../roles/dashboard/snapshot.ts";
import { type NatsServer, startNatsServer } from "./helpers/nats-server.ts";
import { type RoleProcess, runRole, tempHome } from "./helpers/role-process.ts";
import { type Swarm, startSwarm, submit } from "./helpers/swarm.ts";
import { waitFor } from "./helpers/wait.ts";

const HID = "fuzzsec";
const P = `picoclaw.${HID}`;
const ECHO = { PICOCLAW_LLM_PROVIDER: "echo" };
const HTTP = ["--swarm.http.listen", "127.0.0.1:0"];
const CONTROL_PER_NODE = 300;
const CONTROL_RATE = 150; // per second, all nodes together
const FORGED_REQUESTS = 8;
const WORKLOAD = 6;
const BOUND = 30_000;

const te = new TextEncoder();
const td = new TextDecoder();
const json = (v: unknown) => te.encode(JSON.stringify(v));
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;

/** Signature headers as lib/signing.ts makes them, at a chosen time (stale ones) or over other bytes (tampered ones). */
function signedHeaders(kp: ReturnType<typeof createUser>, subject: string, payload: Uint8Array, time = Date.now()): MsgHdrs {
  const nonce = randomBytes(12).toString("hex");
  const h = headers();
  h.set("Picoclaw-Key", kp.getPublicKey());
  h.set("Picoclaw-Nonce", nonce);
  h.set("Picoclaw-Time", String(time));
  const head = te.encode(`${subject}\n${nonce}\n${time}\n`);
  const bytes = new Uint8Array(head.length + payload.length);
  bytes.set(head);
  bytes.set(payload, head.length);
  h.set("Picoclaw-Sig", Buffer.from(kp.sign(bytes)).toString("base64"));
  return h;
}

describe("fuzz: control subjects and KV records, signing on", () => {
  let nats: NatsServer;
  let swarm: Swarm;
  let nc: NatsConnection;
  const keys: Record<string, { file: string; pub: string }> = {};

  beforeAll(async () => {
    nats = await startNatsServer();
    const dir = tempHome();
    for (const name of ["coord", "worker", "admin"]) {
      const file = join(dir, `${name}.nk`);
      const r = await runRole("picoclaw.ts", ["keygen", file]);
      keys[name] = { file, pub: /public key: (U[A-Z2-7]{55})/.exec(r.stdout)![1]! };
    }
    const sec = (key: string) => [
      "--swarm.security.signing",
      "--swarm.security.key_file",
      keys[key]!.file,
      "--swarm.security.trusted_coordinators",
      keys.coord!.pub,
      "--swarm.security.trusted_workers",
      keys.worker!.pub,
      "--swarm.security.trusted_admins",
      keys.admin!.pub,
    ];
    swarm = await startSwarm(nats, HID, [
      { script: "coordinator.ts", args: [...sec("coord"), ...HTTP], env: ECHO },
      { script: "worker.ts", args: [...sec("worker"), ...HTTP], env: ECHO },
    ]);
    swarm.common.push(...sec("worker")); // submit verifies answers with trusted_coordinators
    nc = await connect({ servers: nats.url, name: "fuzzer" });
  }, 60_000);

  afterAll(async () => {
    await nc?.close().catch(() => {});
    if (swarm) {
      for (const p of swarm.nodes) if (p.proc.exitCode === null) p.proc.kill("SIGKILL");
      await Promise.all(swarm.nodes.map((p) => p.proc.exited));
    }
    await nats?.stop();
  });

  test("bad and forged control requests and KV records during a workload: refused, counted, nodes stay up", async () => {
    const [coord, worker] = swarm.nodes as [RoleProcess, RoleProcess];
    const stranger = createUser();
    const admin = createUser(); // not trusted either: its own seed stays with the admin
    const js = nc.jetstream();

    // ---- forged requests whose result records are garbage or forged before any node records one
    const kv = await js.views.kv(`picoclaw_${HID}_tasks`, { history: 1 });
    const outcomes = new Map<string, { status?: string; answer?: string }>();
    const forged = Array.from({ length: FORGED_REQUESTS }, (_, i) => `r-fz${i}${randomBytes(4).toString("hex")}`);
    const answers = nc.subscribe(`${P}.event.request.*`, {
      callback: (_e, m) => {
        const id = m.subject.split(".").at(-1)!;
        if (!forged.includes(id)) return;
        const ev = JSON.parse(td.decode(m.data)) as { kind: string; status?: string; answer?: string };
        if (ev.kind === "answer" || ev.kind === "failed") outcomes.set(id, { status: ev.status ?? ev.kind, answer: ev.answer });
      },
    });
    const badResults = [
      () => randomBytes(64),
      () => te.encode('{"v":1,"request":'),
      () => json({ v: 1, status: "completed", text: 42 }),
      (id: string) =>
        json({
          v: 1,
          request: id,
          task: "general",
          status: "completed",
          node: "claw-00000000",
          capability: "general",
          text: "FORGED RESULT",
          errors: [],
          attempts: 1,
          started_at: 1,
          finished_at: 2,
          usage: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 },
          llm: "none",
          truncated: false,
        }),
    ];
    for (const [i, id] of forged.entries()) {
      await kv.put(`result.${id}.general`, badResults[i % badResults.length]!(id));
      await kv.put(`errors.${id}.general`, randomBytes(32));
      await kv.put(`request.${id}`, randomBytes(48));
      await js.publish(
        `${P}.request.submit`,
        json({ v: 1, request: id, text: `fz ${id}`, capabilities: ["general"], submitted_at: Date.now() }),
      );
    }

    // ---- the workload, alongside
    const workload = (async () => {
      const runs = [];
      for (let n = 0; n < WORKLOAD; n += 2) {
        runs.push(
          ...(await Promise.all(
            [0, 1].map((k) => submit(swarm, ["--capabilities", "general", `sec-job${n + k}`, "--timeout", "30s"], 45_000)),
          )),
        );
      }
      return runs;
    })();

    // ---- the control flood: every reply must be a refusal
    const replies: string[] = [];
    const inbox = nc.subscribe("_INBOX.fuzzsec.>", { callback: (_e, m) => replies.push(td.decode(m.data)) });
    const kinds = new Map<string, number>();
    let sent = 0;
    const floodStart = Date.now();
    for (let i = 0; i < CONTROL_PER_NODE; i++) {
      for (const node of swarm.ids) {
        const subject = `${P}.node.${node}.control`;
        const action = pick(["drain", "shutdown"] as const);
        const valid = json({ v: 1, action });
        const variant = pick([
          ["random bytes", () => ({ data: randomBytes(1 + Math.floor(Math.random() * 256)) })],
          ["truncated JSON", () => ({ data: te.encode('{"v":1,"action":"dr') })],
          ["wrong type", () => ({ data: json({ v: "1", action: 7 }) })],
          ["unknown action", () => ({ data: json({ v: 1, action: "exec" }) })],
          ["deeply nested", () => ({ data: te.encode("[".repeat(5_000) + "]".repeat(5_000)) })],
          ["unsigned", () => ({ data: valid })],
          ["untrusted key", () => ({ data: valid, headers: signedHeaders(stranger, subject, valid) })],
          ["not an admin's key", () => ({ data: valid, headers: signedHeaders(admin, subject, valid) })],
          ["stale", () => ({ data: valid, headers: signedHeaders(stranger, subject, valid, Date.now() - 3_600_000) })],
          [
            "tampered",
            () => ({ data: json({ v: 1, action: "shutdown" }), headers: signedHeaders(stranger, subject, json({ v: 1, action: "ping" })) }),
          ],
        ] as const);
        const [kind, make] = variant;
        const m = make() as { data: Uint8Array; headers?: MsgHdrs };
        nc.publish(subject, m.data, { reply: `_INBOX.fuzzsec.${sent}`, headers: m.headers });
        kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
        sent++;
        const due = floodStart + (sent / CONTROL_RATE) * 1_000;
        if (due > Date.now()) await Bun.sleep(due - Date.now()); // pacing, not synchronisation
      }
    }
    await nc.flush();
    console.log(`fuzz-security: ${sent} control requests (${[...kinds].map(([k, n]) => `${k} ${n}`).join(", ")})`);

    // Every one answered, none obeyed.
    await waitFor(`a reply to each of the ${sent} control requests`, () => replies.length >= sent, BOUND);
    expect(replies.filter((r) => !r.includes('"ok":false'))).toEqual([]);

    // The workload was answered, by trusted coordinators' signed answers.
    for (const run of await workload) {
      expect({ code: run.code, status: run.answer?.status, refused: /refused an answer/.test(run.output) }).toEqual({
        code: 0,
        status: "completed",
        refused: false,
      });
    }

    // Each forged request ended (failed, saying why), never hung, never looped.
    await waitFor("every fuzzed request to end", () => outcomes.size === forged.length, BOUND);
    answers.unsubscribe();
    inbox.unsubscribe();
    for (const [id, o] of outcomes) {
      expect({ id, status: o.status, why: /result rejected/.test(o.answer ?? ""), forged: /FORGED/.test(o.answer ?? "") }).toEqual({
        id,
        status: "failed",
        why: true,
        forged: false,
      });
    }

    // Both nodes are up, and report their refusals: heartbeats (dashboard --json), /metrics, logs.
    for (const p of swarm.nodes) expect(p.proc.exitCode).toBeNull();
    const view = await runRole("dashboard.ts", ["--json", ...swarm.common]);
    const snap = JSON.parse(view.stdout) as DashboardSnapshot;
    const bad = (id: string) => snap.nodes.find((n) => n.node === id)!.bad_messages;
    for (const id of swarm.ids) {
      expect(bad(id).refused.control).toBeGreaterThan(0);
      expect(bad(id).by_subject[`${P}.node.${id}.control`]).toBeGreaterThan(0);
    }
    const coordBad = bad(swarm.ids[0]!);
    expect(coordBad.refused.result).toBeGreaterThanOrEqual(FORGED_REQUESTS); // a record read by two checks at once counts twice
    expect(Object.keys(coordBad.by_subject).some((s) => s.startsWith(`$KV.picoclaw_${HID}_tasks.result.r-fz`))).toBe(true);
    console.log(`fuzz-security: refused ${snap.nodes.map((n) => `${n.role}=${JSON.stringify(n.bad_messages.refused)}`).join(" ")}`);

    for (const p of [coord, worker]) {
      const url = /HTTP listening url=(\S+)/.exec(await p.waitForLine(/HTTP listening url=/))![1]!;
      const metrics = await (await fetch(`${url}/metrics`)).text();
      expect(metrics).toMatch(/^picoclaw_refused_total\{kind="control"\} [1-9]\d*$/m);
      expect(metrics).toMatch(/^picoclaw_bad_messages_total [1-9]\d*$/m);
      if (p === coord) expect(metrics).toMatch(/^picoclaw_refused_total\{kind="result"\} [1-9]\d*$/m);
      expect(p.lines.some((l) => l.includes("Control request refused"))).toBe(true);
    }

    for (const p of swarm.nodes) p.signal("SIGTERM");
    for (const p of swarm.nodes) expect(await p.exited(BOUND)).toBe(0);
  }, 120_000);
});
