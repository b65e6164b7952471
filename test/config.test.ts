// Configuration as the deployment guide describes it (DESIGN §9): flag > env > config file > default,
// the source of every value, clear errors, secrets never shown; and the entry scripts as real processes.
import { describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseCli } from "../lib/cli.ts";
import {
  type Config,
  type ConfigInputs,
  DURATION_KEYS,
  describeConfig,
  formatDurationExact,
  type LoadedConfig,
  loadConfig,
  redactedConfig,
} from "../lib/config.ts";
import { CONFIG_HELP, configKeys } from "../lib/config-schema.ts";
import { parseDuration } from "../lib/duration.ts";
import { ConfigError, UsageError } from "../lib/errors.ts";
import { GUIDE_CONFIG_FILE } from "./helpers/guide-config.ts";
import { runRole, tempHome } from "./helpers/role-process.ts";

// ---------------------------------------------------------------------------------------------------
// helpers

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "picoclaw-config-"));
}

/** Writes a YAML file into a fresh temp dir and returns its absolute path. */
function yamlFile(text: string, name = "config.yaml"): string {
  const path = join(tempDir(), name);
  writeFileSync(path, text);
  return path;
}

/** loadConfig with an empty temp HOME by default, so no developer ~/.picoclaw/config.yaml is read. */
function load(inputs: Partial<ConfigInputs> = {}): LoadedConfig {
  return loadConfig({ flags: {}, env: {}, home: tempDir(), ...inputs });
}

/** The value of a dotted key ("swarm.nats.urls") in a loaded config. */
function valueAt(config: Config, key: string): unknown {
  let cur: unknown = config;
  for (const part of key.split(".")) cur = (cur as Record<string, unknown>)[part];
  return cur;
}

/** Runs `fn`, which must throw a ConfigError, and returns it. */
function configErrorOf(fn: () => unknown): ConfigError {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  if (!(thrown instanceof ConfigError)) {
    throw new Error(`expected a ConfigError, got ${thrown === undefined ? "no error at all" : String(thrown)}`);
  }
  return thrown;
}

/** The error's message names the key, the source it came from, and what is allowed. */
function usageErrorOf(fn: () => unknown): UsageError {
  try {
    fn();
  } catch (err) {
    if (err instanceof UsageError) return err;
    throw new Error(`expected a UsageError, got ${String(err)}`);
  }
  throw new Error("expected a UsageError, nothing was thrown");
}

function expectConfigError(fn: () => unknown, want: { key: string; source: string; allowed: string }): ConfigError {
  const err = configErrorOf(fn);
  expect({ key: err.key, source: err.source }).toEqual({ key: want.key, source: want.source });
  expect(err.message).toContain(want.key);
  expect(err.message).toContain(want.source);
  expect(err.message).toContain(want.allowed);
  return err;
}

// ---------------------------------------------------------------------------------------------------
// 1. precedence

interface PrecedenceCase {
  key: string;
  env: string;
  /** YAML for the file layer, indented under its section. */
  fileYaml: string;
  envValue: string;
  flagValue: string;
  want: { default: unknown; file: unknown; env: unknown; flag: unknown };
}

const PRECEDENCE: PrecedenceCase[] = [
  {
    key: "swarm.role",
    env: "PICOCLAW_SWARM_ROLE",
    fileYaml: "swarm:\n  role: specialist\n",
    envValue: "coordinator",
    flagValue: "worker",
    want: { default: "worker", file: "specialist", env: "coordinator", flag: "worker" },
  },
  {
    key: "swarm.max_concurrent",
    env: "PICOCLAW_SWARM_MAX_CONCURRENT",
    fileYaml: "swarm:\n  max_concurrent: 10\n",
    envValue: "7",
    flagValue: "3",
    want: { default: 5, file: 10, env: 7, flag: 3 },
  },
  {
    key: "swarm.nats.urls",
    env: "PICOCLAW_SWARM_NATS_URLS",
    fileYaml: "swarm:\n  nats:\n    urls:\n      - nats://file-a:4222\n      - nats://file-b:4222\n",
    envValue: "nats://env-a:4222,nats://env-b:4222",
    flagValue: "tls://flag:4222",
    want: {
      default: ["nats://localhost:4222"],
      file: ["nats://file-a:4222", "nats://file-b:4222"],
      env: ["nats://env-a:4222", "nats://env-b:4222"],
      flag: ["tls://flag:4222"],
    },
  },
  {
    key: "swarm.capabilities",
    env: "PICOCLAW_SWARM_CAPABILITIES",
    fileYaml: 'swarm:\n  capabilities: ["coordination", "scheduling"]\n',
    envValue: "code,research",
    flagValue: "rust,embedded",
    want: { default: ["general"], file: ["coordination", "scheduling"], env: ["code", "research"], flag: ["rust", "embedded"] },
  },
  {
    key: "swarm.nats.heartbeat_interval",
    env: "PICOCLAW_SWARM_NATS_HEARTBEAT_INTERVAL",
    fileYaml: "swarm:\n  nats:\n    heartbeat_interval: 5s\n",
    envValue: "3s",
    flagValue: "500ms",
    want: { default: 10_000, file: 5_000, env: 3_000, flag: 500 },
  },
];

