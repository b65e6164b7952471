#!/usr/bin/env bun
// All-in-one entry: the role comes from --swarm.role / PICOCLAW_SWARM_ROLE / swarm.role, so every
// command of the deployment guide works as written (`picoclaw --swarm.enabled --swarm.role worker`).
import { main } from "../lib/entry.ts";

process.exit(await main(process.argv.slice(2), { entry: "picoclaw" }));
