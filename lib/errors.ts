// Typed errors, one place: each says what failed and why, so callers never match strings.

/** A config value that is missing, malformed or out of range. Stops start-up. */
export class ConfigError extends Error {
  override name = "ConfigError";
  constructor(
    readonly key: string,
    readonly source: string,
    readonly allowed: string,
    readonly got?: unknown,
  ) {
    const shown = got === undefined ? "" : ` (got ${JSON.stringify(got)})`;
    super(`invalid config ${key}${shown} from ${source}: ${allowed}`);
  }
}

/** An id (H-id, node id, capability, ...) that would change which subjects match. */
export class InvalidIdError extends Error {
  override name = "InvalidIdError";
  constructor(
    readonly kind: string,
    readonly value: string,
  ) {
    super(
      `invalid ${kind} ${JSON.stringify(value)}: use 1-64 characters from A-Z a-z 0-9 _ - ` +
        `(no dots, spaces, '*' or '>', which would change which NATS subjects match)`,
    );
  }
}

/** nats-server is needed (embedded mode) but is not installed. */
export class NatsServerMissingError extends Error {
  override name = "NatsServerMissingError";
  constructor(readonly binary: string) {
    super(
      `nats-server was not found (looked for ${JSON.stringify(binary)}). --swarm.nats.embedded starts a ` +
        `local nats-server, so it must be installed: on Debian/Ubuntu run 'sudo apt-get install nats-server', ` +
        `on macOS 'brew install nats-server', or download a release from the NATS project and put it on PATH ` +
        `(or set PICOCLAW_NATS_SERVER_BIN to its path). Alternatively run 'docker run -p 4222:4222 nats -js' ` +
        `and start nodes with --swarm.nats.urls nats://localhost:4222.`,
    );
  }
}

/** Could not reach any configured NATS server, with the reason the client gave. */
export class NatsConnectError extends Error {
  override name = "NatsConnectError";
  constructor(
    readonly servers: string[],
    readonly reason: string,
    readonly auth: string,
  ) {
    super(`cannot connect to NATS at ${servers.join(", ")} (auth: ${auth}): ${reason}`);
  }
}

/** The NATS server has no JetStream, which every swarm node needs (streams, KV). */
export class JetStreamMissingError extends Error {
  override name = "JetStreamMissingError";
  constructor(
    readonly url: string,
    readonly embeddedPort?: number,
  ) {
    super(
      `the NATS server at ${url} has no JetStream, which the swarm needs: start it with -js` +
        (embeddedPort === undefined
          ? "."
          : `. With --swarm.nats.embedded, another server without JetStream already listens on port ${embeddedPort} ` +
            `(on Debian/Ubuntu, apt starts a nats-server system service on 127.0.0.1:4222: ` +
            `'sudo systemctl disable --now nats-server'), or pick a free port with --swarm.nats.embedded-port 4333.`),
    );
  }
}
