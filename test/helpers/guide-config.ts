// The deployment guide's config file, as a user writes it to ~/.picoclaw/config.yaml.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempHome } from "./role-process.ts";

/** Verbatim from the deployment guide, "Configuration" > "Config File". */
export const GUIDE_CONFIG_FILE = `# ~/.picoclaw/config.yaml
swarm:
  enabled: true
  role: coordinator
  capabilities: ["coordination", "scheduling"]
  max_concurrent: 10

  nats:
    urls:
      - nats://localhost:4222
    embedded: false
    heartbeat_interval: 10s
    node_timeout: 60s

  temporal:
    address: localhost:7233
    task_queue: picoclaw-swarm
`;

/** A fresh HOME whose ~/.picoclaw/config.yaml is the guide's, with the role given. */
export function guideConfigHome(role: "coordinator" | "worker"): string {
  const home = tempHome();
  mkdirSync(join(home, ".picoclaw"));
  writeFileSync(join(home, ".picoclaw", "config.yaml"), GUIDE_CONFIG_FILE.replace("role: coordinator", `role: ${role}`));
  return home;
}
