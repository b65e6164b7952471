// Hostile input: a running swarm is flooded with malformed messages on every subject its nodes listen to.
// Nothing may crash, no real node may be reported offline or gone, every bad message is dropped and
// counted, and the swarm still answers afterwards. Real nats-server, real role processes, no mocks.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { connect, type Msg, type NatsConnection, RequestStrategy } from "nats";
import type { DashboardSnapshot } from "../roles/dashboard/snapshot.ts";
import { type NatsServer, startNatsServer } from "./helpers/nats-server.ts";
import { FAST, type RoleProcess, reaper, spawnRole, tempHome } from "./helpers/role-process.ts";
import { waitFor } from "./helpers/wait.ts";

const HID = "fuzz1";
const P = `picoclaw.${HID}.node`;
const BOUND = 15_000;

const te = new TextEncoder();
const bytes = (s: string) => te.encode(s);
const json = (v: unknown) => bytes(JSON.stringify(v));

interface Real {
  name: string;
  proc: RoleProcess;
  id: string;
  role: "coordinator" | "worker" | "specialist";
  caps: string[];
  /** Its NodeInfo as it answers `node.query`. */
  info: Record<string, unknown>;
}

/** The node id a role process announces for itself. */
async function selfId(p: RoleProcess): Promise<string> {
  const line = await p.waitForLine(/Node joined swarm node=\S+ .*self=true/, BOUND);
  return /node=(\S+)/.exec(line)![1]!;
}

/** A heartbeat that passes the schema; every bad message below is derived from it. */
function validInfo(node: string, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
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
    ...over,
  };
}

const DEEP_ARRAY = "[".repeat(10_000) + "]".repeat(10_000);
const DEEP_OBJECT = `${'{"a":'.repeat(10_000)}1${"}".repeat(10_000)}`;
const BAD_IDS = ["a.b", "*", ">", "a b", "", "x".repeat(65), "claw-é", "a\nb", "claw-*", "claw->"];

/** Payloads that must fail to decode as a heartbeat, an announcement, a query or a control message. */
function badPayloads(realIds: string[]): { kind: string; data: Uint8Array }[] {
  const out: { kind: string; data: Uint8Array }[] = [];
  const add = (kind: string, data: Uint8Array) => out.push({ kind, data });
  const valid = JSON.stringify(validInfo(realIds[0]!));
  add("empty", new Uint8Array(0));
  for (let i = 0; i < 8; i++) add("random bytes", randomBytes(1 + Math.floor(Math.random() * 512)));
  for (let i = 0; i < 8; i++) add("truncated JSON", bytes(valid.slice(0, 1 + Math.floor(Math.random() * (valid.length - 1)))));
  add("wrong type running", json(validInfo(realIds[0]!, { running: "x" })));
  add("wrong type v", json(validInfo(realIds[0]!, { v: "1" })));
  add("wrong type node", json(validInfo(123 as unknown as string)));
  add("wrong type capabilities", json(validInfo(realIds[1]!, { capabilities: "rust" })));
  add("too many capabilities", json(validInfo(realIds[1]!, { capabilities: Array.from({ length: 100 }, (_, i) => `c${i}`) })));
  add("negative max_concurrent", json(validInfo(realIds[2]!, { max_concurrent: -1 })));
  add("float running", json(validInfo(realIds[2]!, { running: 1.5 })));
  add("unknown status", json(validInfo(realIds[0]!, { status: "dead" })));
  add("unknown role", json(validInfo(realIds[0]!, { role: "king" })));
  add("zero heartbeat_interval", json(validInfo(realIds[0]!, { heartbeat_interval: 0 })));
  add("string started_at", json(validInfo(realIds[0]!, { started_at: "now" })));
  add("v 2", json(validInfo(realIds[0]!, { v: 2 })));
  add("v 2 announce", json({ v: 2, kind: "join", info: validInfo(realIds[0]!) }));
  add("v 2 query", json({ v: 2, from: "claw-fuzzer" }));
  for (const key of Object.keys(validInfo("x"))) {
    const info = validInfo(realIds[0]!);
    delete info[key];
    add(`missing ${key}`, json(info));
  }
  add("null", bytes("null"));
  add("number", bytes("42"));
  add("string", bytes('"heartbeat"'));
  add("array", bytes("[1,2,3]"));
  add("empty object", bytes("{}"));
  add("__proto__", bytes(`{"__proto__":{"v":1,"polluted":true},"constructor":{"prototype":{"x":1}}}`));
  add("deep array", bytes(DEEP_ARRAY));
  add("deep object", bytes(DEEP_OBJECT));
  add("deep in field", bytes(`{"v":1,"node":"${realIds[0]}","capabilities":${DEEP_ARRAY}}`));
  add("deep announce", bytes(`{"v":1,"kind":"join","info":${DEEP_OBJECT}}`));
  add("oversized JSON", json(validInfo(realIds[0]!, { host: "h".repeat(200 * 1024) })));
  add("oversized bytes", randomBytes(200 * 1024));
  add("long version", json(validInfo(realIds[0]!, { version: "v".repeat(100) })));
  add("negative done", json(validInfo(realIds[0]!, { done: -1 })));
  add("tasks not an array", json(validInfo(realIds[0]!, { tasks: { request: "r1" } })));
  add("task with bad ids", json(validInfo(realIds[0]!, { tasks: [{ request: "a.b", task: ">", capability: "*", started_at: 0 }] })));
  add(
    "too many tasks",
    json(
      validInfo(realIds[0]!, {
        tasks: Array.from({ length: 1001 }, (_, i) => ({ request: `r${i}`, task: "t", capability: "general", started_at: 0 })),
      }),
    ),
  );
  for (const bad of BAD_IDS) {
    add(`bad node id ${JSON.stringify(bad)}`, json(validInfo(bad)));
    add(`bad sid ${JSON.stringify(bad)}`, json(validInfo(realIds[0]!, { sid: bad })));
    add(`bad capability ${JSON.stringify(bad)}`, json(validInfo(realIds[0]!, { capabilities: [bad] })));
    add(`bad query from ${JSON.stringify(bad)}`, json({ v: 1, from: bad }));
  }
  add("announce unknown kind", json({ v: 1, kind: "explode", info: validInfo(realIds[0]!) }));
  add("announce without info", json({ v: 1, kind: "leave" }));
  add("announce bad info", json({ v: 1, kind: "leave", info: { node: realIds[0] } }));
  add("query without from", json({ v: 1 }));
  // Control messages that are no valid control (never a real drain/shutdown).
  add("control unknown action", json({ v: 1, action: "explode" }));
  add("control upper-case action", json({ v: 1, action: "SHUTDOWN" }));
  add("control v 2", json({ v: 2, action: "ping" }));
  add("control action number", json({ v: 1, action: 7 }));
  return out;
}

