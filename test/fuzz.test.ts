// Fuzz: while a normal workload runs, more than 10 000 random, truncated, wrong-type, deeply nested and
// oversized messages go to every subject the nodes consume, core NATS and JetStream alike. Every node
// stays up, the workload is answered correctly, the bad JetStream messages leave the work queues, and
// every node drops and logs what it cannot parse. Real nats-server, real role processes, no mocks.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect, type JetStreamClient, type JetStreamManager, type Msg, type NatsConnection } from "nats";
import type { DashboardSnapshot } from "../roles/dashboard/snapshot.ts";
import { type NatsServer, startNatsServer } from "./helpers/nats-server.ts";
import { type RoleProcess, runRole, spawnRole, tempHome } from "./helpers/role-process.ts";
import { planFile, type SubmitRun, type Swarm, startSwarm, submit } from "./helpers/swarm.ts";
import { waitFor } from "./helpers/wait.ts";

const HID = "fuzz2";
const P = `picoclaw.${HID}`;
const TASKS_STREAM = `PICOCLAW_${HID}_TASKS`;
const REQUESTS_STREAM = `PICOCLAW_${HID}_REQUESTS`;
const ADVISORY = `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${TASKS_STREAM}`;
const ECHO = { PICOCLAW_LLM_PROVIDER: "echo" };
const MAX_DELIVER = ["--swarm.tasks.max_deliver", "3"];

/** Core NATS messages; with the JetStream ones the total passes 10 000. */
const CORE_TARGET = 8_200;
/** JetStream messages (stored, then delivered through the nodes' consumers and subscriptions). */
const JS_TARGET = 2_400;
/** Messages per second: the flood takes about 14 s, so each node needs well under a tenth of a core for it. */
const CORE_RATE = 600;
const JS_RATE = 175;
const WORKLOAD = 20;
const WORKLOAD_PARALLEL = 4;
/** The whole flood, whatever happens. */
const FLOOD_BOUND = 45_000;
const BOUND = 20_000;

const te = new TextEncoder();
const td = new TextDecoder();
const json = (v: unknown) => te.encode(JSON.stringify(v));
const hex = (n: number) => randomBytes(n).toString("hex");
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;

const DEEP_ARRAY = "[".repeat(10_000) + "]".repeat(10_000);
const DEEP_OBJECT = `${'{"a":'.repeat(10_000)}1${"}".repeat(10_000)}`;
const BAD_IDS = ["a.b", "*", ">", "a b", "", "x".repeat(65), "claw-é", "a\nb", "r-*", "r->"];

interface Payload {
  kind: string;
  data: Uint8Array;
}

/** A value of another JSON type than `v`, so a schema that wants `v`'s type refuses it. */
function wrongType(v: unknown): unknown {
  if (typeof v === "number") return String(v);
  if (typeof v === "string") return 12_345;
  if (typeof v === "boolean") return "yes";
  if (Array.isArray(v)) return "not-an-array";
  if (v !== null && typeof v === "object") return [v];
  return {};
}

/** `base` with `field` replaced by raw JSON text (too deep to build as an object). */
function withRaw(base: Record<string, unknown>, field: string, raw: string): Uint8Array {
  return te.encode(JSON.stringify({ ...base, [field]: "__RAW__" }).replace('"__RAW__"', raw));
}

/**
 * Malformed variants of one valid message `base`: none of them passes its schema. `required` are the
 * fields whose absence is an error; `ids` the fields that become subject tokens or must match ID_PATTERN.
 */
function variants(base: Record<string, unknown>, o: { required: string[]; ids: string[]; extra?: Payload[] }): Payload[] {
  const out: Payload[] = [];
  const add = (kind: string, data: Uint8Array) => out.push({ kind, data });
  const valid = JSON.stringify(base);
  add("empty", new Uint8Array(0));
  for (let i = 0; i < 4; i++) add("random bytes", randomBytes(1 + Math.floor(Math.random() * 512)));
  for (let i = 0; i < 4; i++) add("truncated JSON", te.encode(valid.slice(0, 1 + Math.floor(Math.random() * (valid.length - 1)))));
  for (const k of Object.keys(base)) add("wrong type", json({ ...base, [k]: wrongType(base[k]) }));
  if ("v" in base) add("v:2", json({ ...base, v: 2 }));
  for (const k of o.required) {
    const c = { ...base };
    delete c[k];
    add("missing field", json(c));
  }
  add("deeply nested", te.encode(DEEP_ARRAY));
  add("deeply nested", te.encode(DEEP_OBJECT));
  add("deeply nested", withRaw(base, o.required.at(-1)!, DEEP_OBJECT));
  for (const k of o.ids) for (const bad of BAD_IDS) add("ids with dots/stars/spaces", json({ ...base, [k]: bad }));
  for (const s of ["null", "42", '"text"', "[1,2,3]", "{}", '{"__proto__":{"v":1},"constructor":{"prototype":{"x":1}}}']) {
    add("JSON of the wrong shape", te.encode(s));
  }
  out.push(...(o.extra ?? []));
  return out;
}