describe("precedence: flag > env > config file > default", () => {
  for (const c of PRECEDENCE) {
    describe(c.key, () => {
      test(`with nothing set it is the default (${JSON.stringify(c.want.default)})`, () => {
        const { config, sources, file } = load();
        expect(file).toBeUndefined();
        expect(valueAt(config, c.key)).toEqual(c.want.default);
        expect(sources[c.key]).toBe("default");
      });

      test("the config file overrides the default", () => {
        const path = yamlFile(c.fileYaml);
        const { config, sources, file } = load({ configPath: path });
        expect(file).toBe(path);
        expect(valueAt(config, c.key)).toEqual(c.want.file);
        expect(sources[c.key]).toBe(`config file ${path}`);
      });

      test(`${c.env} overrides the config file`, () => {
        const { config, sources } = load({ configPath: yamlFile(c.fileYaml), env: { [c.env]: c.envValue } });
        expect(valueAt(config, c.key)).toEqual(c.want.env);
        expect(sources[c.key]).toBe(`env ${c.env}`);
      });

      test(`--${c.key} overrides env and config file`, () => {
        const { config, sources } = load({
          configPath: yamlFile(c.fileYaml),
          env: { [c.env]: c.envValue },
          flags: { [c.key]: c.flagValue },
        });
        expect(valueAt(config, c.key)).toEqual(c.want.flag);
        expect(sources[c.key]).toBe(`flag --${c.key}`);
      });
    });
  }

  test("layers mix per key: each value has its own source", () => {
    const path = yamlFile("swarm:\n  role: coordinator\n  max_concurrent: 10\n");
    const { config, sources } = load({
      configPath: path,
      env: { PICOCLAW_SWARM_MAX_CONCURRENT: "12", PICOCLAW_SWARM_CAPABILITIES: "code" },
      flags: { "swarm.capabilities": "rust" },
    });
    expect(config.swarm.role).toBe("coordinator");
    expect(config.swarm.max_concurrent).toBe(12);
    expect(config.swarm.capabilities).toEqual(["rust"]);
    expect(config.swarm.nats.urls).toEqual(["nats://localhost:4222"]);
    expect({
      role: sources["swarm.role"],
      max: sources["swarm.max_concurrent"],
      caps: sources["swarm.capabilities"],
      urls: sources["swarm.nats.urls"],
    }).toEqual({
      role: `config file ${path}`,
      max: "env PICOCLAW_SWARM_MAX_CONCURRENT",
      caps: "flag --swarm.capabilities",
      urls: "default",
    });
  });

  test("every key of the schema gets a source", () => {
    const { sources } = load();
    for (const key of configKeys()) expect({ key, source: sources[key] }).toEqual({ key, source: "default" });
  });
});

describe("which config file is read", () => {
  function homeWithConfig(yaml: string): { home: string; path: string } {
    const home = tempDir();
    mkdirSync(join(home, ".picoclaw"));
    const path = join(home, ".picoclaw", "config.yaml");
    writeFileSync(path, yaml);
    return { home, path };
  }

  test("~/.picoclaw/config.yaml is read when no file is named", () => {
    const { home, path } = homeWithConfig("swarm:\n  role: specialist\n");
    const { config, sources, file } = loadConfig({ flags: {}, env: {}, home });
    expect(file).toBe(path);
    expect(config.swarm.role).toBe("specialist");
    expect(sources["swarm.role"]).toBe(`config file ${path}`);
  });

  test("without `home`, the default file is found through env HOME", () => {
    const { home, path } = homeWithConfig("swarm:\n  max_concurrent: 9\n");
    const { config, file } = loadConfig({ flags: {}, env: { HOME: home } });
    expect(file).toBe(path);
    expect(config.swarm.max_concurrent).toBe(9);
  });

  test("a missing default file is fine: everything is a default", () => {
    const { file, config } = loadConfig({ flags: {}, env: {}, home: tempDir() });
    expect(file).toBeUndefined();
    expect(config.swarm.role).toBe("worker");
  });

  test("PICOCLAW_CONFIG names the file, instead of ~/.picoclaw/config.yaml", () => {
    const { home } = homeWithConfig("swarm:\n  role: specialist\n");
    const named = yamlFile("swarm:\n  role: coordinator\n", "team.yaml");
    const { config, sources, file } = loadConfig({ flags: {}, env: { PICOCLAW_CONFIG: named }, home });
    expect(file).toBe(named);
    expect(config.swarm.role).toBe("coordinator");
    expect(sources["swarm.role"]).toBe(`config file ${named}`);
  });

  test("--config wins over PICOCLAW_CONFIG", () => {
    const fromEnv = yamlFile("swarm:\n  role: coordinator\n", "env.yaml");
    const fromFlag = yamlFile("swarm:\n  role: specialist\n", "flag.yaml");
    const { config, file } = load({ configPath: fromFlag, env: { PICOCLAW_CONFIG: fromEnv } });
    expect(file).toBe(fromFlag);
    expect(config.swarm.role).toBe("specialist");
  });

  test("~ in store_dir is expanded against the home directory", () => {
    const home = tempDir();
    const { config } = loadConfig({ flags: { "swarm.nats.store_dir": "~/data/nats" }, env: {}, home });
    expect(config.swarm.nats.store_dir).toBe(join(home, "data", "nats"));
  });
});

// ---------------------------------------------------------------------------------------------------
// 2. the guide's YAML

