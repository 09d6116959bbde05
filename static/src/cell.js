// One cell: its DOM, its CodeMirror editor (created lazily), rendered markdown and outputs.
// The cell observes its own Y.Map; the notebook owns ordering, focus and commands.
import * as Y from 'yjs'
import { createCellEditor } from './codemirror.js'
import { preloadMarkdown, renderMarkdown } from './markdown.js'
import { renderOutputs } from './outputs.js'
import { sourceText, toPlain, CELL_TYPES } from './model.js'
import { h, icon, iconButton, initials, safeColor } from './dom.js'

const TYPE_LABELS = { code: 'Code', markdown: 'Markdown', raw: 'Raw' }
let localIds = 0

export class CellView {
  constructor (notebook, ymap) {
    this.nb = notebook
    this.ymap = ymap
    // Cells from very old notebooks may lack an id; give the view a local one (never written back).
    this.id = String(ymap.get('id') ?? '') || `local-${++localIds}`
    this.type = CELL_TYPES.includes(ymap.get('cell_type')) ? ymap.get('cell_type') : 'raw'
    this.editor = null
    this.near = false // within the lazy-render margin of the viewport
    this.editing = false // markdown: showing the source instead of the rendered text
    this.outputsDirty = true
    this.markdownDirty = true
    this.runState = null
    if (this.type === 'markdown') preloadMarkdown() // fetched while the cells are laid out
    this._build()
    this._bind()
  }

  get ytext () {
    const source = this.ymap.get('source')
    return source instanceof Y.Text ? source : null
  }

  _build () {
    this.prompt = h('div', { class: 'cell-prompt', 'aria-hidden': 'true' })
    this.presence = h('div', { class: 'cell-presence' })
    this.gutter = h('div', { class: 'cell-gutter' }, this.prompt, this.presence)
    // Until the editor exists, the placeholder stands in for it (same metrics, same test id),
    // and a click on it puts the caret where the click was.
    this.placeholder = h('pre', { class: 'cell-placeholder', 'data-testid': 'cell-editor', onclick: (e) => this.focusEditor({ x: e.clientX, y: e.clientY }) })
    this.editorHost = h('div', { class: 'cell-editor-host' })
    this.rendered = h('div', { class: 'md-rendered', 'data-testid': 'markdown-rendered', title: 'Double-click to edit', ondblclick: () => this.nb.editCell(this) })
    this.outputs = h('div', { class: 'cell-outputs', hidden: true })
    this.input = h('div', { class: 'cell-input' }, this.placeholder, this.editorHost, this.rendered)
    // Collapsing is this viewer's own view of the cell: it never changes the shared document.
    this.inputCollapsed = h('button', { type: 'button', class: 'cell-collapsed-note', 'data-testid': 'input-collapsed', hidden: true, text: '… input hidden (click to show)', onclick: () => this.toggleInput() })
    this.inputCollapser = h('button', { type: 'button', class: 'cell-collapser', 'data-testid': 'collapse-input', title: 'Hide or show the input', 'aria-label': 'Hide or show the input', 'aria-expanded': 'true', onclick: (e) => { e.stopPropagation(); this.toggleInput() } })
    this.gutter.append(this.inputCollapser)
    this.outputArea = this.type === 'code' ? this._buildOutputArea() : null
    this.body = h('div', { class: 'cell-body' }, this.inputCollapsed, this.input, this.outputArea)
    this.el = h('div', {
      class: `cell cell--${this.type} is-far`,
      'data-testid': 'cell',
      'data-cell-id': this.id,
      'data-cell-type': this.type,
      tabindex: '-1'
    }, this.gutter, this.body)
    this.el.addEventListener('mousedown', (e) => {
      // Inside the editor, CodeMirror takes focus itself and onEditorFocus selects the cell.
      if (e.target.closest('.cm-editor') && this.nb.canEdit) return
      const keepFocus = e.target.closest('button, select, a')
      this.nb.activate(this, { scroll: false, focus: !keepFocus })
    })
    this.el.addEventListener('mouseenter', () => this.ensureChrome())
    this.el.addEventListener('dragstart', (e) => this.nb.onDragStart(this, e))
    this._syncPlaceholder()
    this._syncPrompt()
    this._syncVisibility()
  }

