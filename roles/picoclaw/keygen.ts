// `picoclaw keygen [PATH]`: a signing key pair for swarm.security.signing; `keygen --public [PATH]`
// prints the public key of an existing one.
import { closeSync, constants, fchmodSync, mkdirSync, openSync, readFileSync, writeSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { createUser, fromSeed } from "nkeys.js";
import { UsageError } from "../../lib/errors.ts";

/** Where keygen writes when given no path. */
export function defaultKeyPath(home = homedir()): string {
  return join(home, ".picoclaw", "signing.nk");
}

/** Writes a new seed to `path` (readable by its owner only; never over an existing file) and returns the public key. */
export function generateKeyFile(path: string): string {
  const kp = createUser();
  mkdirSync(dirname(path), { recursive: true });
  let fd: number;
  try {
    // O_EXCL: created here or not at all, so two keygens racing for one path cannot both win, and a
    // symlink planted at the path (even a dangling one) is refused rather than followed.
    fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  } catch (err) {
    if (["EEXIST", "ELOOP"].includes((err as NodeJS.ErrnoException).code ?? "")) {
      throw new UsageError(
        `${path} exists already; keygen never overwrites a key (to see its public key: picoclaw keygen --public ${path})`,
      );
    }
    throw err;
  }
  try {
    // On the descriptor, not the path: nothing swapped in after the create can be touched.
    fchmodSync(fd, 0o600);
    writeSync(fd, `${new TextDecoder().decode(kp.getSeed())}\n`);
  } finally {
    closeSync(fd);
  }
  return kp.getPublicKey();
}

/** The public key of the seed in `path` (a file keygen wrote). */
export function publicKeyOf(path: string): string {
  let seed: string;
  try {
    seed = readFileSync(path, "utf8").trim();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new UsageError(`no key file at ${path} (create one with: picoclaw keygen ${path})`);
    throw new UsageError(`cannot read ${path}: ${(err as Error).message}`);
  }
  try {
    return fromSeed(new TextEncoder().encode(seed)).getPublicKey();
  } catch {
    throw new UsageError(`${path} is not an nkey seed (keygen writes one line starting with S, e.g. SUAB...)`);
  }
}
