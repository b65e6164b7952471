// compose.yaml matches the guide's example (plus health checks, start order, the code-review
// specialists and the dashboard), and every variable it sets is one the nodes understand.
// test/container.test.ts runs it for real.
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { loadConfig } from "../lib/config.ts";
import { parseDuration } from "../lib/duration.ts";
import { ROOT } from "./helpers/role-process.ts";

interface Service {
  image: string;
  command?: string | string[];
  environment?: string[];
  profiles?: string[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[]; interval?: string; start_period?: string };
  restart?: string;
  stop_grace_period?: string;
  ports?: string[];
  deploy?: { replicas?: number };
}

// merge: the `<<: *node` keys, as docker-compose (PyYAML) reads them.
/** Compose's variable substitution as written in the file: subst("X:-y") is "${X:-y}". */
const subst = (v: string) => `\${${v}}`;
const compose = parse(readFileSync(join(ROOT, "compose.yaml"), "utf8"), { merge: true }) as { services: Record<string, Service> };
const nodes = Object.entries(compose.services).filter(([, s]) => s.image === subst("PICOCLAW_IMAGE:-picoclaw:latest"));
const envOf = (svc: Service) => Object.fromEntries((svc.environment ?? []).map((e) => e.split("=", 2) as [string, string]));
const configOf = (svc: Service) => loadConfig({ flags: {}, env: envOf(svc), home: "/nonexistent" });

test("compose.yaml: the guide's services as written: nats with JetStream, one coordinator, three workers with code,research", () => {
  const { nats, coordinator, worker } = compose.services;
  expect(nats?.image).toBe(subst("NATS_IMAGE:-nats:latest"));
  expect(nats?.command).toBe("-js");
  expect(nats?.ports).toEqual([`${subst("NATS_PORT:-4222")}:4222`]);
  expect(coordinator?.environment).toEqual(expect.arrayContaining(["PICOCLAW_SWARM_ENABLED=true", "PICOCLAW_SWARM_ROLE=coordinator"]));
  expect(worker?.environment).toContain("PICOCLAW_SWARM_CAPABILITIES=code,research");
  expect(worker?.deploy?.replicas).toBe(3);
  expect(nodes.map(([name]) => name).sort()).toEqual([
    "coordinator",
    "dashboard",
    "specialist-code",
    "specialist-docs",
    "specialist-security",
    "specialist-testing",
    "worker",
  ]);
  // The guide's services and the dashboard start by default; the specialists only with their profile.
  for (const name of ["nats", "coordinator", "worker", "dashboard"]) expect(compose.services[name]?.profiles).toBeUndefined();
});

test("every node's environment loads as valid config with the intended role", () => {
  for (const [name, svc] of nodes) {
    const { config, sources } = configOf(svc);
    expect(config.swarm.nats.urls).toEqual(["nats://nats:4222"]);
    // Each variable was read (none silently ignored).
    for (const k of Object.keys(envOf(svc))) expect(Object.values(sources)).toContain(`env ${k}`);
    if (name === "dashboard") {
      expect(svc.command).toEqual(["--swarm.dashboard"]);
      expect(config.swarm.enabled).toBe(false); // an observer, not a member
    } else {
      expect(config.swarm.enabled).toBe(true);
      expect(config.swarm.role).toBe(name.startsWith("specialist-") ? "specialist" : (name as "coordinator" | "worker"));
    }
  }
});

test("profile specialists: the guide's four code-review specialists", () => {
  const specialists = nodes.filter(([, s]) => s.profiles?.includes("specialists"));
  expect(specialists.map(([, s]) => envOf(s).PICOCLAW_SWARM_CAPABILITIES).sort()).toEqual([
    "docs,writing",
    "rust,go,python",
    "security,audit",
    "testing,qa",
  ]);
  for (const [, s] of specialists) expect(envOf(s).PICOCLAW_SWARM_ROLE).toBe("specialist");
});

test("health checks and start order: nodes wait for NATS themselves; the rest start once the coordinator is healthy", () => {
  // Docker Hub's nats image cannot run a health check, so nothing may wait for NATS to be healthy.
  expect(compose.services.nats?.healthcheck).toBeUndefined();
  for (const [name, svc] of nodes) {
    expect(svc.healthcheck?.test).toEqual(["CMD", "picoclaw", "health"]);
    expect(svc.restart).toBe("on-failure");
    const { config } = configOf(svc);
    // Waiting for NATS at start-up covers the health check's start period.
    expect(config.swarm.nats.connect_timeout).toBeGreaterThanOrEqual(parseDuration(svc.healthcheck!.start_period!)!);
    expect(config.swarm.nats.connect_timeout).toBe(60_000);
    // `docker stop` waits longer than the node's drain.
    expect(parseDuration(svc.stop_grace_period!)!).toBeGreaterThan(config.swarm.drain_grace);
    const after: Record<string, string> =
      name === "coordinator" ? { nats: "service_started" } : { nats: "service_started", coordinator: "service_healthy" };
    expect(Object.fromEntries(Object.entries(svc.depends_on ?? {}).map(([k, v]) => [k, v.condition]))).toEqual(after);
  }
});

test("the dashboard publishes its HTTP endpoint on loopback only", () => {
  expect(compose.services.dashboard?.ports).toEqual([`127.0.0.1:${subst("DASHBOARD_PORT:-8080")}:8080`]);
});
