/**
 * Whether tfjs's WebGPU backend can run here, for the suites that need it: the optional packages
 * (`webgpu`, Dawn's npm build, and `@tensorflow/tfjs-backend-webgpu`) and an adapter (Mesa's lavapipe
 * gives one without a GPU: mesa-vulkan-drivers from bookworm-backports, libvulkan1; `.ci/run` installs
 * them). Where they are missing a suite skips and says why, unless VOLSEG_REQUIRE_WEBGPU=1 (CI), where
 * that is a failure.
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { resolve } from 'node:path';

const ROOT = resolve(__dirname, '../..');
const require = createRequire(import.meta.url);

/** VOLSEG_REQUIRE_WEBGPU=1: a missing WebGPU is a failure, not a skip. */
export const required = process.env.VOLSEG_REQUIRE_WEBGPU === '1';

/** The environment for processes that start Dawn: it needs XDG_RUNTIME_DIR set. */
export const env = { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? tmpdir() };

let probed: { why: string | null } | undefined;

/**
 * Why WebGPU cannot run here, or null when it can (packages installed, an adapter found). The adapter is
 * probed once per process, in a child process (initBackend('webgpu') there).
 */
export function webgpuUnavailable(): string | null {
  if (probed) return probed.why;
  probed = { why: probe() };
  return probed.why;
}

function probe(): string | null {
  for (const pkg of ['webgpu', '@tensorflow/tfjs-backend-webgpu']) {
    try {
      require.resolve(pkg);
    } catch {
      return `${pkg} is not installed (npm install --no-save webgpu@0.6.2 @tensorflow/tfjs-backend-webgpu@4.22.0)`;
    }
  }
  const child = spawnSync(process.execPath, ['--import', 'tsx', '-e', "import('./core/backend/index.js').then((b) => b.initBackend('webgpu')).then((i) => console.log('ADAPTER', i.label))"], {
    cwd: ROOT,
    env,
    encoding: 'utf8',
    timeout: 60_000,
  });
  if (!/ADAPTER/.test(child.stdout)) return `no WebGPU adapter: ${(child.stderr || child.stdout).split('\n').filter((l) => l && !l.startsWith('Warning')).slice(-2).join(' ')}`;
  return null;
}

/**
 * For a suite named `suite` (its file name): null when WebGPU runs here; otherwise the reason, after a
 * console.warn that the suite is skipped, or, under VOLSEG_REQUIRE_WEBGPU=1, it throws instead.
 */
export function webgpuSkipReason(suite: string): string | null {
  const why = webgpuUnavailable();
  if (why) {
    if (required) throw new Error(`VOLSEG_REQUIRE_WEBGPU=1 but WebGPU cannot run: ${why}`);
    console.warn(`${suite} skipped: ${why}`);
  }
  return why;
}
