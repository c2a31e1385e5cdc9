// weft-cni, a chained CNI plugin: on ADD it decides from the pod's and its namespace's labels
// whether the pod joins the mesh and, if so, has the node agent capture it before the runtime
// starts any container. Fail closed: if the agent cannot capture the pod, ADD fails and the pod
// does not start (the kubelet retries), rather than starting outside the mesh. The decision itself
// is decideEnrollment (src/api/enrollment.ts), which the lab runs for its pods too.
//   ADD    -> look up labels, enroll if ambient, pass prevResult through
//   DEL    -> release (best effort: the agent forgets pods whose netns is gone anyway)
//   CHECK  -> an ambient pod must be enrolled
//   VERSION, and GC/STATUS of CNI 1.1 (nothing to do)
import { decideEnrollment, enrollPod, listEnrolledPods, releasePod, type EnrollmentDecision, type PodInfo } from '../api/enrollment.ts';
import { resolvePodCgroup } from './cgroup.ts';
import { kubeGet, loadKubeconfig, namespacePath, podPath, type KubeAccess, type NamespaceMeta, type PodMeta } from '../kube/client.ts';
import { CniError, ERR, errorResult, parseConf, parseEnv, resultIps, versionResult, type CniEnv, type WeftCniConf } from './protocol.ts';

export interface PluginOutput {
  stdout: string;
  exitCode: number;
  /** Diagnostics for the runtime's log. */
  log: string[];
}

/** The shared decision about the pod read from the API, or why no pod was read. */
type Decision = (EnrollmentDecision & { pod: PodMeta }) | { enroll: false; why: string; pod?: undefined };

/** Runs one CNI invocation; never throws (errors become CNI error results). */
export async function runPlugin(env: NodeJS.ProcessEnv, stdin: string): Promise<PluginOutput> {
  const log: string[] = [];
  let cniVersion: string | undefined;
  try {
    const e = parseEnv(env);
    const conf = parseConf(stdin, e.command);
    cniVersion = conf.cniVersion;
    switch (e.command) {
      case 'VERSION':
        return { stdout: versionResult(conf.cniVersion), exitCode: 0, log };
      case 'ADD':
        return { stdout: await add(e, conf, log), exitCode: 0, log };
      case 'DEL':
        await del(e, conf, log);
        return { stdout: '', exitCode: 0, log };
      case 'CHECK':
        await check(e, conf, log);
        return { stdout: '', exitCode: 0, log };
      case 'GC':
      case 'STATUS':
        return { stdout: '', exitCode: 0, log };
    }
  } catch (err) {
    log.push(`weft-cni: ${(err as Error).message}`);
    return { stdout: errorResult(cniVersion, err), exitCode: 1, log };
  }
}

async function decide(e: CniEnv, conf: WeftCniConf): Promise<Decision> {
  const ns = e.args.K8S_POD_NAMESPACE;
  const name = e.args.K8S_POD_NAME;
  if (!ns || !name) return { enroll: false, why: 'not a Kubernetes pod (no K8S_POD_NAMESPACE/K8S_POD_NAME in CNI_ARGS)' };
  if (conf.excludeNamespaces?.includes(ns)) return { enroll: false, why: `namespace ${ns} is excluded` };
  let kube: KubeAccess;
  try {
    kube = loadKubeconfig(conf.kubeconfig);
  } catch (err) {
    throw new CniError(ERR.invalidConfig, (err as Error).message);
  }
  let pod: PodMeta | undefined;
  let namespace: NamespaceMeta | undefined;
  try {
    [pod, namespace] = await Promise.all([kubeGet<PodMeta>(kube, podPath(ns, name)), kubeGet<NamespaceMeta>(kube, namespacePath(ns))]);
  } catch (err) {
    throw new CniError(ERR.podLookup, `pod ${ns}/${name}: cannot read its labels: ${(err as Error).message}`);
  }
  if (!pod) throw new CniError(ERR.unknownContainer, `pod ${ns}/${name} does not exist`);
  const uid = e.args.K8S_POD_UID;
  if (uid && pod.metadata.uid !== uid) throw new CniError(ERR.unknownContainer, `pod ${ns}/${name} is now ${pod.metadata.uid}, not ${uid} (replaced)`);
  return { ...decideEnrollment(pod, namespace?.metadata.labels), pod };
}

async function add(e: CniEnv, conf: WeftCniConf, log: string[]): Promise<string> {
  if (!conf.prevResult) throw new CniError(ERR.invalidConfig, 'weft-cni is a chained plugin: it needs a prevResult (put it after the network plugin in a conflist)');
  const result = JSON.stringify({ ...conf.prevResult, cniVersion: conf.cniVersion });
  const d = await decide(e, conf);
  log.push(`weft-cni ADD ${e.args.K8S_POD_NAMESPACE ?? '?'}/${e.args.K8S_POD_NAME ?? '?'}: ${d.why}`);
  if (!d.enroll) return result;
  const pod = d.pod;
  let cgroup: string;
  try {
    cgroup = resolvePodCgroup({ uid: pod.metadata.uid, netns: e.netns, root: conf.cgroupRoot });
  } catch (err) {
    throw new CniError(ERR.enrollRefused, `pod ${pod.metadata.namespace}/${pod.metadata.name}: ${(err as Error).message}`);
  }
  const info: PodInfo = d.podInfo({ netns: e.netns, cgroup, ips: resultIps(conf.prevResult) });
  try {
    await enrollPod(conf.agentSocket, info, conf.enrollTimeoutMs ?? 30_000);
  } catch (err) {
    const unreachable = /ENOENT|ECONNREFUSED|did not answer/.test((err as Error).message);
    throw new CniError(
      unreachable ? ERR.tryAgainLater : ERR.enrollRefused,
      `pod ${info.namespace}/${info.name} is ambient but the node agent did not capture it: ${(err as Error).message}`,
      unreachable ? `is the weft agent running on this node (socket ${conf.agentSocket})?` : '',
    );
  }
  log.push(`weft-cni ADD ${info.namespace}/${info.name}: enrolled (${info.ips.join(', ') || 'no IPs'}; cgroup ${cgroup})`);
  return result;
}

async function del(e: CniEnv, conf: WeftCniConf, log: string[]): Promise<void> {
  const uid = e.args.K8S_POD_UID;
  if (!uid) return;
  try {
    const r = await releasePod(conf.agentSocket, uid, 10_000);
    if (r.released) log.push(`weft-cni DEL ${uid}: released`);
  } catch (err) {
    // DEL must not wedge pod teardown; the agent drops pods whose netns is gone when it restarts.
    log.push(`weft-cni DEL ${uid}: agent not told (${(err as Error).message})`);
  }
}

async function check(e: CniEnv, conf: WeftCniConf, log: string[]): Promise<void> {
  const d = await decide(e, conf);
  if (!d.enroll) return;
  const uid = d.pod.metadata.uid;
  let pods: { info?: { uid?: string } }[];
  try {
    pods = (await listEnrolledPods(conf.agentSocket, 10_000)).pods ?? [];
  } catch (err) {
    throw new CniError(ERR.tryAgainLater, `cannot ask the node agent about pod ${uid}: ${(err as Error).message}`);
  }
  if (!pods.some((p) => p.info?.uid === uid)) throw new CniError(ERR.notEnrolled, `pod ${d.pod.metadata.namespace}/${d.pod.metadata.name} is ambient but not captured by the node agent`);
  log.push(`weft-cni CHECK ${uid}: enrolled`);
}
