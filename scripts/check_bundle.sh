#!/usr/bin/env bash
# Rebuilds the editor bundle from a clean `npm ci` in a temporary directory and checks that
#  1. it is byte-for-byte identical to the committed static/dist/, and
#  2. exactly one copy of yjs and of @codemirror/state went into it (two copies break both:
#     Yjs types and CodeMirror facets are compared by identity).
# Exits non-zero on any mismatch.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/static" "$work/scripts"
cp "$root/package.json" "$root/package-lock.json" "$work/"
cp -R "$root/static/src" "$work/static/src"

cd "$work"
npm ci --no-audit --no-fund --loglevel=error >/dev/null
BUNDLE_METAFILE="$work/meta.json" npm run --silent build

status=0
if ! diff -r "$work/static/dist" "$root/static/dist" >/dev/null; then
  echo "static/dist/ is out of date: run 'npm ci && npm run build' and commit the result." >&2
  diff -rq "$work/static/dist" "$root/static/dist" >&2 || true
  status=1
fi

node --input-type=module - "$work/meta.json" <<'JS' || status=1
import { readFileSync } from 'node:fs'
const meta = JSON.parse(readFileSync(process.argv[2], 'utf8'))
const inputs = Object.values(meta.outputs).flatMap((out) => Object.keys(out.inputs))
let ok = true
for (const pkg of ['yjs', '@codemirror/state']) {
  // every copy of a package lives under its own .../node_modules/<pkg>/ directory
  const copies = new Set()
  for (const file of inputs) {
    const at = file.lastIndexOf(`node_modules/${pkg}/`)
    if (at >= 0) copies.add(file.slice(0, at + `node_modules/${pkg}/`.length))
  }
  if (copies.size !== 1) {
    console.error(`expected exactly one copy of ${pkg} in the bundle, found ${copies.size}: ${[...copies].join(', ')}`)
    ok = false
  }
}
process.exit(ok ? 0 : 1)
JS

if [ "$status" -eq 0 ]; then
  echo "bundle OK: static/dist/ matches a clean rebuild; one copy each of yjs and @codemirror/state"
fi
exit "$status"
