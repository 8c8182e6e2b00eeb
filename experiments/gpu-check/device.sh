#!/usr/bin/env bash
# The GPU check, ON THE DEVICE MACHINE, from the repo root (experiments/gpu-check/README.md). After
# `bash experiments/gpu-check/prepare.sh` here, the lead's one call is:
#
#   run  command: bash experiments/gpu-check/device.sh
#        carry:   [".gpu"]
#        timeout_s: 560
#
# It unpacks .gpu (Node 20, the bundled check, dawn.node, the Vulkan loader) under /tmp, points Dawn at
# NVIDIA's Vulkan driver, prints `nvidia-smi -L`, times the unet3d step in PyTorch CUDA
# (experiments/cli/unet3d_torch.py), trains unet3d on tfjs's WebGPU backend at each size with each strategy
# (experiments/gpu-check/check.ts: one process per trial, each with its own time limit, a row `timeout`
# when it runs past it), then prints ONE table and writes to $OUT (6 files, none in a sub-folder):
# table.txt, records.jsonl (every row's raw record), device-log.txt (all of this output),
# webgpu-log.txt (the trials' own output), trials.tar.gz (each trial's experiment file, trials.csv and
# summary.md) and MANIFEST (what prepare.sh built).
# Everything ends within TOTAL seconds (default 470, about 8 minutes) of the start.
#
# Settings (environment; the defaults are the check): SIZES=64,128 STRATEGIES=full-volume,checkpoint,swap,patch
# BASE=16 DEPTH=5 STEPS=4 (the first a warm-up) TRIAL_TIMEOUT=110 TOTAL=470 TORCH_DEVICE=cuda TORCH_REPEATS=5;
# CARRIED_LOADER=1 uses the carried libvulkan1 even where the system has a loader.
# Here, without a GPU (Mesa's lavapipe, no torch): OUT=/tmp/o SIZES=16 BASE=8 DEPTH=4 bash experiments/gpu-check/device.sh
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
SIZES=${SIZES:-64,128}
STRATEGIES=${STRATEGIES:-full-volume,checkpoint,swap,patch}
BASE=${BASE:-16}
DEPTH=${DEPTH:-5}
STEPS=${STEPS:-4}
TRIAL_TIMEOUT=${TRIAL_TIMEOUT:-110}
TOTAL=${TOTAL:-470}
TORCH_DEVICE=${TORCH_DEVICE:-cuda}
TORCH_REPEATS=${TORCH_REPEATS:-5}
OUT=${OUT:-/tmp/volseg-gpu-check-out}
W=${GPU_CHECK_WORK:-/tmp/volseg-gpu-check}
mkdir -p "$OUT"
SECONDS=0

