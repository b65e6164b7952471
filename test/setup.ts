// Loaded before every suite (bunfig.toml [test].preload). Suites start real nats-server and role
// processes and wait for their events with their own bounds; a test as a whole gets a minute on a
// loaded 2-core box instead of bun's default five seconds.
import { setDefaultTimeout } from "bun:test";

setDefaultTimeout(60_000);
