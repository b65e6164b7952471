#!/usr/bin/env bun
// The specialist role: parse flags, load config (role fixed to specialist), join the swarm, run until a signal.
import { main } from "../lib/entry.ts";

process.exit(await main(process.argv.slice(2), { entry: "picoclaw-specialist", role: "specialist" }));
