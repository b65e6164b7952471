// Identifiers and protocol v1 names (DESIGN §4, §5): every id is one subject token, every name is
// built by lib/subjects.ts, and two swarms (H-ids) never see each other's subjects, streams or buckets.
import { describe, expect, test } from "bun:test";
import { InvalidIdError } from "../lib/errors.ts";
import { isValidId, newHumanId, newNodeId, newSessionId, validateId } from "../lib/ids.ts";
import { nodeIdFromHeartbeat, SWARM_BUCKET, type SwarmNames, swarmNames } from "../lib/subjects.ts";

/** NATS subject matching: `*` is exactly one token, `>` is one or more trailing tokens. */
function matches(pattern: string, subject: string): boolean {
  const p = pattern.split(".");
  const s = subject.split(".");
  for (let i = 0; i < p.length; i++) {
    if (p[i] === ">") return s.length > i;
    if (i >= s.length) return false;
    if (p[i] !== "*" && p[i] !== s[i]) return false;
  }
  return p.length === s.length;
}

/** Whether some subject matches both patterns (what JetStream refuses between two streams). */
function overlap(a: string, b: string): boolean {
  const x = a.split(".");
  const y = b.split(".");
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const u = x[i];
    const v = y[i];
    if (u === undefined || v === undefined) return false;
    if (u === ">" || v === ">") return true;
    if (u !== "*" && v !== "*" && u !== v) return false;
  }
  return true;
}

describe("the test's own NATS wildcard matcher", () => {
  test("follows the NATS rules for * and >", () => {
    expect(matches("a.*.c", "a.b.c")).toBe(true);
    expect(matches("a.*", "a.b.c")).toBe(false);
    expect(matches("a.>", "a.b.c")).toBe(true);
    expect(matches("a.>", "a")).toBe(false);
    expect(matches("a.b", "a.b")).toBe(true);
    expect(matches("a.b", "a.b.c")).toBe(false);
    expect(overlap("a.task.>", "a.event.>")).toBe(false);
    expect(overlap("a.*.x", "a.task.>")).toBe(true);
    expect(overlap("a.b", "a.b.c")).toBe(false);
  });
});

describe("ids", () => {
  const rejected: [string, string][] = [
    [".", "a dot splits a subject token"],
    ["*", "a star is a wildcard"],
    [">", "'>' is a wildcard"],
    [" ", "a space is not allowed in subjects"],
    ["", "an empty token"],
    ["x".repeat(65), "65 characters (max 64)"],
    ["a.b", "dotted id"],
    ["claw a", "embedded space"],
  ];
  for (const [value, why] of rejected) {
    test(`validateId rejects ${JSON.stringify(value.length > 10 ? `${value.slice(0, 6)}...(${value.length})` : value)}: ${why}`, () => {
      expect(isValidId(value)).toBe(false);
      expect(() => validateId("node id", value)).toThrow(InvalidIdError);
    });
  }

  test("the InvalidIdError names the kind of id, the value, and what is allowed", () => {
    let err: unknown;
    try {
      validateId("capability", "x*");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvalidIdError);
    const message = (err as Error).message;
    expect(message).toContain("capability");
    expect(message).toContain('"x*"');
    expect(message).toContain("A-Z a-z 0-9 _ -");
  });

  test("validateId accepts the guide's node id, mixed case with _ and -, and exactly 64 chars", () => {
    for (const ok of ["claw-a1b2c3d4", "A_b-9", "x".repeat(64)]) {
      expect(validateId("node id", ok)).toBe(ok);
    }
  });

  test("newNodeId is claw- plus 8 hex chars, and differs between calls", () => {
    const ids = new Set(Array.from({ length: 20 }, newNodeId));
    for (const id of ids) expect(id).toMatch(/^claw-[0-9a-f]{8}$/);
    expect(ids.size).toBe(20);
  });

  test("generated session and human ids are valid subject tokens and unique", () => {
    const sids = Array.from({ length: 10 }, newSessionId);
    const hids = Array.from({ length: 10 }, newHumanId);
    for (const id of [...sids, ...hids]) expect(isValidId(id)).toBe(true);
    expect(new Set(sids).size).toBe(10);
    expect(new Set(hids).size).toBe(10);
  });
});

