// Loaded before the suites (bunfig.toml [test].preload). Suites start real nats-server and role
// processes and wait for their events with their own bounds; a test as a whole gets a minute on a
// loaded 2-core box instead of bun's default five seconds. bun applies this to the first file it
// loads only, so scripts/test.sh also passes --timeout 60000 for whole-suite runs.
import { setDefaultTimeout } from "bun:test";

setDefaultTimeout(60_000);
