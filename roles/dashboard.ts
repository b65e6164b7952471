#!/usr/bin/env bun
// Standalone dashboard: observes the swarm without joining it (--once, --json, or live).
import { main } from "../lib/entry.ts";

process.exit(await main(process.argv.slice(2), { entry: "picoclaw-dashboard", dashboard: true }));
