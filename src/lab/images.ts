// Built-in sample images: what a container with no `command` runs for each.
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { BuiltinImage } from './manifest.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const tsxLoader = () => pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;

export function builtinEntrypoint(image: BuiltinImage): string[] {
  switch (image) {
    case 'weft/echo':
      return [process.execPath, '--import', tsxLoader(), join(root, 'src/images/echo.ts')];
    case 'weft/client':
      return [process.execPath, '--import', tsxLoader(), join(root, 'src/images/client.ts')];
    case 'weft/sleep':
      return ['sleep', 'infinity'];
  }
}
