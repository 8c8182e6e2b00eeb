import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { BufferLedger, DeviceMemoryMeter } from '../core/memory/meter.js';

describe('BufferLedger', () => {
  it('accounts a hand-computed sequence of allocations, aliases and frees', () => {
    const L = new BufferLedger();
    L.currentOp = 'load';
    L.allocate('x', 100); // live 100
    L.currentOp = 'forward';
    L.allocate('y', 300); // live 400 (peak 400, forward)
    L.alias('x'); // x has 2 refs, +0
    L.free('x'); // 1 ref left, +0
    expect(L.live).toBe(400);
    expect(L.count).toBe(2);
    L.currentOp = 'backward';
    L.allocate(7, 50); // live 450 → peak 450 at backward
    L.free('y'); // live 150
    L.allocate('z', 200, 'explicit op'); // live 350
    L.free('x'); // last ref: live 250
    expect(L.live).toBe(250);
    expect(L.peak).toBe(450);
    expect(L.peakOp).toBe('backward');
    expect(L.count).toBe(2);
    expect(L.has('x')).toBe(false);
    L.resetPeak();
    expect(L.peak).toBe(250);
    L.allocate('w', 300, 'big'); // live 550 → new peak at 'big'
    expect(L.peak).toBe(550);
    expect(L.peakOp).toBe('big');
    L.resize('w', 100); // live 350
    expect(L.live).toBe(350);
    expect(L.peak).toBe(550);
  });

  it('records the first budget overflow without throwing, and clears it on take', () => {
    const L = new BufferLedger();
    L.setBudget(1000);
    L.currentOp = 'step 1 / forward / conv1';
    L.allocate('a', 600);
    expect(L.takeOverflow()).toBeNull();
    L.currentOp = 'step 1 / forward / conv2';
    L.allocate('b', 500); // live 1100 > 1000
    L.currentOp = 'step 1 / forward / conv3';
    L.allocate('c', 100); // a second overflow is not recorded while the first is pending
    expect(L.takeOverflow()).toEqual({ op: 'step 1 / forward / conv2', needed: 500, available: 400, live: 1100, budget: 1000 });
    expect(L.takeOverflow()).toBeNull();
    L.setBudget(null);
    L.allocate('d', 1e9);
    expect(L.takeOverflow()).toBeNull();
  });

  it('tracks host bytes separately', () => {
    const L = new BufferLedger();
    L.hostAllocate(1000);
    L.hostAllocate(500);
    L.hostFree(1000);
    expect(L.hostLive).toBe(500);
    expect(L.hostPeak).toBe(1500);
    expect(L.live).toBe(0);
    expect(() => L.hostFree(501)).toThrow(/only 500 host bytes/);
  });

  it('rejects bookkeeping mistakes with a message naming the buffer', () => {
    const L = new BufferLedger();
    L.allocate('a', 1);
    expect(() => L.allocate('a', 1)).toThrow(/"a" is already live/);
    expect(() => L.free('b')).toThrow(/"b" is not live/);
    expect(() => L.alias('b')).toThrow(/"b" is not live/);
    expect(() => L.allocate('c', -1)).toThrow(/got -1/);
  });
});

