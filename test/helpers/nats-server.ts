// A real nats-server per suite: free port, own store dir, stopped afterwards. Nothing pretends to be NATS.
import { type Subprocess } from "bun";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, portOpen } from "../../lib/embedded-nats.ts";
import { waitFor } from "./wait.ts";

export interface NatsServer {
  port: number;
  url: string;
  storeDir: string;
  proc: Subprocess;
  stop(): Promise<void>;
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
  if (o.config) {
    const conf = join(storeDir, "server.conf");
    writeFileSync(conf, o.config);
    args.push("-c", conf);
  }
  args.push(...(o.args ?? []));
  const proc = Bun.spawn(["nats-server", ...args], { stdout: "ignore", stderr: "pipe" });
  await waitFor(`nats-server on port ${port}`, async () => proc.exitCode === null && (await portOpen("127.0.0.1", port, 200)), 10_000);
  return {
    port,
    url: `nats://127.0.0.1:${port}`,
    storeDir,
    proc,
    async stop() {
      proc.kill("SIGTERM");
      await Promise.race([proc.exited, Bun.sleep(5_000)]);
      if (proc.exitCode === null) proc.kill("SIGKILL");
      rmSync(storeDir, { recursive: true, force: true });
    },
  };
}
