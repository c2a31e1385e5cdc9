// `weft install`: renders weft's Kubernetes manifests (control plane, node agents with the CNI
// installer, RBAC, CRDs, a waypoint template); daemonset/ holds the rendering with the defaults.
import { Command, Option } from 'commander';
import { DEFAULTS, resolveOptions, type InstallOptions } from '../install/options.ts';
import { renderFiles, renderStream, writeFiles } from '../install/render.ts';
import { registerCniCommands } from './cni.ts';

/** `weft install` and the node-side commands it deploys (`cni-install`, `cni-plugin`). */
export function registerInstallCommands(program: Command): void {
  registerInstallCommand(program);
  registerCniCommands(program);
}

export function registerInstallCommand(program: Command): void {
  program
    .command('install')
    .description('render the Kubernetes manifests (a kustomize base with -o, else one YAML stream on stdout for kubectl apply -f -)')
    .option('--namespace <ns>', 'namespace of the control plane and the agents (the mesh root namespace)', DEFAULTS.namespace)
    .option('--image <ref>', 'weft image (built from daemonset/Dockerfile)', DEFAULTS.image)
    .addOption(new Option('--image-pull-policy <policy>', 'image pull policy').choices(['Always', 'IfNotPresent', 'Never']).default(DEFAULTS.imagePullPolicy))
    .option('--trust-domain <td>', 'SPIFFE trust domain', DEFAULTS.trustDomain)
    .addOption(new Option('--ca-source <source>', 'mesh CA: a self-signed root, or a plugged-in Istio cacerts secret').choices(['self-signed', 'plugged']).default(DEFAULTS.caSource))
    .option('--cacerts-secret <name>', 'the cacerts secret (with --ca-source plugged)', DEFAULTS.cacertsSecret)
    .option('--cni-bin-dir <dir>', "the nodes' CNI plugin directory", DEFAULTS.cniBinDir)
    .option('--cni-conf-dir <dir>', "the nodes' CNI configuration directory", DEFAULTS.cniConfDir)
    .option('--plaintext-xds', 'also serve xDS in plaintext on 15010, to proxyless gRPC clients without a node credential (it answers any pod)', DEFAULTS.plaintextXds)
    .option('--otlp-logs-endpoint <url>', "the agents also export their access log over OTLP logs (HTTP/protobuf) to this URL, e.g. http://otel-collector.observability:4318/v1/logs (default: off)")
    .option('--pod-cidrs <list>', "the cluster's pod network (comma-separated CIDRs, e.g. 10.244.0.0/16): agents refuse an address in it their mesh state does not know, rather than pass it through in plaintext (default: off)")
    .option('-o, --output <dir>', 'write the files (kustomization.yaml, ..., waypoint/) into this directory')
    .action((opts: InstallOptions & { output?: string }) => {
      const { output, ...rest } = opts;
      const o = resolveOptions(rest);
      if (!output) return void process.stdout.write(renderStream(o));
      const files = renderFiles(o);
      writeFiles(output, files);
      for (const f of files) console.error(`wrote ${output.replace(/\/$/, '')}/${f.path} (${f.objects.length} object${f.objects.length === 1 ? '' : 's'})`);
    });
}