  _buildOutputArea () {
    const button = (testid, label, onclick) => h('button', { type: 'button', class: 'cell-output-tool', 'data-testid': testid, title: label, 'aria-label': label, onclick: (e) => { e.stopPropagation(); onclick() } })
    this.outputsCollapser = button('collapse-outputs', 'Hide or show the output', () => this.toggleOutputs())
    this.outputsCollapser.setAttribute('aria-expanded', 'true')
    this.outputsScroller = button('scroll-outputs', 'Scroll the output in a box, or show it whole', () => this.toggleOutputScrolling())
    this.outputsCollapsedNote = h('button', { type: 'button', class: 'cell-collapsed-note', 'data-testid': 'outputs-collapsed', hidden: true, text: '… output hidden (click to show)', onclick: () => this.toggleOutputs() })
    this.outputTools = h('div', { class: 'cell-output-tools', hidden: true }, this.outputsCollapser, this.outputsScroller)
    return h('div', { class: 'cell-output-area' }, this.outputTools, this.outputs, this.outputsCollapsedNote)
  }

  toggleOutputs (collapsed = !this.outputsAreCollapsed) {
    this.outputsAreCollapsed = collapsed
    this._syncOutputArea()
  }

  toggleOutputScrolling (scrolled = !this.outputs.classList.contains('is-scrolled')) {
    this.outputs.classList.toggle('is-scrolled', scrolled)
  }

  toggleInput (collapsed = !this.inputIsCollapsed) {
    this.inputIsCollapsed = collapsed
    this.input.hidden = collapsed
    this.inputCollapsed.hidden = !collapsed
    this.inputCollapser.setAttribute('aria-expanded', String(!collapsed))
    this.el.classList.toggle('is-input-collapsed', collapsed)
  }

  _syncOutputArea () {
    if (!this.outputArea) return
    const has = this.outputs.childElementCount > 0
    this.outputTools.hidden = !has
    this.outputs.hidden = !has || Boolean(this.outputsAreCollapsed)
    this.outputsCollapsedNote.hidden = !has || !this.outputsAreCollapsed
    this.outputsCollapser.setAttribute('aria-expanded', String(!this.outputsAreCollapsed))
    this.el.classList.toggle('is-output-collapsed', Boolean(this.outputsAreCollapsed))
  }

  /** The toolbar and drag handle, built only for cells that come near the viewport (2,000-cell notebooks). */
  ensureChrome () {
    if (this.toolbar) return
    const nb = this.nb
    this.typeSelect = h('select', { class: 'cell-type-select', 'data-testid': 'cell-type', 'aria-label': 'Cell type', onchange: (e) => nb.setCellType(this, e.target.value) },
      CELL_TYPES.map((type) => h('option', { value: type, text: TYPE_LABELS[type] })))
    this.typeSelect.value = this.type
    const tool = (name, label, testid, action, cls = 'nb-edit-only') =>
      iconButton(name, label, { class: `nb-icon-btn ${cls}`, 'data-testid': testid, onclick: (e) => { e.stopPropagation(); action() } })
    this.toolbar = h('div', { class: 'cell-toolbar', role: 'toolbar', 'aria-label': 'Cell actions' },
      this.typeSelect,
      this.type === 'code' ? tool('play', 'Run cell (Ctrl-Enter)', 'run-cell', () => nb.runCell(this), 'nb-run-only') : null,
      tool('up', 'Move up', 'move-up', () => nb.moveCell(this, -1)),
      tool('down', 'Move down', 'move-down', () => nb.moveCell(this, 1)),
      tool('plus', 'Add cell above (A)', 'add-cell-above', () => nb.addCell(this, 0), 'nb-edit-only nb-add-above'),
      tool('plus', 'Add cell below (B)', 'add-cell-below', () => nb.addCell(this, 1)),
      tool('trash', 'Delete cell (D, D)', 'delete-cell', () => nb.deleteCell(this), 'nb-edit-only nb-danger'))
    this.dragHandle = h('div', { class: 'cell-drag nb-edit-only', draggable: 'true', title: 'Drag to move', html: icon('grip') })
    this.body.prepend(this.toolbar)
    this.gutter.prepend(this.dragHandle)
    this.setReadOnly(!nb.canEdit)
  }

  _bind () {
    this._onMap = (event) => {
      if (event.keysChanged.has('cell_type') || event.keysChanged.has('id')) {
        this.nb.rebuildView(this)
        return
      }
      if (event.keysChanged.has('execution_count')) this._syncPrompt()
      if (event.keysChanged.has('outputs')) { this._bindOutputs(); this._markOutputsDirty() }
      if (event.keysChanged.has('attachments')) { this.markdownDirty = true; this._renderMarkdownIfNeeded() }
      if (event.keysChanged.has('source')) { this._bindText(); this.remount() }
    }
    this.ymap.observe(this._onMap)
    this._bindText()
    this._bindOutputs()
  }

