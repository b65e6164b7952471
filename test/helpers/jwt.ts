// NATS decentralized auth for tests, minted by hand: operator, account and user JWTs (base64url JSON, signed
// ed25519 by the issuer's nkey, as nats-server's jwt/v2 decoder expects) and the standard .creds file.
// No extra dependency: nkeys ships with `nats`.
import { createHash, randomBytes } from "node:crypto";
import { nkeys } from "nats";

type KeyPair = ReturnType<typeof nkeys.createUser>;

const b64url = (b: Uint8Array | string) => Buffer.from(b).toString("base64url");

/** Encodes claims as a v2 NATS JWT signed by `issuer`; jti is a unique id (the server does not check its form). */
export function encodeJwt(issuer: KeyPair, subject: string, name: string, nats: Record<string, unknown>): string {
  const claims: Record<string, unknown> = {
    jti: "",
    iat: Math.floor(Date.now() / 1000),
    iss: issuer.getPublicKey(),
    name,
    sub: subject,
    nats: { ...nats, version: 2 },
  };
  claims.jti = createHash("sha256").update(JSON.stringify(claims)).update(randomBytes(8)).digest("base64url").toUpperCase();
  const head = b64url(JSON.stringify({ typ: "JWT", alg: "ed25519-nkey" }));
  const body = b64url(JSON.stringify(claims));
  const sig = issuer.sign(new TextEncoder().encode(`${head}.${body}`));
  return `${head}.${body}.${b64url(sig)}`;
}

/** Unlimited account limits, JetStream included (JetStream is off for an account whose storage limits are 0). */
const UNLIMITED_WITH_JETSTREAM = {
  subs: -1,
  data: -1,
  payload: -1,
  imports: -1,
  exports: -1,
  wildcards: true,
  conn: -1,
  leaf: -1,
  mem_storage: -1,
  disk_storage: -1,
  streams: -1,
  consumer: -1,
  max_ack_pending: -1,
  mem_max_stream_bytes: -1,
  disk_max_stream_bytes: -1,
  max_bytes_required: false,
};

export interface Operator {
  operator: KeyPair;
  operatorJwt: string;
  account: KeyPair;
  accountJwt: string;
  /** The nats-server.conf text for operator mode with a MEMORY resolver preloaded with the account. */
  serverConfig(): string;
  /** A user of this operator's account, as a standard .creds file text (JWT + seed). */
  userCreds(name: string): string;
}

/** An operator with one JetStream-enabled account (plus a system account, as operator mode expects). */
export function makeOperator(name = "picoclaw-test"): Operator {
  const operator = nkeys.createOperator();
  const account = nkeys.createAccount();
  const system = nkeys.createAccount();
  const operatorJwt = encodeJwt(operator, operator.getPublicKey(), name, { type: "operator", signing_keys: [] });
  const accountJwt = encodeJwt(operator, account.getPublicKey(), "SWARM", {
    type: "account",
    limits: UNLIMITED_WITH_JETSTREAM,
    default_permissions: { pub: {}, sub: {} },
  });
  const systemJwt = encodeJwt(operator, system.getPublicKey(), "SYS", {
    type: "account",
    limits: { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 },
    default_permissions: { pub: {}, sub: {} },
  });
  return {
    operator,
    operatorJwt,
    account,
    accountJwt,
    serverConfig: () =>
      [
        `operator: ${operatorJwt}`,
        `system_account: ${system.getPublicKey()}`,
        "resolver: MEMORY",
        "resolver_preload: {",
        `  ${account.getPublicKey()}: ${accountJwt}`,
        `  ${system.getPublicKey()}: ${systemJwt}`,
        "}",
        "",
      ].join("\n"),
    userCreds(userName: string) {
      const user = nkeys.createUser();
      const jwt = encodeJwt(account, user.getPublicKey(), userName, {
        type: "user",
        pub: {},
        sub: {},
        subs: -1,
        data: -1,
        payload: -1,
      });
      return formatCreds(jwt, new TextDecoder().decode(user.getSeed()));
    },
  };
}

/** The .creds layout written by `nsc` and read by every NATS client. */
export function formatCreds(jwt: string, seed: string): string {
  return `-----BEGIN NATS USER JWT-----
${jwt}
------END NATS USER JWT------

************************* IMPORTANT *************************
NKEY Seed printed below can be used to sign and prove identity.
NKEYs are sensitive and should be treated as secrets.

-----BEGIN USER NKEY SEED-----
${seed}
------END USER NKEY SEED------

*************************************************************
`;
}
