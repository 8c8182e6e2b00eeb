/**
 * Tensor backends. tfjs's cpu backend is the default and works on any machine; the native addon's
 * kernels (core/native) are registered into it when they were built. `@tensorflow/tfjs-node-gpu` and
 * `@tensorflow/tfjs-node` are used only when installed (their install downloads libtensorflow, which not
 * every machine can reach, so they are never dependencies); `webgpu` runs tfjs's WebGPU backend on Dawn
 * (the `webgpu` npm package) when that and `@tensorflow/tfjs-backend-webgpu` are installed.
 *
 * Chosen by (first wins): the `--backend` flag, the `VOLSEG_BACKEND` environment variable, the
 * experiment's `training.backend`. 'auto' takes tensorflow-gpu, then tensorflow, then cpu.
 * The wasm backend is deliberately absent: its Conv3DBackpropInputV2 gives wrong results in tfjs 4.22.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { createRequire } from 'node:module';
import { registerProjectKernels } from './kernels/index.js';

export type BackendName = 'cpu' | 'tensorflow' | 'tensorflow-gpu' | 'webgpu';
export type BackendChoice = BackendName | 'auto';
export const BACKEND_CHOICES: BackendChoice[] = ['auto', 'cpu', 'tensorflow', 'tensorflow-gpu', 'webgpu'];

export interface BackendInfo {
  /** The choice that was asked for. */
  requested: BackendChoice;
  /** tfjs's backend name now active ('cpu', 'tensorflow', 'webgpu'). */
  tfjsBackend: string;
  /** What ran, for the trial record, e.g. 'cpu+native(avx2-fma, 2 threads)' or 'cpu (JavaScript kernels)'. */
  label: string;
  /** Where the native kernels stand on the cpu backend ('' elsewhere). */
  nativeKernels: string;
}

const require = createRequire(import.meta.url);

function installed(pkg: string): boolean {
  try {
    require.resolve(pkg);
    return true;
  } catch {
    return false;
  }
}

export class BackendUnavailableError extends Error {
  constructor(backend: BackendChoice, why: string) {
    super(`backend "${backend}" is not available: ${why}`);
    this.name = 'BackendUnavailableError';
  }
}

let active: BackendInfo | null = null;

function silenceCpuGreeting(): void {
  // The cpu backend prints a "use tfjs-node" banner on first use; the run says which backend it used.
  const backend = tf.findBackend('cpu') as unknown as { firstUse?: boolean } | null;
  if (backend && 'firstUse' in backend) backend.firstUse = false;
}

async function initCpu(requested: BackendChoice): Promise<BackendInfo> {
  await tf.setBackend('cpu');
  await tf.ready();
  silenceCpuGreeting();
  registerProjectKernels();
  let nativeKernels = 'not built';
  let label = 'cpu (JavaScript kernels)';
  try {
    const native = await import('./native-kernels.js');
    const status = native.registerNativeKernels();
    if (status.loaded) {
      nativeKernels = `${status.simd}, ${status.threads} threads, ${status.kernels.length} kernels`;
      label = `cpu+native(${status.simd}, ${status.threads} threads)`;
    } else nativeKernels = `not loaded: ${status.reason ?? 'unknown reason'}`;
  } catch (e) {
    nativeKernels = `not loaded: ${(e as Error).message}`;
  }
  return { requested, tfjsBackend: 'cpu', label, nativeKernels };
}

async function initTensorflow(requested: BackendChoice, gpu: boolean): Promise<BackendInfo> {
  const pkg = gpu ? '@tensorflow/tfjs-node-gpu' : '@tensorflow/tfjs-node';
  if (!installed(pkg))
    throw new BackendUnavailableError(
      requested,
      `${pkg} is not installed. Install it with \`npm install ${pkg}@4.22.0\` (its install downloads libtensorflow, so the machine must reach storage.googleapis.com), or use --backend cpu.`,
    );
  await import(pkg);
  await tf.setBackend('tensorflow');
  await tf.ready();
  registerProjectKernels();
  return { requested, tfjsBackend: 'tensorflow', label: gpu ? 'tensorflow-gpu (libtensorflow CUDA)' : 'tensorflow (libtensorflow CPU)', nativeKernels: '' };
}