  _bindText () {
    this._text?.unobserve(this._onText)
    this._text = this.ytext
    this._onText = () => {
      this.markdownDirty = true
      if (!this.editor) this._schedule('placeholder', () => this._syncPlaceholder())
      if (this.type === 'markdown' && !this.editing) this._schedule('markdown', () => this._renderMarkdownIfNeeded())
    }
    this._text?.observe(this._onText)
  }

  _bindOutputs () {
    this._outputs?.unobserveDeep(this._onOutputs)
    const outputs = this.ymap.get('outputs')
    this._outputs = outputs instanceof Y.AbstractType ? outputs : null
    this._onOutputs = () => this._markOutputsDirty()
    this._outputs?.observeDeep(this._onOutputs)
  }

  _schedule (key, fn) {
    this._pending ??= new Map()
    if (this._pending.has(key)) return
    this._pending.set(key, requestAnimationFrame(() => { this._pending.delete(key); fn() }))
  }

  _markOutputsDirty () {
    this.outputsDirty = true
    if (this.near) this._schedule('outputs', () => this._renderOutputsIfNeeded())
  }

  _syncPlaceholder () {
    const text = sourceText(this.ymap)
    // a first guess at the height of a cell that was never rendered (see .cell.is-far)
    const lines = text.split('\n').length
    this.el?.style.setProperty('--cell-estimate', `${Math.round(lines * 21 + 20)}px`)
    this.placeholder.textContent = text.endsWith('\n') ? text + ' ' : text || ' '
  }

  _syncPrompt () {
    if (this.type !== 'code') {
      this.prompt.textContent = ''
      return
    }
    const count = this.ymap.get('execution_count')
    const mark = this.runState ? '*' : Number.isInteger(count) ? String(count) : ' '
    this.prompt.textContent = `[${mark}]:`
    this.prompt.title = this.runState === 'queued' ? 'Queued' : this.runState === 'running' ? 'Running' : ''
  }

  _syncVisibility () {
    const isMarkdown = this.type === 'markdown'
    const showRendered = isMarkdown && !this.editing
    this.rendered.hidden = !showRendered
    this.editorHost.hidden = showRendered || !this.editor
    // Detached rather than hidden: a test (or anything else) holding the placeholder sees it go
    // away and finds the real editor under the same test id.
    if (showRendered || this.editor) this.placeholder.remove()
    else if (!this.placeholder.isConnected) this.input.prepend(this.placeholder)
    this.el.classList.toggle('is-editing-md', isMarkdown && this.editing)
  }

  _renderOutputsIfNeeded () {
    if (this.type !== 'code' || !this.outputsDirty) return
    this.outputsDirty = false
    renderOutputs(this.outputs, this.ymap.get('outputs'))
    this._syncOutputArea()
  }

  _renderMarkdownIfNeeded () {
    if (this.type !== 'markdown' || this.editing || !this.near || !this.markdownDirty) return
    this.markdownDirty = false
    const text = sourceText(this.ymap)
    if (text.trim()) {
      renderMarkdown(this.rendered, text, { attachments: toPlain(this.ymap.get('attachments')) })
      this.rendered.classList.remove('is-empty')
    } else {
      this.rendered.replaceChildren(h('span', { text: 'Empty markdown cell — double-click to edit' }))
      this.rendered.classList.add('is-empty')
    }
  }

  /** Called by the notebook's IntersectionObserver; realize() follows when the scrolling settles. */
  setNear (near) {
    this.near = near
    if (!near && !this.isFocused()) this._unmountEditor()
  }

  /** The cheap part of showing a cell (about a millisecond): toolbar, outputs, rendered markdown. */
  realize () {
    if (!this.near) return
    this.ensureChrome()
    this.show()
  }

  /** What a reader sees of a cell: outputs and rendered markdown (the toolbar shows on hover). */
  show () {
    if (!this.near) return
    this.shown = true
    this._renderOutputsIfNeeded()
    this._renderMarkdownIfNeeded()
  }

  /**
   * The expensive part: a CodeMirror editor (a few milliseconds each). `attach: false` makes it
   * outside the page and leaves it for `attachEditor()` (see NotebookView.mountEditors); true
   * when an editor was made.
   */
  mountEditorIfNear ({ attach = true } = {}) {
    return this.near ? this._mountEditor({ attach }) : false
  }

