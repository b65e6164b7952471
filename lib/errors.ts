// One error family: every failure we report carries a `code`, and the original failure as `cause`.
// Entry scripts map codes to exit status in one place (lib/cli.ts); nobody lists classes to decide.
// Errors may live beside their concept (PlanError in plan.ts, LlmError in llm.ts) but extend this base.

export type ErrorCode =
  /** A config value is missing, malformed or out of range. */
  | "E_CONFIG"
  /** The command line asks for something this executable or command does not have (flag, command, argument). */
  | "E_USAGE"
  /** An id (H-id, node id, capability, ...) that would change which subjects match. */
  | "E_INVALID_ID"
  /** A plan that cannot run (cycle, unknown dependency, capability nobody offers, limits). */
  | "E_PLAN"
  /** No configured NATS server could be used (refused, auth, TLS, time-out). */
  | "E_NATS_CONNECT"
  /** The server has no JetStream, which every swarm node needs. */
  | "E_JETSTREAM_MISSING"
  /** NATS or JetStream failed mid-operation (time-out, no responders, connection closed). */
  | "E_NATS"
  /** --swarm.nats.embedded needs a nats-server binary that is not installed. */
  | "E_NATS_SERVER_MISSING"
  /** An LLM call failed; `transient` says whether trying again later may succeed. */
  | "E_LLM"
  /** A coordinator that no longer holds the lease tried to act. */
  | "E_STALE_LEADER"
  /** A node's tools could not be set up (an MCP server that failed at start, bubblewrap missing). */
  | "E_TOOLS";

export class PicoclawError extends Error {
  override name = "PicoclawError";
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

export function isPicoclawError(err: unknown): err is PicoclawError {
  return err instanceof PicoclawError;
}

/** A config value that is missing, malformed or out of range. Stops start-up. */
export class ConfigError extends PicoclawError {
  override name = "ConfigError";
  constructor(
    readonly key: string,
    readonly source: string,
    readonly allowed: string,
    readonly got?: unknown,
  ) {
    const shown = got === undefined ? "" : ` (got ${JSON.stringify(got)})`;
    super("E_CONFIG", `invalid config ${key}${shown} from ${source}: ${allowed}`);
  }
}

/**
 * A usage mistake: a flag, command or argument this executable (or command) does not take. Printed as
 * `<program>: <problem>` and the correct form (`usage: ...`); the entry script fills in program and form
 * from the command it was running when the thrower leaves them out.
 */
export class UsageError extends PicoclawError {
  override name = "UsageError";
  constructor(
    readonly problem: string,
    readonly where: { program?: string; forms?: string[] } = {},
  ) {
    super("E_USAGE", problem);
  }
}

/** An id (H-id, node id, capability, ...) that would change which subjects match. */
export class InvalidIdError extends PicoclawError {
  override name = "InvalidIdError";
  constructor(
    readonly kind: string,
    readonly value: string,
  ) {
    super(
      "E_INVALID_ID",
      `invalid ${kind} ${JSON.stringify(value)}: use 1-64 characters from A-Z a-z 0-9 _ - ` +
        `(no dots, spaces, '*' or '>', which would change which NATS subjects match)`,
    );
  }
}

/** nats-server is needed (embedded mode) but is not installed. */
export class NatsServerMissingError extends PicoclawError {
  override name = "NatsServerMissingError";
  constructor(readonly binary: string) {
    super(
      "E_NATS_SERVER_MISSING",
      `nats-server was not found (looked for ${JSON.stringify(binary)}). --swarm.nats.embedded starts a ` +
        `local nats-server, so it must be installed: on Debian/Ubuntu run 'sudo apt-get install nats-server', ` +
        `on macOS 'brew install nats-server', or download a release from the NATS project and put it on PATH ` +
        `(or set PICOCLAW_NATS_SERVER_BIN to its path). Alternatively run 'docker run -p 4222:4222 nats -js' ` +
        `and start nodes with --swarm.nats.urls nats://localhost:4222.`,
    );
  }
}

/** Could not reach any configured NATS server, with the reason the client gave. */
export class NatsConnectError extends PicoclawError {
  override name = "NatsConnectError";
  constructor(
    readonly servers: string[],
    readonly reason: string,
    readonly auth: string,
    options?: ErrorOptions,
  ) {
    super("E_NATS_CONNECT", `cannot connect to NATS at ${servers.join(", ")} (auth: ${auth}): ${reason}`, options);
  }
}

/** The NATS server has no JetStream, which every swarm node needs (streams, KV). */
export class JetStreamMissingError extends PicoclawError {
  override name = "JetStreamMissingError";
  constructor(
    readonly url: string,
    readonly embeddedPort?: number,
  ) {
    super(
      "E_JETSTREAM_MISSING",
      `the NATS server at ${url} has no JetStream, which the swarm needs: start it with -js` +
        (embeddedPort === undefined
          ? "."
          : `. With --swarm.nats.embedded, another server without JetStream already listens on port ${embeddedPort} ` +
            `(on Debian/Ubuntu, apt starts a nats-server system service on 127.0.0.1:4222: ` +
            `'sudo systemctl disable --now nats-server'), or pick a free port with --swarm.nats.embedded-port 4333.`),
    );
  }
}
