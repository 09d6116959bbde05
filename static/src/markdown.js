// Markdown cells and text/markdown outputs. The renderer (markdown-it, DOMPurify and, for
// formulas, KaTeX: a third of the editor's code) is fetched the first time something is
// rendered, so a notebook without markdown never loads it. Until it has arrived (a few ms
// from the cache) the element stays empty; the latest call for an element wins.
let renderer = null
let loading = null
const waiting = new Map() // element -> [source, options]

/** Starts fetching the renderer (a markdown cell exists) without rendering anything yet. */
export function preloadMarkdown () {
  loading ??= import('./markdown-render.js').then((module) => {
    renderer = module
    for (const [el, [source, options]] of waiting) renderer.renderMarkdown(el, source, options)
    waiting.clear()
  }).catch((err) => {
    console.error('Could not load the markdown renderer', err)
    loading = null // the next render tries again
    for (const [el, [source]] of waiting) el.textContent = source
    waiting.clear()
  })
  return loading
}

/** Renders markdown into `el` (replacing its content). */
export function renderMarkdown (el, source, options = {}) {
  if (renderer) {
    waiting.delete(el)
    renderer.renderMarkdown(el, source, options)
    return
  }
  if (!waiting.has(el)) el.replaceChildren()
  waiting.set(el, [source, options])
  preloadMarkdown()
}