  /** Puts an editor made with `attach: false` in the page. */
  attachEditor () {
    if (!this.editor || this.editor.view.dom.parentNode === this.editorHost) return
    this.editorHost.append(this.editor.view.dom)
    this._syncVisibility()
  }

  _wantsEditor () {
    return this.near && (this.type !== 'markdown' || this.editing) && Boolean(this.ytext)
  }

  _mountEditor ({ attach = true } = {}) {
    if (this.editor || !this._wantsEditor()) return false
    this.editor = createCellEditor({
      parent: attach ? this.editorHost : undefined,
      ytext: this.ytext,
      awareness: this.nb.awareness,
      undoManager: this.nb.model.undoManager,
      cellType: this.type,
      readOnly: !this.nb.canEdit,
      keys: this.nb.editorKeys(this),
      extensions: this.type === 'code' ? this.nb.editorExtensions(this) : [],
      onFocus: () => this.nb.onEditorFocus(this),
      onBlur: () => this.nb.onEditorBlur(this)
    })
    if (attach) this._syncVisibility()
    return true
  }

  _unmountEditor () {
    if (!this.editor) return
    this.editor.destroy()
    this.editor = null
    this._syncPlaceholder()
    this._syncVisibility()
  }

  remount () {
    this._unmountEditor()
    this._mountEditor()
  }

  isFocused () {
    return Boolean(this.editor?.view.hasFocus)
  }

  /** Puts the caret in this cell's editor; `where` is 'start', 'end' or a character offset. */
  focusEditor (where = 'end') {
    if (this.type === 'markdown' && !this.editing) this.setEditing(true)
    this.near = true
    this._mountEditor()
    if (!this.editor) return false
    const view = this.editor.view
    const length = view.state.doc.length
    let pos
    if (where === 'start') pos = 0
    else if (where === 'end') pos = length
    else if (typeof where === 'object') pos = view.posAtCoords(where) ?? length
    else pos = Math.max(0, Math.min(Number(where) || 0, length))
    view.dispatch({ selection: { anchor: pos } })
    view.focus()
    return true
  }

  blurEditor () {
    if (this.editor?.view.hasFocus) this.editor.view.contentDOM.blur()
  }

  /** Markdown only: switch between source and rendered text. */
  setEditing (editing) {
    if (this.type !== 'markdown' || this.editing === editing) return
    this.editing = editing
    if (editing) {
      this._mountEditor()
    } else {
      this._unmountEditor()
      this.markdownDirty = true
      this._renderMarkdownIfNeeded()
    }
    this._syncVisibility()
  }

  caretOffset () {
    return this.editor ? this.editor.view.state.selection.main.head : null
  }

  setActive (active, mode) {
    if (active) this.ensureChrome()
    this.el.classList.toggle('is-active', active)
    this.el.classList.toggle('is-edit-mode', active && mode === 'edit')
  }

  setReadOnly (readOnly) {
    this.editor?.setReadOnly(readOnly)
    if (!this.toolbar) return
    this.typeSelect.disabled = readOnly
    this.dragHandle.setAttribute('draggable', readOnly ? 'false' : 'true')
  }

  setRunState (state) {
    if (this.runState === state) return
    this.runState = state
    if (state) this.el.dataset.runState = state
    else delete this.el.dataset.runState
    this._syncPrompt()
  }

  setPresence (users) {
    const signature = users.map((u) => `${u.id}|${u.name}|${u.color}`).join(',')
    if (signature === (this._presenceSignature ?? '')) return
    this._presenceSignature = signature
    this.presence.replaceChildren(...users.map((u) => h('span', {
      class: 'cell-presence-dot',
      'data-testid': 'cell-presence',
      title: u.name,
      style: `background:${safeColor(u.color)}`,
      text: initials(u.name)
    })))
    this.el.classList.toggle('has-presence', users.length > 0)
    if (users.length) this.el.style.setProperty('--presence-color', safeColor(users[0].color))
    else this.el.style.removeProperty('--presence-color')
  }

  destroy () {
    this.ymap.unobserve(this._onMap)
    this._text?.unobserve(this._onText)
    this._outputs?.unobserveDeep(this._onOutputs)
    for (const handle of this._pending?.values() ?? []) cancelAnimationFrame(handle)
    this._unmountEditor()
    this.el.remove()
  }
}
