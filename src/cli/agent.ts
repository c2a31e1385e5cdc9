// `weft agent`: the node agent (a DaemonSet pod in Kubernetes; one process per node in the lab).
import { Command, Option } from 'commander';
import { runAgent } from '../agent/main.ts';

export function registerAgentCommand(program: Command): void {
  program
    .command('agent')
    .description('run the node agent: in-pod traffic capture, relay, metrics')
    .requiredOption('--node <name>', 'this node')
    .option('--socket <path>', 'enrollment socket', '/var/run/weft/agent.sock')
    .option('--state-dir <dir>', 'agent state (enrolled pods)', '/var/run/weft/agent')
    .option('--pin-root <dir>', 'bpffs directory for pinned programs, links and maps', '/sys/fs/bpf/weft')
    .addOption(new Option('--capture <mode>', 'capture mode').choices(['ebpf', 'iptables']).default('ebpf'))
    .option('--metrics-address <ip>', 'address for :15020 metrics and :15021 readiness', '0.0.0.0')
    .option('--metrics-port <port>', 'metrics port', (v) => parseInt(v, 10), 15020)
    .option('--readiness-port <port>', 'readiness port', (v) => parseInt(v, 10), 15021)
    .option('--admin-port <port>', 'admin port (localhost)', (v) => parseInt(v, 10), 15000)
    .action(async (o) => runAgent(o as Parameters<typeof runAgent>[0]));
}
