// Built-in image `weft/client`: sends HTTP requests on a fresh connection each time (so a
// service's load balancing is visible) and logs one JSON line per request.
//   args: URL... [--interval MS] [--count N]   (count 0 = forever)
import { request } from 'node:http';

const args = process.argv.slice(2);
const urls: string[] = [];
let interval = 1000;
let count = 0;
for (let i = 0; i < args.length; i++) {
  const a = args[i]!;
  if (a === '--interval') interval = Number(args[++i]);
  else if (a === '--count') count = Number(args[++i]);
  else urls.push(a);
}
if (urls.length === 0) {
  console.error('usage: client URL... [--interval MS] [--count N]');
  process.exit(2);
}

function once(url: string): Promise<void> {
  const start = process.hrtime.bigint();
  return new Promise((resolve) => {
    const req = request(url, { agent: false, headers: { connection: 'close' }, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => {
        let served: unknown = undefined;
        try {
          served = (JSON.parse(body) as { pod?: string }).pod;
        } catch {}
        const ms = Number(process.hrtime.bigint() - start) / 1e6;
        console.log(JSON.stringify({ url, status: res.statusCode, servedBy: served, ms: Math.round(ms * 100) / 100 }));
        resolve();
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => {
      console.log(JSON.stringify({ url, error: e.message }));
      resolve();
    });
    req.end();
  });
}

for (let n = 0; count === 0 || n < count; n++) {
  for (const u of urls) await once(u);
  await new Promise((r) => setTimeout(r, interval));
}
