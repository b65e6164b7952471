// A real nats-server per suite: free port, own store dir, stopped afterwards. Nothing pretends to be NATS.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { freePort, portOpen } from "../../lib/embedded-nats.ts";
import { waitFor } from "./wait.ts";

export interface NatsServer {
  port: number;
  url: string;
  storeDir: string;
  proc: Subprocess;
  stop(): Promise<void>;
  /** Stops the server (SIGTERM, or SIGKILL when `hard`) and starts it again on the same port and store. */
  restart(o?: { hard?: boolean; downMs?: number }): Promise<void>;
  /** Stops the server, keeping its port and store for up(): an outage that lasts until the test ends it. */
  down(o?: { hard?: boolean }): Promise<void>;
  /** Starts it again after down(). */
  up(): Promise<void>;
}

export interface NatsServerOptions {
  jetstream?: boolean;
  /** Extra nats-server.conf text (authorization, tls, accounts...). */
  config?: string;
  args?: string[];
  port?: number;
}

export async function startNatsServer(o: NatsServerOptions = {}): Promise<NatsServer> {
  const port = o.port ?? (await freePort());
  const storeDir = mkdtempSync(join(tmpdir(), "picoclaw-nats-"));
  const args = ["-a", "127.0.0.1", "-p", String(port)];
  if (o.jetstream !== false) args.push("-js", "-sd", storeDir);
  // Each H-id's streams and buckets reserve about 2 GiB of file store (docs/requests.md "Streams and limits"), and a
  // suite makes a dozen or more H-ids on one server: beyond the default limit (75 % of the free disk) on a
  // small disk, start-up failed with "insufficient storage resources available". Nothing is written near it.
  const config = [
    o.jetstream !== false && !/^\s*jetstream\b/m.test(o.config ?? "") ? "jetstream { max_file_store: 1T }" : "",
    o.config ?? "",
  ]
    .filter(Boolean)
    .join("\n");
  if (config) {
    const conf = join(storeDir, "server.conf");
    writeFileSync(conf, config);
    args.push("-c", conf);
  }
  args.push(...(o.args ?? []));
  const launch = async () => {
    const p = Bun.spawn(["nats-server", ...args], { stdout: "ignore", stderr: "pipe" });
    await waitFor(`nats-server on port ${port}`, async () => p.exitCode === null && (await portOpen("127.0.0.1", port, 200)), 15_000);
    return p;
  };
  const halt = async (p: Subprocess, sig: NodeJS.Signals) => {
    p.kill(sig);
    await Promise.race([p.exited, Bun.sleep(5_000)]);
    if (p.exitCode === null) p.kill("SIGKILL");
    await p.exited;
  };
  const server: NatsServer = {
    port,
    url: `nats://127.0.0.1:${port}`,
    storeDir,
    proc: await launch(),
    async stop() {
      await halt(server.proc, "SIGTERM");
      rmSync(storeDir, { recursive: true, force: true });
    },
    async down(d = {}) {
      await halt(server.proc, d.hard ? "SIGKILL" : "SIGTERM");
    },
    async up() {
      server.proc = await launch();
    },
    async restart(r = {}) {
      await halt(server.proc, r.hard ? "SIGKILL" : "SIGTERM");
      if (r.downMs) await Bun.sleep(r.downMs); // an outage of a chosen length, not a wait for an event
      server.proc = await launch();
    },
  };
  return server;
}
