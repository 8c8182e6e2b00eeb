/**
 * `npm run bench [-- --repeats N] [--quick] [--json] [--record]`
 *
 * Times the kernels (native and tfjs's JavaScript ones) and prints a table; `--json` prints the
 * same rows as one JSON array on stdout and nothing else (progress goes to stderr); `--record` also
 * writes results/bench/bench.json (the rows, the machine, the measured FMA peak, the date) and
 * results/bench/bench.md, the record the README's speed table is generated from.
 * Each row source is one `rows.push(...await source(options))` line in `main` below.
 */
import {
  formatTable,
  kernelBenchRows,
  machineInfo,
  measuredFmaPeak,
  measuredTileCeiling,
  type BenchOptions,
  type BenchRow,
} from './bench-kernels.js';
import { stepBenchRows, stepConfig } from './bench-step.js';
import { profileStep, type StepProfile } from './bench-profile.js';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describeMachine } from '../../core/experiment/index.js';

function parseArgs(argv: string[]): { json: boolean; record: boolean; options: BenchOptions } {
  let json = false;
  let record = false;
  let quick = false;
  let repeats = 7;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--json') json = true;
    else if (a === '--record') record = true;
    else if (a === '--quick') quick = true;
    else if (a === '--repeats' || a.startsWith('--repeats=')) {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new Error(`--repeats needs a positive integer, got ${v}`);
      repeats = n;
    } else if (a === '--help' || a === '-h') {
      process.stderr.write('usage: npm run bench -- [--repeats N] [--quick] [--json] [--record]\n');
      process.exit(0);
    } else {
      throw new Error(`unknown argument ${a} (try --help)`);
    }
  }
  if (quick && !argv.some((a) => a.startsWith('--repeats'))) repeats = 3;
  return { json, record, options: { repeats, quick } };
}

async function main(): Promise<void> {
  const { json, record, options } = parseArgs(process.argv.slice(2));
  const out = (line: string) => process.stderr.write(`${line}\n`);
  // With --json, stdout carries the JSON array only: anything else logged goes to stderr.
  if (json) console.log = (...args: unknown[]) => out(args.map(String).join(' '));
  const log = json ? out : (line: string) => process.stdout.write(`${line}\n`);
  options.log = log;

  const m = machineInfo();
  log(`machine: ${m.cpuModel}, ${m.cores} cores`);
  log(`FMA peak estimate (nominal): ${m.peakFormula}`);
  const peakBefore = measuredFmaPeak();
  if (peakBefore !== null) {
    log(`FMA peak measured (${m.native.simd}, ${m.native.threads} threads, 12 FMA chains each; 256-bit vectors, and 512-bit where the code path has AVX-512, the larger): ${peakBefore.toFixed(0)} GFLOP/s`);
  }
  const tile = measuredTileCeiling();
  if (tile) log(`conv micro-kernel in cache (${tile.tile}, the 16 → 16 layers' tile): ${tile.gflops.toFixed(0)} GFLOP/s, ${(100 * tile.share).toFixed(0)}% of the FMA peak around it (median of ${tile.shares.length} rounds): the convolutions' own ceiling`);
  log(
    m.native.loaded
      ? `native kernels: loaded (${m.native.simd}, ${m.native.threads} threads, ${m.native.kernels.length} kernels)`
      : `native kernels: not loaded (${m.native.reason})`,
  );

  const rows: BenchRow[] = [];
  rows.push(...(await kernelBenchRows(options)));
  rows.push(...(await stepBenchRows(options)));
  log('profiling the owned step (every kernel timed, GC pauses observed)…');
  const profile = await profileStep(stepConfig(options), options.quick ? 3 : 5, log);

  const peakAfter = measuredFmaPeak();
  if (record) {
    const measured = Math.max(peakBefore ?? 0, peakAfter ?? 0);
    const dir = join(dirname(fileURLToPath(import.meta.url)), '../../results/bench');
    mkdirSync(dir, { recursive: true });
    const peak = measured > 0 ? measured : m.fmaPeakGflops;
    const command = ['npm run bench --', ...process.argv.slice(2)].join(' ');
    const doc = { date: new Date().toISOString(), machine: describeMachine(), command, options, fmaPeakGflops: measured > 0 ? measured : null, tileCeiling: tile, rows, profile };
    writeFileSync(join(dir, 'bench.json'), `${JSON.stringify(doc, null, 2)}\n`);
    writeFileSync(join(dir, 'bench.md'), `# ${command}\n\n- Date: ${doc.date}\n- Machine: ${doc.machine}\n- FMA peak measured: ${measured > 0 ? `${measured.toFixed(0)} GFLOP/s` : 'n/a'}\n${tile ? `- Conv micro-kernel in cache (${tile.tile}): ${tile.gflops.toFixed(0)} GFLOP/s, ${(100 * tile.share).toFixed(0)}% of the FMA peak around it (rounds: ${tile.shares.map((x) => `${(100 * x).toFixed(0)}%`).join(', ')})\n` : ''}\n\`\`\`\n${formatTable(rows, peak)}\n\`\`\`\n\n${formatProfile(profile)}\n`);
    log(`wrote ${join(dir, 'bench.json')} and bench.md`);
  }
  if (json) {
    process.stdout.write(`${JSON.stringify(rows)}\n`);
  } else {
    // % peak uses the best FMA throughput measured before/after the rows (the nominal estimate
    // uses the base clock from /proc/cpuinfo, which turbo exceeds); without the addon, nominal.
    const measured = Math.max(peakBefore ?? 0, peakAfter ?? 0);
    const peak = measured > 0 ? measured : m.fmaPeakGflops;
    log('');
    if (peakAfter !== null) log(`FMA peak measured after the rows: ${peakAfter.toFixed(0)} GFLOP/s`);
    log(`% peak below is relative to ${peak.toFixed(0)} GFLOP/s (${measured > 0 ? 'measured' : 'nominal'})`);
    log(formatTable(rows, peak));
    log('');
    log(formatProfile(profile));
  }
}

