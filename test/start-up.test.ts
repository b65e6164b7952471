// Start-up steps that talk to JetStream (lib/node.ts duringStartUp), against a real nats-server: what is
// tried again (nodes starting at the same instant on a cluster race to create the same bucket, and the
// loser can be told "stream not found" for a moment), and how a step that keeps failing ends start-up.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { connect, type NatsConnection } from "nats";
import { reportError } from "../lib/cli.ts";
import { loadConfig } from "../lib/config.ts";
import type { Logger } from "../lib/log.ts";
import { duringStartUp } from "../lib/node.ts";
import { type NatsServer, startNatsServer } from "./helpers/nats-server.ts";
import { tempHome } from "./helpers/role-process.ts";

let nats: NatsServer;
let nc: NatsConnection;
beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
});
afterAll(async () => {
  await nc.close();
  await nats.stop();
});

function recordingLogger(lines: string[]): Logger {
  const line = (level: string) => (msg: string, fields?: Record<string, unknown>) =>
    lines.push(`${level} ${msg} ${JSON.stringify(fields ?? {})}`);
  return {
    debug: line("DEBUG"),
    info: line("INFO"),
    warn: line("WARN"),
    error: line("ERROR"),
    warnLimited: (_k, _e, m, f) => line("WARN")(m, f),
    setLevel() {},
  };
}
const config = (connectTimeout: string) =>
  loadConfig({ flags: { "swarm.nats.connect_timeout": connectTimeout }, env: {}, home: tempHome() }).config;

test("a stream another node is still creating: 'stream not found' is tried again, with one warning, until it is there", async () => {
  const jsm = await nc.jetstreamManager();
  const lines: string[] = [];
  const seen: string[] = [];
  const step = async () => {
    try {
      return (await jsm.streams.info("SU_LATE")).config.name;
    } catch (err) {
      seen.push((err as Error).message);
      // The other node's create lands while we wait to try again.
      if (seen.length === 1) await jsm.streams.add({ name: "SU_LATE", subjects: ["su.late"] });
      throw err;
    }
  };
  expect(await duringStartUp(config("10s"), recordingLogger(lines), "open the tasks bucket", step)).toBe("SU_LATE");
  expect(seen).toEqual(["stream not found"]);
  expect(lines.filter((l) => l.startsWith("WARN JetStream not ready yet; trying again"))).toHaveLength(1);
  expect(lines[0]).toContain('"step":"open the tasks bucket"');
});

test("a stream that never comes: start-up ends after connect_timeout with an error naming the step, exit 4", async () => {
  const jsm = await nc.jetstreamManager();
  const started = Date.now();
  const err = await duringStartUp(config("1500ms"), recordingLogger([]), "open the tasks bucket", () => jsm.streams.info("SU_NEVER")).then(
    () => undefined,
    (e: Error) => e,
  );
  expect(Date.now() - started).toBeGreaterThanOrEqual(1_400);
  expect(err?.message).toBe("cannot open the tasks bucket: stream not found (404)");
  const printed: string[] = [];
  const original = console.error;
  console.error = (s: string) => printed.push(s);
  try {
    expect(reportError(err)).toBe(4);
  } finally {
    console.error = original;
  }
  expect(printed).toEqual(["picoclaw: cannot open the tasks bucket: stream not found (404)"]);
});

test("an error that is not the server settling (a setting it refuses) ends start-up at once, naming the step", async () => {
  const jsm = await nc.jetstreamManager();
  const lines: string[] = [];
  const started = Date.now();
  await jsm.streams.add({ name: "SU_FIRST", subjects: ["su.taken"] });
  const err = await duringStartUp(config("10s"), recordingLogger(lines), "create the swarm's streams", () =>
    jsm.streams.add({ name: "SU_SECOND", subjects: ["su.taken"] }),
  ).then(
    () => undefined,
    (e: Error) => e,
  );
  expect(Date.now() - started).toBeLessThan(5_000);
  expect(err?.message).toMatch(/^cannot create the swarm's streams: subjects overlap with an existing stream \(400\)$/);
  expect(lines).toEqual([]);
});
