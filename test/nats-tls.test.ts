// TLS to NATS: mutual TLS with a CA, server and client certificates made by openssl at test time. A node with
// a tls:// URL, the CA and its client certificate joins and `--swarm.check-nats` says OK; without the client
// certificate, or trusting a CA that did not sign the server's certificate, start-up stops with a TLS error.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { makeTestPki, type TestPki } from "./helpers/certs.ts";
import { type NatsServer, startNatsServer } from "./helpers/nats-server.ts";
import { FAST, reaper, runRole, spawnRole } from "./helpers/role-process.ts";

let pki: TestPki;
let server: NatsServer;
let url: string;
const procs = reaper();
beforeAll(async () => {
  pki = makeTestPki();
  server = await startNatsServer({
    config: `tls {
  cert_file: "${pki.serverCert}"
  key_file: "${pki.serverKey}"
  ca_file: "${pki.caFile}"
  verify: true
  timeout: 2
}
`,
  });
  url = `tls://127.0.0.1:${server.port}`;
});
afterAll(async () => {
  await procs.killAll();
  await server.stop();
  pki.remove();
});

const tlsArgs = (o: { ca?: string; cert?: boolean } = {}) => [
  "--swarm.nats.urls",
  url,
  "--swarm.nats.tls.ca_file",
  o.ca ?? pki.caFile,
  ...(o.cert === false ? [] : ["--swarm.nats.tls.cert_file", pki.clientCert, "--swarm.nats.tls.key_file", pki.clientKey]),
];

describe("NATS over TLS (mutual)", () => {
  test("with the CA and a client certificate a node joins and --swarm.check-nats reports OK", async () => {
    const w = procs.track(spawnRole("worker.ts", [...tlsArgs(), "--swarm.hid", "tls1", ...FAST]));
    await w.waitForLine(/Node joined swarm .*self=true/, 20_000);
    w.signal("SIGTERM");
    expect(await w.exited()).toBe(0);

    const check = await runRole("picoclaw.ts", ["--swarm.check-nats", ...tlsArgs()]);
    expect(check.code).toBe(0);
    expect(check.stdout).toMatch(
      new RegExp(`✓ tls://127\\.0\\.0\\.1:${server.port}  reachable  server 2\\.\\d+\\.\\d+  JetStream ✓ enabled`),
    );
    expect(check.stdout).toContain("all 1 NATS URL(s) OK");
  });

  test("without a client certificate the server refuses it: a TLS error that names the client certificate", async () => {
    // nats.js reports this drop as a connect time-out; the node then probes the handshake to say why.
    const r = await runRole("worker.ts", [...tlsArgs({ cert: false }), "--swarm.hid", "tls1", "--swarm.nats.connect_timeout", "3s"]);
    expect(r.code).toBe(4);
    expect(r.output).toContain(`cannot connect to NATS at ${url}`);
    expect(r.output).toMatch(/TLS failed: the server refused the TLS handshake .*client certificate/);

    const check = await runRole("picoclaw.ts", ["--swarm.check-nats", ...tlsArgs({ cert: false })]);
    expect(check.code).toBe(1);
    expect(check.stdout).toMatch(/✗ tls:\/\/127\.0\.0\.1:\d+ {2}unreachable: TLS failed: .*client certificate/);
  });

  test("trusting a CA that did not sign the server's certificate: an untrusted-certificate TLS error", async () => {
    const r = await runRole("worker.ts", [...tlsArgs({ ca: pki.otherCaFile }), "--swarm.hid", "tls1"]);
    expect(r.code).toBe(4);
    expect(r.output).toContain(`cannot connect to NATS at ${url}`);
    expect(r.output).toMatch(/TLS failed: untrusted server certificate \(.+\); is swarm\.nats\.tls\.ca_file the CA that signed/);

    const check = await runRole("picoclaw.ts", ["--swarm.check-nats", ...tlsArgs({ ca: pki.otherCaFile })]);
    expect(check.code).toBe(1);
    expect(check.stdout).toContain("unreachable: TLS failed: untrusted server certificate");
  });

  test("a tls:// URL to a server without TLS says the server does not offer TLS", async () => {
    const plain = await startNatsServer();
    try {
      const r = await runRole("worker.ts", ["--swarm.nats.urls", `tls://127.0.0.1:${plain.port}`, "--swarm.hid", "tls1"]);
      expect(r.code).toBe(4);
      expect(r.output).toContain("TLS failed: this nats-server does not offer TLS");
    } finally {
      await plain.stop();
    }
  });
});
