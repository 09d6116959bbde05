// Terminal text -> DOM: applies carriage returns and backspaces the way a terminal would, then
// turns ANSI SGR colour codes into <span>s. Builds nodes with textContent only, so the text can
// never become markup.

const ESC_SEQ = /\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g
const NAMES = ['black', 'red', 'green', 'yellow', 'blue', 'magenta', 'cyan', 'white']

/** Applies \r and \b within each line; escape sequences take no width. */
export function applyControlChars (text) {
  if (!/[\r\b]/.test(text)) return text
  return text.replace(/\r\n/g, '\n').split('\n').map(fixLine).join('\n')
}

function fixLine (line) {
  if (!/[\r\b]/.test(line)) return line
  const cells = []
  let cursor = 0
  let pending = ''
  const tokens = line.split(/(\x1b\[[0-9;?]*[A-Za-z])/)
  for (let t = 0; t < tokens.length; t++) {
    if (t % 2 === 1) { pending += tokens[t]; continue }
    for (const ch of tokens[t]) {
      if (ch === '\r') cursor = 0
      else if (ch === '\b') cursor = Math.max(0, cursor - 1)
      else { cells[cursor] = pending + ch; pending = ''; cursor++ }
    }
  }
  return cells.join('') + pending
}

function color256 (n) {
  if (n < 16) return null
  if (n >= 232) {
    const v = 8 + (n - 232) * 10
    return `rgb(${v},${v},${v})`
  }
  const i = n - 16
  const step = (x) => (x === 0 ? 0 : 55 + x * 40)
  return `rgb(${step(Math.floor(i / 36))},${step(Math.floor(i / 6) % 6)},${step(i % 6)})`
}

function applySgr (codes, st) {
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i]
    if (c === 0) Object.assign(st, { fg: null, bg: null, bold: false, italic: false, underline: false, dim: false })
    else if (c === 1) st.bold = true
    else if (c === 2) st.dim = true
    else if (c === 3) st.italic = true
    else if (c === 4) st.underline = true
    else if (c === 22) { st.bold = false; st.dim = false } else if (c === 23) st.italic = false
    else if (c === 24) st.underline = false
    else if (c >= 30 && c <= 37) st.fg = { cls: NAMES[c - 30] }
    else if (c >= 90 && c <= 97) st.fg = { cls: 'bright-' + NAMES[c - 90] }
    else if (c === 39) st.fg = null
    else if (c >= 40 && c <= 47) st.bg = { cls: NAMES[c - 40] }
    else if (c >= 100 && c <= 107) st.bg = { cls: 'bright-' + NAMES[c - 100] }
    else if (c === 49) st.bg = null
    else if (c === 38 || c === 48) {
      let value = null
      if (codes[i + 1] === 5 && i + 2 < codes.length) {
        const n = codes[i + 2]
        value = n < 8 ? { cls: NAMES[n] } : n < 16 ? { cls: 'bright-' + NAMES[n - 8] } : { rgb: color256(n) }
        i += 2
      } else if (codes[i + 1] === 2 && i + 4 < codes.length) {
        const [r, g, b] = codes.slice(i + 2, i + 5).map((v) => Math.min(255, v))
        value = { rgb: `rgb(${r},${g},${b})` }
        i += 4
      }
      if (c === 38) st.fg = value
      else st.bg = value
    }
  }
}

function styledSpan (text, st) {
  const span = document.createElement('span')
  span.textContent = text
  const classes = []
  if (st.fg?.cls) classes.push(`ansi-${st.fg.cls}-fg`)
  if (st.bg?.cls) classes.push(`ansi-${st.bg.cls}-bg`)
  if (st.bold) classes.push('ansi-bold')
  if (st.dim) classes.push('ansi-dim')
  if (st.italic) classes.push('ansi-italic')
  if (st.underline) classes.push('ansi-underline')
  if (classes.length) span.className = classes.join(' ')
  // Only numbers we computed ever reach the style attribute.
  if (st.fg?.rgb) span.style.color = st.fg.rgb
  if (st.bg?.rgb) span.style.backgroundColor = st.bg.rgb
  return span
}

/** A DocumentFragment showing `text` with its ANSI colours. */
export function ansiToFragment (text) {
  const frag = document.createDocumentFragment()
  const st = { fg: null, bg: null, bold: false, italic: false, underline: false, dim: false }
  const source = applyControlChars(String(text))
  let last = 0
  const plain = (chunk) => {
    if (!chunk) return
    const styled = st.fg || st.bg || st.bold || st.italic || st.underline || st.dim
    frag.appendChild(styled ? styledSpan(chunk, st) : document.createTextNode(chunk))
  }
  for (const match of source.matchAll(ESC_SEQ)) {
    plain(source.slice(last, match.index))
    last = match.index + match[0].length
    const sgr = /^\x1b\[([0-9;]*)m$/.exec(match[0])
    if (sgr) applySgr(sgr[1] === '' ? [0] : sgr[1].split(';').map((v) => Number(v) || 0), st)
  }
  plain(source.slice(last))
  return frag
}

export function stripAnsi (text) {
  return String(text).replace(ESC_SEQ, '')
}
