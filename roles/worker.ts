#!/usr/bin/env bun
// The worker role: parse flags, load config (role fixed to worker), join the swarm, run until a signal.
import { main } from "../lib/entry.ts";

process.exit(await main(process.argv.slice(2), { entry: "picoclaw-worker", role: "worker" }));
