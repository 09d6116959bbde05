// Tab completion and Shift-Tab help from the notebook's running kernel, for those who may run
// code (the server answers the asking socket only). Positions cross the wire in Unicode code
// points, as the Jupyter protocol counts them; CodeMirror counts UTF-16 units.
import { autocompletion, startCompletion, closeCompletion, completionStatus, acceptCompletion } from '@codemirror/autocomplete'
import { indentMore, indentLess } from '@codemirror/commands'
import { keymap } from '@codemirror/view'
import { Prec } from '@codemirror/state'
import { ansiToFragment } from './ansi.js'
import { h } from './dom.js'

export function toCodePoints (text, utf16) {
  let n = 0
  for (let i = 0; i < utf16 && i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < utf16) i++
    n++
  }
  return n
}

export function toUtf16 (text, points) {
  let i = 0
  for (let n = 0; n < points && i < text.length; n++) {
    const c = text.charCodeAt(i)
    i += c >= 0xd800 && c <= 0xdbff ? 2 : 1
  }
  return i
}

// After a name, an attribute dot or inside a string path: ask the kernel; elsewhere Tab indents.
const WANTS_COMPLETION = /[\w.'"/\])]$/

/** CodeMirror extensions of a code cell's editor. `nb` is the NotebookView. */
export function assistExtensions (nb) {
  const source = async (context) => {
    if (!nb.canRun) return null
    const code = context.state.doc.toString()
    const reply = await nb.assist('complete', code, toCodePoints(code, context.pos))
    if (!reply?.matches?.length || context.aborted) return null
    return {
      from: toUtf16(code, reply.cursor_start),
      to: toUtf16(code, reply.cursor_end),
      options: reply.matches.map((label) => ({ label })),
      filter: false
    }
  }
  const tab = (view) => {
    if (completionStatus(view.state) === 'active') return acceptCompletion(view)
    const { head, empty } = view.state.selection.main
    const before = view.state.doc.sliceString(Math.max(0, head - 1), head)
    if (nb.canRun && empty && WANTS_COMPLETION.test(before)) return startCompletion(view)
    return indentMore(view)
  }
  const shiftTab = (view) => {
    const { head, empty } = view.state.selection.main
    if (!nb.canRun || !empty) return indentLess(view)
    inspect(nb, view, head)
    return true
  }
  return [
    autocompletion({ override: [source], activateOnTyping: false, icons: false }),
    Prec.high(keymap.of([{ key: 'Tab', run: tab }, { key: 'Shift-Tab', run: shiftTab }]))
  ]
}

/** Closes an open completion list or help tooltip; true if there was one (Escape). */
export function dismissAssist (view) {
  if (document.querySelector('.nb-inspect')) { hideInspect(); return true }
  if (completionStatus(view.state)) { closeCompletion(view); return true }
  return false
}

async function inspect (nb, view, pos) {
  const code = view.state.doc.toString()
  const reply = await nb.assist('inspect', code, toCodePoints(code, pos), { say: true })
  hideInspect()
  if (!reply) return
  if (!reply.found) { nb.status.toast('The kernel has no help for this.', 'info'); return }
  const coords = view.coordsAtPos(pos)
  const tip = h('div', { class: 'nb-inspect', role: 'tooltip', 'data-testid': 'inspect-tooltip' })
  tip.append(ansiToFragment(reply.text))
  document.body.append(tip)
  const width = Math.min(640, window.innerWidth - 16)
  tip.style.width = `${width}px`
  tip.style.left = `${Math.max(8, Math.min((coords?.left ?? 8), window.innerWidth - width - 8))}px`
  tip.style.top = `${(coords?.bottom ?? 0) + window.scrollY + 4}px`
  const close = (event) => {
    if (event.type === 'mousedown' && tip.contains(event.target)) return
    hideInspect()
  }
  setTimeout(() => {
    document.addEventListener('mousedown', close, { once: true })
    view.dom.addEventListener('keydown', close, { once: true })
  }, 0)
}

function hideInspect () {
  for (const el of document.querySelectorAll('.nb-inspect')) el.remove()
}
