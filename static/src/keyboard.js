// Jupyter-style keys. Edit mode: bindings inside each CodeMirror editor. Command mode: one
// document-level listener acting on the active cell (Enter edits, A/B add, D D deletes,
// M/Y/R change type, J/K and arrows move, Z undoes, Shift-Enter / Ctrl-Enter run).

import { dismissAssist } from './assist.js'

const DOUBLE_KEY_MS = 700

/** CodeMirror key bindings for one cell (highest precedence inside the editor). */
export function editorKeymap (nb, cell) {
  return [
    { key: 'Shift-Enter', run: () => { nb.runAndAdvance(); return true } },
    { key: 'Mod-Enter', run: () => { nb.runInPlace(); return true } },
    { key: 'Alt-Enter', run: () => { nb.runCell(cell); nb.addCell(cell, 1); return true } },
    { key: 'Escape', run: (view) => { if (!dismissAssist(view)) nb.enterCommandMode(); return true } },
    // undo/redo write to the document directly: swallow them when this user may not edit
    { key: 'Mod-z', run: () => !nb.canEdit, preventDefault: true },
    { key: 'Mod-y', run: () => !nb.canEdit, preventDefault: true },
    { key: 'Mod-Shift-z', run: () => !nb.canEdit, preventDefault: true },
    { key: 'Mod-s', run: () => { nb.status.flashSaved(); return true }, preventDefault: true },
    {
      key: 'ArrowUp',
      run: (view) => {
        const sel = view.state.selection.main
        if (!sel.empty || view.state.doc.lineAt(sel.head).number !== 1) return false
        return nb.selectRelative(-1, { mode: 'edit', caret: 'end' })
      }
    },
    {
      key: 'ArrowDown',
      run: (view) => {
        const sel = view.state.selection.main
        if (!sel.empty || view.state.doc.lineAt(sel.head).number !== view.state.doc.lines) return false
        return nb.selectRelative(1, { mode: 'edit', caret: 'start' })
      }
    }
  ]
}

function isTyping (target) {
  if (!target || target === document.body) return false
  if (target.closest?.('.cm-editor')) return true
  return /^(INPUT|SELECT|TEXTAREA)$/.test(target.tagName) || target.isContentEditable
}

export function installCommandKeys (nb) {
  let lastD = 0
  document.addEventListener('keydown', (e) => {
    if (e.defaultPrevented || e.isComposing || isTyping(e.target)) return
    const inNotebook = e.target === document.body || nb.root.contains(e.target)
    if (!inNotebook) return
    if (e.target.tagName === 'BUTTON' && (e.key === 'Enter' || e.key === ' ')) return
    const mod = e.ctrlKey || e.metaKey
    const plain = !mod && !e.altKey
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key
    const cell = nb.active
    const handled = () => { e.preventDefault(); e.stopPropagation() }

    if (mod && key === 's') { handled(); nb.status.flashSaved(); return }
    if (mod && key === 'z') { handled(); if (e.shiftKey) nb.redo(); else nb.undo(); return }
    if (mod && key === 'y') { handled(); nb.redo(); return }
    if (plain && key === 'h' && !cell) { handled(); nb.onHelp?.(); return }
    if (!cell) {
      if (plain && ['ArrowDown', 'ArrowUp', 'j', 'k', 'Enter'].includes(key) && nb.views.length) {
        handled()
        nb.activate(nb.views[0])
      }
      return
    }
    if (key === 'Enter') {
      handled()
      if (e.shiftKey && !mod) nb.runAndAdvance()
      else if (mod) nb.runInPlace()
      else if (e.altKey) { nb.runCell(cell); nb.addCell(cell, 1) } else nb.editCell(cell)
      return
    }
    if (!plain) return
    // A Shift-modified letter is its own command or nothing, never the plain letter's.
    if (e.shiftKey) {
      if (key === 'm') { handled(); nb.mergeBelow(cell) } else if (key === 'z') { handled(); nb.redo() }
      return
    }
    switch (key) {
      case 'ArrowUp': case 'k': handled(); nb.selectRelative(-1); break
      case 'ArrowDown': case 'j': handled(); nb.selectRelative(1); break
      case 'a': handled(); nb.insertAt(nb.indexOf(cell), 'code'); break
      case 'b': handled(); nb.insertAt(nb.indexOf(cell) + 1, 'code'); break
      case 'm': handled(); nb.setCellType(cell, 'markdown'); break
      case 'y': handled(); nb.setCellType(cell, 'code'); break
      case 'r': handled(); nb.setCellType(cell, 'raw'); break
      case 'z': handled(); nb.undo(); break
      case 'h': handled(); nb.onHelp?.(); break
      case 'd': {
        handled()
        const now = Date.now()
        if (now - lastD < DOUBLE_KEY_MS) { lastD = 0; nb.deleteCell(cell) } else lastD = now
        break
      }
      default:
    }
  })
}

const SHORTCUTS = [
  ['Edit mode', [['Shift-Enter', 'Run cell, go to the next one'], ['Ctrl-Enter', 'Run cell'], ['Alt-Enter', 'Run cell, add one below'], ['Tab / Shift-Tab', 'Complete / help from the kernel (after a name; otherwise indent / dedent)'], ['Esc', 'Command mode'], ['Ctrl-Z / Ctrl-Y', 'Undo / redo your own changes']]],
  ['Command mode', [['Enter', 'Edit the cell'], ['↑ ↓ / K J', 'Previous / next cell'], ['A / B', 'Add a cell above / below'], ['D, D', 'Delete the cell'], ['M / Y / R', 'Markdown / code / raw'], ['Shift-M', 'Merge with the cell below'], ['Z / Shift-Z', 'Undo / redo'], ['H', 'This help']]]
]

/** The "keyboard shortcuts" button and its dialog. */
export function shortcutsHelp (h) {
  const dialog = h('dialog', { class: 'nb-help', 'aria-label': 'Keyboard shortcuts' },
    h('div', { class: 'nb-help-head' }, h('h2', { text: 'Keyboard shortcuts' }),
      h('button', { type: 'button', class: 'nb-icon-btn', 'aria-label': 'Close', text: '✕', onclick: () => dialog.close() })),
    SHORTCUTS.map(([title, rows]) => h('section', {},
      h('h3', { text: title }),
      h('dl', {}, rows.map(([keys, what]) => [h('dt', {}, h('kbd', { text: keys })), h('dd', { text: what })])))))
  dialog.addEventListener('click', (e) => { if (e.target === dialog) dialog.close() })
  const button = h('button', { type: 'button', class: 'nb-icon-btn nb-help-btn', title: 'Keyboard shortcuts (H)', 'aria-label': 'Keyboard shortcuts', 'data-testid': 'shortcuts', text: '?', onclick: () => dialog.showModal() })
  return { button, dialog, open: () => dialog.showModal() }
}
