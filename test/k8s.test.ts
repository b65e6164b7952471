// k8s/ holds the guide's Kubernetes manifests, extended (DESIGN §16). No cluster is needed: every
// document is checked against the Kubernetes schemas (types, required fields, enums) and for unknown
// fields, every file is in the kustomization, every picoclaw container's environment loads as the
// config it is meant to be, and what must agree does (grace period and drain_grace, probes and the HTTP
// port, selectors and labels, Services and ports).
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { IDeployment } from "kubernetes-models/apps/v1/Deployment";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { StatefulSet } from "kubernetes-models/apps/v1/StatefulSet";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import type { IContainer } from "kubernetes-models/v1/Container";
import type { IPodSpec } from "kubernetes-models/v1/PodSpec";
import { Secret } from "kubernetes-models/v1/Secret";
import type { IService } from "kubernetes-models/v1/Service";
import { Service } from "kubernetes-models/v1/Service";
import ts from "typescript";
import { parseAllDocuments } from "yaml";
import { type Config, envName, type LoadedConfig, loadConfig } from "../lib/config.ts";
import { configKeys } from "../lib/config-schema.ts";
import { ID_PATTERN } from "../lib/ids.ts";
import {
  byKind,
  containerEnv,
  K8S_DIR,
  type K8sObject,
  loadKustomization,
  loadManifests,
  type Manifest,
  picoclawDeployments,
  podNameOf,
  statefulSet,
} from "./helpers/k8s.ts";
import { type Permissions, permissionsIn } from "./helpers/nats-conf.ts";
import { ROOT } from "./helpers/role-process.ts";

const manifests = loadManifests();

// ---------------------------------------------------------------------------------------------------
// (a) schemas

/** Each kind we ship: its schema validator (kubernetes-models) and its TypeScript type (unknown fields). */
const KINDS: Record<string, { validate: (obj: unknown) => void; module: string; type: string }> = {
  "v1/ConfigMap": { validate: (o) => new ConfigMap(o as never).validate(), module: "v1/ConfigMap", type: "IConfigMap" },
  "v1/Secret": { validate: (o) => new Secret(o as never).validate(), module: "v1/Secret", type: "ISecret" },
  "v1/Service": { validate: (o) => new Service(o as never).validate(), module: "v1/Service", type: "IService" },
  "apps/v1/Deployment": { validate: (o) => new Deployment(o as never).validate(), module: "apps/v1/Deployment", type: "IDeployment" },
  "apps/v1/StatefulSet": { validate: (o) => new StatefulSet(o as never).validate(), module: "apps/v1/StatefulSet", type: "IStatefulSet" },
  "policy/v1/PodDisruptionBudget": {
    validate: (o) => new PodDisruptionBudget(o as never).validate(),
    module: "policy/v1/PodDisruptionBudget",
    type: "IPodDisruptionBudget",
  },
};

const kindOf = (obj: K8sObject) => `${obj.apiVersion}/${obj.kind}`;
const where = (m: Manifest) => `k8s/${m.file} #${m.index} (${m.obj.kind} ${m.obj.metadata?.name})`;

