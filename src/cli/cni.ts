// `weft cni-install` (the CNI installer container of the agent DaemonSet) and `weft cni-plugin`
// (the chained CNI plugin itself; on nodes the installed wrapper runs the same code).
import type { Command } from 'commander';
import { installOnce, installRuntime, stopInstaller, type CniInstallOptions } from '../cni/installer.ts';
import { pluginMain } from '../cni/plugin-main.ts';

const list = (v: string, prev: string[] = []) => [...prev, v];

export function registerCniCommands(program: Command): void {
  program
    .command('cni-plugin')
    .description('the chained CNI plugin (CNI_COMMAND etc. in the environment, configuration on stdin)')
    .action(pluginMain);

  program
    .command('cni-install')
    .description('install the CNI plugin on this node, chain it into the CNI configuration, keep it there; unchain it on SIGTERM if the DaemonSet is being deleted')
    .option('--cni-bin-dir <dir>', 'CNI plugin directory (as mounted here)', '/host/opt/cni/bin')
    .option('--cni-conf-dir <dir>', 'CNI configuration directory (as mounted here)', '/host/etc/cni/net.d')
    .option('--install-dir <dir>', 'where the plugin runtime, kubeconfig and token go (as mounted here)', '/host/var/lib/weft/cni')
    .option('--host-install-dir <dir>', 'the same directory as the node sees it', '/var/lib/weft/cni')
    .option('--agent-socket <path>', "the agent's enrollment socket (node path)", '/var/run/weft/agent.sock')
    .option('--exclude-namespace <ns>', 'never enroll pods of this namespace (repeatable)', list, [])
    .option('--service-account-dir <dir>', 'token and ca.crt for the API', '/var/run/secrets/kubernetes.io/serviceaccount')
    .option('--kube-server <url>', 'API server (default: from KUBERNETES_SERVICE_HOST/PORT)')
    .option('--cgroup-root <dir>', "cgroup v2 mount on the node (default: the plugin finds it)")
    .option('--daemonset <name>', 'the DaemonSet this runs in: the plugin is unchained on stop only when it is deleted', 'weft-agent')
    .option('--interval <seconds>', 'how often to re-check the installation', (v) => parseInt(v, 10), 5)
    .option('--once', 'install once and exit (no watching, no removal)')
    .action((o: Omit<CniInstallOptions, 'excludeNamespaces'> & { excludeNamespace: string[]; interval: number; once?: boolean; daemonset: string }) => {
      const opts: CniInstallOptions = { ...o, excludeNamespaces: o.excludeNamespace, daemonSet: o.daemonset };
      const log = (msg: string, extra: Record<string, unknown> = {}) => console.log(JSON.stringify({ time: new Date().toISOString(), component: 'cni-install', msg, ...extra }));
      const { dir, wrapper } = installRuntime(opts.installDir, opts.hostInstallDir);
      log('plugin runtime in place', { dir });
      let waiting = false;
      const pass = () => {
        try {
          const s = installOnce(opts, wrapper);
          if (s.changed.length) log('installed', { confFile: s.confFile, changed: s.changed });
          if (!s.confFile && !waiting) log('no CNI configuration yet: waiting for the network plugin to write one', { dir: opts.cniConfDir });
          waiting = !s.confFile;
        } catch (e) {
          log('install pass failed; retrying', { error: (e as Error).message });
        }
      };
      pass();
      if (o.once) return;
      const timer = setInterval(pass, Math.max(1, o.interval) * 1000);
      let stopping = false;
      const stop = async (sig: string) => {
        if (stopping) return;
        stopping = true;
        clearInterval(timer);
        const r = await stopInstaller(opts);
        log(r.uninstalled ? 'stopping: uninstall, the plugin is taken out of the CNI configuration' : 'stopping: the plugin stays chained (ambient pods wait for the next agent)', { sig, why: r.why, changed: r.changed });
        process.exit(0);
      };
      process.on('SIGTERM', () => void stop('SIGTERM'));
      process.on('SIGINT', () => void stop('SIGINT'));
    });
}
