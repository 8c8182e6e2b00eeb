// Builds the optional native kernels (core/backend/native/build/Release/volseg_native.node) with npm's
// bundled node-gyp. Runs as the package's `install` script, so it must never fail a plain user's
// `npm install`: any failure prints one line and exits 0, and training then uses tfjs's JavaScript
// kernels. Set VOLSEG_NO_NATIVE=1 to skip the build. With VOLSEG_REQUIRE_NATIVE=1 (CI, where a compiler
// exists) a failed build fails the install instead.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..', '..');
const output = path.join(here, 'build', 'Release', 'volseg_native.node');

function skip(reason) {
  if (process.env.VOLSEG_REQUIRE_NATIVE === '1' && process.env.VOLSEG_NO_NATIVE !== '1') {
    console.error(`native kernels not built: ${reason}; VOLSEG_REQUIRE_NATIVE=1 makes this an error (unset it to fall back to tfjs's JavaScript kernels)`);
    process.exit(1);
  }
  console.log(`native kernels not built: ${reason}; training uses tfjs's JavaScript kernels`);
  process.exit(0);
}

function findNodeGyp() {
  const candidates = [];
  if (process.env.npm_config_node_gyp) candidates.push(process.env.npm_config_node_gyp);
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  candidates.push(path.join(prefix, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  // Windows layout: node.exe next to node_modules/npm.
  candidates.push(path.join(path.dirname(process.execPath), 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  return candidates.find((c) => existsSync(c));
}

// Node's headers: npm passes its `nodedir` config as npm_config_nodedir; otherwise use the
// headers installed next to this node binary (prefix/include/node), so nothing is downloaded.
function findNodeDir() {
  const fromNpm = process.env.npm_config_nodedir;
  if (fromNpm && existsSync(path.join(fromNpm, 'include', 'node', 'node_api.h'))) return fromNpm;
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  if (existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) return prefix;
  return fromNpm || undefined;
}

function main() {
  if (process.env.VOLSEG_NO_NATIVE === '1') skip('VOLSEG_NO_NATIVE=1');
  const gyp = findNodeGyp();
  if (!gyp) skip("npm's node-gyp was not found");
  const nodedir = findNodeDir();
  const args = [gyp, 'rebuild', '--directory', path.relative(root, here) || '.', '--loglevel=warn'];
  if (nodedir) args.push(`--nodedir=${nodedir}`);
  const started = Date.now();
  const res = spawnSync(process.execPath, args, {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, JOBS: process.env.JOBS ?? 'max' },
    maxBuffer: 64 * 1024 * 1024,
    // Without local headers node-gyp downloads them; never let that hang an install.
    timeout: 10 * 60 * 1000,
  });
  if (res.error) skip(`node-gyp could not run (${res.error.message})`);
  if (res.status !== 0 || !existsSync(output)) {
    const log = `${res.stdout ?? ''}\n${res.stderr ?? ''}`;
    const lines = log.split('\n');
    const firstError =
      lines.find((l) => /\berror:/.test(l)) ?? lines.find((l) => /error/i.test(l)) ?? `exit code ${res.status}`;
    if (process.env.VOLSEG_NATIVE_VERBOSE === '1') console.error(log);
    skip(`node-gyp build failed (${firstError.trim().slice(0, 300)})`);
  }
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  console.log(`native kernels built in ${secs} s: ${path.relative(root, output)}`);
}

try {
  main();
} catch (err) {
  skip(err instanceof Error ? err.message : String(err));
}