// Verbatim from the deployment guide, "Performance Tuning".
const GUIDE_TUNING: { name: string; yaml: string; max: number; heartbeat: number; timeout: number; temporal?: boolean }[] = [
  {
    name: "Small Swarm (2-5 nodes)",
    yaml: `swarm:
  max_concurrent: 5
  nats:
    heartbeat_interval: 10s
    node_timeout: 30s
`,
    max: 5,
    heartbeat: 10_000,
    timeout: 30_000,
  },
  {
    name: "Medium Swarm (5-20 nodes)",
    yaml: `swarm:
  max_concurrent: 10
  nats:
    heartbeat_interval: 5s
    node_timeout: 20s
`,
    max: 10,
    heartbeat: 5_000,
    timeout: 20_000,
  },
  {
    name: "Large Swarm (20+ nodes)",
    yaml: `swarm:
  max_concurrent: 20
  nats:
    heartbeat_interval: 3s
    node_timeout: 15s
  temporal:
    enabled: true  # Required for workflow persistence
`,
    max: 20,
    heartbeat: 3_000,
    timeout: 15_000,
    temporal: true,
  },
];

describe("the deployment guide's config files load as written", () => {
  test("Config File example: every value, durations in ms", () => {
    const path = yamlFile(GUIDE_CONFIG_FILE);
    const { config, sources } = load({ configPath: path });
    expect(config.swarm.enabled).toBe(true);
    expect(config.swarm.role).toBe("coordinator");
    expect(config.swarm.capabilities).toEqual(["coordination", "scheduling"]);
    expect(config.swarm.max_concurrent).toBe(10);
    expect(config.swarm.nats.urls).toEqual(["nats://localhost:4222"]);
    expect(config.swarm.nats.embedded).toBe(false);
    expect(config.swarm.nats.heartbeat_interval).toBe(10_000);
    expect(config.swarm.nats.node_timeout).toBe(60_000);
    expect(config.swarm.temporal.address).toBe("localhost:7233");
    expect(config.swarm.temporal.task_queue).toBe("picoclaw-swarm");
    for (const key of ["swarm.enabled", "swarm.nats.heartbeat_interval", "swarm.temporal.address"]) {
      expect({ key, source: sources[key] }).toEqual({ key, source: `config file ${path}` });
    }
  });

  test("Config File example works as ~/.picoclaw/config.yaml too", () => {
    const home = tempDir();
    mkdirSync(join(home, ".picoclaw"));
    writeFileSync(join(home, ".picoclaw", "config.yaml"), GUIDE_CONFIG_FILE);
    const { config } = loadConfig({ flags: {}, env: {}, home });
    expect(config.swarm.role).toBe("coordinator");
    expect(config.swarm.nats.node_timeout).toBe(60_000);
  });

  for (const t of GUIDE_TUNING) {
    test(`Performance Tuning: ${t.name}`, () => {
      const { config } = load({ configPath: yamlFile(t.yaml) });
      expect({
        max_concurrent: config.swarm.max_concurrent,
        heartbeat_interval: config.swarm.nats.heartbeat_interval,
        node_timeout: config.swarm.nats.node_timeout,
        temporal_enabled: config.swarm.temporal.enabled,
      }).toEqual({
        max_concurrent: t.max,
        heartbeat_interval: t.heartbeat,
        node_timeout: t.timeout,
        temporal_enabled: t.temporal,
      });
    });
  }

  test("an empty file, or a section whose keys are all commented out, means defaults", () => {
    expect(load({ configPath: yamlFile("") }).config.swarm.role).toBe("worker");
    const { config } = load({ configPath: yamlFile("swarm:\n  # role: coordinator\nlog:\n  level: debug\n") });
    expect(config.swarm.role).toBe("worker");
    expect(config.log.level).toBe("debug");
  });
});

// ---------------------------------------------------------------------------------------------------
// 3. environment variables of the guide's table (and the compose / Kubernetes examples)

