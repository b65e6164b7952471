#!/usr/bin/env bun
// The specialist: a worker that takes only sub-tasks of its own capabilities (rust, security, ...),
// never `general` work, so requests reach it only when they need what it knows.
import { runEntry } from "../lib/cli.ts";
import { createLogger } from "../lib/log.ts";
import { serveMember } from "../lib/node.ts";
import { runWorker } from "./worker.ts";

if (import.meta.main) {
  process.exit(
    await runEntry(process.argv.slice(2), {
      name: "picoclaw-specialist",
      role: "specialist",
      usage: "run a specialist node: pulls only sub-tasks of its --swarm.capabilities",
      run: (_cli, { config }) => serveMember(config, createLogger(config.log.level), (node) => runWorker(node, config.swarm.capabilities)),
    }),
  );
}