describe("hostile input", () => {
  let nats: NatsServer;
  let nc: NatsConnection;
  const procs = reaper();
  const real: Real[] = [];
  let observer: RoleProcess;

  beforeAll(async () => {
    nats = await startNatsServer();
    const common = ["--swarm.hid", HID, "--swarm.nats.urls", nats.url, ...FAST];
    // The live dashboard (not a TTY: a plain frame on every change, at most every second here) starts
    // before the flood and counts what it drops.
    observer = procs.track(spawnRole("dashboard.ts", [...common, "--log.dashboard_interval", "0s"], { home: tempHome() }));
    const specs = [
      { name: "coordinator", script: "coordinator.ts", role: "coordinator", caps: ["general"], extra: [] },
      { name: "worker", script: "worker.ts", role: "worker", caps: ["general"], extra: [] },
      { name: "specialist", script: "specialist.ts", role: "specialist", caps: ["rust"], extra: ["--swarm.capabilities", "rust"] },
    ] as const;
    const started = specs.map((s) => procs.track(spawnRole(s.script, [...common, ...s.extra], { home: tempHome() })));
    for (const [i, s] of specs.entries()) {
      const proc = started[i]!;
      real.push({ name: s.name, proc, id: await selfId(proc), role: s.role, caps: [...s.caps], info: {} });
    }
    // Everyone knows everyone before the flood starts.
    for (const r of real) {
      for (const other of real) {
        if (other !== r) await r.proc.waitForLine(new RegExp(`Node joined swarm node=${other.id} `), BOUND);
      }
    }
    await waitFor(
      "the live dashboard to show all three nodes",
      () => {
        const text = observer.output();
        return real.every((r) => text.includes(r.id));
      },
      BOUND,
    );
    nc = await connect({ servers: nats.url, name: "fuzzer" });
    await waitFor(
      "every node to answer node.query",
      async () => {
        const replies = await nc.requestMany(`${P}.query`, json({ v: 1, from: "claw-fuzzer" }), {
          strategy: RequestStrategy.Timer,
          maxWait: 1_000,
        });
        for await (const m of replies) {
          const info = JSON.parse(new TextDecoder().decode(m.data)) as Record<string, unknown>;
          const r = real.find((x) => x.id === info.node);
          if (r) r.info = info;
        }
        return real.every((r) => r.info.node === r.id);
      },
      BOUND,
      100,
    );
  }, 60_000);

  afterAll(async () => {
    await nc?.close().catch(() => {});
    await procs.killAll();
    await nats?.stop();
  });

  test("a flood of 2000+ malformed messages on every subject crashes nothing and removes no node", async () => {
    const ids = real.map((r) => r.id);
    const payloads = badPayloads(ids);
    const randomId = () => `claw-${randomBytes(4).toString("hex")}`;
    // Every subject a node listens to, with real ids, random ids, and ids that would change matching.
    const subjects = [
      ...ids.map((id) => `${P}.heartbeat.${id}`),
      `${P}.heartbeat.claw-00000000`,
      `${P}.heartbeat.*`,
      `${P}.heartbeat.>`,
      `${P}.heartbeat.a.b`,
      `${P}.heartbeat.claw-x.>`,
      `${P}.announce`,
      `${P}.query`,
      ...ids.map((id) => `${P}.${id}.control`),
      `${P}.*.control`,
      `${P}.>`,
    ];
    // Replies to bad messages. None may come from membership; a control handler may answer a bad request,
    // but only with a refusal (ok: false), so its replies go to their own inbox.
    // Subjects nobody listens on (`heartbeat.a.b`, `*.control`...) get the server's empty 503 "no responders"
    // status instead: that is not an answer from a node.
    const answers = (into: string[]) => (_err: unknown, m: Msg) => {
      if (m.headers?.code !== 503) into.push(`${m.subject}: ${new TextDecoder().decode(m.data)}`);
    };
    const membershipReplies: string[] = [];
    const controlReplies: string[] = [];
    const inbox = nc.subscribe(`_INBOX.fuzz.membership.>`, { callback: answers(membershipReplies) });
    const controlInbox = nc.subscribe(`_INBOX.fuzz.control.>`, { callback: answers(controlReplies) });
    let sent = 0;
    /** Bad messages the observer must count: it subscribes to `heartbeat.*` and `announce`. */
    let countable = 0;
    const send = (subject: string, data: Uint8Array, withReply: boolean) => {
      const box = subject.endsWith(".control") ? "control" : "membership";
      nc.publish(subject, data, withReply ? { reply: `_INBOX.fuzz.${box}.${sent}` } : undefined);
      sent++;
      const tokens = subject.split(".");
      if ((tokens.length === 5 && subject.startsWith(`${P}.heartbeat.`)) || subject === `${P}.announce`) countable++;
    };

    const floodStarted = Date.now();
    // A: every payload kind on every fixed subject, with and without a reply subject.
    for (const subject of subjects) {
      for (const [i, p] of payloads.entries()) send(subject, p.data, i % 2 === 0);
      await nc.flush();
    }
    // B: random ids in the heartbeat subject, random payload kinds.
    for (let i = 0; i < 600; i++) {
      send(`${P}.heartbeat.${randomId()}`, payloads[Math.floor(Math.random() * payloads.length)]!.data, i % 3 === 0);
      if (i % 50 === 0) await nc.flush();
    }
    // C: valid heartbeats whose node differs from the subject (both ways round), on real and random ids.
    for (const [i, id] of ids.entries()) {
      const other = ids[(i + 1) % ids.length]!;
      send(`${P}.heartbeat.${id}`, json(validInfo(other)), false);
      send(`${P}.heartbeat.${id}`, json(validInfo(randomId())), false);
      send(`${P}.heartbeat.${randomId()}`, json(validInfo(id)), false);
      send(`${P}.heartbeat.${randomId()}`, json(validInfo(randomId())), false);
    }
    // D: ids with dots, stars, '>' and spaces inside well-formed messages on every listening subject.
    for (const bad of BAD_IDS) {
      send(`${P}.heartbeat.claw-00000001`, json(validInfo(bad)), false);
      send(`${P}.announce`, json({ v: 1, kind: "join", info: validInfo(bad) }), false);
      send(`${P}.announce`, json({ v: 1, kind: "leave", info: validInfo(bad) }), false);
      send(`${P}.query`, json({ v: 1, from: bad }), true);
    }
    await nc.flush();
    const badCount = sent;

    // E: a well-formed leave for every real node (its own info as it answered a query), but with the wrong
    // session id: it must not remove them.
    for (const r of real) {
      nc.publish(`${P}.announce`, json({ v: 1, kind: "leave", info: { ...r.info, sid: "s-wrongsession0" } }));
      sent++;
    }
    await nc.flush();
    expect(sent).toBeGreaterThanOrEqual(2000);

    // Core NATS keeps order per connection: a node that answers this query has handled the whole flood.
    const seen = new Set<string>();
    await waitFor(
      "query replies from all three nodes after the flood",
      async () => {
        const replies = await nc.requestMany(`${P}.query`, json({ v: 1, from: "claw-fuzzer" }), {
          strategy: RequestStrategy.Timer,
          maxWait: 2_000,
        });
        for await (const m of replies) {
          const info = JSON.parse(new TextDecoder().decode(m.data)) as { node: string };
          seen.add(info.node);
        }
        return ids.every((id) => seen.has(id));
      },
      BOUND,
      100,
    );

    // The observer counts exactly the malformed messages it received (heartbeat.* and announce).
    const dropped = await waitFor(
      `the live dashboard to report ${countable} dropped malformed messages`,
      () => {
        const counts = [...observer.output().matchAll(/Dropped malformed messages: (\d+)/g)].map((m) => Number(m[1]));
        const last = counts.at(-1);
        return last === countable ? last : undefined;
      },
      BOUND,
      100,
    );
    expect(dropped).toBeGreaterThan(0);

    // Nobody crashed.
    for (const r of [...real, { name: "dashboard", proc: observer }]) {
      const tail = r.proc.proc.exitCode === null ? "" : r.proc.lines.slice(-15).join("\n");
      expect({ node: r.name, exitCode: r.proc.proc.exitCode, tail }).toEqual({ node: r.name, exitCode: null, tail: "" });
    }

    // Nobody reported a real node offline or gone (the leave with the wrong sid included).
    for (const r of [...real.map((x) => x.proc), observer]) {
      for (const id of ids) {
        const wrong = r.lines.filter(
          (l) => (l.includes("Node marked offline") || l.includes("Node left swarm")) && l.includes(`node=${id} `),
        );
        expect(wrong).toEqual([]);
      }
    }

    // Every node dropped (and logged) bad input, and the logging stayed rate-limited.
    for (const r of real) {
      const logged = r.proc.countLines(/Dropped malformed message/);
      expect({ node: r.name, logged: logged > 0 }).toEqual({ node: r.name, logged: true });
      // At most one line per counted subject (200 tracked + "(other subjects)") per 5s window, whatever the ids.
      const windows = 1 + Math.ceil((Date.now() - floodStarted) / 5_000);
      const bound = Math.min(201 * windows, Math.floor(badCount / 4));
      expect({ node: r.name, logged, atMost: bound, ok: logged <= bound }).toEqual({ node: r.name, logged, atMost: bound, ok: true });
    }

    // Bad heartbeats, announcements and queries were never answered (our valid queries used another inbox).
    expect(membershipReplies).toEqual([]);
    inbox.unsubscribe();
    // A control handler may answer a bad request, but only ever with a refusal.
    const accepted = controlReplies.filter((r) => {
      try {
        return (JSON.parse(r.slice(r.indexOf(": ") + 2)) as { ok?: unknown }).ok !== false;
      } catch {
        return true;
      }
    });
    expect(accepted).toEqual([]);
    expect(controlReplies.length).toBeGreaterThan(0);
    controlInbox.unsubscribe();

    // A fresh observer sees the swarm exactly as it was: three nodes, online, with their roles and capabilities.
    const snap = await waitFor(
      "a fresh dashboard --json listing all three nodes online",
      async () => {
        const p = spawnRole("dashboard.ts", ["--json", "--swarm.hid", HID, "--swarm.nats.urls", nats.url], { home: tempHome() });
        const code = await p.exited(BOUND);
        if (code !== 0) throw new Error(`dashboard --json exited ${code}: ${p.output()}`);
        const s = JSON.parse(p.stdout.join("\n")) as DashboardSnapshot;
        const online = s.nodes.filter((n) => ids.includes(n.node) && n.status === "online");
        return online.length === 3 ? s : undefined;
      },
      30_000,
      100,
    );
    for (const r of real) {
      const n = snap.nodes.find((x) => x.node === r.id);
      expect(n && { role: n.role, status: n.status, capabilities: n.capabilities }).toEqual({
        role: r.role,
        status: "online",
        capabilities: r.caps,
      });
    }
    expect(snap.hid).toBe(HID);
    expect(snap.stats.nodes.total).toBe(3);

    // Graceful stop still works after the flood.
    for (const r of real) r.proc.signal("SIGTERM");
    for (const r of real) {
      const code = await r.proc.exited(BOUND);
      expect({ node: r.name, code }).toEqual({ node: r.name, code: 0 });
    }
    observer.signal("SIGTERM");
    expect(await observer.exited(BOUND)).toBe(0);
  }, 120_000);
});