describe("environment variables", () => {
  test("PICOCLAW_SWARM_ENABLED: true/false and the usual spellings", () => {
    expect(load().config.swarm.enabled).toBe(false);
    for (const on of ["true", "TRUE", "1", "yes", "on"]) {
      expect({ value: on, enabled: load({ env: { PICOCLAW_SWARM_ENABLED: on } }).config.swarm.enabled }).toEqual({
        value: on,
        enabled: true,
      });
    }
    for (const off of ["false", "0", "no", "off"]) {
      expect({ value: off, enabled: load({ env: { PICOCLAW_SWARM_ENABLED: off } }).config.swarm.enabled }).toEqual({
        value: off,
        enabled: false,
      });
    }
  });

  test("PICOCLAW_SWARM_ROLE", () => {
    for (const role of ["coordinator", "worker", "specialist"] as const) {
      const { config, sources } = load({ env: { PICOCLAW_SWARM_ROLE: role } });
      expect(config.swarm.role).toBe(role);
      expect(sources["swarm.role"]).toBe("env PICOCLAW_SWARM_ROLE");
    }
  });

  test("PICOCLAW_SWARM_NATS_URLS: one URL, or a comma-separated list", () => {
    expect(load({ env: { PICOCLAW_SWARM_NATS_URLS: "nats://nats:4222" } }).config.swarm.nats.urls).toEqual(["nats://nats:4222"]);
    const many = load({ env: { PICOCLAW_SWARM_NATS_URLS: "nats://machine1:4222, nats://machine2:4222,tls://machine3:4222" } });
    expect(many.config.swarm.nats.urls).toEqual(["nats://machine1:4222", "nats://machine2:4222", "tls://machine3:4222"]);
  });

  test("PICOCLAW_SWARM_CAPABILITIES: comma list (the Kubernetes example's code,research,writing)", () => {
    const { config } = load({ env: { PICOCLAW_SWARM_CAPABILITIES: "code,research,writing" } });
    expect(config.swarm.capabilities).toEqual(["code", "research", "writing"]);
  });

  test("PICOCLAW_SWARM_MAX_CONCURRENT", () => {
    expect(load({ env: { PICOCLAW_SWARM_MAX_CONCURRENT: "8" } }).config.swarm.max_concurrent).toBe(8);
  });

  test("PICOCLAW_SWARM_HID and PICOCLAW_SWARM_SID; both unset by default (auto-generated later)", () => {
    const unset = load().config.swarm;
    expect({ hid: unset.hid, sid: unset.sid }).toEqual({ hid: undefined, sid: undefined });
    const { config, sources } = load({ env: { PICOCLAW_SWARM_HID: "prod-eu", PICOCLAW_SWARM_SID: "s-run_7" } });
    expect({ hid: config.swarm.hid, sid: config.swarm.sid }).toEqual({ hid: "prod-eu", sid: "s-run_7" });
    expect(sources["swarm.hid"]).toBe("env PICOCLAW_SWARM_HID");
    expect(sources["swarm.sid"]).toBe("env PICOCLAW_SWARM_SID");
  });

  test("PICOCLAW_SWARM_NODE_ID and PICOCLAW_LOG_LEVEL", () => {
    const { config, sources } = load({ env: { PICOCLAW_SWARM_NODE_ID: "claw-coord-01", PICOCLAW_LOG_LEVEL: "debug" } });
    expect(config.swarm.node_id).toBe("claw-coord-01");
    expect(config.log.level).toBe("debug");
    expect(sources["log.level"]).toBe("env PICOCLAW_LOG_LEVEL");
  });

  test("the Docker Compose worker's environment, as written in the guide", () => {
    const { config } = load({
      env: {
        PICOCLAW_SWARM_ENABLED: "true",
        PICOCLAW_SWARM_ROLE: "worker",
        PICOCLAW_SWARM_CAPABILITIES: "code,research",
        PICOCLAW_SWARM_NATS_URLS: "nats://nats:4222",
      },
    });
    expect(config.swarm).toMatchObject({
      enabled: true,
      role: "worker",
      capabilities: ["code", "research"],
      nats: { urls: ["nats://nats:4222"] },
    });
  });

  test("other environment variables are ignored", () => {
    const { config } = load({ env: { PATH: "/usr/bin", PICOCLAW_UNRELATED: "x", SWARM_ROLE: "coordinator" } });
    expect(config.swarm.role).toBe("worker");
  });
});

// ---------------------------------------------------------------------------------------------------
// 4. max_concurrent and max-concurrent

describe("max_concurrent and max-concurrent are the same key", () => {
  test("as a flag (loadConfig), with the source spelled as typed", () => {
    const dashed = load({ flags: { "swarm.max-concurrent": "4" } });
    expect(dashed.config.swarm.max_concurrent).toBe(4);
    expect(dashed.sources["swarm.max_concurrent"]).toBe("flag --swarm.max-concurrent");
    expect(load({ flags: { "swarm.max_concurrent": "6" } }).config.swarm.max_concurrent).toBe(6);
  });

  test("as a config file key", () => {
    expect(load({ configPath: yamlFile("swarm:\n  max-concurrent: 9\n") }).config.swarm.max_concurrent).toBe(9);
    expect(load({ configPath: yamlFile("swarm:\n  max_concurrent: 11\n") }).config.swarm.max_concurrent).toBe(11);
  });

  test("on the command line (parseCli), both spellings reach the same key", () => {
    expect(parseCli(["--swarm.max-concurrent", "5"]).flags).toEqual({ "swarm.max_concurrent": "5" });
    expect(parseCli(["--swarm.max_concurrent", "5"]).flags).toEqual({ "swarm.max_concurrent": "5" });
    expect(load({ flags: parseCli(["--swarm.max-concurrent", "5"]).flags }).config.swarm.max_concurrent).toBe(5);
  });
});

// ---------------------------------------------------------------------------------------------------
// 5. errors: key, source, what is allowed

