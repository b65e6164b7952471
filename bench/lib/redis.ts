// A private redis-server for the BullMQ baseline: free port, no persistence, stopped afterwards.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, portOpen } from "../../lib/embedded-nats.ts";
import { type Child, spawnChild, until } from "./util.ts";

export interface RedisServer {
  port: number;
  pid: number;
  version: string;
  stop(): Promise<void>;
}

/** Starts redis-server; throws saying how to get it when it is not installed or does not start. */
export async function startRedis(): Promise<RedisServer> {
  const bin = Bun.which("redis-server");
  if (!bin)
    throw new Error(
      "the BullMQ baselines need redis-server, which is not installed: run the bench with `npm run bench` (it installs it from the OS packages) or `sudo apt-get install redis-server`",
    );
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "picoclaw-bench-redis-"));
  const version =
    Bun.spawnSync([bin, "--version"])
      .stdout.toString()
      .match(/v=(\S+)/)?.[1] ?? "?";
  const child: Child = spawnChild([
    bin,
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    dir,
    "--protected-mode",
    "no",
    "--maxmemory-policy",
    "noeviction",
  ]);
  let open = false;
  const poll = setInterval(() => void portOpen("127.0.0.1", port, 100).then((ok) => (open ||= ok)), 20);
  try {
    await until(`redis-server on port ${port}`, () => open || child.proc.exitCode !== null, 15_000, 10);
  } finally {
    clearInterval(poll);
  }
  if (child.proc.exitCode !== null) throw new Error(`redis-server did not start: ${child.output().slice(-500)}`);
  return {
    port,
    pid: child.pid,
    version,
    async stop() {
      await child.stop("SIGTERM", 5_000);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
