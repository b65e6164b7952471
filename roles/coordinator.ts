#!/usr/bin/env bun
// The coordinator role: parse flags, load config (role fixed to coordinator), join the swarm, run until a signal.
import { main } from "../lib/entry.ts";

process.exit(await main(process.argv.slice(2), { entry: "picoclaw-coordinator", role: "coordinator" }));