describe("invalid values are rejected with key, source and what is allowed", () => {
  test("bad role", () => {
    const err = expectConfigError(() => load({ flags: { "swarm.role": "boss" } }), {
      key: "swarm.role",
      source: "flag --swarm.role",
      allowed: "coordinator | worker | specialist",
    });
    expect(err.message).toContain('"boss"');
  });

  test("bad role from env names the variable", () => {
    expectConfigError(() => load({ env: { PICOCLAW_SWARM_ROLE: "leader" } }), {
      key: "swarm.role",
      source: "env PICOCLAW_SWARM_ROLE",
      allowed: "coordinator | worker | specialist",
    });
  });

  for (const bad of ["abc", "1.5", "0", "-1", "1001", ""]) {
    test(`max_concurrent ${JSON.stringify(bad)} is not an integer from 1 to 1000`, () => {
      expectConfigError(() => load({ flags: { "swarm.max_concurrent": bad } }), {
        key: "swarm.max_concurrent",
        source: "flag --swarm.max_concurrent",
        allowed: "an integer from 1 to 1000",
      });
    });
  }

  test("max_concurrent: 0 in a config file names the file", () => {
    const path = yamlFile("swarm:\n  max_concurrent: 0\n");
    expectConfigError(() => load({ configPath: path }), {
      key: "swarm.max_concurrent",
      source: `config file ${path}`,
      allowed: "an integer from 1 to 1000",
    });
  });

  test("bad duration 10q (env)", () => {
    expectConfigError(() => load({ env: { PICOCLAW_SWARM_NATS_HEARTBEAT_INTERVAL: "10q" } }), {
      key: "swarm.nats.heartbeat_interval",
      source: "env PICOCLAW_SWARM_NATS_HEARTBEAT_INTERVAL",
      allowed: "500ms, 10s, 2m",
    });
  });

  test("bad duration in a config file", () => {
    const path = yamlFile("swarm:\n  nats:\n    node_timeout: soon\n");
    expectConfigError(() => load({ configPath: path }), {
      key: "swarm.nats.node_timeout",
      source: `config file ${path}`,
      allowed: "a duration like",
    });
  });

  test("node_timeout not longer than heartbeat_interval", () => {
    const path = yamlFile("swarm:\n  nats:\n    heartbeat_interval: 10s\n    node_timeout: 10s\n");
    expectConfigError(() => load({ configPath: path }), {
      key: "swarm.nats.node_timeout",
      source: `config file ${path}`,
      allowed: "longer than swarm.nats.heartbeat_interval",
    });
    expectConfigError(() => load({ flags: { "swarm.nats.node_timeout": "5s" } }), {
      key: "swarm.nats.node_timeout",
      source: "flag --swarm.nats.node_timeout",
      allowed: "longer than swarm.nats.heartbeat_interval",
    });
  });

  for (const bad of ["code,a.b", "x*", "code,>", "deep learning"]) {
    test(`capability list ${JSON.stringify(bad)} is rejected (dot, star, > or space)`, () => {
      const err = expectConfigError(() => load({ flags: { "swarm.capabilities": bad } }), {
        key: "swarm.capabilities",
        source: "flag --swarm.capabilities",
        allowed: "A-Z a-z 0-9 _ -",
      });
      expect(err.message).toContain("no dots, spaces, '*' or '>'");
    });
  }

  test("a bad id from env: PICOCLAW_SWARM_HID with a dot", () => {
    expectConfigError(() => load({ env: { PICOCLAW_SWARM_HID: "prod.eu" } }), {
      key: "swarm.hid",
      source: "env PICOCLAW_SWARM_HID",
      allowed: "A-Z a-z 0-9 _ -",
    });
  });

  for (const bad of ["http://nats:4222", "localhost", "nats://"]) {
    test(`NATS URL ${JSON.stringify(bad)} is rejected`, () => {
      expectConfigError(() => load({ flags: { "swarm.nats.urls": bad } }), {
        key: "swarm.nats.urls",
        source: "flag --swarm.nats.urls",
        allowed: "nats://host:4222",
      });
    });
  }

  test("an empty NATS URL list is rejected", () => {
    expectConfigError(() => load({ env: { PICOCLAW_SWARM_NATS_URLS: " , " } }), {
      key: "swarm.nats.urls",
      source: "env PICOCLAW_SWARM_NATS_URLS",
      allowed: "at least one NATS URL",
    });
  });

  test("bad boolean from env", () => {
    expectConfigError(() => load({ env: { PICOCLAW_SWARM_ENABLED: "maybe" } }), {
      key: "swarm.enabled",
      source: "env PICOCLAW_SWARM_ENABLED",
      allowed: "true or false",
    });
  });

  test("bad log level", () => {
    expectConfigError(() => load({ flags: { "log.level": "loud" } }), {
      key: "log.level",
      source: "flag --log.level",
      allowed: "debug | info | warn | error",
    });
  });

  test("unknown key in the config file names the key and the file", () => {
    const path = yamlFile("swarm:\n  nats:\n    heartbeat: 10s\n");
    expectConfigError(() => load({ configPath: path }), {
      key: "swarm.nats.heartbeat",
      source: `config file ${path}`,
      allowed: "a known key",
    });
    const top = yamlFile("swarms:\n  role: worker\n");
    expectConfigError(() => load({ configPath: top }), { key: "swarms", source: `config file ${top}`, allowed: "a known key" });
  });

  test("invalid YAML names the file", () => {
    const path = yamlFile("swarm:\n  capabilities: [code, research\n");
    expectConfigError(() => load({ configPath: path }), { key: "config file", source: path, allowed: "valid YAML" });
  });

  for (const [what, yaml] of [
    ["a list", "- swarm\n- log\n"],
    ["a string", "swarm.role=worker\n"],
  ] as const) {
    test(`a YAML top level that is ${what}, not a mapping`, () => {
      const path = yamlFile(yaml);
      expectConfigError(() => load({ configPath: path }), { key: "config file", source: path, allowed: "a YAML mapping" });
    });
  }

  test("an explicit --config file that does not exist", () => {
    const missing = join(tempDir(), "nope.yaml");
    expectConfigError(() => load({ configPath: missing }), { key: "--config", source: "flag --config", allowed: "a readable YAML file" });
  });

  test("PICOCLAW_CONFIG naming a file that does not exist", () => {
    const missing = join(tempDir(), "nope.yaml");
    expectConfigError(() => load({ env: { PICOCLAW_CONFIG: missing } }), {
      key: "--config",
      source: "env PICOCLAW_CONFIG",
      allowed: "a readable YAML file",
    });
  });

  test("an unknown flag key passed to loadConfig", () => {
    expectConfigError(() => load({ flags: { "swarm.rolez": "worker" } }), {
      key: "--swarm.rolez",
      source: "command line",
      allowed: "known flags",
    });
  });

  test("an unknown CLI flag (parseCli) is a usage error, not a config error, with the nearest known flag", () => {
    const err = usageErrorOf(() => parseCli(["--swarm.enabled", "--swarm.rolee", "worker"]));
    expect(err.message).toBe("unknown flag --swarm.rolee (did you mean --swarm.role?)");
  });

  test("a secret that fails validation is not echoed in the error", () => {
    const path = yamlFile("swarm:\n  nats:\n    user: bob\n    password: 918273645\n");
    const err = configErrorOf(() => load({ configPath: path }));
    expect(err.key).toBe("swarm.nats.password");
    expect(err.message).not.toContain("918273645");
  });

  test("a rejected NATS URL list does not echo the password in another URL", () => {
    const err = configErrorOf(() => load({ flags: { "swarm.nats.urls": "nats://bob:hunter2pw@nats:4222,http://x" } }));
    expect(err.key).toBe("swarm.nats.urls");
    expect(err.message).not.toContain("hunter2pw");
  });
});

