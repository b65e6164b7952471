// The command line as a user meets it, through real processes (no NATS needed): usage mistakes are usage
// errors (`<program>: <what is wrong>`, the correct form, exit 2), each executable takes only its own
// flags and commands and its --help lists exactly those, keygen never overwrites and --public reads a
// key back, and `picoclaw config` prints durations as written and secrets redacted.

import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { COMMAND_HOMES, FLAGS } from "../lib/cli.ts";
import { configKeys } from "../lib/config-schema.ts";
import { runRole, tempHome } from "./helpers/role-process.ts";

const SCRIPTS = {
  picoclaw: "picoclaw.ts",
  "picoclaw-worker": "worker.ts",
  "picoclaw-coordinator": "coordinator.ts",
  "picoclaw-specialist": "specialist.ts",
  "picoclaw-dashboard": "dashboard.ts",
  "picoclaw-gateway": "gateway.ts",
} as const;
type Executable = keyof typeof SCRIPTS;

/** Each test spawns processes, several at once: bounded well above bun's default 5s on a loaded machine. */
const PROCESSES_MS = 60_000;

/** Nothing that could reach a NATS server: a command that got past the command line fails fast. */
const NO_NATS = ["--swarm.nats.urls", "nats://127.0.0.1:1", "--swarm.nats.connect_timeout", "200ms"];

/** Runs an executable that must fail with a usage error; returns its stderr lines. */
async function usageError(exe: Executable, args: string[], home = tempHome()) {
  const r = await runRole(SCRIPTS[exe], args, { home });
  const said = { code: r.code, stdout: r.stdout, stack: /\n\s+at /.test(r.output) };
  expect({ args, ...said }).toEqual({ args, code: 2, stdout: "", stack: false });
  return r.lines;
}

/** The usage error's first line and its `usage:` line(s). */
function expectUsage(lines: string[], first: string, usage: string | RegExp) {
  expect(lines[0]).toBe(first);
  const form = lines.find((l) => l.startsWith("usage: "));
  expect({ first, form }).toEqual({ first, form: typeof usage === "string" ? `usage: ${usage}` : expect.stringMatching(usage) });
}

