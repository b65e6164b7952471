// HTTP on a node (`--swarm.http.listen`): /healthz and /readyz follow the NATS link and the join, and
// /metrics moves with real work and passes `promtool check metrics` (Debian's prometheus package).
import { describe, expect, test } from "bun:test";
import { IDLE_TIMEOUT_S } from "../lib/http.ts";
import { MAX_EVENT_CLIENTS } from "../roles/dashboard/web-routes.ts";
import { runRole, spawnRole } from "./helpers/role-process.ts";
import { swarmSuite } from "./helpers/suite.ts";
import { submit } from "./helpers/swarm.ts";
import { requireTool } from "./helpers/tools.ts";
import { waitFor } from "./helpers/wait.ts";

const suite = swarmSuite();
const HTTP = ["--swarm.http.listen", "127.0.0.1:0"];

/** The URL a node logged when it started listening. */
function httpUrl(lines: string[]): string {
  const url = lines.map((l) => /HTTP listening url=(\S+)/.exec(l)?.[1]).find(Boolean);
  if (!url) throw new Error(`no "HTTP listening" line in:\n${lines.join("\n")}`);
  return url;
}

/** One sample's value from a Prometheus exposition, by metric name and exact labels; 0 when absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split("\n")) {
    if (line.startsWith("#") || !line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[3] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v) && Object.keys(have).length === Object.keys(labels).length)
      return Number(m[4]);
  }
  return 0;
}

async function get(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  return { status: res.status, body: await res.text() };
}

async function promtool(text: string): Promise<{ code: number; output: string }> {
  const p = Bun.spawn([requireTool("promtool", "apt-get install prometheus"), "check", "metrics"], {
    stdin: new Blob([text]),
    stdout: "pipe",
    stderr: "pipe",
  });
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  return { code: await p.exited, output: out + err };
}

describe("node HTTP", () => {
  test("healthz, readyz and metrics on a coordinator and a worker; metrics move with a real request and pass promtool", async () => {
    const swarm = await suite.start("http1", [
      { script: "coordinator.ts", args: HTTP, env: suite.llmEnv() },
      { script: "worker.ts", args: HTTP, env: suite.llmEnv() },
    ]);
    const [coordUrl, workerUrl] = swarm.nodes.map((p) => httpUrl(p.lines)) as [string, string];

    for (const url of [coordUrl, workerUrl]) {
      const health = await get(`${url}/healthz`);
      expect(health.status).toBe(200);
      expect(JSON.parse(health.body)).toMatchObject({ status: "ok", nats: "connected" });
      const ready = await get(`${url}/readyz`);
      expect(ready.status).toBe(200);
      expect(JSON.parse(ready.body)).toMatchObject({ status: "ready", joined: true, jetstream: "ok" });
      expect((await get(`${url}/nothing-here`)).status).toBe(404);
    }

    // Both online (a heartbeat late by two intervals on a loaded machine reads "suspicious" for a moment).
    const before = await waitFor(
      "the worker's /metrics to count two nodes online",
      async () => {
        const body = (await get(`${workerUrl}/metrics`)).body;
        return sample(body, "picoclaw_nodes", { status: "online" }) === 2 ? body : undefined;
      },
      10_000,
      100,
    );
    expect(sample(before, "picoclaw_subtasks_total", { capability: "general", outcome: "completed" })).toBe(0);

    const r = await submit(swarm, ["Say hello [[tokens=7]]"]);
    expect(r.code).toBe(0);

    const after = (await get(`${workerUrl}/metrics`)).body;
    expect(sample(after, "picoclaw_subtasks_total", { capability: "general", outcome: "completed" })).toBe(1);
    expect(sample(after, "picoclaw_llm_tokens_total", { capability: "general", model: "test-model", type: "completion" })).toBe(7);
    expect(sample(after, "picoclaw_llm_request_duration_seconds_count", { model: "test-model", outcome: "ok" })).toBe(1);
    expect(after).toMatch(new RegExp(`picoclaw_node_info\\{hid="http1",node="${swarm.ids[1]}",role="worker",version="[^"]+"\\} 1`));
    const coord = (await get(`${coordUrl}/metrics`)).body;
    await waitFor(
      "the coordinator's answered count",
      async () => sample((await get(`${coordUrl}/metrics`)).body, "picoclaw_requests_total", { status: "completed" }) === 1,
    );

    for (const text of [after, coord]) {
      const check = await promtool(text);
      expect(check.output).toBe("");
      expect(check.code).toBe(0);
    }
  });

  test("NATS down: healthz and readyz say 503 with the link state; back up: 200 again", async () => {
    const swarm = await suite.start("http2", [{ script: "worker.ts", args: HTTP }]);
    const url = httpUrl(swarm.nodes[0]!.lines);
    expect((await get(`${url}/healthz`)).status).toBe(200);
    await suite.nats.down();
    await waitFor("healthz 503 while NATS is down", async () => (await get(`${url}/healthz`)).status === 503, 15_000);
    const down = JSON.parse((await get(`${url}/readyz`)).body);
    expect(down.status).toBe("not ready");
    expect(down.nats).not.toBe("connected");
    await suite.nats.up();
    await waitFor("healthz 200 after NATS is back", async () => (await get(`${url}/healthz`)).status === 200, 20_000);
    await waitFor("readyz 200 after NATS is back", async () => (await get(`${url}/readyz`)).status === 200, 20_000);
    const metrics = (await get(`${url}/metrics`)).body;
    expect(sample(metrics, "picoclaw_nats_reconnects_total")).toBe(1);
    expect(sample(metrics, "picoclaw_nats_connected")).toBe(1);
  });

  test("a bad or taken address stops start-up naming swarm.http.listen", async () => {
    const bad = await runRole("worker.ts", ["--swarm.http.listen", "localhost", "--swarm.nats.urls", suite.nats.url]);
    expect(bad.code).toBe(2);
    expect(bad.output).toContain("invalid config swarm.http.listen");
    expect(bad.output).toContain("HOST:PORT");
    const holder = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("taken") });
    try {
      const taken = await runRole("worker.ts", [
        "--swarm.http.listen",
        `127.0.0.1:${holder.port}`,
        "--swarm.nats.urls",
        suite.nats.url,
        "--swarm.hid",
        "http3",
      ]);
      expect(taken.code).toBe(2);
      expect(taken.output).toContain("invalid config swarm.http.listen");
      expect(taken.output).toContain("a free address to listen on");
    } finally {
      holder.stop(true);
    }
  });

  test("picoclaw health asks the node's /healthz: exit 0 when healthy, 1 when nothing answers", async () => {
    const swarm = await suite.start("http4", [{ script: "worker.ts", args: ["--swarm.http.listen", "127.0.0.1:0"] }]);
    const port = new URL(httpUrl(swarm.nodes[0]!.lines)).port;
    const ok = await runRole("picoclaw.ts", ["health", "--swarm.http.listen", `0.0.0.0:${port}`]);
    expect(ok.code).toBe(0);
    expect(ok.output).toContain('"status":"ok"');
    await swarm.stop();
    const gone = await runRole("picoclaw.ts", ["health", "--swarm.http.listen", `127.0.0.1:${port}`]);
    expect(gone.code).toBe(1);
    expect(gone.output).toContain("no answer");
  });
});

describe("HTTP that a web page or a slow client cannot abuse", () => {
  test("on loopback only a loopback Host is answered (DNS rebinding); a silent connection is closed (slowloris)", async () => {
    const swarm = await suite.start("http5", [{ script: "worker.ts", args: HTTP, env: { PICOCLAW_LLM_PROVIDER: "echo" } }]);
    const url = httpUrl(swarm.nodes[0]!.lines);
    const port = Number(new URL(url).port);
    const withHost = async (host: string) => {
      const socket = await Bun.connect({
        hostname: "127.0.0.1",
        port,
        socket: {
          data(s, d) {
            (s.data as { got: string }).got += new TextDecoder().decode(d);
          },
        },
        data: { got: "" },
      });
      socket.write(`GET /metrics HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
      const got = await waitFor(
        `an answer for Host ${host}`,
        () => /HTTP\/1\.1 (\d{3})/.exec((socket.data as { got: string }).got)?.[1],
        5_000,
      );
      socket.end();
      return Number(got);
    };
    expect(await withHost(`127.0.0.1:${port}`)).toBe(200);
    expect(await withHost(`localhost:${port}`)).toBe(200);
    expect(await withHost(`[::1]:${port}`)).toBe(200);
    expect(await withHost(`attacker.example:${port}`)).toBe(421);

    // Half a request, then nothing: the server closes the connection after its idle timeout.
    let closed = false;
    const slow = await Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        data() {},
        close() {
          closed = true;
        },
      },
    });
    slow.write(`GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n`);
    await waitFor("the silent connection to be closed", () => closed, (IDLE_TIMEOUT_S + 10) * 1000, 100);
  }, 60_000);
});

test("the web dashboard serves at most 100 pages' event streams; the next is told to retry", async () => {
  const swarm = await suite.start("http6", [{ script: "worker.ts", env: { PICOCLAW_LLM_PROVIDER: "echo" } }]);
  const dash = spawnRole("dashboard.ts", [...swarm.common, ...HTTP]);
  const ctl = new AbortController();
  try {
    const url = /HTTP listening url=(\S+)/.exec(await dash.waitForLine(/HTTP listening url=/, 15_000))![1]!;
    const open = await Promise.all(Array.from({ length: MAX_EVENT_CLIENTS }, () => fetch(`${url}/events`, { signal: ctl.signal })));
    expect(open.every((r) => r.status === 200)).toBe(true);
    const extra = await fetch(`${url}/events`);
    expect(extra.status).toBe(503);
    expect(extra.headers.get("retry-after")).toBe("5");
    // /api/state still answers.
    expect((await fetch(`${url}/api/state`)).status).toBe(200);
  } finally {
    ctl.abort();
    dash.signal("SIGTERM");
    await dash.exited(15_000).catch(() => dash.proc.kill("SIGKILL"));
  }
}, 60_000);

describe("who sees the web dashboard", () => {
  test("with keys: a key in the address once (then a cookie) or a bearer header; without one 401; probes and metrics stay open", async () => {
    const swarm = await suite.start("http7", [{ script: "worker.ts", env: { PICOCLAW_LLM_PROVIDER: "echo" } }]);
    const key = "dash-key-0123456789";
    const dash = spawnRole("dashboard.ts", [...swarm.common, ...HTTP, "--swarm.http.dashboard_keys", key]);
    try {
      const url = /HTTP listening url=(\S+)/.exec(await dash.waitForLine(/HTTP listening url=/, 15_000))![1]!;
      expect((await fetch(`${url}/api/state`)).status).toBe(401);
      expect((await fetch(`${url}/`)).status).toBe(401);
      expect((await fetch(`${url}/?key=wrong-key-000`)).status).toBe(401);
      expect((await fetch(`${url}/api/state`, { headers: { authorization: `Bearer ${key}` } })).status).toBe(200);
      const opened = await fetch(`${url}/?key=${key}`, { redirect: "manual" });
      expect(opened.status).toBe(303);
      expect(opened.headers.get("location")).toBe("/");
      const cookie = opened.headers.get("set-cookie")!.split(";")[0]!;
      expect(cookie).not.toContain(key); // the key's digest, never the key
      expect((await fetch(`${url}/`, { headers: { cookie } })).status).toBe(200);
      const events = await fetch(`${url}/events`, { headers: { cookie } });
      expect(events.status).toBe(200);
      await events.body?.cancel();
      for (const open of ["/healthz", "/metrics"]) expect((await fetch(`${url}${open}`)).status).toBe(200);
    } finally {
      dash.signal("SIGTERM");
      await dash.exited(15_000).catch(() => dash.proc.kill("SIGKILL"));
    }
  }, 60_000);

  test("beyond loopback without keys: the pages are refused naming the key (and a warning at start); probes and metrics answer", async () => {
    const swarm = await suite.start("http8", [{ script: "worker.ts", env: { PICOCLAW_LLM_PROVIDER: "echo" } }]);
    const dash = spawnRole("dashboard.ts", [...swarm.common, "--swarm.http.listen", "0.0.0.0:0"]);
    try {
      const port = new URL(/HTTP listening url=(\S+)/.exec(await dash.waitForLine(/HTTP listening url=/, 15_000))![1]!).port;
      const local = `http://127.0.0.1:${port}`;
      const page = await fetch(`${local}/api/state`);
      expect(page.status).toBe(403);
      expect(((await page.json()) as { error: string }).error).toContain(
        "set keys (PICOCLAW_SWARM_HTTP_DASHBOARD_KEYS), or listen on 127.0.0.1",
      );
      expect(dash.output()).toContain("Web dashboard pages refused: the web dashboard listens beyond loopback");
      for (const open of ["/healthz", "/metrics"]) expect((await fetch(`${local}${open}`)).status).toBe(200);
    } finally {
      dash.signal("SIGTERM");
      await dash.exited(15_000).catch(() => dash.proc.kill("SIGKILL"));
    }
  }, 60_000);
});