/** Valid JSON of the right shape, one id field blown up to `bytes` (so it fails the id rule, not JSON). */
function oversized(base: Record<string, unknown>, idField: string, bytes: number): Payload {
  return { kind: `oversized ${Math.round(bytes / 1024)} KB`, data: json({ ...base, [idField]: "x".repeat(bytes) }) };
}

function shuffled<T>(xs: T[]): T[] {
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

// Valid messages of each type; the bad ones are derived from them.
const nodeInfo = (node: string) => ({
  v: 1,
  node,
  sid: "s-fuzz00000000",
  role: "worker",
  capabilities: ["general"],
  max_concurrent: 5,
  running: 0,
  status: "online",
  version: "0.1.0",
  started_at: Date.now(),
  heartbeat_interval: 200,
});
const NODE_INFO = {
  required: [
    "v",
    "node",
    "sid",
    "role",
    "capabilities",
    "max_concurrent",
    "running",
    "status",
    "version",
    "started_at",
    "heartbeat_interval",
  ],
  ids: ["node", "sid"],
};
const requestMsg = (request: string) => ({ v: 1, request, text: "fuzz", capabilities: ["general"], submitted_at: Date.now() });
const REQUEST = { required: ["v", "request", "text", "submitted_at"], ids: ["request"] };
const taskMsg = (request: string, task: string, capability: string, priority: number) => ({
  v: 1,
  request,
  task,
  title: "fuzz",
  capability,
  priority,
  prompt: "fuzz",
  inputs: [],
  timeout_ms: 5_000,
  coordinator: "claw-fuzzer",
});
const TASK = {
  required: ["v", "request", "task", "title", "capability", "priority", "prompt", "inputs", "timeout_ms", "coordinator"],
  ids: ["request", "task", "capability", "coordinator"],
};
const taskEvent = (request: string, task: string) => ({
  v: 1,
  request,
  task,
  kind: "started",
  node: "claw-fuzzer",
  capability: "general",
  at: Date.now(),
  attempt: 1,
});
const TASK_EVENT = {
  required: ["v", "request", "task", "kind", "node", "capability", "at", "attempt"],
  ids: ["request", "task", "node", "capability"],
};
// Only ever "accepted": even if one of these passed, `submit` would just print it and go on.
const requestEvent = (request: string) => ({ v: 1, request, kind: "accepted", at: Date.now(), coordinator: "claw-fuzzer" });
const REQUEST_EVENT = { required: ["v", "request", "kind", "at", "coordinator"], ids: ["request", "coordinator"] };

/** Lines a node logged for dropped input, with the subject they name. */
function droppedSubjects(p: RoleProcess): string[] {
  return p.lines.filter((l) => l.includes("Dropped malformed message")).map((l) => /subject=("[^"]*"|\S+)/.exec(l)?.[1] ?? "?");
}

describe("fuzz", () => {
  let nats: NatsServer;
  let swarm: Swarm;
  let nc: NatsConnection;
  let js: JetStreamClient;
  let jsm: JetStreamManager;
  const extra: RoleProcess[] = [];

  beforeAll(async () => {
    nats = await startNatsServer();
    swarm = await startSwarm(nats, HID, [
      { script: "coordinator.ts", args: MAX_DELIVER, env: ECHO },
      { script: "worker.ts", args: MAX_DELIVER, env: ECHO },
      { script: "worker.ts", args: MAX_DELIVER, env: ECHO },
      { script: "specialist.ts", args: ["--swarm.capabilities", "rust", ...MAX_DELIVER], env: ECHO },
    ]);
    nc = await connect({ servers: nats.url, name: "fuzzer" });
    js = nc.jetstream();
    jsm = await nc.jetstreamManager();
  }, 60_000);

  afterAll(async () => {
    // FUZZ_LOG_DIR=/tmp/x keeps every node's output for a look afterwards.
    const dir = process.env.FUZZ_LOG_DIR;
    if (dir && swarm) {
      mkdirSync(dir, { recursive: true });
      for (const [i, p] of swarm.nodes.entries()) writeFileSync(join(dir, `node${i}-${swarm.ids[i]}.log`), p.output());
    }
    await nc?.close().catch(() => {});
    for (const p of extra) if (p.proc.exitCode === null) p.proc.kill("SIGKILL");
    if (swarm) {
      for (const p of swarm.nodes) if (p.proc.exitCode === null) p.proc.kill("SIGKILL");
      await Promise.all(swarm.nodes.map((p) => p.proc.exited));
    }
    await nats?.stop();
  });

  test("10 000+ bad messages on every consumed subject during a workload: nodes stay up, work is answered, queues drain", async () => {
    const started = Date.now();
    const [coordId, w1Id, w2Id, specId] = swarm.ids as [string, string, string, string];
    const [coord, w1, w2, spec] = swarm.nodes as [RoleProcess, RoleProcess, RoleProcess, RoleProcess];
    const executors = [
      { id: w1Id, caps: ["general"] },
      { id: w2Id, caps: ["general"] },
      { id: specId, caps: ["rust"] },
    ];

    // What was sent, by kind and by subject (ids replaced by what they are).
    const byKind = new Map<string, number>();
    const bySubject = new Map<string, number>();
    let coreSent = 0;
    let jsSent = 0;
    const jsRefused: string[] = [];
    const tally = (transport: "core" | "js", family: string, kind: string) => {
      byKind.set(kind, (byKind.get(kind) ?? 0) + 1);
      bySubject.set(`${transport} ${family}`, (bySubject.get(`${transport} ${family}`) ?? 0) + 1);
      if (transport === "core") coreSent++;
      else jsSent++;
    };

    // Request ids: the workload's (learnt from their events) and the fuzzer's own valid-looking requests.
    const realRequests: string[] = [];
    const fuzzRequests = new Map<string, string>(); // id -> kind
    const fuzzRequestOutcome = new Map<string, { kind: string; error?: string }>();
    const fuzzTasks = new Map<string, string>(); // "request/task" -> kind
    const fuzzTaskOutcome = new Map<string, string>();
    const requestEvents = nc.subscribe(`${P}.event.request.*`, {
      callback: (_e, m) => {
        const id = m.subject.split(".").at(-1)!;
        let ev: { kind?: string; error?: string; coordinator?: string } | null;
        try {
          ev = JSON.parse(td.decode(m.data)) as typeof ev;
        } catch {
          return;
        }
        if (ev === null || typeof ev !== "object" || ev.coordinator !== coordId) return; // one of ours
        if (fuzzRequests.has(id)) {
          if (ev.kind === "failed" || ev.kind === "answer") fuzzRequestOutcome.set(id, { kind: ev.kind, error: ev.error });
        } else if ((ev.kind === "accepted" || ev.kind === "planned") && !realRequests.includes(id)) realRequests.push(id);
      },
    });
    // A node reports an outcome live; the coordinator's `failed` for a sub-task it gives up is stored.
    const taskEvents = [`${P}.live.task.*.*`, `${P}.event.task.*.*`].map((subject) =>
      nc.subscribe(subject, {
        callback: (_e, m) => {
          const [req, task] = m.subject.split(".").slice(-2) as [string, string];
          if (!fuzzTasks.has(`${req}/${task}`)) return;
          try {
            const ev = JSON.parse(td.decode(m.data)) as { kind?: string; node?: string } | null;
            if (ev && ev.node !== "claw-fuzzer" && ["completed", "failed", "duplicate"].includes(ev.kind ?? ""))
              fuzzTaskOutcome.set(`${req}/${task}`, ev.kind!);
          } catch {
            // not one of the nodes' events
          }
        },
      }),
    );
    // Replies to bad control requests: a node may refuse them, never accept one.
    const controlReplies: string[] = [];
    const controlInbox = nc.subscribe("_INBOX.fuzz.control.>", {
      callback: (_e, m: Msg) => {
        if (m.headers?.code !== 503) controlReplies.push(td.decode(m.data));
      },
    });
    // Bad queries and heartbeats are never answered.
    const membershipReplies: string[] = [];
    const membershipInbox = nc.subscribe("_INBOX.fuzz.membership.>", {
      callback: (_e, m: Msg) => {
        if (m.headers?.code !== 503) membershipReplies.push(`${m.subject}: ${td.decode(m.data)}`);
      },
    });

    // ---- the workload: 20 submits, 4 at a time, alternating `--capabilities general` and a two-step plan.
    const results: { n: number; run: SubmitRun; sections: string[]; markers: string[]; start: number; end: number }[] = [];
    const runOne = async (n: number) => {
      const start = Date.now();
      let args: string[];
      let sections: string[];
      let markers: string[];
      if (n % 2 === 0) {
        args = ["--capabilities", "general", `job${n}-gamma: summarise what a fuzz test is for`];
        sections = ["## general task — completed"];
        markers = [`job${n}-gamma`];
      } else {
        args = [
          "--plan",
          planFile(
            [
              "tasks:",
              `  - { id: first, capability: general, title: job${n} first, prompt: 'job${n}-alpha: list three risks' }`,
              `  - { id: second, capability: rust, title: job${n} second, depends_on: [first], prompt: 'job${n}-beta: rank them' }`,
              "",
            ].join("\n"),
          ),
        ];
        sections = [`## job${n} first — completed`, `## job${n} second — completed`];
        markers = [`[echo] job${n}-alpha`, `[echo] job${n}-beta`, `job${n}-alpha: list three risks`];
      }
      const run = await submit(swarm, [...args, "--timeout", "40s"], 50_000);
      results.push({ n, run, sections, markers, start, end: Date.now() });
    };
    let next = 0;
    const workload = Promise.all(
      Array.from({ length: WORKLOAD_PARALLEL }, async (_, lane) => {
        await Bun.sleep(lane * 300); // four bun processes starting at once would starve the nodes for a moment
        while (next < WORKLOAD) await runOne(next++);
      }),
    );

    // ---- the flood, once the workload is under way (bad events also go to its request subjects)
    await waitFor("the first workload request to be accepted", () => realRequests.length > 0, BOUND);
    const floodStart = Date.now();
    const floodDeadline = floodStart + FLOOD_BOUND;
    let coreDone = false;

    /** Keeps the flood at `rate` messages per second (on a 2-core box the nodes' heartbeats must still get through). */
    const pace = async (sent: number, rate: number) => {
      const due = floodStart + (sent / rate) * 1_000;
      if (due > Date.now()) await Bun.sleep(due - Date.now());
    };
    // The one-shot `dashboard --json` runs while the core flood goes on: it counts what it received, by subject.
    const dashboard = spawnRole("dashboard.ts", ["--json", "--swarm.hid", HID, "--swarm.nats.urls", nats.url], { home: tempHome() });
    extra.push(dashboard);

    const core = (async () => {
      let round = 0;
      const send = (subject: string, family: string, p: Payload, reply?: string) => {
        nc.publish(subject, p.data, reply ? { reply } : undefined);
        tally("core", family, p.kind);
      };
      const heartbeatV = () => variants(nodeInfo(pick(swarm.ids)), NODE_INFO);
      // Oversized ones are spread over the flood: one with every sixth batch.
      const bigs = Array.from(
        { length: 18 },
        (_, i): Payload =>
          i % 3 === 2 ? { kind: "oversized 900 KB", data: randomBytes(900 * 1024) } : oversized({ v: 1 }, "pad", 200 * 1024),
      );
      let batch = 0;
      while (coreSent < CORE_TARGET && Date.now() < floodDeadline) {
        const subjects: { subject: string; family: string; payloads: Payload[]; reply?: "control" | "membership" }[] = [
          ...swarm.ids.map((id) => ({
            subject: `${P}.node.heartbeat.${id}`,
            family: "node.heartbeat.<real node>",
            payloads: heartbeatV(),
          })),
          { subject: `${P}.node.heartbeat.claw-${hex(4)}`, family: "node.heartbeat.<random id>", payloads: heartbeatV() },
          {
            subject: `${P}.node.announce`,
            family: "node.announce",
            payloads: variants(
              { v: 1, kind: "join", info: nodeInfo(`claw-${hex(4)}`) },
              {
                required: ["v", "kind", "info"],
                ids: ["kind"],
                extra: BAD_IDS.map((b) => ({ kind: "ids with dots/stars/spaces", data: json({ v: 1, kind: "join", info: nodeInfo(b) }) })),
              },
            ),
          },
          {
            subject: `${P}.node.query`,
            family: "node.query",
            payloads: variants({ v: 1, from: "claw-fuzzer" }, { required: ["v", "from"], ids: ["from"] }),
            reply: "membership",
          },
          ...swarm.ids.map((id) => ({
            subject: `${P}.node.${id}.control`,
            family: "node.<real node>.control",
            payloads: variants({ v: 1, action: "ping" }, { required: ["v", "action"], ids: ["action"] }),
            reply: "control" as const,
          })),
          // The coordinator follows JetStream's max-deliveries advisories; a sequence number no message has.
          {
            subject: `${ADVISORY}.q_general_${round % 4}`,
            family: "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES",
            payloads: variants({ stream_seq: 2 ** 52 }, { required: ["stream_seq"], ids: [] }),
          },
        ];
        for (const s of subjects) {
          const payloads = batch++ % 6 === 0 && bigs.length > 0 ? [...s.payloads, bigs.pop()!] : s.payloads;
          for (const [i, p] of payloads.entries()) {
            send(s.subject, s.family, p, s.reply && i % 2 === 0 ? `_INBOX.fuzz.${s.reply}.${coreSent}` : undefined);
          }
          await nc.flush();
          await pace(coreSent, CORE_RATE);
        }
        round++;
      }
      // Until the one-shot dashboard has collected its snapshot, keep a trickle of bad heartbeats going.
      while (dashboard.proc.exitCode === null && Date.now() < floodDeadline) {
        for (const p of heartbeatV().slice(0, 10)) send(`${P}.node.heartbeat.${pick(swarm.ids)}`, "node.heartbeat.<real node>", p);
        await nc.flush();
        await Bun.sleep(50);
      }
      coreDone = true;
    })();

    const jsFlood = (async () => {
      const inFlight = new Set<Promise<void>>();
      const publish = async (subject: string, family: string, p: Payload) => {
        await pace(jsSent + inFlight.size, JS_RATE);
        while (inFlight.size >= 16) await Promise.race(inFlight);
        const done = js
          .publish(subject, p.data)
          .then(
            () => tally("js", family, p.kind),
            (err: Error) => void jsRefused.push(`${family} ${p.kind}: ${err.message}`),
          )
          .finally(() => inFlight.delete(done));
        inFlight.add(done);
      };
      const fakeReq = () => `r-fz${hex(5)}`;
      const validTask = async (subject: string, family: string, kind: string, t: ReturnType<typeof taskMsg>) => {
        fuzzTasks.set(`${t.request}/${t.task}`, kind);
        await publish(subject, family, { kind, data: json(t) });
      };
      const validRequest = async (kind: string, body: Record<string, unknown>) => {
        const id = fakeReq();
        fuzzRequests.set(id, kind);
        await publish(`${P}.request.submit`, "request.submit", { kind, data: json({ ...requestMsg(id), ...body }) });
      };
      const PER_SUBJECT = 25;
      // Oversized ones (valid JSON, one id blown up) with every third batch: 16 of 200 KB, 8 of 900 KB.
      const bigSizes = Array.from({ length: 24 }, (_, i) => (i % 3 === 2 ? 900 : 200) * 1024);
      let batch = 0;
      for (let round = 0; jsSent + inFlight.size < JS_TARGET && Date.now() < floodDeadline; round++) {
        const req = pick(realRequests);
        const subjects: { subject: string; family: string; payloads: Payload[] }[] = [
          {
            subject: `${P}.request.submit`,
            family: "request.submit",
            payloads: variants(requestMsg(fakeReq()), {
              ...REQUEST,
              extra: BAD_IDS.map((b) => ({
                kind: "ids with dots/stars/spaces",
                data: json({ ...requestMsg(fakeReq()), capabilities: [b] }),
              })),
            }),
          },
          ...[0, 1, 2, 3].map((p) => ({
            subject: `${P}.task.queue.general.${p}`,
            family: `task.queue.general.${p}`,
            payloads: variants(taskMsg(fakeReq(), "t1", "general", p), TASK),
          })),
          ...[0, 1, 2, 3].map((p) => ({
            subject: `${P}.task.queue.rust.${p}`,
            family: `task.queue.rust.${p}`,
            payloads: variants(taskMsg(fakeReq(), "t1", "rust", p), TASK),
          })),
          ...executors.map((x, i) => ({
            subject: `${P}.task.direct.${x.id}`,
            family: `task.direct.<${i < 2 ? "worker" : "specialist"}>`,
            payloads: variants(taskMsg(fakeReq(), "t1", x.caps[0]!, 1), TASK),
          })),
          {
            subject: `${P}.event.task.${req}.general`,
            family: "event.task.<workload request>.<task>",
            payloads: variants(taskEvent(req, "general"), TASK_EVENT),
          },
          {
            subject: `${P}.event.task.${fakeReq()}.t1`,
            family: "event.task.<unknown request>.<task>",
            payloads: variants(taskEvent(fakeReq(), "t1"), TASK_EVENT),
          },
          {
            subject: `${P}.event.request.${req}`,
            family: "event.request.<workload request>",
            payloads: variants(requestEvent(req), REQUEST_EVENT),
          },
          {
            subject: `${P}.event.request.${fakeReq()}`,
            family: "event.request.<unknown request>",
            payloads: variants(requestEvent(fakeReq()), REQUEST_EVENT),
          },
        ];
        for (const s of subjects) {
          const payloads = shuffled(s.payloads).slice(0, PER_SUBJECT);
          if (batch++ % 3 === 0 && bigSizes.length > 0) {
            const base = JSON.parse(td.decode(s.payloads.find((p) => p.kind === "v:2")!.data)) as Record<string, unknown>;
            payloads.push(oversized({ ...base, v: 1 }, "request", bigSizes.pop()!));
          }
          for (const p of payloads) await publish(s.subject, s.family, p);
        }

        // Valid-looking messages: they pass the schema, so nodes act on them; nothing may break.
        if (round < 4) {
          for (const [i, x] of executors.entries()) {
            const cap = x.caps[0]!;
            await validTask(
              `${P}.task.direct.${x.id}`,
              `task.direct.<${i < 2 ? "worker" : "specialist"}>`,
              "task for an unknown request",
              taskMsg(fakeReq(), `t${round}`, cap, 1),
            );
            await validTask(
              `${P}.task.queue.${cap}.${round}`,
              `task.queue.${cap}.${round}`,
              "task for an unknown request",
              taskMsg(fakeReq(), `t${round}`, cap, round),
            );
          }
          await validTask(
            `${P}.task.queue.general.${round}`,
            `task.queue.general.${round}`,
            "capability does not match the queue",
            taskMsg(fakeReq(), "t1", "rust", round),
          );
          await validTask(
            `${P}.task.queue.rust.${round}`,
            `task.queue.rust.${round}`,
            "capability does not match the queue",
            taskMsg(fakeReq(), "t1", "gpu", round),
          );
          await validTask(
            `${P}.task.queue.general.${round}`,
            `task.queue.general.${round}`,
            "priority does not match the queue",
            taskMsg(fakeReq(), "t1", "general", (round + 1) % 4),
          );
          const same = fakeReq();
          for (let k = 0; k < 3; k++)
            await validTask(
              `${P}.task.queue.general.1`,
              "task.queue.general.1",
              "the same task three times",
              taskMsg(same, "t1", "general", 1),
            );
          await validTask(`${P}.task.queue.general.2`, "task.queue.general.2", "1 ms timeout", {
            ...taskMsg(fakeReq(), "t1", "general", 2),
            timeout_ms: 1,
          });
          if (round === 0) {
            await validTask(`${P}.task.queue.general.0`, "task.queue.general.0", "oversized valid task (900 KB prompt)", {
              ...taskMsg(fakeReq(), "t1", "general", 0),
              prompt: "p".repeat(900 * 1024),
            });
          }
          for (let k = 0; k < 5; k++) {
            await validRequest("plan with a cycle", {
              plan: {
                tasks: [
                  { id: "a", capability: "general", prompt: "x", depends_on: ["b"] },
                  { id: "b", capability: "general", prompt: "y", depends_on: ["a"] },
                ],
              },
            });
          }
          await validRequest("plan with a cycle", {
            plan: {
              tasks: [
                { id: "a", capability: "general", prompt: "x", depends_on: ["c"] },
                { id: "b", capability: "rust", prompt: "y", depends_on: ["a"] },
                { id: "c", capability: "general", prompt: "z", depends_on: ["b"] },
              ],
            },
          });
          await validRequest("plan with a self-dependency", {
            plan: { tasks: [{ id: "a", capability: "general", prompt: "x", depends_on: ["a"] }] },
          });
          await validRequest("plan with an unknown dependency", {
            plan: { tasks: [{ id: "a", capability: "general", prompt: "x", depends_on: ["ghost"] }] },
          });
          await validRequest("plan of the wrong type", { plan: 42 });
          await validRequest("capability nobody offers", { capabilities: ["gpu"] });
          if (round < 2) {
            await validRequest("deeply nested plan", { plan: JSON.parse(`${'{"tasks":'.repeat(2_000)}[]${"}".repeat(2_000)}`) });
            // ~900 KB: a 12 000-task chain (too many tasks, too deep).
            const n = 12_000;
            await validRequest("oversized plan (12 000-task chain)", {
              capabilities: undefined,
              plan: {
                tasks: Array.from({ length: n }, (_, i) => ({
                  id: `a${i}`,
                  capability: "general",
                  prompt: "x",
                  depends_on: i + 1 < n ? [`a${i + 1}`] : [],
                })),
              },
            });
          }
        }
      }
      await Promise.all(inFlight);
    })();

    await Promise.all([core, jsFlood]);
    const floodEnd = Date.now();
    await workload;
    const total = coreSent + jsSent;
    console.log(
      [
        `fuzz: ${total} bad or hostile messages in ${floodEnd - floodStart} ms (${coreSent} core, ${jsSent} JetStream, ${jsRefused.length} refused by the server)`,
        "by kind:",
        ...[...byKind].sort((a, b) => b[1] - a[1]).map(([k, n]) => `  ${String(n).padStart(5)}  ${k}`),
        "by subject:",
        ...[...bySubject].sort().map(([k, n]) => `  ${String(n).padStart(5)}  ${k}`),
      ].join("\n"),
    );
    expect(jsRefused).toEqual([]);
    expect(coreDone).toBe(true);
    expect({ core: coreSent >= CORE_TARGET, js: jsSent >= 2_000, total: total >= 10_000 }).toEqual({ core: true, js: true, total: true });

    // The workload ran during the flood, and every request was answered correctly.
    results.sort((a, b) => a.n - b.n);
    console.log(
      `fuzz: workload of ${results.length} submits ran ${Math.min(...results.map((r) => r.start)) - floodStart} .. ` +
        `${Math.max(...results.map((r) => r.end)) - floodStart} ms after the flood started (flood ended at ${floodEnd - floodStart} ms)`,
    );
    expect(results.length).toBe(WORKLOAD);
    expect(Math.min(...results.map((r) => r.start))).toBeLessThan(floodEnd);
    expect(Math.max(...results.map((r) => r.end))).toBeGreaterThan(floodStart);
    for (const r of results) {
      const answer = r.run.answer?.answer ?? "";
      const got = {
        job: r.n,
        code: r.run.code,
        status: r.run.answer?.status as string | undefined,
        sections: r.sections.filter((s) => answer.includes(s)),
        markers: r.markers.filter((m) => answer.includes(m)),
      };
      const want = { job: r.n, code: 0, status: "completed", sections: r.sections, markers: r.markers };
      if (JSON.stringify(got) !== JSON.stringify(want)) console.log(`job ${r.n} output:\n${r.run.output.slice(-3000)}`);
      expect(got).toEqual(want);
    }

    // Every role process is still running.
    for (const [i, p] of swarm.nodes.entries()) {
      const tail = p.proc.exitCode === null ? "" : p.lines.slice(-20).join("\n");
      expect({ node: swarm.ids[i], exitCode: p.proc.exitCode, tail }).toEqual({ node: swarm.ids[i], exitCode: null, tail: "" });
    }

    // The bad JetStream messages did not stay in the work queues: terminated or acked, not redelivered forever.
    const streamsDrained = await waitFor(
      "the TASKS and REQUESTS streams to drain",
      async () => {
        const [tasks, requests] = await Promise.all([jsm.streams.info(TASKS_STREAM), jsm.streams.info(REQUESTS_STREAM)]);
        return tasks.state.messages === 0 && requests.state.messages === 0 ? { tasks: tasks.state, requests: requests.state } : undefined;
      },
      BOUND,
      200,
    ).catch(async (err: Error) => {
      const [tasks, requests] = await Promise.all([jsm.streams.info(TASKS_STREAM), jsm.streams.info(REQUESTS_STREAM)]);
      const consumers: string[] = [];
      for await (const ci of jsm.consumers.list(TASKS_STREAM))
        consumers.push(`${ci.name}: pending ${ci.num_pending}, ack pending ${ci.num_ack_pending}, redelivered ${ci.num_redelivered}`);
      throw new Error(
        `${err.message}\nTASKS ${JSON.stringify(tasks.state)}\nREQUESTS ${JSON.stringify(requests.state)}\n${consumers.join("\n")}`,
      );
    });
    expect(streamsDrained.tasks.messages).toBe(0);
    for await (const ci of jsm.consumers.list(TASKS_STREAM)) {
      expect({ consumer: ci.name, pending: ci.num_pending, ackPending: ci.num_ack_pending }).toEqual({
        consumer: ci.name,
        pending: 0,
        ackPending: 0,
      });
    }

    // Valid-looking requests with bad plans were rejected (not crashed on, not retried forever).
    const rejected = await waitFor(
      "every valid-looking bad request to be rejected",
      () => {
        const missing = [...fuzzRequests.keys()].filter((id) => !fuzzRequestOutcome.has(id));
        return missing.length === 0 ? fuzzRequestOutcome : undefined;
      },
      BOUND,
      100,
    );
    for (const [id, kind] of fuzzRequests) {
      const o = rejected.get(id)!;
      expect({ kind, outcome: o.kind }).toEqual({ kind, outcome: "failed" });
      if (kind === "plan with a cycle") expect(o.error).toMatch(/cycle: /);
      // Refused by its size at once, before the (quadratic) depth checks could block the coordinator.
      if (kind.startsWith("oversized plan")) expect(o.error).toContain("12000 tasks, more than max_fanout x max_depth");
    }
    requestEvents.unsubscribe();
    // Valid-looking sub-tasks (unknown request, mismatched queue) ran to an outcome on some node.
    await waitFor(
      "every valid-looking sub-task to reach an outcome",
      () => [...fuzzTasks.keys()].every((k) => fuzzTaskOutcome.has(k)),
      BOUND,
      100,
    ).catch((err: Error) => {
      const missing = [...fuzzTasks].filter(([k]) => !fuzzTaskOutcome.has(k));
      throw new Error(`${err.message}: ${JSON.stringify(missing)}`);
    });
    for (const s of taskEvents) s.unsubscribe();

    // Bad queries were never answered; bad control requests were only ever refused.
    expect(membershipReplies).toEqual([]);
    membershipInbox.unsubscribe();
    expect(controlReplies.length).toBeGreaterThan(0);
    expect(controlReplies.filter((r) => !r.includes('"ok":false'))).toEqual([]);
    controlInbox.unsubscribe();

    // Each node dropped and logged (rate-limited, with the subject) the bad input it consumes, core and JetStream.
    const logged = (p: RoleProcess) => droppedSubjects(p);
    const has = (subjects: string[], prefix: string) => subjects.some((s) => s.replace(/^"|"$/g, "").startsWith(prefix));
    const per = { coordinator: logged(coord), worker1: logged(w1), worker2: logged(w2), specialist: logged(spec) };
    const seen = {
      coordinator: {
        heartbeat: has(per.coordinator, `${P}.node.heartbeat.`),
        announce: has(per.coordinator, `${P}.node.announce`),
        query: has(per.coordinator, `${P}.node.query`),
        control: has(per.coordinator, `${P}.node.${coordId}.control`),
        advisory: has(per.coordinator, ADVISORY),
        requestSubmit: has(per.coordinator, `${P}.request.submit`),
        taskEvents: has(per.coordinator, `${P}.event.task.`),
      },
      workers: {
        heartbeat: has(per.worker1, `${P}.node.heartbeat.`) && has(per.worker2, `${P}.node.heartbeat.`),
        control: has(per.worker1, `${P}.node.${w1Id}.control`) && has(per.worker2, `${P}.node.${w2Id}.control`),
        generalQueue: [0, 1, 2, 3].every((p) => has([...per.worker1, ...per.worker2], `${P}.task.queue.general.${p}`)),
        direct: has(per.worker1, `${P}.task.direct.${w1Id}`) && has(per.worker2, `${P}.task.direct.${w2Id}`),
      },
      specialist: {
        heartbeat: has(per.specialist, `${P}.node.heartbeat.`),
        control: has(per.specialist, `${P}.node.${specId}.control`),
        rustQueue: [0, 1, 2, 3].every((p) => has(per.specialist, `${P}.task.queue.rust.${p}`)),
        direct: has(per.specialist, `${P}.task.direct.${specId}`),
      },
    };
    const all = <T extends Record<string, boolean>>(o: T): T => Object.fromEntries(Object.keys(o).map((k) => [k, true])) as T;
    expect(seen).toEqual({ coordinator: all(seen.coordinator), workers: all(seen.workers), specialist: all(seen.specialist) });

    // No real node was reported offline, and the coordinator kept its lease throughout.
    for (const p of swarm.nodes) {
      const wrong = p.lines.filter(
        (l) =>
          (l.includes("Node marked offline") || l.includes("Node left swarm") || l.includes("Coordinator stepped down")) &&
          swarm.ids.some((id) => l.includes(`node=${id} `) || l.endsWith(`node=${id}`)),
      );
      expect(wrong).toEqual([]);
    }
    expect(coord.lines.filter((l) => /Request handling failed|ERROR/.test(l))).toEqual([]);

    // The one-shot dashboard --json, run during the flood, counted what it received per subject: it
    // observes heartbeats and announcements (not the JetStream subjects, which only nodes consume).
    const code = await dashboard.exited(BOUND);
    expect(code).toBe(0);
    const snap = JSON.parse(dashboard.stdout.join("\n")) as DashboardSnapshot;
    const counted = Object.entries(snap.bad_messages.by_subject);
    console.log(
      `fuzz: dashboard --json (an observer, run during the flood) counted ${snap.bad_messages.total} bad messages on ${counted.length} subjects`,
    );
    expect(snap.bad_messages.total).toBeGreaterThan(0);
    expect(counted.reduce((n, [, c]) => n + c, 0)).toBe(snap.bad_messages.total);
    expect(counted.some(([s]) => s.startsWith(`${P}.node.heartbeat.`))).toBe(true);
    expect(counted.every(([s]) => s.startsWith(`${P}.node.heartbeat.`) || s === `${P}.node.announce` || s === "(other subjects)")).toBe(
      true,
    );

    // Each node reports its own drops in its heartbeats: a dashboard run after the flood shows, per
    // node, the total and the busiest subjects, including the JetStream ones only that node consumes.
    const after = await runRole("dashboard.ts", ["--json", ...swarm.common]);
    expect(after.code).toBe(0);
    const view = JSON.parse(after.stdout) as DashboardSnapshot;
    const byNode = (id: string) => view.nodes.find((n) => n.node === id)!.bad_messages;
    const workerBad = byNode(swarm.ids[1]!);
    expect(workerBad.total).toBeGreaterThan(0);
    expect(Object.keys(workerBad.by_subject).some((s) => s.startsWith(`${P}.task.`))).toBe(true);
    expect(Object.keys(byNode(swarm.ids[0]!).by_subject).some((s) => s === `${P}.request.submit`)).toBe(true);
    console.log(
      `fuzz: nodes report ${view.nodes.map((n) => `${n.role}=${n.bad_messages.total}`).join(" ")} dropped messages in their heartbeats`,
    );

    // And afterwards every node still stops gracefully.
    for (const p of swarm.nodes) p.signal("SIGTERM");
    for (const [i, p] of swarm.nodes.entries()) {
      expect({ node: swarm.ids[i], code: await p.exited(BOUND) }).toEqual({ node: swarm.ids[i], code: 0 });
    }
    console.log(`fuzz: whole test ${Date.now() - started} ms`);
  }, 110_000);
});
