// The first module of every rank's worker thread (core/parallel/group.ts starts it). Plain JavaScript, so
// that Node can run it before any TypeScript loader exists: it registers tsx's ESM loader in this thread,
// then loads the TypeScript rest. A worker thread does not get the loader of the `tsx` CLI that started the
// process (Node 20 runs the CLI's `--import` hooks in the main thread only), and vitest's transform does
// not reach worker threads at all, so the loader is registered here in both cases (under the tsx CLI the
// thread then holds two registrations of the same loader, which is harmless).
import { register } from 'tsx/esm/api';

register();
const { serveRank } = await import('./group.ts');
await serveRank();
