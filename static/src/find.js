// Find and replace across the notebook (Ctrl-F): every cell's source, and for finding also the
// text of outputs. Replacing edits the shared text like typing does (one undo step each).
import * as Y from 'yjs'
import { h } from './dom.js'
import { sourceText } from './model.js'
import { normalizeOutputs, joinText } from './outputs.js'

const MAX_MATCHES = 5000

export class FindBar {
  constructor (nb) {
    this.nb = nb
    this.matches = []
    this.index = -1
    this.query = h('input', { type: 'search', class: 'nb-find-input', 'data-testid': 'find-input', placeholder: 'Find', 'aria-label': 'Find in the notebook' })
    this.replacement = h('input', { type: 'text', class: 'nb-find-input nb-edit-only', 'data-testid': 'replace-input', placeholder: 'Replace with', 'aria-label': 'Replace with' })
    this.counter = h('span', { class: 'nb-find-count', 'data-testid': 'find-count', 'aria-live': 'polite' })
    const button = (text, testid, title, onclick, cls = '') => h('button', { type: 'button', class: `nb-btn nb-btn--ghost ${cls}`, 'data-testid': testid, title, text, onclick })
    this.el = h('div', { class: 'nb-find', role: 'search', 'data-testid': 'find-bar', hidden: true },
      this.query,
      button('↑', 'find-previous', 'Previous match (Shift-Enter)', () => this.step(-1)),
      button('↓', 'find-next', 'Next match (Enter)', () => this.step(1)),
      this.counter,
      this.replacement,
      button('Replace', 'replace-one', 'Replace this match', () => this.replaceOne(), 'nb-edit-only'),
      button('All', 'replace-all', 'Replace every match in the cells’ sources', () => this.replaceAll(), 'nb-edit-only'),
      button('✕', 'find-close', 'Close (Esc)', () => this.close()))
    this.query.addEventListener('input', () => this.search(0))
    for (const input of [this.query, this.replacement]) {
      input.addEventListener('keydown', (e) => {
        e.stopPropagation() // command-mode keys must not see the typing
        if (e.key === 'Escape') { e.preventDefault(); this.close() } else if (e.key === 'Enter' && input === this.query) { e.preventDefault(); this.step(e.shiftKey ? -1 : 1) } else if (e.key === 'Enter') { e.preventDefault(); this.replaceOne() }
      })
    }
    // Escape on the bar's buttons too (the keyboard is there after clicking one)
    this.el.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') { e.preventDefault(); e.stopPropagation(); this.close() }
    })
  }

  open () {
    this.el.hidden = false
    const selected = this.nb.active?.editor?.view.state
    const range = selected?.selection.main
    if (range && !range.empty && range.to - range.from < 200) this.query.value = selected.sliceDoc(range.from, range.to)
    this.query.focus()
    this.query.select()
    this.search(0)
  }

  close () {
    this.el.hidden = true
    this.matches = []
    if (this.nb.active) this.nb.activate(this.nb.active, { mode: 'command', scroll: false })
  }

  /** All matches, in document order: {view, where: 'source' | 'output', from, to}. */
  search (keep = this.index) {
    const needle = this.query.value.toLowerCase()
    this.matches = []
    if (needle) {
      for (const view of this.nb.views) {
        this._collect(view, 'source', sourceText(view.ymap), needle)
        if (view.type === 'code') this._collect(view, 'output', outputText(view.ymap), needle)
        if (this.matches.length >= MAX_MATCHES) break
      }
    }
    this.index = this.matches.length ? Math.max(0, Math.min(keep, this.matches.length - 1)) : -1
    this._show()
  }

  _collect (view, where, text, needle) {
    const haystack = text.toLowerCase()
    for (let at = haystack.indexOf(needle); at >= 0 && this.matches.length < MAX_MATCHES; at = haystack.indexOf(needle, at + needle.length)) {
      this.matches.push({ view, where, from: at, to: at + needle.length })
    }
  }

  step (delta) {
    if (!this.matches.length) return
    this.index = (this.index + delta + this.matches.length) % this.matches.length
    this._show()
  }

  _show () {
    const match = this.matches[this.index]
    this.counter.textContent = this.query.value ? (match ? `${this.index + 1} of ${this.matches.length}${this.matches.length >= MAX_MATCHES ? '+' : ''}` : 'No matches') : ''
    if (!match) return
    const { view } = match
    this.nb.activate(view, { mode: 'command', focus: false })
    if (match.where === 'source') {
      view.near = true
      view.mountEditorIfNear?.()
      const editor = view.editor?.view
      if (editor) editor.dispatch({ selection: { anchor: match.from, head: match.to }, scrollIntoView: true })
    }
    view.el.dataset.findMatch = match.where
    for (const other of this.nb.views) if (other !== view) delete other.el.dataset.findMatch
  }

  replaceOne () {
    const match = this.matches[this.index]
    if (!this.nb.canEdit || !match || match.where !== 'source') return
    replaceIn(this.nb.model, match.view.ymap, [match], this.replacement.value)
    this.search(this.index)
  }

  replaceAll () {
    if (!this.nb.canEdit) return
    const byCell = new Map()
    for (const m of this.matches) if (m.where === 'source') byCell.set(m.view.ymap, [...(byCell.get(m.view.ymap) ?? []), m])
    this.nb.model.transact(() => {
      for (const [ymap, matches] of byCell) replaceIn(null, ymap, matches, this.replacement.value)
    })
    const count = [...byCell.values()].reduce((n, list) => n + list.length, 0)
    this.nb.status.toast(`${count} replaced.`, 'info')
    this.search(0)
  }
}

function replaceIn (model, ymap, matches, value) {
  const text = ymap.get('source')
  if (!(text instanceof Y.Text)) return
  const apply = () => {
    for (const m of [...matches].sort((a, b) => b.from - a.from)) {
      text.delete(m.from, m.to - m.from)
      text.insert(m.from, value)
    }
  }
  if (model) model.transact(apply)
  else apply()
}

function outputText (ymap) {
  return normalizeOutputs(ymap.get('outputs')).map((out) => {
    if (out.output_type === 'stream') return out.text
    if (out.output_type === 'error') return `${out.ename}: ${out.evalue}`
    return joinText(out.data?.['text/plain'])
  }).join('\n')
}

