#!/usr/bin/env node
// weft's single entry point. TypeScript sources run through tsx's loader: there is no build step
// for the TypeScript side, only for the native addon and the BPF objects.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