/** The profile as text (bench.md and the console). */
function formatProfile(p: StepProfile): string {
  const lines = [
    `Where the owned step's time goes (${p.step}; ${p.steps} steps, every kernel timed; FMA peak around them ${p.fmaPeak === null ? 'n/a' : `${p.fmaPeak.toFixed(0)} GFLOP/s`}):`,
    `- per step ${p.wallMs.toFixed(0)} ms: kernels ${p.kernelMs.toFixed(0)} ms, GC pauses ${p.gcMs.toFixed(0)} ms, the rest ${p.otherMs.toFixed(0)} ms`,
  ];
  for (const k of p.kernels.filter((k) => k.msPerStep >= 0.5))
    lines.push(`- ${k.kernel}: ${k.msPerStep.toFixed(1)} ms, ${k.callsPerStep.toFixed(0)} calls${k.gflops === null ? '' : `, ${k.gflops.toFixed(0)} GFLOP/s${p.fmaPeak ? ` (${((100 * k.gflops) / p.fmaPeak).toFixed(0)}%)` : ''}`}`);
  if (p.convShapes?.length) {
    lines.push('', 'The convolutions by layer (x as d×h×w×ci, filter k³ ci→co, stride), slowest first:');
    for (const s of p.convShapes.filter((s) => s.msPerStep >= 0.5)) {
      const [kd, kh, kw, ci, co] = s.filter;
      const stride = s.strides.every((v) => v === 1) ? '' : `, stride ${s.strides.join('×')}`;
      lines.push(`- ${s.kernel} ${s.x.join('×')}, ${kd}×${kh}×${kw} ${ci}→${co}${stride}: ${s.msPerStep.toFixed(1)} ms, ${s.callsPerStep.toFixed(0)} calls, ${s.gflops.toFixed(0)} GFLOP/s${p.fmaPeak ? ` (${((100 * s.gflops) / p.fmaPeak).toFixed(0)}%)` : ''}`);
    }
  }
  return lines.join('\n');
}

main().catch((err) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
