// Identifiers that enter NATS subjects. One token each: a dot, '*', '>' or space would change matching.
import { randomBytes } from "node:crypto";
import { InvalidIdError } from "./errors.ts";

export const ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

export function isValidId(value: string): boolean {
  return ID_PATTERN.test(value);
}

/** Returns the id unchanged, or throws InvalidIdError naming the kind of id. */
export function validateId(kind: string, value: string): string {
  if (!isValidId(value)) throw new InvalidIdError(kind, value);
  return value;
}

function hex(bytes: number): string {
  return randomBytes(bytes).toString("hex");
}

/** `claw-` + 8 hex chars, as the guide shows. */
export function newNodeId(): string {
  return `claw-${hex(4)}`;
}

/** Per process start; tells a restarted node from its previous life. */
export function newSessionId(): string {
  return `s-${hex(6)}`;
}

/** A request's id: `r-` + 10 hex chars. */
export function newRequestId(): string {
  return `r-${hex(5)}`;
}

/** Swarm identity used when none is configured and the NATS deployment has none yet. */
export function newHumanId(): string {
  return `h-${hex(6)}`;
}
