// Builds static/dist/editor.{js,css} (+ KaTeX woff2 fonts) from static/src/main.js, and
// static/dist/preconnect.js (the page's early WebSocket, imports nothing) from static/src/preconnect.js.
//
// The output must be byte-for-byte reproducible (scripts/check_bundle.sh rebuilds it in a clean
// checkout and compares), so: no timestamps, no absolute paths, content-hashed asset names only.
// Set BUNDLE_METAFILE=<path> to also write esbuild's metafile (used to prove that exactly one
// copy of yjs and of @codemirror/state ends up in the bundle); it never goes into dist/.
import * as esbuild from 'esbuild'
import { readFile, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
const outdir = path.join(root, 'static', 'dist')

// KaTeX lists woff2, woff and ttf for every face; every browser we support takes woff2,
// so keep only that and ship 20 font files instead of 60.
const katexWoff2Only = {
  name: 'katex-woff2-only',
  setup (build) {
    build.onLoad({ filter: /katex\.min\.css$/ }, async (args) => {
      const css = await readFile(args.path, 'utf8')
      return {
        contents: css.replace(/,url\([^)]+\.(?:woff|ttf)\) format\("(?:woff|truetype)"\)/g, ''),
        loader: 'css'
      }
    })
  }
}

await rm(outdir, { recursive: true, force: true })
const result = await esbuild.build({
  absWorkingDir: root,
  entryPoints: [
    { in: 'static/src/main.js', out: 'editor' },
    { in: 'static/src/preconnect.js', out: 'preconnect' }
  ],
  entryNames: '[name]',
  chunkNames: 'chunks/[name]-[hash]', // loaded on demand (KaTeX)
  splitting: true,
  assetNames: 'fonts/[name]-[hash]',
  outdir,
  bundle: true,
  format: 'esm',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  minify: process.env.BUNDLE_MINIFY !== '0', // BUNDLE_MINIFY=0: readable names in browser profiles (never commit that build)
  legalComments: 'eof',
  charset: 'utf8',
  loader: { '.woff2': 'file' },
  plugins: [katexWoff2Only],
  metafile: true,
  logLevel: 'warning'
})
// The chunks editor.js imports statically, for the page's <link rel="modulepreload"> (read by
// notebooks/views/notebook.py): without it the browser asks for them only once editor.js is in.
const editorOut = result.metafile.outputs['static/dist/editor.js']
const preload = editorOut.imports
  .filter((i) => i.kind === 'import-statement')
  .map((i) => path.posix.relative('static/dist', i.path))
  .sort()
await writeFile(path.join(outdir, 'editor.preload.json'), JSON.stringify(preload) + '\n')
if (process.env.BUNDLE_METAFILE) {
  await writeFile(process.env.BUNDLE_METAFILE, JSON.stringify(result.metafile))
}