describe("swarmNames (protocol v1 subjects, DESIGN §5)", () => {
  const n = swarmNames("h1");

  test("every subject in the table starts with picoclaw.<hid>.", () => {
    expect(n.prefix).toBe("picoclaw.h1");
    expect(n.heartbeat("claw-a1b2c3d4")).toBe("picoclaw.h1.node.heartbeat.claw-a1b2c3d4");
    expect(n.heartbeatAll).toBe("picoclaw.h1.node.heartbeat.*");
    expect(n.announce).toBe("picoclaw.h1.node.announce");
    expect(n.query).toBe("picoclaw.h1.node.query");
    expect(n.control("claw-a1b2c3d4")).toBe("picoclaw.h1.node.claw-a1b2c3d4.control");
    expect(n.requestSubmit).toBe("picoclaw.h1.request.submit");
    expect(n.requestEvents("r-1")).toBe("picoclaw.h1.event.request.r-1");
    expect(n.requestEventsAll).toBe("picoclaw.h1.event.request.*");
    expect(n.taskQueue("rust", 3)).toBe("picoclaw.h1.task.queue.rust.3");
    expect(n.taskDirect("claw-a1b2c3d4")).toBe("picoclaw.h1.task.direct.claw-a1b2c3d4");
    expect(n.taskEvents("r-1", "t-1")).toBe("picoclaw.h1.event.task.r-1.t-1");
    expect(n.taskEventsOf("r-1")).toBe("picoclaw.h1.event.task.r-1.*");
    expect(n.all).toBe("picoclaw.h1.>");
  });

  test("wildcards catch what they are for: all heartbeats, all request events", () => {
    expect(matches(n.heartbeatAll, n.heartbeat("claw-00000001"))).toBe(true);
    expect(matches(n.heartbeatAll, n.announce)).toBe(false);
    expect(matches(n.requestEventsAll, n.requestEvents("r-9"))).toBe(true);
    expect(matches(n.requestEventsAll, n.taskEvents("r-9", "t-9"))).toBe(false);
    expect(nodeIdFromHeartbeat(n, n.heartbeat("claw-00000001"))).toBe("claw-00000001");
    expect(nodeIdFromHeartbeat(n, n.announce)).toBeUndefined();
  });

  test("stream names are PICOCLAW_<HID>_REQUESTS / _TASKS / _EVENTS / _NODES", () => {
    expect(n.streams).toEqual({
      requests: "PICOCLAW_h1_REQUESTS",
      tasks: "PICOCLAW_h1_TASKS",
      events: "PICOCLAW_h1_EVENTS",
      nodes: "PICOCLAW_h1_NODES",
    });
  });

  test("KV bucket names are picoclaw_<hid>_tasks / _leader / _context / _tokens, the answers object store, plus the shared picoclaw_swarm", () => {
    expect(n.buckets).toEqual({
      tasks: "picoclaw_h1_tasks",
      leader: "picoclaw_h1_leader",
      context: "picoclaw_h1_context",
      answers: "picoclaw_h1_answers",
      tokens: "picoclaw_h1_tokens",
    });
    expect(SWARM_BUCKET).toBe("picoclaw_swarm");
  });

  test("the three streams' subjects do not overlap (JetStream would refuse them)", () => {
    const entries = Object.entries(n.streamSubjects);
    for (const [nameA, subsA] of entries) {
      for (const [nameB, subsB] of entries) {
        if (nameA === nameB) continue;
        for (const a of subsA)
          for (const b of subsB) {
            expect({ pair: `${nameA} ${a} / ${nameB} ${b}`, overlap: overlap(a, b) }).toEqual({
              pair: `${nameA} ${a} / ${nameB} ${b}`,
              overlap: false,
            });
          }
      }
    }
  });

  test("each JetStream subject lands in exactly its stream (heartbeats in NODES, as last values); core subjects in none", () => {
    const streamOf = (subject: string) =>
      Object.entries(n.streamSubjects)
        .filter(([, subs]) => subs.some((s) => matches(s, subject)))
        .map(([name]) => name);
    expect(streamOf(n.requestSubmit)).toEqual(["requests"]);
    expect(streamOf(n.taskQueue("code", 0))).toEqual(["tasks"]);
    expect(streamOf(n.taskDirect("claw-a1b2c3d4"))).toEqual(["tasks"]);
    expect(streamOf(n.requestEvents("r-1"))).toEqual(["events"]);
    expect(streamOf(n.taskEvents("r-1", "t-1"))).toEqual(["events"]);
    expect(streamOf(n.heartbeat("claw-a1b2c3d4"))).toEqual(["nodes"]);
    for (const core of [n.announce, n.query, n.control("claw-a1b2c3d4")]) {
      expect({ subject: core, streams: streamOf(core) }).toEqual({ subject: core, streams: [] });
    }
  });

  test("ids that would change matching are rejected before they become subject tokens", () => {
    expect(() => n.heartbeat("a.b")).toThrow(InvalidIdError);
    expect(() => n.control("a.b")).toThrow(InvalidIdError);
    expect(() => n.taskDirect("a.b")).toThrow(InvalidIdError);
    expect(() => n.taskQueue("x*", 0)).toThrow(InvalidIdError);
    expect(() => n.taskQueue("x>", 0)).toThrow(InvalidIdError);
    expect(() => n.requestEvents("r 1")).toThrow(InvalidIdError);
    expect(() => n.taskEvents("r-1", "")).toThrow(InvalidIdError);
    expect(() => n.taskEvents("r.1", "t")).toThrow(InvalidIdError);
    expect(() => swarmNames("h.1")).toThrow(InvalidIdError);
    expect(() => swarmNames("*")).toThrow(InvalidIdError);
  });

  test("task priority is an integer 0-3", () => {
    expect(n.taskQueue("general", 0)).toBe("picoclaw.h1.task.queue.general.0");
    expect(n.taskQueue("general", 3)).toBe("picoclaw.h1.task.queue.general.3");
    for (const bad of [-1, 4, 1.5]) expect(() => n.taskQueue("general", bad)).toThrow(RangeError);
  });
});