async function initWebgpu(requested: BackendChoice): Promise<BackendInfo> {
  for (const pkg of ['webgpu', '@tensorflow/tfjs-backend-webgpu'])
    if (!installed(pkg))
      throw new BackendUnavailableError(
        requested,
        `${pkg} is not installed. Install with \`npm install webgpu @tensorflow/tfjs-backend-webgpu@4.22.0\`; Dawn also needs a GPU and the Vulkan loader (Debian: libvulkan1).`,
      );
  const dawn = (await import('webgpu' as string)) as { create: (flags: string[]) => unknown; globals: object };
  Object.assign(globalThis, dawn.globals);
  const gpu = dawn.create([]) as { requestAdapter(): Promise<unknown> };
  Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
  const webgpu = (await import('@tensorflow/tfjs-backend-webgpu' as string)) as {
    WebGPUBackend: new (device: unknown, adapterInfo?: unknown) => tf.KernelBackend;
  };
  const adapter = (await gpu.requestAdapter()) as {
    limits: Record<string, number>;
    requestDevice(desc: unknown): Promise<unknown>;
    requestAdapterInfo?: () => Promise<unknown>;
    info?: unknown;
  } | null;
  if (!adapter) throw new BackendUnavailableError(requested, 'Dawn found no GPU adapter (is there a GPU and the Vulkan loader, libvulkan1?)');
  // The default limits (256 MiB per buffer) are smaller than one 192³×16-channel activation: ask for all.
  const limits = adapter.limits;
  const device = await adapter.requestDevice({
    requiredLimits: {
      maxBufferSize: limits.maxBufferSize,
      maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize,
      maxComputeWorkgroupStorageSize: limits.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: limits.maxComputeInvocationsPerWorkgroup,
    },
  });
  const info = adapter.info ?? (await adapter.requestAdapterInfo?.());
  // tfjs registers its WebGPU kernels for the backend named 'webgpu': ours must take that name (the
  // package's own factory, registered on import, asks navigator.gpu for default limits: replace it).
  if (tf.findBackendFactory('webgpu')) tf.removeBackend('webgpu');
  tf.registerBackend('webgpu', () => new webgpu.WebGPUBackend(device, info), 3);
  // tfjs holds every buffer a pending command reads until it submits them, 15 dispatches at a time by
  // default: memory then peaks above what the step needs. Submitting each dispatch frees buffers when the
  // program that freed them is queued (the estimator's model); VOLSEG_WEBGPU_SUBMIT_BATCH sets another count.
  tf.env().set('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE', submitBatch());
  await tf.setBackend('webgpu');
  await tf.ready();
  registerProjectKernels();
  (await import('./kernels/webgpu/index.js')).registerWebgpuConvKernels();
  return {
    requested,
    tfjsBackend: 'webgpu',
    label: `webgpu (Dawn; maxBufferSize ${limits.maxBufferSize} B)`,
    nativeKernels: '',
  };
}

/** Dispatches tfjs's WebGPU backend records before it submits them (VOLSEG_WEBGPU_SUBMIT_BATCH, default 1). */
function submitBatch(): number {
  const raw = process.env.VOLSEG_WEBGPU_SUBMIT_BATCH;
  if (raw === undefined || raw === '') return 1;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new BackendUnavailableError('webgpu', `VOLSEG_WEBGPU_SUBMIT_BATCH must be a whole number ≥ 1, got "${raw}"`);
  return n;
}

/** Resolves the backend name from flag, environment and experiment setting (first set wins). */
export function chooseBackend(flag: string | undefined, experimentSetting: string | undefined): BackendChoice {
  const value = flag ?? process.env.VOLSEG_BACKEND ?? experimentSetting ?? 'cpu';
  if (!(BACKEND_CHOICES as string[]).includes(value))
    throw new BackendUnavailableError(value as BackendChoice, `unknown backend; choose one of ${BACKEND_CHOICES.join(', ')}`);
  return value as BackendChoice;
}

/** Initialises the backend once per process (tfjs has one global engine); a second, different request fails. */
export async function initBackend(choice: BackendChoice): Promise<BackendInfo> {
  if (active) {
    if (choice === active.requested || choice === 'auto' || choice === active.tfjsBackend) return active;
    throw new BackendUnavailableError(choice, `this process already runs on "${active.label}"; run trials on different backends in separate runs`);
  }
  if (choice === 'auto') {
    if (installed('@tensorflow/tfjs-node-gpu')) active = await initTensorflow(choice, true);
    else if (installed('@tensorflow/tfjs-node')) active = await initTensorflow(choice, false);
    else active = await initCpu(choice);
  } else if (choice === 'cpu') active = await initCpu(choice);
  else if (choice === 'tensorflow') active = await initTensorflow(choice, false);
  else if (choice === 'tensorflow-gpu') active = await initTensorflow(choice, true);
  else active = await initWebgpu(choice);
  return active;
}

export function activeBackend(): BackendInfo | null {
  return active;
}