describe('DeviceMemoryMeter on the cpu backend', () => {
  beforeAll(async () => {
    await tf.setBackend('cpu');
    await tf.ready();
    tf.zeros([1]).dispose(); // first write prints tfjs's "use tfjs-node" notice; keep it out of the tests
  });

  it('counts distinct buffers: reshape and clone share, add allocates; releases on the last reference', () => {
    const meter = new DeviceMemoryMeter().attach();
    const L = meter.ledger;
    expect(meter.method).toBe('cpu-data-storage');
    expect(meter.backendName).toBe('cpu');
    const bytes0 = tf.memory().numBytes;
    try {
      L.currentOp = 'a = zeros';
      const a = tf.zeros([1000]); // 4000 B
      expect(L.live).toBe(4000);
      L.currentOp = 'b = reshape';
      const b = tf.reshape(a, [10, 100]); // same dataId: +0
      L.currentOp = 'c = clone';
      const c = tf.clone(a); // same dataId: +0
      expect(L.live).toBe(4000);
      expect(L.count).toBe(1);
      L.currentOp = 'd = a + 1';
      const d = tf.add(a, 1); // output 4000 B; the scalar 1 (4 B) lives during the op and is disposed by its scope
      expect(L.live).toBe(8000);
      expect(L.peak).toBe(8004);
      expect(L.peakOp).toBe('d = a + 1');
      // The engine counts every tensor: a, b, c each 4000 B although they share one buffer.
      expect(tf.memory().numBytes - bytes0).toBe(16000);
      a.dispose(); // b and c still reference the buffer
      expect(L.live).toBe(8000);
      b.dispose();
      expect(L.live).toBe(8000);
      c.dispose(); // last reference: released
      expect(L.live).toBe(4000);
      expect(tf.memory().numBytes - bytes0).toBe(4000);
      d.dispose();
      expect(L.live).toBe(0);
      expect(L.count).toBe(0);
      expect(L.peak).toBe(8004);
    } finally {
      meter.detach();
    }
  });

  it('sees temporaries that a kernel allocates and frees inside itself', () => {
    const x = tf.ones([64, 64]);
    const meter = new DeviceMemoryMeter().attach();
    const L = meter.ledger;
    try {
      L.currentOp = 'softmax';
      const y = tf.softmax(x); // several intermediates, each 16 KiB, freed before the call returns
      expect(L.live).toBe(64 * 64 * 4);
      expect(L.peak).toBeGreaterThan(2 * 64 * 64 * 4);
      y.dispose();
      expect(L.live).toBe(0);
    } finally {
      meter.detach();
      x.dispose();
    }
  });

  it('counts a buffer whose values are assigned after it is stored', () => {
    const backend = tf.backend() as unknown as {
      makeTensorInfo(shape: number[], dtype: string): { dataId: object };
      data: { get(id: object): { values?: unknown } };
      disposeData(id: object): boolean;
    };
    const meter = new DeviceMemoryMeter().attach();
    const L = meter.ledger;
    try {
      const info = backend.makeTensorInfo([10], 'float32'); // no values yet
      expect(L.count).toBe(1);
      expect(L.live).toBe(0);
      backend.data.get(info.dataId).values = new Float32Array(10);
      expect(L.live).toBe(40);
      expect(backend.disposeData(info.dataId)).toBe(true);
      expect(L.live).toBe(0);
      expect(L.count).toBe(0);
    } finally {
      meter.detach();
    }
  });

  it('records a budget overflow inside a kernel without breaking the engine', () => {
    const meter = new DeviceMemoryMeter().attach();
    const L = meter.ledger;
    L.setBudget(6000);
    try {
      L.currentOp = 'step 1 / make a';
      const a = tf.zeros([1000]);
      L.currentOp = 'step 1 / a * 2';
      const d = tf.mul(a, 2);
      const o = L.takeOverflow();
      expect(o).not.toBeNull();
      expect(o!.op).toBe('step 1 / a * 2');
      expect(o!.needed).toBe(4000);
      expect(o!.budget).toBe(6000);
      expect(d.dataSync()[0]).toBe(0); // the op completed normally
      tf.dispose([a, d]);
      expect(L.live).toBe(0);
    } finally {
      meter.detach();
    }
  });

  it('ignores buffers that existed before attach and counts their releases separately', () => {
    const old = tf.zeros([100]);
    const meter = new DeviceMemoryMeter().attach();
    try {
      old.dispose();
      expect(meter.ledger.live).toBe(0);
      expect(meter.untrackedReleases).toBe(1);
    } finally {
      meter.detach();
    }
  });

  it('detach restores the original functions exactly', () => {
    const backend = tf.backend() as unknown as { data: object };
    const store = backend.data;
    const engine = tf.engine() as unknown as object;
    const setBefore = Object.getOwnPropertyDescriptor(store, 'set');
    const trackBefore = Object.getOwnPropertyDescriptor(engine, 'trackTensor');
    const protoSet = (tf.DataStorage.prototype as unknown as { set: unknown }).set;
    expect((store as { set: unknown }).set).toBe(protoSet);
    for (const method of ['cpu-data-storage', 'engine-data-ids'] as const) {
      const m = new DeviceMemoryMeter(undefined, { method }).attach();
      expect(m.method).toBe(method);
      expect(() => new DeviceMemoryMeter(undefined, { method }).attach()).toThrow(/another meter/);
      m.detach();
      expect(m.method).toBe('detached');
    }
    expect(Object.getOwnPropertyDescriptor(store, 'set')).toEqual(setBefore);
    expect(Object.getOwnPropertyDescriptor(store, 'delete')).toBeUndefined();
    expect(Object.getOwnPropertyDescriptor(engine, 'trackTensor')).toEqual(trackBefore);
    expect(Object.getOwnPropertyDescriptor(engine, 'removeDataId')).toBeUndefined();
    expect((store as { set: unknown }).set).toBe(protoSet);
    // And a meter that was attached counts nothing once detached.
    const m = new DeviceMemoryMeter().attach();
    m.detach();
    const t = tf.zeros([10]);
    expect(m.ledger.live).toBe(0);
    expect(m.ledger.count).toBe(0);
    t.dispose();
    expect(m.untrackedReleases).toBe(0);
  });

  it("engine fallback ('engine-data-ids') counts distinct dataIds the engine tracks", () => {
    const meter = new DeviceMemoryMeter(undefined, { method: 'engine-data-ids' }).attach();
    const L = meter.ledger;
    try {
      const a = tf.zeros([1000]);
      const b = tf.reshape(a, [10, 100]);
      const c = tf.clone(a);
      expect(L.live).toBe(4000);
      const d = tf.add(a, 1);
      expect(L.live).toBe(8000);
      expect(L.peak).toBe(8004);
      tf.dispose([a, b]);
      expect(L.live).toBe(8000);
      c.dispose();
      expect(L.live).toBe(4000);
      d.dispose();
      expect(L.live).toBe(0);
    } finally {
      meter.detach();
    }
  });
});