describe("isolation between swarms (H-ids)", () => {
  function everySubject(s: SwarmNames): string[] {
    return [
      s.heartbeat("claw-a1b2c3d4"),
      s.announce,
      s.query,
      s.control("claw-a1b2c3d4"),
      s.requestSubmit,
      s.requestEvents("r-1"),
      s.taskQueue("code", 1),
      s.taskDirect("claw-a1b2c3d4"),
      s.taskEvents("r-1", "t-1"),
    ];
  }

  test("each swarm's `all` wildcard matches its own subjects and none of the other's", () => {
    const pairs: [string, string][] = [
      ["h1", "h2"],
      ["h1", "h1x"],
      ["team-a", "team_a"],
      ["prod", "PROD"],
    ];
    for (const [x, y] of pairs) {
      const a = swarmNames(x);
      const b = swarmNames(y);
      for (const subject of everySubject(a)) {
        expect({ pattern: a.all, subject, matches: matches(a.all, subject) }).toEqual({ pattern: a.all, subject, matches: true });
        expect({ pattern: b.all, subject, matches: matches(b.all, subject) }).toEqual({ pattern: b.all, subject, matches: false });
      }
      for (const subject of everySubject(b)) {
        expect({ pattern: a.all, subject, matches: matches(a.all, subject) }).toEqual({ pattern: a.all, subject, matches: false });
      }
      for (const sa of Object.values(a.streamSubjects).flat()) {
        for (const sb of Object.values(b.streamSubjects).flat()) {
          expect({ a: sa, b: sb, overlap: overlap(sa, sb) }).toEqual({ a: sa, b: sb, overlap: false });
        }
      }
    }
  });

  test("distinct H-ids never share a stream or KV bucket name, even when they differ only by case or - vs _", () => {
    const hids = ["team-a", "team_a", "TEAM-A", "prod", "PROD", "h1"];
    const names = hids.flatMap((h) => {
      const s = swarmNames(h);
      return [...Object.values(s.streams), ...Object.values(s.buckets)];
    });
    const dupes = names.filter((name, i) => names.indexOf(name) !== i);
    expect(dupes).toEqual([]);
    expect(names).not.toContain(SWARM_BUCKET);
  });
});
