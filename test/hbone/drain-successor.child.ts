// The new agent of drain.test.ts: an HBONE server (argv[2]: node | native) on the listening socket
// it inherited as fd 3, as a new node agent serves the socket the old one hands over. Prints `ready`
// once listening; when its stdin ends it drains, prints how many CONNECTs it served, and exits.
import { NativeHboneServer } from '../../src/hbone/native/server.ts';
import { createHboneServer } from '../../src/hbone/node/server.ts';
import type { HboneRequestInfo } from '../../src/hbone/server/contract.ts';
import type { Credentials } from '../../src/hbone/settings.ts';
import { connectTo } from './harness.ts';

const kind = process.argv[2];
if (kind !== 'node' && kind !== 'native') throw new Error(`drain-successor: argv[2] must be node or native, not ${kind}`);
const credentials = JSON.parse(process.env.WEFT_TEST_CREDENTIALS ?? 'null') as Credentials | null;
if (!credentials) throw new Error('drain-successor: WEFT_TEST_CREDENTIALS is not set');

let served = 0;
const opts = {
  credentials: () => credentials,
  trustDomain: 'cluster.local',
  onConnect: async (req: HboneRequestInfo) => {
    served++;
    return { status: 200 as const, upstream: await connectTo(req.authority.port) };
  },
};
const server = kind === 'native' ? new NativeHboneServer(opts) : createHboneServer(opts);
await server.listen({ fd: 3 });
process.stdout.write('ready\n');
process.stdin.resume();
process.stdin.once('end', () => {
  void server.drain(2000).then(() => {
    process.stdout.write(`${JSON.stringify({ served })}\n`);
    process.exit(0);
  });
});
