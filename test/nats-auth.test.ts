// NATS authentication a node can use: token, user/password (flags or inside the URL), an nkey seed file, a
// credentials file (JWT + nkey, server in operator mode with JetStream); a wrong credential fails start-up
// naming the method and the server's answer, and never prints the secret. And who can reach an embedded
// server: 127.0.0.1 only by default; all interfaces (with a warning) only when asked.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import { nkeys } from "nats";
import { freePort, portOpen } from "../lib/embedded-nats.ts";
import { makeOperator } from "./helpers/jwt.ts";
import { type NatsServer, startNatsServer } from "./helpers/nats-server.ts";
import { FAST, reaper, runRole, spawnRole, tempHome } from "./helpers/role-process.ts";
import { waitFor } from "./helpers/wait.ts";

let tokenServer: NatsServer;
let userServer: NatsServer;
let nkeyServer: NatsServer;
let operatorServer: NatsServer;
const procs = reaper();
const TOKEN = "s3cret-t0ken-value";
const PASSWORD = "hunter2-password";
const dir = mkdtempSync(join(tmpdir(), "picoclaw-auth-"));
const secretFile = (name: string, text: string) => {
  const path = join(dir, name);
  writeFileSync(path, text, { mode: 0o600 });
  return path;
};
const user = nkeys.createUser();
const SEED = new TextDecoder().decode(user.getSeed());
const WRONG_SEED = new TextDecoder().decode(nkeys.createUser().getSeed());
const operator = makeOperator("picoclaw-test");
const CREDS = operator.userCreds("swarm-node");
const FOREIGN_CREDS = makeOperator("someone-else").userCreds("intruder");
beforeAll(async () => {
  [tokenServer, userServer, nkeyServer, operatorServer] = await Promise.all([
    startNatsServer({ config: `authorization { token: "${TOKEN}" }\n` }),
    startNatsServer({ config: `authorization { user: swarm, password: "${PASSWORD}" }\n` }),
    startNatsServer({ config: `authorization { users = [ { nkey: ${user.getPublicKey()} } ] }\n` }),
    startNatsServer({ config: operator.serverConfig() }),
  ]);
});
/** Embedded servers started by the tests' nodes (pid files), stopped here if a node failed to. */
const embeddedStateFiles: string[] = [];
afterAll(async () => {
  await procs.killAll();
  for (const f of embeddedStateFiles) {
    if (!existsSync(f)) continue;
    try {
      process.kill((JSON.parse(readFileSync(f, "utf8")) as { pid: number }).pid, "SIGKILL");
    } catch {
      /* already gone */
    }
  }
  await Promise.all([tokenServer.stop(), userServer.stop(), nkeyServer.stop(), operatorServer.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

/** The parts of a .creds file that must never be printed. */
const credsSecrets = (creds: string) => [
  /-----BEGIN NATS USER JWT-----\n(.+)\n/.exec(creds)![1]!,
  /-----BEGIN USER NKEY SEED-----\n(.+)\n/.exec(creds)![1]!,
];

async function joins(args: string[], env: Record<string, string> = {}) {
  const w = procs.track(spawnRole("worker.ts", [...args, "--swarm.hid", "auth1", ...FAST], { env }));
  await w.waitForLine(/Node joined swarm .*self=true/);
  w.signal("SIGTERM");
  expect(await w.exited()).toBe(0);
  return w.output();
}

describe("NATS authentication", () => {
  test("token (env) connects; the token never appears in output or `picoclaw config`", async () => {
    const out = await joins(["--swarm.nats.urls", tokenServer.url], { PICOCLAW_SWARM_NATS_TOKEN: TOKEN });
    expect(out).not.toContain(TOKEN);
    const cfg = await runRole("picoclaw.ts", ["config"], { env: { PICOCLAW_SWARM_NATS_TOKEN: TOKEN } });
    expect(cfg.output).toContain('swarm.nats.token = "***"  # env PICOCLAW_SWARM_NATS_TOKEN');
    expect(cfg.output).not.toContain(TOKEN);
  });

  test("user and password, as flags and inside the URL", async () => {
    await joins(["--swarm.nats.urls", userServer.url, "--swarm.nats.user", "swarm", "--swarm.nats.password", PASSWORD]);
    const inUrl = userServer.url.replace("nats://", `nats://swarm:${PASSWORD}@`);
    const out = await joins(["--swarm.nats.urls", inUrl]);
    expect(out).not.toContain(PASSWORD);
  });

  test("a wrong or missing credential stops start-up naming the method and the server's answer", async () => {
    const wrong = await runRole("worker.ts", ["--swarm.nats.urls", tokenServer.url, "--swarm.hid", "auth1"], {
      env: { PICOCLAW_SWARM_NATS_TOKEN: "wrong-token" },
    });
    expect(wrong.code).toBe(4);
    expect(wrong.output).toMatch(/cannot connect to NATS at nats:\/\/127\.0\.0\.1:\d+ \(auth: token\): server refused the credentials/);
    expect(wrong.output).not.toContain("wrong-token");
    const none = await runRole("worker.ts", ["--swarm.nats.urls", userServer.url, "--swarm.hid", "auth1"]);
    expect(none.code).toBe(4);
    expect(none.output).toMatch(/\(auth: none\): server refused the credentials/);
    const badPass = await runRole("worker.ts", [
      "--swarm.nats.urls",
      userServer.url,
      "--swarm.nats.user",
      "swarm",
      "--swarm.nats.password",
      "nope-nope",
      "--swarm.hid",
      "auth1",
    ]);
    expect(badPass.code).toBe(4);
    expect(badPass.output).toContain("(auth: user swarm)");
    expect(badPass.output).not.toContain("nope-nope");
  });

  test("nkey seed file: a node joins; the seed never appears in output or `picoclaw config`", async () => {
    const seedFile = secretFile("user.nk", `${SEED}\n`);
    const out = await joins(["--swarm.nats.urls", nkeyServer.url, "--swarm.nats.nkey_seed", seedFile]);
    expect(out).not.toContain(SEED);
    const cfg = await runRole("picoclaw.ts", ["config", "--swarm.nats.nkey_seed", seedFile]);
    expect(cfg.code).toBe(0);
    expect(cfg.output).toContain(`swarm.nats.nkey_seed = "${seedFile}"`);
    expect(cfg.output).not.toContain(SEED);
  });

  test("nkey seed file with a key the server does not know: start-up stops naming the seed file and the server's answer", async () => {
    const wrongFile = secretFile("wrong.nk", `${WRONG_SEED}\n`);
    const r = await runRole("worker.ts", [
      "--swarm.nats.urls",
      nkeyServer.url,
      "--swarm.nats.nkey_seed",
      wrongFile,
      "--swarm.hid",
      "auth1",
    ]);
    expect(r.code).toBe(4);
    expect(r.output).toContain(`(auth: nkey seed file ${wrongFile}): server refused the credentials ('Authorization Violation')`);
    expect(r.output).not.toContain(WRONG_SEED);
    const garbled = secretFile("garbled.nk", `${WRONG_SEED.slice(0, -4)}AAAA\n`);
    const bad = await runRole("worker.ts", [
      "--swarm.nats.urls",
      nkeyServer.url,
      "--swarm.nats.nkey_seed",
      garbled,
      "--swarm.hid",
      "auth1",
    ]);
    expect(bad.code).toBe(4);
    expect(bad.output).toContain(`(auth: nkey seed file ${garbled}): not a valid nkey seed`);
    expect(bad.output).not.toContain(WRONG_SEED.slice(0, -4));
  });

  test("credentials file (operator mode, JetStream-enabled account): a node joins; JWT and seed never printed", async () => {
    const credsFile = secretFile("node.creds", CREDS);
    const out = await joins(["--swarm.nats.urls", operatorServer.url, "--swarm.nats.credentials", credsFile]);
    for (const secret of credsSecrets(CREDS)) expect(out).not.toContain(secret);
    const check = await runRole("picoclaw.ts", [
      "--swarm.check-nats",
      "--swarm.nats.urls",
      operatorServer.url,
      "--swarm.nats.credentials",
      credsFile,
    ]);
    expect(check.code).toBe(0);
    expect(check.stdout).toContain(`NATS check (auth: credentials file ${credsFile})`);
    expect(check.stdout).toContain("JetStream ✓ enabled");
    const cfg = await runRole("picoclaw.ts", ["config", "--swarm.nats.credentials", credsFile]);
    for (const secret of credsSecrets(CREDS)) expect(cfg.output).not.toContain(secret);
  });

  test("a credentials file of another operator's account is refused, naming the credentials file and the server's answer", async () => {
    const foreign = secretFile("foreign.creds", FOREIGN_CREDS);
    const r = await runRole("worker.ts", [
      "--swarm.nats.urls",
      operatorServer.url,
      "--swarm.nats.credentials",
      foreign,
      "--swarm.hid",
      "auth1",
    ]);
    expect(r.code).toBe(4);
    expect(r.output).toContain(`(auth: credentials file ${foreign}): server refused the credentials ('Authorization Violation')`);
    for (const secret of credsSecrets(FOREIGN_CREDS)) expect(r.output).not.toContain(secret);
    const garbage = secretFile("garbage.creds", "not a creds file\n");
    const bad = await runRole("worker.ts", [
      "--swarm.nats.urls",
      operatorServer.url,
      "--swarm.nats.credentials",
      garbage,
      "--swarm.hid",
      "auth1",
    ]);
    expect(bad.code).toBe(4);
    expect(bad.output).toContain(`(auth: credentials file ${garbage}): the credentials file is not a valid .creds file`);
  });
});

/** Local addresses with a TCP socket listening on `port` (from /proc/net/tcp and tcp6), e.g. "127.0.0.1". */
function listeningAddresses(port: number): string[] {
  const out: string[] = [];
  for (const [file, v6] of [
    ["/proc/net/tcp", false],
    ["/proc/net/tcp6", true],
  ] as const) {
    if (!existsSync(file)) continue;
    for (const line of readFileSync(file, "utf8").split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 4 || f[3] !== "0A") continue; // 0A = LISTEN
      const [addr, portHex] = f[1]!.split(":") as [string, string];
      if (parseInt(portHex, 16) !== port) continue;
      if (!v6) out.push(Buffer.from(addr, "hex").reverse().join("."));
      else out.push(/^0+$/.test(addr) ? "::" : addr.endsWith("0100007F") ? "::ffff:127.0.0.1" : addr);
    }
  }
  return out;
}

/** An IPv4 address of this machine other than loopback, if it has one. */
function externalIPv4(): string | undefined {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
  }
  return undefined;
}

describe("embedded NATS: network exposure", () => {
  async function embeddedNode(extra: string[]) {
    const home = tempHome();
    const port = await freePort();
    const stateFile = join(home, ".picoclaw", "nats", `port-${port}`, "embedded.json");
    embeddedStateFiles.push(stateFile);
    const node = procs.track(
      spawnRole(
        "worker.ts",
        ["--swarm.nats.embedded", "--swarm.nats.embedded_port", String(port), ...extra, "--swarm.hid", "emb1", ...FAST],
        { home },
      ),
    );
    // Fail at once (with the node's output) if it stops instead of joining.
    const joinLine = node.waitForLine(/Node joined swarm .*self=true/, 30_000);
    if ((await Promise.race([joinLine, node.proc.exited.then(() => undefined)])) === undefined) {
      joinLine.catch(() => {});
      throw new Error(`embedded node exited with ${node.proc.exitCode} before joining:\n${node.output()}`);
    }
    const state = JSON.parse(readFileSync(stateFile, "utf8")) as { pid: number; port: number; monitor_port: number };
    const stop = async () => {
      node.signal("SIGTERM");
      expect(await node.exited(20_000)).toBe(0);
      expect(node.output()).toContain("Embedded NATS stopped");
      await waitFor(`embedded nats-server on port ${port} to stop`, async () => !(await portOpen("127.0.0.1", port, 200)), 10_000);
    };
    return { node, port, state, stop };
  }

  test("by default the embedded server listens on 127.0.0.1 only (client and monitoring ports)", async () => {
    const { node, port, state, stop } = await embeddedNode([]);
    expect(listeningAddresses(port)).toEqual(["127.0.0.1"]);
    expect(listeningAddresses(state.monitor_port)).toEqual(["127.0.0.1"]);
    const external = externalIPv4();
    if (external) expect(await portOpen(external, port, 1_000)).toBe(false);
    expect(node.output()).not.toContain("listens on all interfaces");
    await stop();
  });

  test("--swarm.nats.embedded_host 0.0.0.0 without authentication logs a warning (and does listen everywhere)", async () => {
    const { node, port, stop } = await embeddedNode(["--swarm.nats.embedded_host", "0.0.0.0"]);
    const warning = await node.waitForLine(/Embedded NATS listens on all interfaces without authentication/);
    expect(warning).toMatch(/WARN .*anyone on the network can join .*host=0\.0\.0\.0/);
    // Go listens dual-stack for 0.0.0.0: the socket shows as "::" (every IPv4 and IPv6 address).
    const wildcard = listeningAddresses(port);
    expect(wildcard).toHaveLength(1);
    expect(["0.0.0.0", "::"]).toContain(wildcard[0]!);
    const external = externalIPv4();
    if (external) expect(await portOpen(external, port, 1_000)).toBe(true);
    await stop();
  });
});
