// compose.yaml matches the guide's example, and every variable it sets is one the nodes understand.
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { loadConfig } from "../lib/config.ts";
import { ROOT } from "./helpers/role-process.ts";

interface Service {
  image: string;
  command?: string;
  environment?: string[];
  deploy?: { replicas?: number };
}

const compose = parse(readFileSync(join(ROOT, "compose.yaml"), "utf8")) as { services: Record<string, Service> };

test("compose.yaml: nats with JetStream, one coordinator, three workers with code,research", () => {
  const { nats, coordinator, worker } = compose.services;
  expect(nats?.command).toContain("-js");
  expect(coordinator?.environment).toContain("PICOCLAW_SWARM_ROLE=coordinator");
  expect(worker?.environment).toContain("PICOCLAW_SWARM_CAPABILITIES=code,research");
  expect(worker?.deploy?.replicas).toBe(3);
});

test("every service's environment loads as valid config with the intended role", () => {
  for (const [name, svc] of Object.entries(compose.services)) {
    if (!svc.image.startsWith("picoclaw")) continue;
    const env = Object.fromEntries((svc.environment ?? []).map((e) => e.split("=", 2) as [string, string]));
    const { config, sources } = loadConfig({ flags: {}, env, home: "/nonexistent" });
    expect(config.swarm.enabled).toBe(true);
    expect(config.swarm.role).toBe(name as "coordinator" | "worker");
    expect(config.swarm.nats.urls).toEqual(["nats://nats:4222"]);
    // Each variable was read (none silently ignored).
    for (const k of Object.keys(env)) expect(Object.values(sources)).toContain(`env ${k}`);
  }
});