main() {
  echo "== gpu-check $(date -u +%FT%TZ) on $(uname -srm); sizes $SIZES; strategies $STRATEGIES; unet3d depth $DEPTH base $BASE; total ${TOTAL}s"
  [ -d .gpu ] || { echo "no .gpu folder: run experiments/gpu-check/prepare.sh first and carry .gpu"; return 2; }
  [ -f .gpu/MANIFEST ] && cp .gpu/MANIFEST "$OUT/MANIFEST" && sed 's/^/  /' .gpu/MANIFEST
  rm -rf "$W" && mkdir -p "$W"

  echo "== unpack"
  if command -v gzip >/dev/null; then
    gzip -dc .gpu/node.gz >"$W/node" && tar -C "$W" -xzf .gpu/app.tar.gz
  else
    python3 -c 'import gzip,shutil,sys,tarfile; shutil.copyfileobj(gzip.open(sys.argv[1]), open(sys.argv[2],"wb")); tarfile.open(sys.argv[3]).extractall(sys.argv[4])' \
      .gpu/node.gz "$W/node" .gpu/app.tar.gz "$W"
  fi
  chmod +x "$W/node"
  "$W/node" --version || { echo "the carried node does not run here: $(ldd --version 2>&1 | head -1)"; }

  echo "== Vulkan"
  if [ "${CARRIED_LOADER:-0}" != 1 ] && ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
    echo "loader: the system's ($(ldconfig -p | grep 'libvulkan\.so\.1' | head -1 | awk '{print $NF}'))"
  else
    for f in .gpu/debs/*.deb; do dpkg -x "$f" "$W/vk"; done
    export LD_LIBRARY_PATH="$W/vk/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "loader: carried ($(ls "$W"/vk/usr/lib/x86_64-linux-gnu/libvulkan.so.1* 2>/dev/null | tail -1))"
  fi
  for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do [ -d "$d" ] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"; done
  icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  if [ -f "$icd" ]; then
    export VK_DRIVER_FILES=$icd VK_ICD_FILENAMES=$icd
    echo "driver: $icd: $(tr -d '\n ' <"$icd" | head -c 300)"
  else
    echo "driver: no $icd; the loader's default search (here: $(ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>/dev/null | grep json | tr '\n' ' '))"
  fi
  export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$W/xdg}
  mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

  echo "== GPU"
  if command -v nvidia-smi >/dev/null; then nvidia-smi -L; nvidia-smi --query-gpu=driver_version,memory.total --format=csv,noheader; else echo "no nvidia-smi"; fi

  write_helper
  echo "== PyTorch ($TORCH_DEVICE): the same unet3d step, random data, $TORCH_REPEATS timed steps after a warm-up"
  : >"$W/torch.jsonl"
  IFS=, read -ra sizes <<<"$SIZES"
  for s in "${sizes[@]}"; do
    python3 "$W/helper.py" torch "$W/torch.jsonl" "$ROOT/experiments/cli/unet3d_torch.py" "$s" "$BASE" "$DEPTH" "$TORCH_REPEATS" "$TORCH_DEVICE" 0 90
  done
  # TF32 convolutions (PyTorch's own default for cuDNN), at the largest size only, when there is time.
  last=${sizes[-1]}
  if [ "$TORCH_DEVICE" != cpu ] && [ $SECONDS -lt 150 ] && grep -q '"status": "ok"' "$W/torch.jsonl"; then
    python3 "$W/helper.py" torch "$W/torch.jsonl" "$ROOT/experiments/cli/unet3d_torch.py" "$last" "$BASE" "$DEPTH" "$TORCH_REPEATS" "$TORCH_DEVICE" 1 60
  fi

  budget=$((TOTAL - SECONDS - 25))
  echo "== WebGPU (tfjs on Dawn): ${budget}s for every trial"
  if [ "$budget" -lt 30 ]; then
    echo "no time left for the WebGPU trials"
  else
    timeout -k 10 $((budget + 20)) "$W/node" "$W/app/check.mjs" --sizes "$SIZES" --strategies "$STRATEGIES" --base "$BASE" --depth "$DEPTH" \
      --steps "$STEPS" --trial-timeout "$TRIAL_TIMEOUT" --budget "$budget" --out "$W/out" | grep --line-buffered -v '^RECORD '
    rc=${PIPESTATUS[0]}
    [ "$rc" = 0 ] || echo "the WebGPU check exited $rc$([ "$rc" = 124 ] && echo ' (stopped by the time guard)')"
  fi

  echo "== table ($((SECONDS))s)"
  python3 "$W/helper.py" table "$OUT" "$SIZES" "$STRATEGIES" "$W/out/webgpu.jsonl" "$W/torch.jsonl" ||
    cat "$W/out/webgpu.jsonl" "$W/torch.jsonl" 2>/dev/null
  [ -f "$W/out/webgpu-log.txt" ] && cp "$W/out/webgpu-log.txt" "$OUT/webgpu-log.txt"
  [ -d "$W/out/trials" ] && tar -C "$W/out" -czf "$OUT/trials.tar.gz" trials
  echo "== done in ${SECONDS}s; in \$OUT: $(ls "$OUT" | tr '\n' ' ')"
}

write_helper() {
  cat >"$W/helper.py" <<'PY'
"""torch: time one size in PyTorch and append a record; table: print and write the table."""
import json, os, subprocess, sys, time

def torch_row(out, script, size, base, depth, repeats, device, tf32, limit):
    rec = {"kind": "torch", "size": int(size), "strategy": "full-volume", "backend": f"pytorch {device}", "status": "ok",
           "step_ms": None, "peak_bytes": None, "final_loss": None, "params": None}
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if tf32 == "1":
        env["VOLSEG_TORCH_TF32"] = "1"
    t0 = time.time()
    try:
        r = subprocess.run([sys.executable, script, size, size, size, base, depth, repeats, "16", device],
                           capture_output=True, text=True, timeout=float(limit), env=env)
        lines = [l for l in r.stdout.strip().splitlines() if l.startswith("{")]
        if r.returncode == 0 and lines:
            o = json.loads(lines[-1])
            prec = "" if device == "cpu" else (" tf32" if o.get("tf32") else " fp32")
            rec.update(step_ms=o["ms"], peak_bytes=o.get("peak_bytes"), final_loss=o.get("loss"), params=o.get("params"),
                       backend=f"pytorch {o['torch']} {device}{prec}" + (f" ({o['gpu']})" if o.get("gpu") else ""))
        else:
            err = [l for l in r.stderr.strip().splitlines() if l.strip()]
            last = err[-1] if err else f"exit {r.returncode}, no output"
            rec["status"] = ("no torch: " if "No module named 'torch'" in r.stderr else "failed: ") + last[:300]
    except subprocess.TimeoutExpired:
        rec["status"] = f"timeout ({limit}s)"
    rec["wall_s"] = round(time.time() - t0, 1)
    with open(out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(f"  {size}^3 {rec['backend']}: {rec['status']}" + (f"; step {rec['step_ms']:.1f} ms" if rec["step_ms"] is not None else "") + f"; {rec['wall_s']}s", flush=True)

def read(path):
    rows = []
    try:
        for line in open(path):
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    except FileNotFoundError:
        pass
    return rows

def table(outdir, sizes, strategies, webgpu, torch):
    rows = read(webgpu) + read(torch)
    seen = {(r["size"], r["strategy"]) for r in rows if r["kind"] == "webgpu"}
    for s in sizes.split(","):
        for st in strategies.split(","):
            if (int(s), st) not in seen:
                rows.append({"kind": "webgpu", "size": int(s), "strategy": st, "backend": "webgpu", "status": "not run (the check stopped before it)",
                             "step_ms": None, "peak_bytes": None, "final_loss": None})
    order = {st: i for i, st in enumerate(strategies.split(","))}
    rows.sort(key=lambda r: (r["size"], r["kind"] != "webgpu", order.get(r["strategy"], 99), r["backend"]))
    mib = lambda b: "" if b is None else f"{b / 2**20:.1f}"
    pool = any(r.get("pool_peak_bytes") is not None for r in rows)
    head = ["size", "strategy / backend", "step ms (median)", "peak MiB"] + (["pool MiB"] if pool else []) + ["final loss", "status"]
    body = []
    for r in rows:
        what = f"{r['strategy']} / webgpu" if r["kind"] == "webgpu" else f"{r['strategy']} / {r['backend']}"
        body.append([f"{r['size']}^3", what, "" if r.get("step_ms") is None else f"{r['step_ms']:.1f}", mib(r.get("peak_bytes"))]
                    + ([mib(r.get("pool_peak_bytes"))] if pool else [])
                    + ["" if r.get("final_loss") is None else f"{r['final_loss']:.5f}", r["status"]])
    w = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    left = (0, 1, len(head) - 1)
    fmt = lambda x: "  ".join(c.ljust(w[i]) if i in left else c.rjust(w[i]) for i, c in enumerate(x)).rstrip()
    adapter = next((r["adapter"] for r in rows if r.get("adapter")), "adapter unknown")
    meters = sorted({r["meter"] for r in rows if r.get("meter")})
    notes = [
        f"webgpu rows: tfjs 4.22's WebGPU backend on Dawn ({adapter}); unet3d through the experiment runner on synthetic-brats, "
        "median step time after the first (warm-up) step; patch = crops of half the edge.",
        f"  peak = the runner's peak_train_bytes (meter: {', '.join(meters) or 'n/a'})" + ("; pool = peak of tfjs's WebGPU buffer pool, released buffers kept for reuse included." if pool else "."),
        "pytorch rows: experiments/cli/unet3d_torch.py, the same network and loss on random data; peak = torch.cuda.max_memory_allocated.",
        "final losses compare only within the webgpu rows of one size (same data, seed and steps; patch sees crops); pytorch trains on other data.",
    ]
    params = {(r["kind"], r["size"]): r.get("params") for r in rows if r.get("params")}
    for s in sizes.split(","):
        a, b = params.get(("webgpu", int(s))), params.get(("torch", int(s)))
        if a and b and a != b:
            notes.append(f"note: {s}^3: webgpu network has {a} parameters, pytorch {b}")
    text = "\n".join([fmt(head), fmt(["-" * n for n in w])] + [fmt(x) for x in body] + [""] + notes) + "\n"
    print(text, end="")
    with open(os.path.join(outdir, "table.txt"), "w") as f:
        f.write(text)
    with open(os.path.join(outdir, "records.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")

if __name__ == "__main__":
    if sys.argv[1] == "torch":
        torch_row(*sys.argv[2:])
    else:
        table(*sys.argv[2:])
PY
}

main 2>&1 | tee "$OUT/device-log.txt"
exit "${PIPESTATUS[0]}"
