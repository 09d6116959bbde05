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
    { key: 'Mod-f', run: () => { nb.openFind(); return true }, preventDefault: true },
    { key: 'Mod-Shift-ArrowUp', run: () => { nb.moveCell(cell, -1); return true } },
    { key: 'Mod-Shift-ArrowDown', run: () => { nb.moveCell(cell, 1); return true } },
    { key: 'Mod-Shift--', run: () => { nb.splitCell(cell); return true }, preventDefault: true },
    { key: 'Mod-_', run: () => { nb.splitCell(cell); return true }, preventDefault: true },
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
  // the first press of a double key (D,D  I,I  0,0) and when it happened
  let pending = { key: null, at: 0 }
  const twice = (key) => {
    const now = Date.now()
    if (pending.key === key && now - pending.at < DOUBLE_KEY_MS) { pending = { key: null, at: 0 }; return true }
    pending = { key, at: now }
    return false
  }
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
    if (mod && key === 'f') { handled(); nb.openFind(); return }
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
    if (mod && e.shiftKey && (key === 'ArrowUp' || key === 'ArrowDown')) {
      handled()
      nb.moveCell(cell, key === 'ArrowUp' ? -1 : 1)
      return
    }
    if (!plain) return
    // A Shift-modified key is its own command or nothing, never the plain key's.
    if (e.shiftKey) {
      const shifted = {
        m: () => nb.mergeBelow(cell),
        z: () => nb.redo(),
        v: () => nb.pasteCells({ above: true }),
        ArrowUp: () => nb.extendSelection(-1),
        k: () => nb.extendSelection(-1),
        ArrowDown: () => nb.extendSelection(1),
        j: () => nb.extendSelection(1)
      }[key]
      if (shifted) { handled(); shifted() }
      return
    }
    switch (key) {
      case 'Escape': handled(); nb.clearSelection(); break
      case 'c': handled(); nb.copyCells(); break
      case 'x': handled(); nb.copyCells({ cut: true }); break
      case 'v': handled(); nb.pasteCells(); break
      case 'i': handled(); if (twice('i')) nb.onInterrupt?.(); break
      case '0': handled(); if (twice('0')) nb.onRestart?.(); break
      case 'ArrowUp': case 'k': handled(); nb.selectRelative(-1); break
      case 'ArrowDown': case 'j': handled(); nb.selectRelative(1); break
      case 'a': handled(); nb.insertAt(nb.indexOf(cell), 'code'); break
      case 'b': handled(); nb.insertAt(nb.indexOf(cell) + 1, 'code'); break
      case 'm': handled(); nb.setCellType(cell, 'markdown'); break
      case 'y': handled(); nb.setCellType(cell, 'code'); break
      case 'r': handled(); nb.setCellType(cell, 'raw'); break
      case 'z': handled(); nb.undo(); break
      case 'h': handled(); nb.onHelp?.(); break
      case 'd': handled(); if (twice('d')) nb.deleteSelected(); break
      default:
    }
  })
}

const SHORTCUTS = [
  ['Edit mode', [['Shift-Enter', 'Run cell, go to the next one'], ['Ctrl-Enter', 'Run cell'], ['Alt-Enter', 'Run cell, add one below'], ['Tab / Shift-Tab', 'Complete / help from the kernel (after a name; otherwise indent / dedent)'], ['Ctrl-Shift-−', 'Split the cell at the caret'], ['Ctrl-F', 'Find and replace in the notebook'], ['Ctrl-Shift-↑ ↓', 'Move the cell'], ['Esc', 'Command mode'], ['Ctrl-Z / Ctrl-Y', 'Undo / redo your own changes']]],
  ['Command mode', [['Enter', 'Edit the cell'], ['↑ ↓ / K J', 'Previous / next cell'], ['A / B', 'Add a cell above / below'], ['Shift-↑ ↓', 'Select several cells'], ['C / X / V', 'Copy / cut / paste cells (Shift-V: above)'], ['D, D', 'Delete the selected cells'], ['M / Y / R', 'Markdown / code / raw'], ['Shift-M', 'Merge the selected cells, or with the one below'], ['Ctrl-Shift-↑ ↓', 'Move the cell'], ['I, I / 0, 0', 'Interrupt / restart the kernel'], ['Z / Shift-Z', 'Undo / redo'], ['H', 'This help']]]
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
