#!/usr/bin/env bun
// The gateway: any OpenAI client uses the whole swarm as one model. A stateless front door (run as
// many as needed): it watches the swarm without joining it, turns each chat completion into a swarm
// request, follows that request's events and answers, streamed or whole, with the request's tokens.
// It keeps nothing but the open HTTP responses.
import { runEntry } from "../lib/cli.ts";
import type { LoadedConfig } from "../lib/config.ts";
import { ConfigError } from "../lib/errors.ts";
import { isLoopback, parseListen } from "../lib/http.ts";
import { createLogger } from "../lib/log.ts";
import { isTransientNatsError } from "../lib/nats-connection.ts";
import { startNode } from "../lib/node.ts";
import { NATS_BACKOFF, withRetry } from "../lib/retry.ts";
import { untilStopSignal } from "../lib/signals.ts";
import { ensureStreams } from "../lib/streams.ts";
import { a2aRoutes } from "./gateway/a2a.ts";
import { keyCheck, openaiRoutes } from "./gateway/api.ts";

export async function runGateway(loaded: LoadedConfig): Promise<number> {
  const cfg = loaded.config;
  // 1. Refuse what would be unsafe or useless before touching the network.
  checkListen(loaded);
  const log = createLogger(cfg.log.level);
  const signalled = untilStopSignal(log);

  // 2. Watch the swarm (which coordinators and capabilities are online) without joining it.
  const node = await startNode(cfg, log, { observer: "gateway" });
  try {
    // The streams exist once any node has started; a gateway that comes first makes them where it may.
    await withRetry(() => ensureStreams(node.link.nc, node.names, cfg, log, "client"), {
      backoff: NATS_BACKOFF,
      untilMs: cfg.swarm.nats.connect_timeout,
      retryable: isTransientNatsError,
    });
  } catch (err) {
    await node.stop();
    throw err;
  }

  // 3. Serve the OpenAI API beside /healthz, /readyz and /metrics; every chat is one swarm request.
  // ...and the A2A protocol: the swarm as one agent other agents delegate to.
  const http = node.serveHttp({ ...openaiRoutes(node), ...a2aRoutes(node, keyCheck(node)) });
  log.info("Gateway ready", {
    url: `${http?.url}/v1`,
    a2a: `${http?.url}/.well-known/agent-card.json`,
    swarm: node.identity.hid,
    keys: cfg.swarm.gateway.api_keys.length,
  });

  // 4. Until SIGINT/SIGTERM: then stop listening (open chats end; their requests go on in the swarm).
  await signalled;
  await node.stop();
  return 0;
}

/** A gateway needs an address, and keys unless only this machine can reach it. */
function checkListen(loaded: LoadedConfig): void {
  const { config: cfg, sources } = loaded;
  const source = sources["swarm.http.listen"] ?? "default";
  if (!cfg.swarm.http.listen) {
    throw new ConfigError("swarm.http.listen", source, "the HOST:PORT the gateway listens on, e.g. --swarm.http.listen 127.0.0.1:8080");
  }
  const { hostname } = parseListen(cfg.swarm.http.listen, source);
  if (!isLoopback(hostname) && cfg.swarm.gateway.api_keys.length === 0) {
    throw new ConfigError(
      "swarm.gateway.api_keys",
      sources["swarm.gateway.api_keys"] ?? "default",
      `at least one key when the gateway listens beyond loopback (swarm.http.listen ${cfg.swarm.http.listen}): ` +
        "set PICOCLAW_SWARM_GATEWAY_API_KEYS or swarm.gateway.api_keys, or listen on 127.0.0.1",
    );
  }
}

if (import.meta.main) {
  process.exit(
    await runEntry(process.argv.slice(2), {
      name: "picoclaw-gateway",
      usage: "serve the OpenAI API (GET /v1/models, POST /v1/chat/completions) on --swarm.http.listen; each chat is a swarm request",
      run: (_cli, loaded) => runGateway(loaded),
    }),
  );
}