// ---------------------------------------------------------------------------------------------------
// 6. secrets

describe("secrets are redacted", () => {
  const secretInputs = (): LoadedConfig =>
    load({
      env: { PICOCLAW_SWARM_NATS_TOKEN: "tok-SECRET-1", PICOCLAW_SWARM_NATS_PASSWORD: "pw-SECRET-2" },
      flags: {
        "swarm.nats.user": "bob",
        "swarm.nats.urls": "nats://alice:url-SECRET-3@nats-a:4222,tls://carol:p@ss-SECRET-4@nats-b:4222,nats://nats-c:4222",
      },
    });

  test("the loaded config keeps the real secrets (they are needed to connect)", () => {
    const { config } = secretInputs();
    expect(config.swarm.nats.token).toBe("tok-SECRET-1");
    expect(config.swarm.nats.password).toBe("pw-SECRET-2");
    expect(config.swarm.nats.urls[0]).toBe("nats://alice:url-SECRET-3@nats-a:4222");
  });

  test("redactedConfig hides token, password and URL passwords, and leaves the original intact", () => {
    const loaded = secretInputs();
    const red = redactedConfig(loaded.config);
    const text = JSON.stringify(red);
    for (const secret of ["tok-SECRET-1", "pw-SECRET-2", "url-SECRET-3", "SECRET-4"]) expect(text).not.toContain(secret);
    expect(red.swarm.nats.token).toBe("***");
    expect(red.swarm.nats.password).toBe("***");
    expect(red.swarm.nats.urls).toEqual(["nats://alice:***@nats-a:4222", "tls://carol:***@nats-b:4222", "nats://nats-c:4222"]);
    expect(red.swarm.nats.user).toBe("bob");
    expect(loaded.config.swarm.nats.token).toBe("tok-SECRET-1");
  });

  test("describeConfig never shows a secret but says where it came from", () => {
    const text = describeConfig(secretInputs());
    for (const secret of ["tok-SECRET-1", "pw-SECRET-2", "url-SECRET-3", "SECRET-4"]) expect(text).not.toContain(secret);
    expect(text).toContain('swarm.nats.token = "***"  # env PICOCLAW_SWARM_NATS_TOKEN');
    expect(text).toContain('swarm.nats.password = "***"  # env PICOCLAW_SWARM_NATS_PASSWORD');
  });

  test("an empty secret list shows empty; a set one shows each entry redacted", () => {
    expect(describeConfig(load())).toContain("swarm.gateway.api_keys = []  # default");
    const set = load({ flags: { "swarm.gateway.api_keys": "key-SECRET-7a,key-SECRET-7b" } });
    const text = describeConfig(set);
    expect(text).toContain('swarm.gateway.api_keys = ["***","***"]  # flag --swarm.gateway.api_keys');
    expect(text).not.toContain("SECRET-7");
    expect(describeConfig(load())).toContain("llm.api_key = (unset)  # default");
  });

  test("secrets from a config file are redacted too", () => {
    const path = yamlFile('swarm:\n  nats:\n    token: "file-SECRET-5"\n    urls: ["nats://u:file-SECRET-6@h:4222"]\n');
    const text = describeConfig(load({ configPath: path }));
    expect(text).not.toContain("file-SECRET-5");
    expect(text).not.toContain("file-SECRET-6");
  });
});

// ---------------------------------------------------------------------------------------------------
// 6b. durations and help text, read from the one schema

