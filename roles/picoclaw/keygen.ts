// `picoclaw keygen [PATH]`: a signing key pair for swarm.security.signing.
import { chmodSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { createUser } from "nkeys.js";
import { ConfigError } from "../../lib/errors.ts";

/** Writes a new seed to `path` (readable by its owner only) and returns the public key. */
export function generateKeyFile(path: string): string {
  if (existsSync(path))
    throw new ConfigError("keygen", "command line", "a path where no key file exists yet (refusing to overwrite)", path);
  const kp = createUser();
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${new TextDecoder().decode(kp.getSeed())}\n`, { mode: 0o600 });
  chmodSync(path, 0o600);
  return kp.getPublicKey();
}
