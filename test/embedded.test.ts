// --swarm.nats.embedded without nats-server installed: one clear paragraph with the install commands.
import { expect, test } from "bun:test";
import { freePort } from "../lib/embedded-nats.ts";
import { startNatsServer } from "./helpers/nats-server.ts";
import { runRole } from "./helpers/role-process.ts";

test("a missing nats-server binary stops the node with install instructions", async () => {
  const port = await freePort();
  const r = await runRole("worker.ts", ["--swarm.nats.embedded", "--swarm.nats.embedded-port", String(port)], {
    env: { PICOCLAW_NATS_SERVER_BIN: "/nonexistent/nats-server" },
  });
  expect(r.code).toBe(1);
  expect(r.output).toContain("nats-server was not found");
  expect(r.output).toContain("sudo apt-get install nats-server");
  expect(r.output).toContain("brew install nats-server");
  expect(r.output).not.toContain("    at "); // a message, not a stack trace
});

test("an embedded port taken by a server without JetStream (like apt's nats-server service) is explained", async () => {
  const plain = await startNatsServer({ jetstream: false });
  try {
    const r = await runRole("worker.ts", ["--swarm.nats.embedded", "--swarm.nats.embedded-port", String(plain.port)]);
    expect(r.code).toBe(4);
    expect(r.output).toContain(`has no JetStream, which the swarm needs: start it with -js`);
    expect(r.output).toContain("sudo systemctl disable --now nats-server");
    expect(r.output).toContain("--swarm.nats.embedded-port");
  } finally {
    await plain.stop();
  }
});
