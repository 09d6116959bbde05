// CodeMirror 6 setup for one cell, bound to the cell's Y.Text with y-codemirror.next.
import { EditorState, Compartment, Prec } from '@codemirror/state'
import { EditorView, keymap, drawSelection, highlightSpecialChars, dropCursor, rectangularSelection } from '@codemirror/view'
import { defaultKeymap, indentWithTab } from '@codemirror/commands'
import { syntaxHighlighting, HighlightStyle, indentOnInput, bracketMatching, indentUnit } from '@codemirror/language'
import { closeBrackets, closeBracketsKeymap } from '@codemirror/autocomplete'
import { python } from '@codemirror/lang-python'
import { tags as t } from '@lezer/highlight'
import { yCollab, yUndoManagerKeymap } from 'y-codemirror.next'

const highlight = HighlightStyle.define([
  { tag: t.keyword, color: '#8839ef', fontWeight: '500' },
  { tag: [t.controlKeyword, t.moduleKeyword, t.operatorKeyword], color: '#8839ef', fontWeight: '500' },
  { tag: [t.definition(t.variableName), t.function(t.definition(t.variableName))], color: '#1e66f5' },
  { tag: [t.function(t.variableName), t.function(t.propertyName)], color: '#1e66f5' },
  { tag: t.className, color: '#b45309' },
  { tag: [t.string, t.special(t.string)], color: '#16803c' },
  { tag: [t.number, t.bool, t.null, t.atom], color: '#c2410c' },
  { tag: t.comment, color: '#6b7280', fontStyle: 'italic' },
  { tag: [t.operator, t.punctuation], color: '#4b5563' },
  { tag: t.self, color: '#be185d' },
  { tag: t.meta, color: '#be185d' },
  { tag: t.propertyName, color: '#0f766e' },
  { tag: t.heading, fontWeight: '700', color: '#111827' },
  { tag: t.heading1, fontSize: '1.15em' },
  { tag: t.emphasis, fontStyle: 'italic' },
  { tag: t.strong, fontWeight: '700' },
  { tag: t.link, color: '#1e66f5', textDecoration: 'underline' },
  { tag: t.url, color: '#1e66f5' },
  { tag: t.monospace, color: '#be185d' },
  { tag: t.quote, color: '#4b5563', fontStyle: 'italic' },
  { tag: t.processingInstruction, color: '#9ca3af' },
  { tag: t.invalid, color: '#dc2626' }
])

const theme = EditorView.theme({
  '&': { backgroundColor: 'transparent', fontSize: 'var(--nb-code-size)' },
  '&.cm-focused': { outline: 'none' },
  '.cm-scroller': { fontFamily: 'var(--nb-mono)', lineHeight: 'var(--nb-code-line)', overflowX: 'auto' },
  '.cm-content': { padding: 'var(--nb-code-pad-y) 0', caretColor: '#111827' },
  '.cm-line': { padding: '0 var(--nb-code-pad-x)' },
  '.cm-cursor': { borderLeftWidth: '2px', borderLeftColor: '#111827' },
  '&.cm-focused .cm-selectionBackground, .cm-selectionBackground, ::selection': { backgroundColor: '#cfe3ff !important' },
  '.cm-matchingBracket': { backgroundColor: '#e0e7ff', outline: 'none' },
  '.cm-ySelectionInfo': { opacity: '1', top: '-1.25em', fontSize: '11px', fontFamily: 'var(--nb-sans)', padding: '1px 4px', borderRadius: '3px 3px 3px 0', fontWeight: '600', transitionDelay: '0s' }
})

/** The language, read-only state and collaboration binding of one cell editor. */
export function createCellEditor ({ parent, ytext, awareness, undoManager, cellType, readOnly, keys, extensions = [], onFocus, onBlur }) {
  readOnly = Boolean(readOnly)
  const language = new Compartment()
  const editable = new Compartment()
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc: ytext.toString(),
      extensions: [
        Prec.highest(keymap.of(keys)),
        extensions,
        highlightSpecialChars(),
        drawSelection(),
        dropCursor(),
        rectangularSelection(),
        indentOnInput(),
        bracketMatching(),
        closeBrackets(),
        indentUnit.of('    '),
        EditorState.tabSize.of(4),
        syntaxHighlighting(highlight),
        keymap.of([...closeBracketsKeymap, ...yUndoManagerKeymap, ...defaultKeymap, indentWithTab]),
        language.of(languageFor(cellType)),
        editable.of(accessExtension(readOnly)),
        EditorView.contentAttributes.of({ 'data-testid': 'cell-editor', 'aria-label': `${cellType} cell source` }),
        EditorView.domEventHandlers({ focus: () => onFocus?.(), blur: () => onBlur?.() }),
        theme,
        yCollab(ytext, awareness, { undoManager })
      ]
    })
  })
  let destroyed = false
  if (cellType === 'markdown') {
    loadMarkdownLanguage().then((markdown) => {
      if (markdown && !destroyed) view.dispatch({ effects: language.reconfigure(languageFor(cellType, markdown)) })
    })
  }
  return {
    view,
    setReadOnly (value) {
      // a reconfiguration makes CodeMirror read the page's selection, a layout of the whole page
      if (Boolean(value) === readOnly) return
      readOnly = Boolean(value)
      view.dispatch({ effects: editable.reconfigure(accessExtension(readOnly)) })
    },
    destroy () { destroyed = true; view.destroy() }
  }
}

// Read-only means not editable at all (no caret, no input events, no browser undo), not just
// CodeMirror's readOnly: y-codemirror's undo writes straight to the Y.Text.
function accessExtension (readOnly) {
  return [EditorState.readOnly.of(readOnly), EditorView.editable.of(!readOnly)]
}

// Markdown's mode (with the HTML, CSS and JavaScript modes it nests) is as big as Python's and
// only needed when a markdown cell's source is edited: plain wrapped text until it has arrived.
function languageFor (cellType, markdown = null) {
  if (cellType === 'code') return python()
  if (cellType === 'markdown' && markdown) return [markdown(), EditorView.lineWrapping]
  return EditorView.lineWrapping
}

let markdownMode = null

function loadMarkdownLanguage () {
  markdownMode ??= import('./markdown-lang.js').then((module) => module.markdown).catch((err) => {
    console.error('Could not load the markdown editing mode', err)
    markdownMode = null
    return null
  })
  return markdownMode
}
