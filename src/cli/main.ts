// The `weft` command line: lab commands today; `agent`, `control` and `waypoint` join later.
import { Command } from 'commander';
import { registerLabCommands } from './lab.ts';

const program = new Command();
program.name('weft').description('weft: a sidecarless service mesh with eBPF traffic capture').showHelpAfterError();
registerLabCommands(program);

program.parseAsync(process.argv).catch((e: Error) => {
  console.error(`weft: ${e.message}`);
  process.exit(1);
});
