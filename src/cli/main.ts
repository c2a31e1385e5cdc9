// The `weft` command line: the lab, the node agent and the control plane; `waypoint` joins later.
import { Command } from 'commander';
import { registerAgentCommand } from './agent.ts';
import { registerAnalyzeCommand, registerControlCommand } from './control.ts';
import { registerLabCommands } from './lab.ts';

const program = new Command();
program.name('weft').description('weft: a sidecarless service mesh with eBPF traffic capture').showHelpAfterError();
registerLabCommands(program);
registerAgentCommand(program);
registerControlCommand(program);
registerAnalyzeCommand(program);
(await import('./install.ts')).registerInstallCommands(program); // install, cni-install, cni-plugin

program.parseAsync(process.argv).catch((e: Error) => {
  console.error(`weft: ${e.message}`);
  process.exit(1);
});
