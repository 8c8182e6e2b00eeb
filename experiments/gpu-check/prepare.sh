#!/usr/bin/env bash
# Builds, HERE (from the repo root, after npm install and
# `npm install --no-save webgpu@0.6.2 @tensorflow/tfjs-backend-webgpu@4.22.0`), what the device machine lacks
# for experiments/gpu-check/device.sh, into the ignored folder .gpu/ that the `run` call carries:
#   .gpu/node.gz                 this machine's Node 20 (symbol table stripped), gzip -9
#   .gpu/app.tar.gz              app/check.mjs (esbuild bundle of check.ts: the runner, strategies, tfjs,
#                                tfjs-backend-webgpu) and app/node_modules/webgpu (index.js, package.json,
#                                dist/linux-x64/dawn.node: the only external), plus a stub package.json for
#                                @tensorflow/tfjs-backend-webgpu so that core/backend's require.resolve finds it
#   .gpu/debs/libvulkan1_*.deb   the Vulkan loader (the device may have none)
#   .gpu/MANIFEST                what was built, from which commit, with sizes and sha256
# Compression is gzip, not xz: gzip is an Essential package on every Debian/Ubuntu image, so device.sh can
# unpack with no doubt (and falls back to python3's zlib/tarfile); xz would save ~10 MB but xz-utils is
# not in every minimal image. Fails if .gpu is over 60 MiB (the run call carries 64 MiB in all).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUTDIR=$ROOT/.gpu
LIMIT=$((60 * 1024 * 1024))

die() { echo "prepare.sh: $*" >&2; exit 1; }

[ "$(uname -m)" = x86_64 ] || die "this machine is $(uname -m); the device is x86-64: build on x86-64"
NODE=$(command -v node) || die "no node on PATH"
NODE=$(readlink -f "$NODE")
ver=$("$NODE" --version)
case "$ver" in v20.*) ;; *) die "node is $ver; Node 20 is wanted" ;; esac
for f in node_modules/.bin/esbuild node_modules/webgpu/index.js node_modules/webgpu/package.json \
  node_modules/webgpu/dist/linux-x64/dawn.node node_modules/@tensorflow/tfjs-backend-webgpu/package.json; do
  [ -e "$f" ] || die "missing $f (npm install; npm install --no-save webgpu@0.6.2 @tensorflow/tfjs-backend-webgpu@4.22.0)"
done
grep -q '"version": "0.6.2"' node_modules/webgpu/package.json || echo "prepare.sh: note: webgpu is not 0.6.2: $(grep '"version"' node_modules/webgpu/package.json)"

# .gpu/ is ignored, never committed.
grep -qxF '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
rm -rf "$OUTDIR"
mkdir -p "$OUTDIR/debs" "$TMP/app/node_modules/webgpu/dist/linux-x64" "$TMP/app/node_modules/@tensorflow/tfjs-backend-webgpu"

echo "== bundle (esbuild $(node_modules/.bin/esbuild --version))"
# --ignore-annotations: tfjs-backend-cpu's package.json lists only its ESM files as having side effects, so
# esbuild would drop `import '@tensorflow/tfjs-backend-cpu'` (the cpu backend's registration) otherwise.
# The banner gives bundled CommonJS code a `require` (ESM output has none). experimentalDecorators
# comes from tsconfig.json, which esbuild reads.
node_modules/.bin/esbuild experiments/gpu-check/check.ts --bundle --platform=node --format=esm --target=node20 \
  --external:webgpu --ignore-annotations --log-level=error --legal-comments=none \
  --banner:js="import { createRequire as __volsegCreateRequire } from 'node:module'; const require = __volsegCreateRequire(import.meta.url);" \
  --outfile="$TMP/app/check.mjs"
printf '{ "type": "module" }\n' >"$TMP/app/package.json"
cp node_modules/webgpu/index.js node_modules/webgpu/package.json "$TMP/app/node_modules/webgpu/"
cp node_modules/webgpu/dist/linux-x64/dawn.node "$TMP/app/node_modules/webgpu/dist/linux-x64/"
stub=$TMP/app/node_modules/@tensorflow/tfjs-backend-webgpu
printf '{ "name": "@tensorflow/tfjs-backend-webgpu", "version": "4.22.0", "main": "index.js", "description": "stub: the real package is bundled into ../../check.mjs; this file only answers require.resolve" }\n' >"$stub/package.json"
printf 'throw new Error("this is a stub of @tensorflow/tfjs-backend-webgpu: the real one is bundled into check.mjs");\n' >"$stub/index.js"

# The bundle must run with nothing from this repo: from a copy outside it, with this node, --help.
(cd "$TMP/app" && "$NODE" check.mjs --help >/dev/null) || die "the bundle does not start outside the repo"

echo "== node $ver ($NODE)"
strip --strip-unneeded -o "$TMP/node" "$NODE" 2>/dev/null || cp "$NODE" "$TMP/node"
"$TMP/node" --version >/dev/null || die "the stripped node does not run"
gzip -9 -n -c "$TMP/node" >"$OUTDIR/node.gz"

echo "== app.tar.gz"
tar -C "$TMP" -cf - app | gzip -9 -n >"$OUTDIR/app.tar.gz"

echo "== Vulkan loader (libvulkan1)"
(cd "$OUTDIR/debs" && apt-get download libvulkan1 >/dev/null 2>&1) || true
if ! ls "$OUTDIR"/debs/libvulkan1_*.deb >/dev/null 2>&1; then
  cached=$(ls /var/cache/apt/archives/libvulkan1_*amd64.deb 2>/dev/null | sort -V | tail -1 || true)
  [ -n "$cached" ] || die "could not get libvulkan1 (apt-get update; apt-get download libvulkan1)"
  cp "$cached" "$OUTDIR/debs/"
fi

{
  echo "built $(date -u +%FT%TZ) from $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "node $ver, esbuild $(node_modules/.bin/esbuild --version), webgpu $(sed -n 's/.*"version": "\(.*\)".*/\1/p' node_modules/webgpu/package.json | head -1)"
  (cd "$OUTDIR" && find . -type f ! -name MANIFEST -printf '%P\n' | sort | while read -r f; do echo "$(stat -c %s "$f") $(sha256sum "$f" | cut -c1-16) $f"; done)
} >"$OUTDIR/MANIFEST"
cat "$OUTDIR/MANIFEST"

total=$(du -sb "$OUTDIR" | cut -f1)
echo "== .gpu: $total bytes ($((total / 1024 / 1024)) MiB; limit 60 MiB)"
[ "$total" -le "$LIMIT" ] || die ".gpu is $total bytes, over 60 MiB"