describe("durations as written, and a meaning for every key", () => {
  test("the duration keys are the schema's duration() leaves", () => {
    expect([...DURATION_KEYS].sort()).toEqual(
      [
        "swarm.lease_ttl",
        "swarm.drain_grace",
        "swarm.nats.heartbeat_interval",
        "swarm.nats.node_timeout",
        "swarm.nats.connect_timeout",
        "swarm.tasks.ack_wait",
        "swarm.tasks.request_timeout",
        "swarm.tasks.timeout",
        "tools.approval.timeout",
        "swarm.tasks.retention",
        "swarm.llm.token_window",
        "swarm.security.max_skew",
        "log.dashboard_interval",
      ].sort(),
    );
  });

  test("milliseconds print in the largest exact unit, and read back the same", () => {
    const cases: [number, string][] = [
      [10_000, "10s"],
      [1_500, "1500ms"],
      [90_000, "90s"],
      [120_000, "2m"],
      [1_800_000, "30m"],
      [86_400_000, "24h"],
      [0, "0s"],
      [50, "50ms"],
    ];
    for (const [ms, text] of cases) {
      expect({ ms, text: formatDurationExact(ms) }).toEqual({ ms, text });
      expect(parseDuration(text)).toBe(ms);
    }
  });

  test("describeConfig prints durations as written, configured or defaulted", () => {
    const text = describeConfig(load({ flags: { "swarm.lease_ttl": "10s", "swarm.tasks.ack_wait": "1500ms" } }));
    expect(text).toContain('swarm.lease_ttl = "10s"  # flag --swarm.lease_ttl');
    expect(text).toContain('swarm.tasks.ack_wait = "1500ms"  # flag --swarm.tasks.ack_wait');
    expect(text).toContain('swarm.tasks.retention = "24h"  # default');
    expect(text).toContain('swarm.nats.node_timeout = "1m"  # default');
    expect(text).toContain("swarm.max_concurrent = 5  # default"); // not a duration
  });

  test("every config key has a one-line meaning for --help, and no meaning names a key that does not exist", () => {
    for (const key of configKeys()) {
      const meaning = CONFIG_HELP[key];
      expect({ key, ok: typeof meaning === "string" && meaning.length > 5 && !meaning.includes("\n") }).toEqual({ key, ok: true });
    }
    expect(Object.keys(CONFIG_HELP).filter((k) => !configKeys().includes(k))).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------------
// 7. command line

describe("parseCli", () => {
  test("the guide's quick start: --swarm.enabled --swarm.role coordinator --swarm.nats.embedded", () => {
    const cli = parseCli(["--swarm.enabled", "--swarm.role", "coordinator", "--swarm.nats.embedded"]);
    expect(cli.command).toBeUndefined();
    expect(cli.flags).toEqual({ "swarm.enabled": true, "swarm.role": "coordinator", "swarm.nats.embedded": true });
    const { config, sources } = load({ flags: cli.flags });
    expect(config.swarm).toMatchObject({ enabled: true, role: "coordinator", nats: { embedded: true } });
    expect(sources["swarm.role"]).toBe("flag --swarm.role");
  });

  test("the guide's worker: --swarm.capabilities code,research --swarm.nats.urls nats://localhost:4222", () => {
    const cli = parseCli([
      "--swarm.enabled",
      "--swarm.role",
      "worker",
      "--swarm.capabilities",
      "code,research",
      "--swarm.nats.urls",
      "nats://localhost:4222",
    ]);
    const { config } = load({ flags: cli.flags });
    expect(config.swarm.capabilities).toEqual(["code", "research"]);
    expect(config.swarm.nats.urls).toEqual(["nats://localhost:4222"]);
  });

  test('--swarm.temporal.address= (the shell\'s --swarm.temporal.address="") sets an empty address over the file', () => {
    const cli = parseCli(["--swarm.temporal.address="]);
    expect(cli.flags).toEqual({ "swarm.temporal.address": "" });
    const { config, sources } = load({ flags: cli.flags, configPath: yamlFile("swarm:\n  temporal:\n    address: localhost:7233\n") });
    expect(config.swarm.temporal.address).toBe("");
    expect(sources["swarm.temporal.address"]).toBe("flag --swarm.temporal.address");
  });

  test("--swarm.enabled false (and =false) turns it off, even when env turns it on", () => {
    for (const argv of [["--swarm.enabled", "false"], ["--swarm.enabled=false"]]) {
      const cli = parseCli(argv);
      expect({ argv, flags: cli.flags }).toEqual({ argv, flags: { "swarm.enabled": false } });
      expect(load({ flags: cli.flags, env: { PICOCLAW_SWARM_ENABLED: "true" } }).config.swarm.enabled).toBe(false);
    }
  });

  test("--swarm.enabled false does not swallow a following command", () => {
    const cli = parseCli(["--swarm.enabled", "false", "config"]);
    expect(cli.command).toBe("config");
    expect(cli.flags).toEqual({ "swarm.enabled": false });
  });

  test("a boolean flag does not take the next word unless it is true/false", () => {
    const cli = parseCli(["--swarm.nats.embedded", "config"]);
    expect(cli.flags).toEqual({ "swarm.nats.embedded": true });
    expect(cli.command).toBe("config");
  });

  test("--swarm.max_concurrent -1 reaches validation and is rejected there", () => {
    const cli = parseCli(["--swarm.max_concurrent", "-1"]);
    expect(cli.flags).toEqual({ "swarm.max_concurrent": "-1" });
    expectConfigError(() => load({ flags: cli.flags }), {
      key: "swarm.max_concurrent",
      source: "flag --swarm.max_concurrent",
      allowed: "an integer from 1 to 1000",
    });
  });

  test("--config PATH and the config command", () => {
    const cli = parseCli(["config", "--config", "/etc/picoclaw.yaml"]);
    expect(cli.command).toBe("config");
    expect(cli.configPath).toBe("/etc/picoclaw.yaml");
    expect(cli.flags).toEqual({});
  });

  test("command flags are recognised and are not config keys", () => {
    const cli = parseCli(["--swarm.dashboard", "--once"]);
    expect(cli.is("swarm.dashboard")).toBe(true);
    expect(cli.is("once")).toBe(true);
    expect(cli.is("json")).toBe(false);
    expect(cli.flags).toEqual({});
    expect(parseCli(["--swarm.check-nats"]).is("swarm.check-nats")).toBe(true);
  });

  test("unknown long flags are usage errors naming the flag", () => {
    for (const argv of [["--swarm.bogus", "1"], ["--bogus"], ["--swarm.nats.urlz=nats://x:1"]]) {
      const err = usageErrorOf(() => parseCli(argv));
      expect({ argv, message: err.message }).toEqual({ argv, message: expect.stringContaining(`unknown flag ${argv[0]!.split("=")[0]!}`) });
    }
  });

  test("short flags like -x are usage errors (-h is --help)", () => {
    expect(usageErrorOf(() => parseCli(["-x"])).message).toContain("unknown flag -x");
    expect(parseCli(["-h"]).is("help")).toBe(true);
  });

  test("a value flag without its value is a usage error; --public=PATH reads as --public PATH", () => {
    expect(usageErrorOf(() => parseCli(["submit", "--timeout"])).message).toBe("--timeout needs a value: --timeout D");
    expect(usageErrorOf(() => parseCli(["submit", "--plan", "--json"])).message).toBe("--plan needs a value: --plan PATH");
    expect(usageErrorOf(() => parseCli(["--once=yes"])).message).toContain("--once takes no value");
    const cli = parseCli(["keygen", "--public=/tmp/k.nk"]);
    expect({ public: cli.is("public"), command: cli.command, positionals: cli.positionals }).toEqual({
      public: true,
      command: "keygen",
      positionals: ["/tmp/k.nk"],
    });
    expect(parseCli(["submit", "--timeout", "10s", "hi"]).value("timeout")).toBe("10s");
  });

  test("the non-config flags given are listed, config flags are not", () => {
    expect(parseCli(["--swarm.dashboard", "--once", "--swarm.hid", "h1", "--config", "/x.yaml"]).given).toEqual([
      "config",
      "swarm.dashboard",
      "once",
    ]);
  });

  test("flags that are not given are not reported (so env and file still apply)", () => {
    const cli = parseCli(["--swarm.role", "specialist"]);
    expect(Object.keys(cli.flags)).toEqual(["swarm.role"]);
    const { config } = load({ flags: cli.flags, env: { PICOCLAW_SWARM_CAPABILITIES: "rust,embedded" } });
    expect(config.swarm.capabilities).toEqual(["rust", "embedded"]);
  });
});

// ---------------------------------------------------------------------------------------------------
// 8. the entry scripts as processes

describe("entry scripts (real processes)", () => {
  test("`picoclaw config` prints every key with its source, exits 0, and never prints the token", async () => {
    const home = tempHome();
    mkdirSync(join(home, ".picoclaw"));
    const file = join(home, ".picoclaw", "config.yaml");
    writeFileSync(file, "swarm:\n  max_concurrent: 10\n  role: specialist\n");
    const r = await runRole("picoclaw.ts", ["config", "--swarm.role", "coordinator"], {
      home,
      env: { PICOCLAW_SWARM_NATS_TOKEN: "s3cret-token", PICOCLAW_SWARM_CAPABILITIES: "code,research" },
    });
    expect({ code: r.code, output: r.output }).toEqual({ code: 0, output: expect.any(String) });
    expect(r.output).not.toContain("s3cret-token");
    for (const key of configKeys()) {
      const line = r.lines.find((l) => l.startsWith(`${key} = `));
      expect({ key, line }).toEqual({ key, line: expect.stringMatching(/ {2}# (default|flag --|env |config file )/) });
    }
    expect(r.stdout).toContain('swarm.role = "coordinator"  # flag --swarm.role');
    expect(r.stdout).toContain('swarm.capabilities = ["code","research"]  # env PICOCLAW_SWARM_CAPABILITIES');
    expect(r.stdout).toContain(`swarm.max_concurrent = 10  # config file ${file}`);
    expect(r.stdout).toContain('swarm.nats.token = "***"  # env PICOCLAW_SWARM_NATS_TOKEN');
    expect(r.stdout).toContain('swarm.nats.heartbeat_interval = "10s"  # default');
  });

  test("an invalid value (--swarm.max_concurrent 0) exits 2 naming key, source and range", async () => {
    const r = await runRole("picoclaw.ts", ["--swarm.enabled", "--swarm.max_concurrent", "0"]);
    expect(r.code).toBe(2);
    expect(r.output).toContain("swarm.max_concurrent");
    expect(r.output).toContain("flag --swarm.max_concurrent");
    expect(r.output).toContain("an integer from 1 to 1000");
  });

  test("roles/worker.ts --swarm.role coordinator exits 2 naming swarm.role", async () => {
    const r = await runRole("worker.ts", ["--swarm.role", "coordinator"]);
    expect(r.code).toBe(2);
    expect(r.output).toContain("swarm.role");
    expect(r.output).toContain("worker");
  });

  test("picoclaw without --swarm.enabled or a role flag exits 2 and says how to enable swarm mode", async () => {
    const r = await runRole("picoclaw.ts", []);
    expect(r.code).toBe(2);
    expect(r.output).toContain("swarm.enabled");
    expect(r.output).toContain("--swarm.enabled");
  });

  test("an unknown flag exits 2 naming it", async () => {
    const r = await runRole("picoclaw.ts", ["--swarm.enabeld"]);
    expect(r.code).toBe(2);
    expect(r.output).toContain("--swarm.enabeld");
  });

  test("a missing --config file exits 2 naming it", async () => {
    const missing = join(tempDir(), "missing.yaml");
    const r = await runRole("picoclaw.ts", ["config", "--config", missing]);
    expect(r.code).toBe(2);
    expect(r.output).toContain(missing);
    expect(r.output).toContain("flag --config");
  });
});
