// Renders a code cell's outputs (nbformat output dicts, possibly stored as Y types).
import { ansiToFragment } from './ansi.js'
import { renderMarkdown } from './markdown.js'
import { toPlain } from './model.js'

// Richest first; JavaScript and widget views are never executed, their text/plain is shown.
const MIME_ORDER = ['text/html', 'image/svg+xml', 'image/png', 'image/jpeg', 'image/gif', 'image/webp',
  'text/markdown', 'text/latex', 'application/json', 'text/plain']

const SHADOW_CSS = `
:host { display: block; }
table { border-collapse: collapse; border: none; font-size: 13px; margin: 2px 0; }
th, td { border: none; padding: 4px 10px; text-align: right; vertical-align: middle; }
thead th { border-bottom: 1px solid #d0d7de; font-weight: 600; }
tbody tr:nth-child(odd) { background: #f6f8fa; }
tbody tr:hover { background: #eaf2ff; }
img { max-width: 100%; height: auto; }
pre { white-space: pre-wrap; }
`

export function joinText (value) {
  const plain = toPlain(value)
  if (Array.isArray(plain)) return plain.join('')
  return plain == null ? '' : String(plain)
}

/** Plain output dicts; adjacent stream outputs to the same stream are merged (so \r spans chunks). */
export function normalizeOutputs (outputs) {
  const list = outputs == null ? [] : (typeof outputs.toArray === 'function' ? outputs.toArray() : outputs)
  const result = []
  for (const raw of list) {
    const out = toPlain(raw)
    if (!out || typeof out !== 'object') continue
    if (out.output_type === 'stream') {
      const text = joinText(out.text)
      const prev = result[result.length - 1]
      if (prev?.output_type === 'stream' && prev.name === out.name) prev.text += text
      else result.push({ output_type: 'stream', name: out.name || 'stdout', text })
    } else {
      result.push(out)
    }
  }
  return result
}

// A runaway print loop must not freeze every browser that opens the notebook, nor hide how it
// ended: long text shows its first and last lines, with the rest one click away.
const HEAD_LINES = 40
const TAIL_LINES = 40
const MAX_LINE = 5000 // characters of one line shown before "show all"
const MAX_SHOWN_ALL = 2000000 // characters rendered by "show all"; beyond that, download only

function clip (text) {
  return text.length > MAX_LINE * (HEAD_LINES + TAIL_LINES) ? text.slice(0, MAX_LINE * (HEAD_LINES + TAIL_LINES)) : text
}

function splitLines (value) {
  const lines = value.split('\n')
  if (lines.length && lines[lines.length - 1] === '') lines.pop()
  return lines
}

function pre (className, text) {
  const el = document.createElement('pre')
  el.className = className
  const value = String(text)
  const lines = splitLines(value)
  if (lines.length <= HEAD_LINES + TAIL_LINES + 1 && value.length <= MAX_LINE * (HEAD_LINES + TAIL_LINES)) {
    el.appendChild(ansiToFragment(value))
    return el
  }
  const hidden = lines.length - HEAD_LINES - TAIL_LINES
  const head = clip(lines.slice(0, HEAD_LINES).join('\n'))
  const tail = clip(lines.slice(-TAIL_LINES).join('\n'))
  const note = document.createElement('div')
  note.className = 'output-truncated'
  note.dataset.testid = 'output-hidden-lines'
  note.append(`${hidden > 0 ? hidden.toLocaleString() : 'Some'} lines hidden: `)
  if (value.length <= MAX_SHOWN_ALL) {
    const all = document.createElement('button')
    all.type = 'button'
    all.className = 'output-link'
    all.textContent = 'show all'
    all.addEventListener('click', () => {
      el.replaceChildren(ansiToFragment(value))
      el.classList.add('is-scrolling')
    })
    note.append(all, ' / ')
  }
  const download = document.createElement('a')
  download.className = 'output-link'
  download.dataset.testid = 'output-download'
  download.textContent = 'download'
  download.download = 'output.txt'
  download.href = '#'
  download.addEventListener('click', () => {
    // the Blob is made on demand: a notebook may hold many long outputs nobody downloads
    download.href = URL.createObjectURL(new Blob([value], { type: 'text/plain;charset=utf-8' }))
    setTimeout(() => URL.revokeObjectURL(download.href), 60000)
  })
  note.append(download)
  el.append(ansiToFragment(head + '\n'), note, ansiToFragment(tail))
  return el
}

