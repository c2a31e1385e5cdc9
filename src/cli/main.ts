// The `weft` command line: the lab, the node agent, the control plane and waypoints.
import { Command } from 'commander';
import { registerAgentCommand } from './agent.ts';

const program = new Command();
program.name('weft').description('weft: a sidecarless service mesh with eBPF traffic capture').showHelpAfterError();
// `weft agent` runs on every node for as long as the node lives, `weft waypoint run` in every
// waypoint pod: each registers its own command only. The other commands' modules (the lab, the
// control plane's analyzer, the manifests and their YAML parser, install) would stay in its heap
// unused (issues #6 and #15).
const agentOnly = process.argv[2] === 'agent';
const waypointRunOnly = process.argv[2] === 'waypoint' && process.argv[3] === 'run';
if (waypointRunOnly) {
  const { registerWaypointRun, WAYPOINT_DESCRIPTION } = await import('./waypoint-run.ts');
  registerWaypointRun(program.command('waypoint').description(WAYPOINT_DESCRIPTION));
} else {
  if (!agentOnly) (await import('./lab.ts')).registerLabCommands(program);
  registerAgentCommand(program);
  if (!agentOnly) {
    const { registerAnalyzeCommand, registerControlCommand } = await import('./control.ts');
    registerControlCommand(program);
    registerAnalyzeCommand(program);
    (await import('./install.ts')).registerInstallCommands(program); // install, cni-install, cni-plugin
    (await import('./waypoint.ts')).registerWaypointCommands(program); // waypoint apply, list
  }
}

program.parseAsync(process.argv).catch((e: Error) => {
  console.error(`weft: ${e.message}`);
  process.exit(1);
});
