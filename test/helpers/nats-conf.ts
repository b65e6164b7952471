// docs/nats-server.conf as the tests run it: the shipped file minus what the harness sets itself (port and
// JetStream store come from startNatsServer's flags), with the passwords it reads from the environment
// filled in (each user's password is its own name, e.g. alpha-worker's is "alpha-worker-pw").
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "./role-process.ts";

export type RoleUser = "coordinator" | "worker" | "submitter" | "observer" | "admin" | "gateway" | "web" | "approver";

/** The password the test copy gives `hid`-`role`. */
export function passwordOf(hid: string, role: RoleUser): string {
  return `${hid}-${role}-pw`;
}

export function shippedConfigForTests(): string {
  const doc = readFileSync(join(ROOT, "docs", "nats-server.conf"), "utf8");
  const conf = doc
    .replace(/^port: .*$/m, "")
    .replace(/^jetstream \{[\s\S]*?^\}/m, "")
    .replace(/\$([A-Z]+)_([A-Z]+)_PASSWORD/g, (_m, hid: string, role: string) =>
      JSON.stringify(passwordOf(hid.toLowerCase(), role.toLowerCase() as RoleUser)),
    );
  for (const gone of ["port: 4222", "/var/lib/nats"]) {
    if (conf.includes(gone)) throw new Error(`docs/nats-server.conf changed shape: test copy still has ${gone}`);
  }
  if (/\$[A-Z_]+_PASSWORD/.test(conf)) throw new Error("docs/nats-server.conf changed shape: a password variable is left");
  return conf;
}

/** Command-line flags that connect a picoclaw process as `hid`-`role`, with that H-id. */
export function asUser(url: string, hid: string, role: RoleUser): string[] {
  return [
    "--swarm.nats.urls",
    url,
    "--swarm.nats.user",
    `${hid}-${role}`,
    "--swarm.nats.password",
    passwordOf(hid, role),
    "--swarm.hid",
    hid,
  ];
}

/** One permissions variable of a nats-server config (`NAME = { publish = { allow = [...] } ... }`). */
export interface Permissions {
  publish: string[];
  subscribe: string[];
  responses: boolean;
}

/** Reads variable `name`'s allow lists from config text (quoted subjects only, as our files write them). */
export function permissionsIn(conf: string, name: string): Permissions {
  const start = conf.search(new RegExp(`^\\s*${name} = \\{`, "m"));
  if (start < 0) throw new Error(`no ${name} = { ... } in the config`);
  let depth = 0;
  let end = conf.indexOf("{", start);
  for (; end < conf.length; end++) {
    if (conf[end] === "{") depth++;
    else if (conf[end] === "}" && --depth === 0) break;
  }
  const block = conf.slice(start, end + 1).replace(/#.*$/gm, "");
  const allow = (kind: string) =>
    [...(new RegExp(`${kind} = \\{\\s*allow = \\[([^\\]]*)\\]`).exec(block)?.[1] ?? "").matchAll(/"([^"]+)"/g)].map((m) => m[1]!);
  return { publish: allow("publish"), subscribe: allow("subscribe"), responses: /allow_responses = true/.test(block) };
}
