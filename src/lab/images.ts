// Built-in sample images: what a container with no `command` runs for each.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { rootPath, weftBin } from '../util/paths.ts';
import type { BuiltinImage } from '../kube/manifest.ts';

const tsxLoader = () => pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;

export function builtinEntrypoint(image: BuiltinImage): string[] {
  switch (image) {
    case 'weft/echo':
      return [process.execPath, '--import', tsxLoader(), rootPath('src/images/echo.ts')];
    case 'weft/grpc-echo':
      return [process.execPath, '--import', tsxLoader(), rootPath('src/images/grpc-echo.ts')];
    case 'weft/client':
      return [process.execPath, '--import', tsxLoader(), rootPath('src/images/client.ts')];
    case 'weft/sleep':
      return ['sleep', 'infinity'];
    case 'weft':
      // WEFT_IMAGE_NODE_ARGS: extra Node flags for pods of weft's own image (the waypoint), e.g.
      // --cpu-prof for `make bench`, as WEFT_AGENT_NODE_ARGS does for agents.
      return [process.execPath, ...(process.env.WEFT_IMAGE_NODE_ARGS?.split(' ').filter(Boolean) ?? []), weftBin];
  }
}