/** The schema's complaint about a document, or undefined when it is valid. */
function schemaError(obj: K8sObject): string | undefined {
  const kind = KINDS[kindOf(obj)];
  if (!kind) return `no schema here for ${kindOf(obj)}: add it to KINDS`;
  try {
    kind.validate(obj);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/**
 * The JSON schemas accept fields they do not define (a misspelt `imagePullPolicy` would be dropped in
 * silence; `kubectl apply` rejects it). Assigning each document to its kubernetes-models type as an
 * object literal makes TypeScript report such fields: one compile of a generated module, in memory.
 */
function unknownFieldErrors(objs: K8sObject[]): string[] {
  const file = join(ROOT, "test", "__k8s_manifests__.ts");
  const lines = objs.map((o, i) => {
    const kind = KINDS[kindOf(o)];
    if (!kind) return `export const m${i} = null; // no type for ${kindOf(o)}`;
    return `import type { ${kind.type} as T${i} } from "kubernetes-models/${kind.module}"; export const m${i}: T${i} = ${JSON.stringify(o)};`;
  });
  const text = lines.join("\n");
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    types: [],
    lib: ["lib.es2022.d.ts"],
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  const fileExists = host.fileExists.bind(host);
  host.getSourceFile = (f, lang, ...rest) => (f === file ? ts.createSourceFile(f, text, lang) : getSourceFile(f, lang, ...rest));
  host.fileExists = (f) => f === file || fileExists(f);
  const diagnostics = ts.getPreEmitDiagnostics(ts.createProgram([file], options, host));
  return diagnostics.map((d) => {
    const line = d.file?.fileName === file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start).line : -1;
    const o = objs[line];
    return `${o ? `${o.kind} ${o.metadata?.name}` : (d.file?.fileName ?? "?")}: ${ts.flattenDiagnosticMessageText(d.messageText, " ")}`;
  });
}

/** A deep copy of the worker Deployment, changed by `edit`. */
function brokenWorker(edit: (d: IDeployment) => void): K8sObject {
  const copy = structuredClone(picoclawDeployments(manifests).find((d) => d.metadata.name === "picoclaw-worker")!);
  edit(copy);
  return copy;
}

describe("(a) every document is a valid Kubernetes object", () => {
  test("the kustomization lists files with documents of the kinds we ship", () => {
    expect(manifests.length).toBeGreaterThan(10);
    const kinds = new Set(manifests.map((m) => kindOf(m.obj)));
    expect([...kinds].sort()).toEqual(Object.keys(KINDS).sort());
  });

  test("valid against the Kubernetes schemas (kubernetes-models)", () => {
    const errors = manifests.map((m) => [where(m), schemaError(m.obj)]).filter(([, e]) => e !== undefined);
    expect(errors).toEqual([]);
  });

  test("no field the Kubernetes types do not define", () => {
    expect(unknownFieldErrors(manifests.map((m) => m.obj))).toEqual([]);
  });

  test("the checks are not vacuous: broken copies of the worker Deployment are rejected", () => {
    const wrongType = brokenWorker((d) => Object.assign(d.spec!, { replicas: "5" }));
    expect(schemaError(wrongType)).toContain("spec/replicas must be integer");
    const noSelector = brokenWorker((d) => delete (d.spec as { selector?: unknown }).selector);
    expect(schemaError(noSelector)).toContain("must have required property selector");
    const badPolicy = brokenWorker((d) => Object.assign(d.spec!.template.spec!.containers[0]!, { imagePullPolicy: "Sometimes" }));
    expect(schemaError(badPolicy)).toContain("imagePullPolicy must be equal to one of the allowed values");
    // A misspelt field passes the JSON schema but not the type check.
    const typo = brokenWorker((d) => {
      const c = d.spec!.template.spec!.containers[0]! as IContainer & Record<string, unknown>;
      c.imagePulPolicy = c.imagePullPolicy;
      delete c.imagePullPolicy;
    });
    expect(schemaError(typo)).toBeUndefined();
    expect(unknownFieldErrors([typo]).join("\n")).toMatch(/imagePulPolicy.*does not exist in type 'IContainer'/);
    expect(schemaError({ apiVersion: "v1", kind: "Pod", metadata: { name: "p" } })).toContain("no schema here for v1/Pod");
  });
});

// ---------------------------------------------------------------------------------------------------
// (b) the kustomization

describe("(b) kustomization.yaml", () => {
  test("lists every file of k8s/ (README.md aside) exactly once", () => {
    const { resources } = loadKustomization();
    const files = readdirSync(K8S_DIR).filter((f) => f !== "kustomization.yaml" && f !== "README.md");
    expect([...resources].sort()).toEqual(files.sort());
    expect(new Set(resources).size).toBe(resources.length);
  });

  test("no namespace anywhere: the swarm goes where kubectl puts it, and its short names resolve there", () => {
    expect(loadKustomization().namespace).toBeUndefined();
    expect(manifests.filter((m) => m.obj.metadata.namespace !== undefined).map(where)).toEqual([]);
  });

  test("names are unique per kind", () => {
    const ids = manifests.map((m) => `${m.obj.kind}/${m.obj.metadata.name}`);
    expect(ids.filter((id, i) => ids.indexOf(id) !== i)).toEqual([]);
  });

  test("`kubectl kustomize k8s` (or `kustomize build`) builds the same objects (offline)", () => {
    // scripts/setup-test-tools.sh builds kustomize when kubectl is missing.
    const cmd = Bun.which("kubectl") ? ["kubectl", "kustomize"] : Bun.which("kustomize") ? ["kustomize", "build"] : undefined;
    if (!cmd) throw new Error("neither kubectl nor kustomize is on PATH: run scripts/setup-test-tools.sh");
    const built = Bun.spawnSync([...cmd, K8S_DIR], { stdout: "pipe", stderr: "pipe" });
    expect({ code: built.exitCode, stderr: built.stderr.toString() }).toEqual({ code: 0, stderr: "" });
    const objs = parseAllDocuments(built.stdout.toString()).map((d) => d.toJS() as K8sObject);
    const ids = (list: K8sObject[]) => list.map((o) => `${o.kind}/${o.metadata.name}`).sort();
    expect(ids(objs)).toEqual(ids(manifests.map((m) => m.obj)));
  });
});

describe("the guide's two Deployments (section 4) are in k8s/ as written", () => {
  /** The guide's text, verbatim. */
  const GUIDE = `
apiVersion: apps/v1
kind: Deployment
metadata:
  name: picoclaw-coordinator
spec:
  replicas: 1
  selector:
    matchLabels:
      app: picoclaw-coordinator
  template:
    metadata:
      labels:
        app: picoclaw-coordinator
    spec:
      containers:
      - name: picoclaw
        image: picoclaw:latest
        env:
        - name: PICOCLAW_SWARM_ENABLED
          value: "true"
        - name: PICOCLAW_SWARM_ROLE
          value: "coordinator"
        - name: PICOCLAW_SWARM_NATS_URLS
          value: "nats://nats:4222"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: picoclaw-worker
spec:
  replicas: 5
  selector:
    matchLabels:
      app: picoclaw-worker
  template:
    metadata:
      labels:
        app: picoclaw-worker
    spec:
      containers:
      - name: picoclaw
        image: picoclaw:latest
        env:
        - name: PICOCLAW_SWARM_ENABLED
          value: "true"
        - name: PICOCLAW_SWARM_ROLE
          value: "worker"
        - name: PICOCLAW_SWARM_NATS_URLS
          value: "nats://nats:4222"
        - name: PICOCLAW_SWARM_CAPABILITIES
          value: "code,research,writing"
`;

  /** Paths where `have` lacks or differs from `want`; list items of `want` must each match some item of `have`. */
  function missing(want: unknown, have: unknown, path = ""): string[] {
    if (Array.isArray(want)) {
      if (!Array.isArray(have)) return [`${path}: not a list`];
      return want.flatMap((w, i) => (have.some((h) => missing(w, h).length === 0) ? [] : [`${path}[${i}] ${JSON.stringify(w)}`]));
    }
    if (want !== null && typeof want === "object") {
      if (have === null || typeof have !== "object") return [`${path}: not a mapping`];
      return Object.entries(want).flatMap(([k, v]) => missing(v, (have as Record<string, unknown>)[k], `${path}.${k}`));
    }
    return want === have ? [] : [`${path}: ${JSON.stringify(want)} != ${JSON.stringify(have)}`];
  }

  test("every field and value of the guide's coordinator and worker, with replicas: 1 -> 2 as the one change", () => {
    for (const doc of parseAllDocuments(GUIDE)) {
      const guide = doc.toJS() as IDeployment & K8sObject;
      const ours = picoclawDeployments(manifests).find((d) => d.metadata.name === guide.metadata.name);
      expect(ours).toBeDefined();
      // DESIGN §16: a coordinator with a standby.
      if (guide.metadata.name === "picoclaw-coordinator") {
        expect(ours!.spec!.replicas).toBe(2);
        delete guide.spec!.replicas;
      }
      expect({ name: guide.metadata.name, missing: missing(guide, ours) }).toEqual({ name: guide.metadata.name, missing: [] });
    }
  });
});

// ---------------------------------------------------------------------------------------------------
// (c) each picoclaw container's environment is the config it is meant to be

interface Intended {
  replicas: number;
  enabled: boolean;
  role?: Config["swarm"]["role"];
  capabilities?: string[];
  args?: string[];
}

const INTENDED: Record<string, Intended> = {
  "picoclaw-coordinator": { replicas: 2, enabled: true, role: "coordinator" },
  "picoclaw-worker": { replicas: 5, enabled: true, role: "worker", capabilities: ["code", "research", "writing"] },
  "picoclaw-specialist-security": { replicas: 2, enabled: true, role: "specialist", capabilities: ["security", "audit"] },
  // An observer: swarm mode off, so it never joins as a node of some role.
  "picoclaw-dashboard": { replicas: 1, enabled: false, args: ["--swarm.dashboard"] },
};

interface Loaded {
  deployment: IDeployment & K8sObject;
  pod: IPodSpec;
  container: IContainer;
  podName: string;
  env: Record<string, string>;
  loaded: LoadedConfig;
}

/** An empty HOME: no ~/.picoclaw/config.yaml of the machine running the tests is read. */
const HOME = mkdtempSync(join(tmpdir(), "picoclaw-k8s-"));

/** Every container of every picoclaw Deployment, its environment built and loaded by loadConfig. */
function loadAll(): Loaded[] {
  return picoclawDeployments(manifests).flatMap((deployment) => {
    const pod = deployment.spec!.template.spec!;
    const podName = podNameOf(deployment.metadata.name);
    return pod.containers.map((container) => {
      const env = containerEnv(manifests, container, podName);
      const loaded = loadConfig({ flags: {}, env, home: HOME });
      return { deployment, pod, container, podName, env, loaded };
    });
  });
}

/** A config value by dotted key, for keys the Config type may not have yet. */
function valueAt(config: Config, key: string): unknown {
  let cur: unknown = config;
  for (const part of key.split(".")) cur = cur !== null && typeof cur === "object" ? (cur as Record<string, unknown>)[part] : undefined;
  return cur;
}

/** Each Deployment's NATS user (k8s/nats.yaml): the web dashboard's pod is `web`, specialists are workers. */
const NATS_USER: Record<string, "coordinator" | "worker" | "web"> = {
  "picoclaw-coordinator": "coordinator",
  "picoclaw-worker": "worker",
  "picoclaw-specialist-security": "worker",
  "picoclaw-dashboard": "web",
};

describe("(c) every picoclaw container's environment loads as the intended config", () => {
  test("the picoclaw Deployments are exactly the intended ones", () => {
    expect(
      picoclawDeployments(manifests)
        .map((d) => d.metadata.name)
        .sort(),
    ).toEqual(Object.keys(INTENDED).sort());
  });

  test("loadConfig accepts each; role, capabilities, node id = pod name, replicas 3, the NATS Service, its own NATS user", () => {
    const natsEnv = containerEnv(manifests, statefulSet(manifests, "nats").spec!.template.spec!.containers[0]!, "nats-0");
    for (const { deployment, container, podName, loaded } of loadAll()) {
      const want = INTENDED[deployment.metadata.name]!;
      const { swarm } = loaded.config;
      expect({ deployment: deployment.metadata.name, replicas: deployment.spec!.replicas, args: container.args }).toEqual({
        deployment: deployment.metadata.name,
        replicas: want.replicas,
        args: want.args,
      });
      expect(swarm.enabled).toBe(want.enabled);
      if (want.role) expect(swarm.role).toBe(want.role);
      if (want.capabilities) expect(swarm.capabilities).toEqual(want.capabilities);
      // The downward API's pod name is the node id, and any Deployment pod name is a valid one.
      expect(podName.length).toBeLessThanOrEqual(63);
      expect(podName).toMatch(ID_PATTERN);
      expect(swarm.node_id).toBe(podName);
      expect(loaded.sources["swarm.node_id"]).toBe("env PICOCLAW_SWARM_NODE_ID");
      expect(swarm.nats.replicas).toBe(3);
      expect(swarm.nats.urls).toEqual(["nats://nats:4222"]);
      // Each pod presents its role's user, with the password the NATS servers hold for that user.
      const user = NATS_USER[deployment.metadata.name]!;
      expect({ user: swarm.nats.user, token: swarm.nats.token, hid: swarm.hid }).toEqual({
        user: `main-${user}`,
        token: undefined,
        hid: "main",
      });
      expect(swarm.nats.password).toBe(natsEnv[`NATS_${user.toUpperCase()}_PASSWORD`]!);
      expect(swarm.nats.password).toBeTruthy();
      expect(loaded.config.log.level).toBe("info");
    }
  });

  test("only the dashboard goes without the LLM key; nodes that run work have it", () => {
    for (const { deployment, loaded } of loadAll()) {
      const runsWork = INTENDED[deployment.metadata.name]!.enabled;
      expect({ deployment: deployment.metadata.name, hasKey: loaded.config.llm.api_key !== undefined }).toEqual({
        deployment: deployment.metadata.name,
        hasKey: runsWork,
      });
    }
  });

  test("every PICOCLAW_* name in k8s/ is the env name of a config key, and each is read", () => {
    const known = new Set(configKeys().map(envName));
    const names = new Set<string>();
    for (const m of manifests) {
      const data = (m.obj.data ?? {}) as Record<string, unknown>;
      const stringData = (m.obj.stringData ?? {}) as Record<string, unknown>;
      for (const k of [...Object.keys(data), ...Object.keys(stringData)]) if (k.startsWith("PICOCLAW_")) names.add(k);
    }
    for (const { env } of loadAll()) for (const k of Object.keys(env)) if (k.startsWith("PICOCLAW_")) names.add(k);
    expect([...names].filter((n) => !known.has(n)).sort()).toEqual([]);
    for (const { deployment, env, loaded } of loadAll()) {
      const read = new Set(Object.values(loaded.sources));
      const unread = Object.keys(env).filter((k) => k.startsWith("PICOCLAW_") && !read.has(`env ${k}`));
      expect({ deployment: deployment.metadata.name, unread }).toEqual({ deployment: deployment.metadata.name, unread: [] });
    }
  });
});

// ---------------------------------------------------------------------------------------------------
// (d) what must agree

/** The port a probe or Service names, as a number: a name is looked up in the container's ports. */
function resolvePort(container: IContainer, port: number | string | undefined): number | undefined {
  if (typeof port === "number") return port;
  return container.ports?.find((p) => p.name === port)?.containerPort;
}

function selects(selector: Record<string, string> | undefined, labels: Record<string, string> | undefined): boolean {
  if (!selector || Object.keys(selector).length === 0) return false;
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

/** Deployments and StatefulSets: name, selector and the pod template. */
function workloads(): { name: string; selector?: Record<string, string>; labels?: Record<string, string>; pod: IPodSpec }[] {
  return [...byKind<IDeployment>(manifests, "Deployment"), ...byKind<IDeployment>(manifests, "StatefulSet")].map((w) => ({
    name: `${w.kind}/${w.metadata.name}`,
    selector: w.spec?.selector.matchLabels,
    labels: w.spec?.template.metadata?.labels,
    pod: w.spec!.template.spec!,
  }));
}

describe("(d) what must agree does", () => {
  test("nodes that run work stop within the pod's grace period: terminationGracePeriodSeconds > drain_grace", () => {
    for (const { deployment, pod, loaded } of loadAll()) {
      if (!loaded.config.swarm.enabled) continue; // the observer runs no sub-tasks
      const graceMs = (pod.terminationGracePeriodSeconds ?? 30) * 1000;
      expect({ deployment: deployment.metadata.name, longer: graceMs > loaded.config.swarm.drain_grace }).toEqual({
        deployment: deployment.metadata.name,
        longer: true,
      });
      expect(loaded.sources["swarm.drain_grace"]).toBe("env PICOCLAW_SWARM_DRAIN_GRACE");
    }
  });

  test("startup and liveness probes get /healthz, readiness /readyz, Prometheus /metrics, all on the container's http port", () => {
    for (const { deployment, container } of loadAll()) {
      const http = resolvePort(container, "http");
      const probes = {
        startup: container.startupProbe?.httpGet,
        readiness: container.readinessProbe?.httpGet,
        liveness: container.livenessProbe?.httpGet,
      };
      const seen = Object.fromEntries(Object.entries(probes).map(([k, g]) => [k, `${g?.path} :${resolvePort(container, g?.port)}`]));
      expect({ deployment: deployment.metadata.name, seen }).toEqual({
        deployment: deployment.metadata.name,
        seen: { startup: `/healthz :${http}`, readiness: `/readyz :${http}`, liveness: `/healthz :${http}` },
      });
      const a = deployment.spec!.template.metadata!.annotations ?? {};
      expect([a["prometheus.io/scrape"], a["prometheus.io/port"], a["prometheus.io/path"]]).toEqual(["true", String(http), "/metrics"]);
    }
  });

  test("the process listens where the probes look: swarm.http.listen's port is the http containerPort", () => {
    for (const { deployment, container, loaded } of loadAll()) {
      const listen = valueAt(loaded.config, "swarm.http.listen");
      const port = typeof listen === "string" ? Number(listen.slice(listen.lastIndexOf(":") + 1)) : undefined;
      expect({ deployment: deployment.metadata.name, listen, port }).toEqual({
        deployment: deployment.metadata.name,
        listen: "0.0.0.0:8080",
        port: resolvePort(container, "http"),
      });
    }
  });

  test("each Deployment and StatefulSet selects its own pod template, and only it", () => {
    const all = workloads();
    for (const w of all) {
      expect({ workload: w.name, ownPods: selects(w.selector, w.labels) }).toEqual({ workload: w.name, ownPods: true });
      const others = all.filter((o) => o !== w && selects(w.selector, o.labels)).map((o) => o.name);
      expect({ workload: w.name, others }).toEqual({ workload: w.name, others: [] });
    }
  });

  test("each PodDisruptionBudget and Service selects exactly one workload; Service ports exist on its pods", () => {
    for (const pdb of byKind<{ spec?: { selector?: { matchLabels?: Record<string, string> } } }>(manifests, "PodDisruptionBudget")) {
      const hits = workloads().filter((w) => selects(pdb.spec?.selector?.matchLabels, w.labels));
      expect({ pdb: pdb.metadata.name, selects: hits.length }).toEqual({ pdb: pdb.metadata.name, selects: 1 });
    }
    for (const svc of byKind<IService>(manifests, "Service")) {
      const hits = workloads().filter((w) => selects(svc.spec?.selector, w.labels));
      expect({ service: svc.metadata.name, hits: hits.length }).toEqual({ service: svc.metadata.name, hits: 1 });
      const containers = hits[0]!.pod.containers;
      for (const p of svc.spec?.ports ?? []) {
        const target = p.targetPort ?? p.port;
        const found = containers.some((c) => resolvePort(c, target) !== undefined);
        expect({ service: svc.metadata.name, port: target, found }).toEqual({ service: svc.metadata.name, port: target, found: true });
      }
    }
  });

  test("NATS: the client Service is what the nodes dial, routes name every StatefulSet pod via the headless Service", () => {
    const sts = statefulSet(manifests, "nats");
    const headless = byKind<IService>(manifests, "Service").find((s) => s.metadata.name === sts.spec!.serviceName)!;
    expect(headless.spec?.clusterIP).toBe("None");
    expect(headless.spec?.publishNotReadyAddresses).toBe(true);
    const client = byKind<IService>(manifests, "Service").find((s) => s.metadata.name === "nats")!;
    expect(client.spec?.ports?.map((p) => p.port)).toEqual([4222]);
    const conf = byKind<{ data?: Record<string, string> }>(manifests, "ConfigMap").find((c) => c.metadata.name === "nats-config")!.data![
      "nats-server.conf"
    ]!;
    const routes = [...conf.matchAll(/nats:\/\/([\w.-]+):6222/g)].map((m) => m[1]);
    const replicas = sts.spec!.replicas!;
    expect(replicas).toBe(3);
    expect(routes).toEqual(Array.from({ length: replicas }, (_, i) => `${sts.metadata.name}-${i}.${headless.metadata.name}`));
    expect(conf).toContain("server_name: $POD_NAME");
    for (const user of ["coordinator", "worker", "web"]) {
      expect(conf).toContain(`{ user: main-${user}, password: $NATS_${user.toUpperCase()}_PASSWORD, permissions: $${user.toUpperCase()} }`);
    }
    expect(conf).not.toContain("token:");
  });

  test("NATS users: each role's lists are docs/nats-server.conf's for that role (alpha -> main); the coordinator's also submits", () => {
    const conf = byKind<{ data?: Record<string, string> }>(manifests, "ConfigMap").find((c) => c.metadata.name === "nats-config")!.data![
      "nats-server.conf"
    ]!;
    const docs = readFileSync(join(ROOT, "docs", "nats-server.conf"), "utf8");
    const shipped = (name: string): Permissions => {
      const p = permissionsIn(docs, name);
      const main = (xs: string[]) => xs.map((x) => x.replaceAll("alpha", "main"));
      return { publish: main(p.publish), subscribe: main(p.subscribe), responses: p.responses };
    };
    const union = (a: Permissions, b: Permissions): Permissions => ({
      publish: [...new Set([...a.publish, ...b.publish])],
      subscribe: [...new Set([...a.subscribe, ...b.subscribe])],
      responses: a.responses || b.responses,
    });
    expect(permissionsIn(conf, "COORDINATOR")).toEqual(union(shipped("ALPHA_COORDINATOR"), shipped("ALPHA_SUBMITTER")));
    expect(permissionsIn(conf, "WORKER")).toEqual(shipped("ALPHA_WORKER"));
    expect(permissionsIn(conf, "WEB")).toEqual(shipped("ALPHA_WEB"));
  });

  test("hardened pods: non-root, read-only root, no capabilities, RuntimeDefault seccomp, resources set", () => {
    for (const w of workloads()) {
      const podSec = w.pod.securityContext ?? {};
      for (const c of w.pod.containers) {
        const sec = c.securityContext ?? {};
        const r = c.resources ?? {};
        expect({
          workload: w.name,
          nonRoot: sec.runAsNonRoot ?? podSec.runAsNonRoot,
          readOnlyRoot: sec.readOnlyRootFilesystem,
          escalation: sec.allowPrivilegeEscalation,
          drop: sec.capabilities?.drop,
          seccomp: (sec.seccompProfile ?? podSec.seccompProfile)?.type,
          resources: [r.requests?.cpu, r.requests?.memory, r.limits?.memory].every((q) => q !== undefined),
        }).toEqual({
          workload: w.name,
          nonRoot: true,
          readOnlyRoot: true,
          escalation: false,
          drop: ["ALL"],
          seccomp: "RuntimeDefault",
          resources: true,
        });
      }
    }
    for (const { container, pod } of loadAll()) {
      expect([container.image, container.imagePullPolicy, pod.securityContext?.runAsUser]).toEqual([
        "picoclaw:latest",
        "IfNotPresent",
        10001,
      ]);
      expect(pod.enableServiceLinks).toBe(false); // no PICOCLAW_DASHBOARD_PORT=tcp://... from the Service
    }
  });
});

// A document that is not a mapping (a stray string, a list) would pass through the checks above unseen.
test("every document is a mapping with apiVersion, kind and metadata.name", () => {
  for (const m of manifests) {
    expect({ at: where(m), ok: typeof m.obj.apiVersion === "string" && typeof m.obj.kind === "string" && !!m.obj.metadata?.name }).toEqual({
      at: where(m),
      ok: true,
    });
  }
});