function cleanBase64 (value) {
  const b64 = joinText(value).replace(/\s/g, '')
  return /^[A-Za-z0-9+/=]*$/.test(b64) ? b64 : ''
}

function utf8ToBase64 (text) {
  const bytes = new TextEncoder().encode(text)
  let binary = ''
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000))
  return btoa(binary)
}

function image (mime, src, meta) {
  const img = document.createElement('img')
  img.className = 'output-image'
  img.alt = 'output image'
  img.loading = 'lazy'
  img.src = `data:${mime};base64,${src}`
  const m = meta?.[mime] || meta || {}
  if (Number.isFinite(m.width)) img.width = m.width
  if (Number.isFinite(m.height)) img.height = m.height
  return img
}

// DOMPurify comes with the markdown renderer, fetched when the first HTML output (or markdown) is shown.
let sanitizer = null
function loadSanitizer () {
  sanitizer ??= import('./sanitize.js').catch((err) => { sanitizer = null; throw err })
  return sanitizer
}

function renderMime (mime, value, metadata) {
  switch (mime) {
    case 'text/html': {
      const host = document.createElement('div')
      host.className = 'output-html'
      const shadow = host.attachShadow({ mode: 'open' })
      const style = document.createElement('style')
      style.textContent = SHADOW_CSS
      const html = joinText(value)
      shadow.append(style)
      loadSanitizer().then(({ sanitizeOutputHtml }) => shadow.append(sanitizeOutputHtml(html)), (err) => {
        console.error('Could not load the HTML sanitiser', err)
        shadow.append(pre('output-error', '[this output could not be shown: the page could not load its HTML sanitiser]'))
      })
      return host
    }
    case 'image/svg+xml':
      return image(mime, utf8ToBase64(joinText(value)), metadata)
    case 'image/png': case 'image/jpeg': case 'image/gif': case 'image/webp':
      return image(mime, cleanBase64(value), metadata)
    case 'text/markdown': case 'text/latex': {
      const el = document.createElement('div')
      el.className = 'output-markdown md-rendered'
      renderMarkdown(el, joinText(value))
      return el
    }
    case 'application/json': {
      const el = document.createElement('pre')
      el.className = 'output-json'
      el.textContent = JSON.stringify(toPlain(value), null, 2)
      return el
    }
    default:
      return pre('output-text', joinText(value))
  }
}

function renderOne (out) {
  switch (out.output_type) {
    case 'stream':
      return pre(`output-stream output-${out.name === 'stderr' ? 'stderr' : 'stdout'}`, out.text)
    case 'error': {
      const tb = Array.isArray(out.traceback) && out.traceback.length
        ? out.traceback.join('\n')
        : `${out.ename || 'Error'}: ${out.evalue || ''}`
      return pre('output-error', tb)
    }
    case 'execute_result': case 'display_data': case 'update_display_data': {
      const data = toPlain(out.data) || {}
      const mime = MIME_ORDER.find((m) => m in data)
      if (!mime) {
        const el = document.createElement('div')
        el.className = 'output-unsupported'
        el.textContent = `[output of type ${Object.keys(data).join(', ') || 'unknown'} is not shown]`
        return el
      }
      return renderMime(mime, data[mime], toPlain(out.metadata))
    }
    default:
      return null
  }
}

/** Replaces `container`'s content with the rendered outputs. */
export function renderOutputs (container, outputs) {
  const nodes = []
  for (const out of normalizeOutputs(outputs)) {
    let body
    try {
      body = renderOne(out)
    } catch (err) {
      console.error('Could not render output', err)
      body = pre('output-error', `[this output could not be shown: ${err.message}]`)
    }
    if (!body) continue
    const wrap = document.createElement('div')
    wrap.className = 'output'
    wrap.dataset.testid = 'output'
    wrap.dataset.outputType = out.output_type
    wrap.appendChild(body)
    nodes.push(wrap)
  }
  container.replaceChildren(...nodes)
  container.hidden = nodes.length === 0
}
