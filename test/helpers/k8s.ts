// The manifests of k8s/ as data: every YAML document of every file the kustomization lists, and a
// container's environment as the kubelet would build it (envFrom, then env; ConfigMap and Secret values
// looked up in the same manifests; the downward API's pod name filled in).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { IDeployment } from "kubernetes-models/apps/v1/Deployment";
import type { IStatefulSet } from "kubernetes-models/apps/v1/StatefulSet";
import type { IConfigMap } from "kubernetes-models/v1/ConfigMap";
import type { IContainer } from "kubernetes-models/v1/Container";
import type { ISecret } from "kubernetes-models/v1/Secret";
import { parse, parseAllDocuments } from "yaml";
import { ROOT } from "./role-process.ts";

export const K8S_DIR = join(ROOT, "k8s");

/** What every Kubernetes object has; the rest is checked by the schemas. */
export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [field: string]: unknown;
}

export interface Manifest {
  file: string;
  /** Position of the document in its file, from 0. */
  index: number;
  obj: K8sObject;
}

export interface Kustomization {
  resources: string[];
  namespace?: string;
  [field: string]: unknown;
}

export function loadKustomization(): Kustomization {
  return parse(readFileSync(join(K8S_DIR, "kustomization.yaml"), "utf8")) as Kustomization;
}

/** Every document of every file in the kustomization's resources, in order; YAML errors name the file. */
export function loadManifests(): Manifest[] {
  const out: Manifest[] = [];
  for (const file of loadKustomization().resources) {
    const docs = parseAllDocuments(readFileSync(join(K8S_DIR, file), "utf8"));
    if (!Array.isArray(docs)) throw new Error(`k8s/${file}: no YAML documents`);
    docs.forEach((doc, index) => {
      if (doc.errors.length > 0) throw new Error(`k8s/${file} document ${index}: ${doc.errors[0]!.message}`);
      const obj = doc.toJS() as K8sObject | null;
      if (obj !== null) out.push({ file, index, obj });
    });
  }
  return out;
}

export function byKind<T>(manifests: Manifest[], kind: string): (T & K8sObject)[] {
  return manifests.filter((m) => m.obj.kind === kind).map((m) => m.obj as T & K8sObject);
}

function named<T>(manifests: Manifest[], kind: string, name: string): T & K8sObject {
  const found = byKind<T>(manifests, kind).find((o) => o.metadata.name === name);
  if (!found) throw new Error(`a ${kind} named ${name} is referenced but not defined in k8s/`);
  return found;
}

/** Deployments that run the picoclaw image. */
export function picoclawDeployments(manifests: Manifest[]): (IDeployment & K8sObject)[] {
  return byKind<IDeployment>(manifests, "Deployment").filter((d) =>
    d.spec?.template.spec?.containers.some((c) => c.image?.startsWith("picoclaw:")),
  );
}

export function statefulSet(manifests: Manifest[], name: string): IStatefulSet & K8sObject {
  return named<IStatefulSet>(manifests, "StatefulSet", name);
}

/** A pod name as a Deployment's ReplicaSet makes them: <deployment>-<10-char template hash>-<5 chars>. */
export function podNameOf(deployment: string): string {
  return `${deployment}-7d9f8b6c5d-x2x7z`;
}

function secretValues(secret: ISecret): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(secret.data ?? {})) out[k] = Buffer.from(v, "base64").toString("utf8");
  return Object.assign(out, secret.stringData ?? {});
}

function configMapValue(manifests: Manifest[], name: string, key: string): string {
  const value = named<IConfigMap>(manifests, "ConfigMap", name).data?.[key];
  if (value === undefined) throw new Error(`ConfigMap ${name} has no key ${key}`);
  return value;
}

function secretValue(manifests: Manifest[], name: string, key: string): string {
  const value = secretValues(named<ISecret>(manifests, "Secret", name))[key];
  if (value === undefined) throw new Error(`Secret ${name} has no key ${key}`);
  return value;
}

/**
 * The container's environment as the kubelet builds it: envFrom sources in order, then env entries,
 * which win. A reference to a missing ConfigMap, Secret or key throws (the pod would not start);
 * so does any downward-API field other than the pod's name.
 */
export function containerEnv(manifests: Manifest[], container: IContainer, podName: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const from of container.envFrom ?? []) {
    const prefix = from.prefix ?? "";
    if (from.configMapRef) {
      const data = named<IConfigMap>(manifests, "ConfigMap", from.configMapRef.name!).data ?? {};
      for (const [k, v] of Object.entries(data)) env[prefix + k] = v;
    }
    if (from.secretRef) {
      for (const [k, v] of Object.entries(secretValues(named<ISecret>(manifests, "Secret", from.secretRef.name!)))) env[prefix + k] = v;
    }
  }
  for (const e of container.env ?? []) {
    const ref = e.valueFrom;
    if (e.value !== undefined) env[e.name] = e.value;
    else if (ref?.fieldRef) {
      if (ref.fieldRef.fieldPath !== "metadata.name") throw new Error(`${e.name}: unexpected fieldRef ${ref.fieldRef.fieldPath}`);
      env[e.name] = podName;
    } else if (ref?.configMapKeyRef) env[e.name] = configMapValue(manifests, ref.configMapKeyRef.name!, ref.configMapKeyRef.key);
    else if (ref?.secretKeyRef) env[e.name] = secretValue(manifests, ref.secretKeyRef.name!, ref.secretKeyRef.key);
    else throw new Error(`${e.name}: neither a value nor a supported valueFrom`);
  }
  return env;
}
