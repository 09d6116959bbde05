// The markdown renderer, fetched on demand by markdown.js: markdown-it -> DOMPurify -> KaTeX.
//
// Math is cut out by a markdown-it rule (so `_` and `*` inside TeX are not taken as emphasis),
// emitted as an empty-looking <span class="nb-math"> holding the escaped TeX, and typeset by
// KaTeX only after sanitising. KaTeX runs with trust: false, so \href, \url and \html* are off.
import MarkdownIt from 'markdown-it'
import { sanitizeMarkdownHtml } from './sanitize.js'

function mathInline (state, silent) {
  const src = state.src
  const start = state.pos
  let open; let close; let display = false
  if (src.startsWith('$$', start)) { open = '$$'; close = '$$'; display = true } else if (src[start] === '$') { open = '$'; close = '$' } else if (src.startsWith('\\(', start)) { open = '\\('; close = '\\)' } else if (src.startsWith('\\[', start)) { open = '\\['; close = '\\]'; display = true } else return false

  const contentStart = start + open.length
  if (open === '$' && /\s/.test(src[contentStart] || ' ')) return false
  let end = contentStart
  for (;;) {
    end = src.indexOf(close, end)
    if (end < 0) return false
    if (src[end - 1] === '\\') { end += 1; continue }
    if (open === '$' && (/\s/.test(src[end - 1]) || /\d/.test(src[end + 1] || ''))) { end += 1; continue }
    break
  }
  if (end === contentStart) return false
  if (!silent) {
    const token = state.push('math', 'span', 0)
    token.content = src.slice(contentStart, end)
    token.meta = { display }
  }
  state.pos = end + close.length
  return true
}

function mathBlock (state, startLine, endLine, silent) {
  const lineStart = state.bMarks[startLine] + state.tShift[startLine]
  const firstLine = state.src.slice(lineStart, state.eMarks[startLine])
  if (!firstLine.startsWith('$$')) return false
  if (silent) return true
  let content = firstLine.slice(2)
  let line = startLine
  let closed = content.trimEnd().endsWith('$$') && content.trim().length >= 2
  if (closed) content = content.trimEnd().slice(0, -2)
  while (!closed && ++line < endLine) {
    const text = state.src.slice(state.bMarks[line] + state.tShift[line], state.eMarks[line])
    if (text.trimEnd().endsWith('$$')) {
      content += '\n' + text.trimEnd().slice(0, -2)
      closed = true
    } else {
      content += '\n' + text
    }
  }
  state.line = Math.min(line, endLine) + 1
  const token = state.push('math', 'div', 0)
  token.block = true
  token.content = content
  token.meta = { display: true }
  token.map = [startLine, state.line]
  return true
}

const md = new MarkdownIt({ html: true, linkify: true, typographer: false })
md.inline.ruler.before('escape', 'math_inline', mathInline)
md.block.ruler.before('fence', 'math_block', mathBlock, { alt: ['paragraph', 'reference', 'blockquote', 'list'] })
md.renderer.rules.math = (tokens, idx) => {
  const { display } = tokens[idx].meta
  const tag = tokens[idx].block ? 'div' : 'span'
  return `<${tag} class="nb-math${display ? ' nb-math-display' : ''}">${md.utils.escapeHtml(tokens[idx].content)}</${tag}>`
}

// KaTeX is a quarter of the editor's code and most notebooks have no formula: it is fetched
// the first time one is shown; until then (a few ms) the formula's source stands in.
let katex = null
let loading = null
const waiting = new Set()

function loadKatex () {
  loading ??= import('katex').then((module) => {
    katex = module.default
    for (const el of waiting) if (el.isConnected) typeset(el)
    waiting.clear()
  }).catch((err) => console.error('Could not load the formula renderer', err))
  return loading
}

function typeset (root) {
  const pending = root.querySelectorAll('.nb-math:not([data-typeset])')
  if (!pending.length) return
  if (!katex) {
    waiting.add(root)
    loadKatex()
    return
  }
  for (const el of pending) {
    const tex = el.textContent
    el.dataset.typeset = ''
    try {
      katex.render(tex, el, { displayMode: el.classList.contains('nb-math-display'), throwOnError: false, trust: false, strict: 'ignore', maxExpand: 500 })
    } catch {
      el.textContent = tex
    }
  }
}

function resolveAttachments (root, attachments) {
  for (const img of root.querySelectorAll('img[src^="attachment:"]')) {
    const bundle = attachments?.[decodeURIComponent(img.getAttribute('src').slice('attachment:'.length))]
    const mime = bundle && Object.keys(bundle).find((m) => m.startsWith('image/') && m !== 'image/svg+xml')
    if (mime) {
      img.setAttribute('src', `data:${mime};base64,${String(bundle[mime]).replace(/\s/g, '')}`)
    } else {
      img.removeAttribute('src')
    }
  }
}

/** Renders markdown into `el` (replacing its content). */
export function renderMarkdown (el, source, { attachments = null } = {}) {
  const fragment = sanitizeMarkdownHtml(md.render(source))
  resolveAttachments(fragment, attachments)
  el.replaceChildren(fragment)
  typeset(el)
}