describe("usage mistakes are usage errors: the program, what is wrong, the correct form, exit 2", () => {
  test(
    "a role executable given another executable's flags names the executable that has them",
    async () => {
      const [worker, coordinator, gateway, specialist, dashboard] = await Promise.all([
        usageError("picoclaw-worker", ["--swarm.dashboard", "--once"]),
        usageError("picoclaw-coordinator", ["--json"]),
        usageError("picoclaw-gateway", ["--failed"]),
        usageError("picoclaw-specialist", ["--swarm.dashboard"]),
        usageError("picoclaw-dashboard", ["--plan", "p.yaml"]),
      ]);
      expectUsage(
        worker,
        "picoclaw-worker: --once is a flag of picoclaw dashboard (or picoclaw-dashboard), not of picoclaw-worker",
        "picoclaw-worker [--KEY VALUE ...]",
      );
      expectUsage(
        coordinator,
        "picoclaw-coordinator: --json is a flag of picoclaw submit, watch, requests, approvals and dashboard (or picoclaw-dashboard), not of picoclaw-coordinator",
        "picoclaw-coordinator [--KEY VALUE ...]",
      );
      expectUsage(
        gateway,
        "picoclaw-gateway: --failed is a flag of picoclaw requests, not of picoclaw-gateway",
        "picoclaw-gateway [--KEY VALUE ...]",
      );
      expectUsage(
        specialist,
        "picoclaw-specialist: --swarm.dashboard is a flag of picoclaw, not of picoclaw-specialist; " +
          "a specialist with its dashboard: picoclaw --swarm.role specialist --swarm.dashboard",
        "picoclaw-specialist [--KEY VALUE ...]",
      );
      expectUsage(
        dashboard,
        "picoclaw-dashboard: --plan is a flag of picoclaw submit, not of picoclaw-dashboard",
        "picoclaw-dashboard [--once | --json] [--KEY VALUE ...]",
      );
      // The other forms follow, and where to read about all of them.
      expect(worker.slice(1)).toEqual([
        "usage: picoclaw-worker [--KEY VALUE ...]",
        "       picoclaw-worker --swarm.check-nats",
        "       picoclaw-worker config",
        "(picoclaw-worker --help lists every command and flag)",
      ]);
    },
    PROCESSES_MS,
  );

  test(
    "a role executable given a client command names picoclaw",
    async () => {
      const [submit, gateway, frob] = await Promise.all([
        usageError("picoclaw-worker", ["submit", "hello"]),
        usageError("picoclaw-dashboard", ["gateway"]),
        usageError("picoclaw-coordinator", ["frobnicate"]),
      ]);
      expectUsage(submit, "picoclaw-worker: submit is a command of picoclaw, not of picoclaw-worker", "picoclaw-worker [--KEY VALUE ...]");
      expectUsage(
        gateway,
        "picoclaw-dashboard: gateway is a command of picoclaw (or run picoclaw-gateway), not of picoclaw-dashboard",
        /^usage: picoclaw-dashboard /,
      );
      expect(frob[0]).toStartWith(
        'picoclaw-coordinator: unknown command "frobnicate": picoclaw-coordinator takes config, or no command to run a coordinator node',
      );
    },
    PROCESSES_MS,
  );

  test(
    "the all-in-one: a command given another command's flag, a missing or extra argument, an unknown command or flag",
    async () => {
      const [submitFailed, drain, config, frob, typo, once, timeout, requestsExtra] = await Promise.all([
        usageError("picoclaw", ["submit", "--failed", "hello"]),
        usageError("picoclaw", ["drain"]),
        usageError("picoclaw", ["config", "extra"]),
        usageError("picoclaw", ["frob"]),
        usageError("picoclaw", ["--swarm.enabeld"]),
        usageError("picoclaw", ["--swarm.enabled", "--once"]),
        usageError("picoclaw", ["watch", "r-1a2b3c4d5e", "--timeout"]),
        usageError("picoclaw", ["requests", "--once"]),
      ]);
      expectUsage(
        submitFailed,
        "picoclaw submit: --failed is a flag of picoclaw requests, not of picoclaw submit",
        "picoclaw submit TEXT|- [--file PATH] [--plan PATH] [--capabilities a,b] [--timeout D] [--json]",
      );
      expectUsage(drain, "picoclaw drain: which node? e.g. picoclaw drain claw-1a2b3c4d", "picoclaw drain NODE");
      expectUsage(config, 'picoclaw config: unexpected argument "extra"', "picoclaw config [--config PATH] [--KEY VALUE ...]");
      expect(frob[0]).toStartWith(
        'picoclaw: unknown command "frob": picoclaw takes config, submit, watch, requests, approvals, approve, deny, dashboard,',
      );
      expectUsage(typo, "picoclaw: unknown flag --swarm.enabeld (did you mean --swarm.enabled?)", /^usage: picoclaw \[--swarm.dashboard/);
      expectUsage(once, "picoclaw: --once goes with --swarm.dashboard (or: picoclaw dashboard --once)", /^usage: picoclaw /);
      expectUsage(timeout, "picoclaw watch: --timeout needs a value: --timeout D", "picoclaw watch REQUEST-ID [--timeout D] [--json]");
      expectUsage(
        requestsExtra,
        "picoclaw requests: --once is a flag of picoclaw dashboard (or picoclaw-dashboard), not of picoclaw requests",
        "picoclaw requests [--failed] [--json]",
      );
    },
    PROCESSES_MS,
  );

  test(
    "`requests` takes no flag or --failed (and --json): no usage error either way",
    async () => {
      const runs = await Promise.all(
        [["requests"], ["requests", "--failed"], ["requests", "--failed", "--json"]].map((args) =>
          runRole("picoclaw.ts", [...args, ...NO_NATS], { home: tempHome() }),
        ),
      );
      for (const r of runs) expect(r.output).not.toContain("usage:");
    },
    PROCESSES_MS,
  );

  test(
    "config errors stay config errors: one line naming key, value, source and what is allowed, no usage",
    async () => {
      const r = await runRole("picoclaw.ts", ["--swarm.enabled", "--swarm.max_concurrent", "0"]);
      expect(r.code).toBe(2);
      expect(r.lines).toEqual([
        'picoclaw: invalid config swarm.max_concurrent (got "0") from flag --swarm.max_concurrent: an integer from 1 to 1000',
      ]);
    },
    PROCESSES_MS,
  );
});

describe("keygen", () => {
  test(
    "keygen PATH, then keygen --public PATH prints the same public key; a second keygen never overwrites",
    async () => {
      const home = tempHome();
      const file = join(home, "keys", "node.nk");
      const made = await runRole("picoclaw.ts", ["keygen", file], { home });
      expect(made.code).toBe(0);
      const pub = /^public key: ([A-Z2-7]{56})$/m.exec(made.stdout)?.[1];
      expect(pub).toMatch(/^U[A-Z2-7]{55}$/);
      expect(statSync(file).mode & 0o777).toBe(0o600);
      const seed = readFileSync(file, "utf8");

      const [shown, shownEq, again] = await Promise.all([
        runRole("picoclaw.ts", ["keygen", "--public", file], { home }),
        runRole("picoclaw.ts", ["keygen", `--public=${file}`], { home }),
        usageError("picoclaw", ["keygen", file], home),
      ]);
      expect({ code: shown.code, stdout: shown.stdout }).toEqual({ code: 0, stdout: pub! });
      expect({ code: shownEq.code, stdout: shownEq.stdout }).toEqual({ code: 0, stdout: pub! });
      expectUsage(
        again,
        `picoclaw keygen: ${file} exists already; keygen never overwrites a key (to see its public key: picoclaw keygen --public ${file})`,
        "picoclaw keygen [PATH]",
      );
      expect(again[2]).toBe("       picoclaw keygen --public [PATH]");
      expect(readFileSync(file, "utf8")).toBe(seed);
    },
    PROCESSES_MS,
  );

  test(
    "without a path: ~/.picoclaw/signing.nk, for both keygen and --public",
    async () => {
      const home = tempHome();
      const made = await runRole("picoclaw.ts", ["keygen"], { home });
      expect(made.code).toBe(0);
      expect(existsSync(join(home, ".picoclaw", "signing.nk"))).toBe(true);
      const pub = /public key: (\S+)/.exec(made.stdout)?.[1];
      const shown = await runRole("picoclaw.ts", ["keygen", "--public"], { home });
      expect({ code: shown.code, stdout: shown.stdout }).toEqual({ code: 0, stdout: pub! });
    },
    PROCESSES_MS,
  );

  test(
    "a symlink planted where the seed goes is refused, never followed: neither its target nor a dangling one's is written",
    async () => {
      const home = tempHome();
      const target = join(home, "victim.txt");
      writeFileSync(target, "precious\n");
      const planted = join(home, "planted.nk");
      symlinkSync(target, planted);
      const dangling = join(home, "dangling.nk");
      const nowhere = join(home, "created-through-link.txt");
      symlinkSync(nowhere, dangling);
      const [a, b] = await Promise.all([
        usageError("picoclaw", ["keygen", planted], home),
        usageError("picoclaw", ["keygen", dangling], home),
      ]);
      expect(a.join("\n")).toContain(`picoclaw keygen: ${planted} exists already`);
      expect(b.join("\n")).toContain(`picoclaw keygen: ${dangling} exists already`);
      expect(readFileSync(target, "utf8")).toBe("precious\n");
      expect(existsSync(nowhere)).toBe(false);
    },
    PROCESSES_MS,
  );

  test(
    "--public of a missing file or of a file that is not a seed says so",
    async () => {
      const home = tempHome();
      const missing = join(home, "nope.nk");
      const notSeed = join(home, "pub.nk");
      writeFileSync(notSeed, "UAINFCZUX4V5SMCDF33CTS6AIFCIMWXV3VHGCKUNGGDX47CID53NXRT6\n");
      const [a, b] = await Promise.all([
        usageError("picoclaw", ["keygen", "--public", missing], home),
        usageError("picoclaw", ["keygen", "--public", notSeed], home),
      ]);
      expectUsage(a, `picoclaw keygen: no key file at ${missing} (create one with: picoclaw keygen ${missing})`, "picoclaw keygen [PATH]");
      expectUsage(
        b,
        `picoclaw keygen: ${notSeed} is not an nkey seed (keygen writes one line starting with S, e.g. SUAB...)`,
        "picoclaw keygen [PATH]",
      );
      expect(existsSync(missing)).toBe(false);
    },
    PROCESSES_MS,
  );
});

/** Which non-config flags each executable takes (with or without a command). */
const TAKES: Record<Executable, string[]> = {
  picoclaw: Object.keys(FLAGS),
  "picoclaw-worker": ["help", "version", "config", "swarm.check-nats"],
  "picoclaw-coordinator": ["help", "version", "config", "swarm.check-nats"],
  "picoclaw-specialist": ["help", "version", "config", "swarm.check-nats"],
  "picoclaw-gateway": ["help", "version", "config", "swarm.check-nats"],
  "picoclaw-dashboard": ["help", "version", "config", "swarm.check-nats", "once", "json"],
};

describe("--help lists what the executable takes, and every config flag with its meaning and default", () => {
  const helps = Promise.all(
    (Object.keys(SCRIPTS) as Executable[]).map(async (exe) => {
      const r = await runRole(SCRIPTS[exe], ["--help"]);
      expect({ exe, code: r.code }).toEqual({ exe, code: 0 });
      return [exe, r.stdout.split("\n")] as const;
    }),
  ).then((all) => Object.fromEntries(all) as Record<Executable, string[]>);

  /** The flags a help text lists in its Flags section. */
  const listedFlags = (lines: string[]) =>
    lines.flatMap((l) => /^ {2}--([\w.-]+)/.exec(l)?.[1] ?? []).filter((f) => !configKeys().includes(f));

  test(
    "each executable lists its own flags and no other",
    async () => {
      const all = await helps;
      for (const exe of Object.keys(SCRIPTS) as Executable[]) {
        expect({ exe, flags: listedFlags(all[exe]).sort() }).toEqual({ exe, flags: [...TAKES[exe]].sort() });
      }
      const worker = all["picoclaw-worker"].join("\n");
      for (const other of ["--once", "--failed", "--swarm.dashboard", "--json", "--public", "--plan"]) expect(worker).not.toContain(other);
      expect(all["picoclaw-worker"][0]).toBe("Usage: picoclaw-worker [config] [flags]");
    },
    PROCESSES_MS,
  );

  test(
    "every config flag has a line with its meaning and its default, spelled with underscores",
    async () => {
      const all = await helps;
      for (const exe of Object.keys(SCRIPTS) as Executable[]) {
        for (const key of configKeys()) {
          const line = all[exe].find((l) => l.startsWith(`  --${key} `));
          expect({ exe, key, line }).toEqual({
            exe,
            key,
            line: expect.stringMatching(/^ {2}--\S+ {2,}\S.{5,} \((default \S.*|\w+ in picoclaw-\w+)\)$/),
          });
        }
      }
      const worker = all["picoclaw-worker"];
      const line = (key: string) => worker.find((l) => l.startsWith(`  --${key} `));
      expect(line("swarm.nats.embedded_port")).toEndWith("port of the embedded nats-server (default 4222)");
      expect(line("swarm.lease_ttl")).toEndWith("(default 10s)");
      expect(line("swarm.tasks.request_timeout")).toEndWith("(default 30m)");
      expect(line("swarm.capabilities")).toEndWith("(default general)");
      expect(line("swarm.gateway.api_keys")).toEndWith("(default none)");
      expect(line("swarm.role")).toEndWith("(worker in picoclaw-worker)");
      expect(all.picoclaw.find((l) => l.startsWith("  --swarm.role "))).toEndWith("(default worker)");
    },
    PROCESSES_MS,
  );

  test(
    "the dash spelling keeps working",
    async () => {
      const r = await runRole("picoclaw.ts", ["config", "--swarm.nats.embedded-port", "4333"]);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain("swarm.nats.embedded_port = 4333  # flag --swarm.nats.embedded_port");
    },
    PROCESSES_MS,
  );

  test(
    "the homes named in errors are real: each command is picoclaw's, each flag is in the help of the executables named",
    async () => {
      const all = await helps;
      const picoclaw = all.picoclaw.join("\n");
      for (const [command, home] of Object.entries(COMMAND_HOMES)) {
        expect({ command, listed: new RegExp(`^ {2}${command}\\b`, "m").test(picoclaw) }).toEqual({ command, listed: true });
        for (const exe of home.match(/picoclaw-\w+/g) ?? [])
          expect({ command, exe, known: exe in SCRIPTS }).toEqual({ command, exe, known: true });
      }
      for (const [flag, spec] of Object.entries(FLAGS)) {
        const home = (spec as { home?: string }).home ?? "";
        for (const exe of home.match(/picoclaw-\w+/g) ?? []) {
          expect({ flag, exe, listed: listedFlags(all[exe as Executable] ?? []).includes(flag) }).toEqual({ flag, exe, listed: true });
        }
        // "picoclaw submit, watch and requests": each named command lists the flag in picoclaw's help.
        const commands = /^picoclaw ([\w, ]+?)(?: \(|$)/.exec(home)?.[1]?.split(/, | and /) ?? [];
        const line = all.picoclaw.find((l) => l.startsWith(`  --${flag} `)) ?? "";
        for (const c of commands.filter((w) => w in COMMAND_HOMES))
          expect({ flag, c, line }).toEqual({ flag, c, line: expect.stringMatching(new RegExp(`\\(with .*\\b${c}\\b`)) });
      }
    },
    PROCESSES_MS,
  );
});

describe("picoclaw config", () => {
  test(
    "durations as written, an empty secret list as empty, set secrets redacted",
    async () => {
      const [plain, set] = await Promise.all([
        runRole("picoclaw.ts", ["config", "--swarm.lease_ttl", "10s", "--swarm.tasks.ack_wait", "1500ms"]),
        runRole("picoclaw.ts", ["config"], {
          env: { PICOCLAW_SWARM_GATEWAY_API_KEYS: "gw-key-SECRET-1,gw-key-SECRET-2", PICOCLAW_LLM_API_KEY: "sk-SECRET-3" },
        }),
      ]);
      expect(plain.code).toBe(0);
      expect(plain.stdout).toContain('swarm.lease_ttl = "10s"  # flag --swarm.lease_ttl');
      expect(plain.stdout).toContain('swarm.tasks.ack_wait = "1500ms"  # flag --swarm.tasks.ack_wait');
      expect(plain.stdout).toContain('swarm.drain_grace = "30s"  # default');
      expect(plain.stdout).toContain('swarm.tasks.retention = "24h"  # default');
      expect(plain.stdout).toContain("swarm.gateway.api_keys = []  # default");
      expect(plain.stdout).toContain("llm.api_key = (unset)  # default");
      expect(set.code).toBe(0);
      expect(set.stdout).toContain('swarm.lease_ttl = "10s"  # default');
      expect(set.stdout).toContain('swarm.gateway.api_keys = ["***","***"]  # env PICOCLAW_SWARM_GATEWAY_API_KEYS');
      expect(set.stdout).toContain('llm.api_key = "***"  # env PICOCLAW_LLM_API_KEY');
      expect(set.output).not.toContain("SECRET");
    },
    PROCESSES_MS,
  );
});
