// The cell list bound to the Y.Array `cells`: one CellView per cell, kept in document order,
// created eagerly (cheap DOM) but given a CodeMirror editor only near the viewport.
// Also owns the active cell, command/edit mode and the commands that act on cells.
import { sayNotAllowed, watchReadOnlyTyping } from './askaccess.js'
import { CellView } from './cell.js'
import { h, icon } from './dom.js'
import { installCommandKeys, editorKeymap } from './keyboard.js'
import { CellDragAndDrop } from './dragdrop.js'
import { RunTracker } from './runs.js'
import { LOCAL } from './model.js'
import { assistExtensions } from './assist.js'
import { FindBar } from './find.js'

const LAZY_MARGIN = '900px 0px'
// Per person: another account signing in to this browser never pastes what this one copied
// (and logging out forgets it: static/js/forms.js).
const clipboardKey = (cfg) => `nb-cell-clipboard:${cfg.me?.id ?? ''}`

export class NotebookView {
  constructor ({ root, model, awareness, connection, cfg, status }) {
    this.root = root
    this.model = model
    this.awareness = awareness
    this.connection = connection
    this.cfg = cfg
    this.status = status
    watchReadOnlyTyping(root, this)
    this.canEdit = Boolean(cfg.canEdit)
    this.canRun = Boolean(cfg.canRun)
    this.views = []
    this.byId = new Map()
    this.viewByEl = new WeakMap()
    this.active = null
    this.mode = 'command'
    this.runs = new RunTracker({
      cfg,
      connection,
      status,
      onChange: () => this._refreshRunStates(),
      inputHost: (id) => this.byId.get(id)?.outputArea ?? null,
      onInputSent: (id) => {
        const view = this.byId.get(id)
        if (view && (!this.active || this.active === view || document.activeElement === document.body || view.el.contains(document.activeElement))) {
          this.activate(view, { mode: 'command', scroll: false })
        }
      }
    })
    this.toRealize = new Set()
    this.list = h('div', { class: 'nb-cells' })
    this.footer = this._buildFooter()
    this.root.append(this.list, this.footer)
    this.observer = new IntersectionObserver((entries) => this._onIntersect(entries), { rootMargin: LAZY_MARGIN })
    this._reset()
    model.cells.observe((event) => this._onCellsChanged(event))
    this.find = new FindBar(this)
    this.dnd = new CellDragAndDrop(this)
    installCommandKeys(this)
  }

  _buildFooter () {
    const add = (type, label, testid) => h('button', {
      type: 'button', class: 'nb-add-btn', 'data-testid': testid,
      onclick: () => this.insertAt(this.views.length, type, { edit: true })
    }, h('span', { html: icon('plus') }), label)
    return h('div', { class: 'nb-footer nb-edit-only' },
      add('code', 'Code', 'add-cell-end'), add('markdown', 'Markdown', 'add-markdown-end'))
  }

  // ---- keeping views in step with the Y.Array ------------------------------------------------

  _makeView (ymap) {
    const view = new CellView(this, ymap)
    if (this._presenceCells?.has(view.id)) this._presenceCells.delete(view.id)
    view.setReadOnly(!this.canEdit)
    this.byId.set(view.id, view)
    this.viewByEl.set(view.el, view)
    this.observer.observe(view.el)
    return view
  }

  _dropView (view) {
    this.observer.unobserve(view.el)
    this.toRealize.delete(view)
    if (this.byId.get(view.id) === view) this.byId.delete(view.id)
    view.destroy()
  }

  _reset () {
    for (const view of this.views) this._dropView(view)
    this.views = this.model.cells.toArray().map((ymap) => this._makeView(ymap))
    this.list.replaceChildren(...this.views.map((v) => v.el))
    this._refreshRunStates()
    this.root.classList.toggle('is-empty', this.views.length === 0)
  }

  _onCellsChanged (event) {
    const prev = this.active
    const snapshot = prev && {
      id: prev.id,
      editing: prev.isFocused(),
      mdEditing: prev.editing,
      caret: prev.caretOffset(),
      index: this.views.indexOf(prev),
      hadFocus: this.root.contains(document.activeElement)
    }
    let index = 0
    for (const op of event.changes.delta) {
      if (op.retain) index += op.retain
      if (op.delete) {
        for (const view of this.views.splice(index, op.delete)) this._dropView(view)
      }
      if (op.insert) {
        const created = op.insert.map((ymap) => this._makeView(ymap))
        const before = this.views[index]?.el ?? null
        for (const view of created) this.list.insertBefore(view.el, before)
        this.views.splice(index, 0, ...created)
        index += created.length
      }
    }
    for (const view of this.views) this.byId.set(view.id, view)
    this.root.classList.toggle('is-empty', this.views.length === 0)
    this._refreshRunStates()
    if (!this._firstScreenShown && this.views.length) this._showFirstScreen()
    this.onStructureChange?.()
    if (snapshot && !this.views.includes(prev)) {
      const remote = event.transaction.origin !== LOCAL
      if (remote && !this.byId.has(snapshot.id) && snapshot.editing) this._editedCellDeleted(snapshot)
      else this._restoreActive(snapshot)
    }
  }

  // Someone else deleted the cell this person is typing in. Their next keys must stay text: keep
  // edit mode in the cell above (or the one that took its place), and say who did it.
  _editedCellDeleted ({ id, index, hadFocus }) {
    this.active = null
    const above = index > 0 ? this.views[index - 1] : null
    const target = above ?? this.views[index] ?? null
    if (target) {
      if (target.type === 'markdown') target.setEditing(true)
      this.activate(target, { mode: 'edit', caret: above ? 'end' : 'start', scroll: true, focus: hadFocus })
    } else {
      this._publishCell(null)
    }
    const name = this.whoWasIn(id, 'deleted') ?? 'Someone'
    const where = target ? (above ? ' Your typing continues at the end of the cell above.' : ' Your typing continues in the next cell.') : ''
    this.status.toast(`${name} deleted the cell you were editing.${where}`, 'warn')
  }

  /** The name of another person whose presence has `key` (a list of cell ids) or `cell` matching `id`. */
  whoWasIn (id, key = null) {
    let found = null
    for (const [clientId, state] of this.awareness.getStates()) {
      if (clientId === this.awareness.clientID || !state?.user?.name) continue
      if (key && Array.isArray(state[key]) && state[key].includes(id)) return state.user.name
      if (state.cell === id) found ??= state.user.name
    }
    return found
  }

  /** Another client changed a cell's type or id in place: rebuild its view. */
  rebuildView (view) {
    const index = this.views.indexOf(view)
    if (index < 0) return
    const wasActive = this.active === view
    const fresh = this._makeView(view.ymap)
    this.list.replaceChild(fresh.el, view.el)
    this.views[index] = fresh
    this._dropView(view)
    this.byId.set(fresh.id, fresh)
    if (wasActive) {
      this.active = null
      this.activate(fresh, { mode: 'command', scroll: false })
    }
  }

  // The active cell was replaced (moved or retyped, here or elsewhere) or deleted: keep the
  // selection, the caret and the focus where the user expects them, without stealing focus
  // from outside the notebook.
  _restoreActive ({ id, editing, mdEditing, caret, index, hadFocus }) {
    const same = this.byId.get(id)
    this.active = null
    if (same) {
      if (mdEditing) same.setEditing(true)
      this.activate(same, { mode: editing ? 'edit' : 'command', caret, scroll: editing, focus: hadFocus })
      return
    }
    const fallback = this.views[Math.min(index, this.views.length - 1)]
    if (fallback) this.activate(fallback, { mode: 'command', scroll: false, focus: hadFocus })
    else this._publishCell(null)
  }

  _onIntersect (entries) {
    for (const entry of entries) {
      const view = this.viewByEl.get(entry.target)
      if (!view) continue
      view.setNear(entry.isIntersecting)
      view.el.classList.toggle('is-far', !entry.isIntersecting)
      if (entry.isIntersecting) {
        this.toRealize.add(view)
      } else {
        this.toRealize.delete(view)
      }
    }
    this._scheduleRealize()
  }

  // The cells on screen when the notebook first arrives get their editors, outputs and rendered
  // markdown in the task that brought them, not two frames later when the IntersectionObserver
  // has reported and the next frame has come round (one forced layout; toolbars follow, after the
  // first paint).
  _showFirstScreen () {
    this._firstScreenShown = true
    const onScreen = [] // all positions first: reading one after a mount would lay out again
    for (const view of this.views) {
      const rect = view.el.getBoundingClientRect()
      if (rect.top >= window.innerHeight) break
      if (rect.bottom > 0) onScreen.push(view)
    }
    for (const view of onScreen) view.setNear(true)
    this.mountEditors(onScreen) // before anything else changes the page: see mountEditors
    for (const view of onScreen) {
      view.el.classList.remove('is-far')
      view.show()
      this.toRealize.add(view)
    }
    performance.mark('nb:first-cells')
    // Their hidden toolbars and the cells below wait for the frame after the first paint.
    requestAnimationFrame(() => this._scheduleRealize())
  }

  // Making a CodeMirror view reads the page's selection, for which the browser first lays the
  // page out again if anything in it changed: editors made in the page one after another (or
  // between other changes) cost a layout of the whole notebook each. Made outside the page, then
  // put in together, they cost one at most.
  mountEditors (views) {
    const made = views.filter((view) => view.mountEditorIfNear({ attach: false }))
    for (const view of made) view.attachEditor()
  }

  // Creating editors is the expensive part; spread it over frames (a few ms each), nearest to
  // the viewport first, so that flinging through a 2,000-cell notebook never blocks and cells
  // that scrolled past are skipped.
  _scheduleRealize () {
    if (this._realizeTimer || !this.toRealize.size) return
    this._realizeTimer = requestAnimationFrame(() => {
      this._realizeTimer = null
      const start = performance.now()
      const middle = window.innerHeight / 2
      const distance = (view) => {
        const rect = view.el.getBoundingClientRect()
        return rect.bottom < 0 ? -rect.bottom : rect.top > window.innerHeight ? rect.top - window.innerHeight : Math.abs(rect.top - middle) / 1e4
      }
      const queue = [...this.toRealize].filter((v) => v.el.isConnected).map((v) => [distance(v), v]).sort((a, b) => a[0] - b[0])
      // Cells on screen for the first time get their editors, outputs and rendered markdown in a
      // frame of their own (what the reader sees first, in one paint); their hidden toolbars and
      // the cells off screen follow in the next frames.
      const fresh = queue.filter(([d, view]) => d < 1 && !view.shown)
      if (fresh.length) {
        this.mountEditors(fresh.map(([, view]) => view))
        for (const [, view] of fresh) view.show()
        this._scheduleRealize()
        return
      }
      // cells on screen get their outputs and rendered markdown at once, editors follow
      for (const [d, view] of queue) if (d < 1) view.realize()
      const made = []
      for (const [, view] of queue) {
        this.toRealize.delete(view)
        if (view.mountEditorIfNear({ attach: false })) made.push(view)
        if (performance.now() - start > 16) break
      }
      for (const view of made) view.attachEditor()
      for (const [, view] of queue) {
        if (this.toRealize.has(view)) break
        view.realize()
      }
      for (const view of this.toRealize) if (!view.el.isConnected) this.toRealize.delete(view)
      this._scheduleRealize()
    })
  }

  // ---- active cell and modes ------------------------------------------------------------------

  indexOf (view) { return this.views.indexOf(view) }

  activate (view, { mode = 'command', caret = 'end', scroll = true, focus = true, keepSelection = false } = {}) {
    if (!view) return
    if (!keepSelection && this.selectionAnchor && this.active !== view) this.clearSelection()
    if (this.active && this.active !== view) {
      this.active.setActive(false)
      if (this.active.type === 'markdown' && this.active.editing) this.active.setEditing(false)
    }
    const changed = this.active !== view
    this.active = view
    this.mode = mode
    view.setActive(true, mode)
    if (mode === 'edit') {
      if (!view.isFocused()) view.focusEditor(caret)
    } else {
      view.blurEditor()
      if (focus && document.activeElement !== view.el) view.el.focus({ preventScroll: true })
    }
    if (scroll) this.scrollIntoView(view)
    if (changed) this._publishCell(view.id)
  }

  enterCommandMode () {
    if (this.active) this.activate(this.active, { mode: 'command', scroll: false })
  }

  editCell (view) {
    if (view.type === 'markdown') view.setEditing(true)
    this.activate(view, { mode: 'edit', scroll: false })
  }

  onEditorFocus (view) {
    if (this.active !== view || this.mode !== 'edit') this.activate(view, { mode: 'edit', scroll: false })
  }

  onEditorBlur (view) {
    // Focus left the editor for something outside the notebook: keep the cell selected.
    if (this.active === view && this.mode === 'edit') {
      setTimeout(() => {
        if (this.active === view && !view.isFocused() && !view.el.contains(document.activeElement)) {
          this.mode = 'command'
          view.setActive(true, 'command')
        }
      }, 0)
    }
  }

  scrollIntoView (view) {
    const rect = view.el.getBoundingClientRect()
    const header = document.querySelector('.nb-header')?.getBoundingClientRect().bottom ?? 0
    const top = Math.max(header, 0) + 8
    if (rect.top < top) window.scrollBy({ top: rect.top - top })
    else if (rect.bottom > window.innerHeight - 8 && rect.height < window.innerHeight - top) {
      window.scrollBy({ top: rect.bottom - window.innerHeight + 24 })
    }
  }

  selectRelative (delta, { mode = 'command', caret } = {}) {
    const index = this.indexOf(this.active)
    const next = this.views[index + delta]
    if (!next) return false
    this.activate(next, { mode, caret: caret ?? (delta < 0 ? 'end' : 'start') })
    return true
  }

  _publishCell (id) {
    this.awareness.setLocalStateField('cell', id)
  }

  // ---- commands -------------------------------------------------------------------------------

  insertAt (index, type = 'code', { edit = false } = {}) {
    if (!this.canEdit) return null
    const id = this.model.insert(index, type)
    const view = this.byId.get(id)
    if (view) this.activate(view, { mode: edit ? 'edit' : 'command' })
    if (view && edit && type === 'markdown') this.editCell(view)
    return view
  }

  addCell (view, offset, type = 'code') {
    const index = view ? this.indexOf(view) + offset : this.views.length
    return this.insertAt(index, type, { edit: true })
  }

  deleteCell (view) {
    if (!this.canEdit || !view) return
    const editor = this.whoWasIn(view.id)
    // Tells the others who deleted it (see _editedCellDeleted), before the deletion reaches them.
    this.awareness.setLocalStateField('deleted', [view.id])
    this.model.remove(view.id)
    if (editor) {
      this.status.toast(`You deleted the cell ${editor} was in.`, 'info', { label: 'Undo', testid: 'undo-delete', run: () => this.undo() })
    }
  }

  /** Shift-M: the selected cells become one; with one selected, it and the one below. */
  mergeBelow (view) {
    if (!this.canEdit || !view) return
    let views = this.selectedViews()
    if (views.length < 2) {
      const next = this.views[this.indexOf(view) + 1]
      if (!next) return
      views = [view, next]
    }
    this.model.merge(views.map((v) => v.id))
    this.clearSelection()
    this.activate(this.byId.get(views[0].id) ?? views[0], { mode: 'command', scroll: false })
  }

  // ---- multi-cell selection (Shift-Up/Down): C, X, D D, Shift-M and clearing act on all of it --

  selectedViews () {
    const anchor = this.selectionAnchor
    if (!this.active) return []
    if (!anchor || !this.views.includes(anchor)) return [this.active]
    const [a, b] = [this.indexOf(anchor), this.indexOf(this.active)].sort((x, y) => x - y)
    return this.views.slice(a, b + 1)
  }

  extendSelection (delta) {
    if (!this.active) return
    const next = this.views[this.indexOf(this.active) + delta]
    if (!next) return
    this.selectionAnchor ??= this.active
    this.activate(next, { mode: 'command', keepSelection: true })
    this._paintSelection()
  }

  clearSelection () {
    if (!this.selectionAnchor) return
    this.selectionAnchor = null
    this._paintSelection()
  }

  _paintSelection () {
    const selected = new Set(this.selectionAnchor ? this.selectedViews() : [])
    for (const view of this._painted ?? []) if (!selected.has(view)) view.el.classList.remove('is-selected')
    for (const view of selected) view.el.classList.add('is-selected')
    this._painted = selected
  }

  // ---- cell clipboard: kept in this browser's storage, so it also pastes into other notebooks ----

  copyCells ({ cut = false } = {}) {
    const views = this.selectedViews()
    if (!views.length) return
    const cells = this.model.exportCells(views.map((v) => v.id))
    try {
      localStorage.setItem(clipboardKey(this.cfg), JSON.stringify(cells))
    } catch {
      this.status.toast('These cells are too large to copy here; download the notebook instead.', 'error')
      return
    }
    cut = cut && this.canEdit // a viewer's X copies
    if (cut) {
      const index = this.indexOf(views[0])
      this.model.removeMany(views.map((v) => v.id))
      this.clearSelection()
      const fallback = this.views[Math.min(index, this.views.length - 1)]
      if (fallback) this.activate(fallback, { mode: 'command' })
    }
    this.status.toast(`${cells.length === 1 ? 'Cell' : `${cells.length} cells`} ${cut ? 'cut' : 'copied'}.`, 'info')
  }

  pasteCells ({ above = false } = {}) {
    if (!this.canEdit) return
    let cells = null
    try { cells = JSON.parse(localStorage.getItem(clipboardKey(this.cfg)) || 'null') } catch { cells = null }
    if (!Array.isArray(cells) || !cells.length) { this.status.toast('No cells to paste: copy some with C or cut them with X.', 'info'); return }
    const index = this.active ? this.indexOf(this.active) + (above ? 0 : 1) : this.views.length
    const ids = this.model.insertCells(index, cells)
    this.clearSelection()
    const last = this.byId.get(ids[ids.length - 1])
    if (last) this.activate(last, { mode: 'command' })
  }

  deleteSelected () {
    const views = this.selectedViews()
    if (views.length > 1 && this.canEdit) {
      const index = this.indexOf(views[0])
      this.model.removeMany(views.map((v) => v.id))
      this.clearSelection()
      const fallback = this.views[Math.min(index, this.views.length - 1)]
      if (fallback) this.activate(fallback, { mode: 'command' })
    } else {
      this.deleteCell(views[0])
    }
  }

  /** Ctrl-Shift-minus: the source after the caret becomes a new cell below, edited at its start. */
  splitCell (view) {
    if (!this.canEdit || !view?.editor) return
    const id = this.model.split(view.id, view.caretOffset() ?? 0)
    const fresh = id && this.byId.get(id)
    if (fresh) this.activate(fresh, { mode: 'edit', caret: 'start' })
  }

  clearOutputs (all = false) {
    if (!this.canEdit) return
    const views = all ? this.views : this.selectedViews()
    this.model.clearOutputs(views.map((v) => v.id))
  }

  moveCell (view, delta) {
    if (!this.canEdit || !view) return
    this.model.move(view.id, this.indexOf(view) + delta)
    const moved = this.byId.get(view.id)
    if (moved && this.active?.id === view.id) this.scrollIntoView(moved)
  }

  setCellType (view, type) {
    if (!this.canEdit || !view) {
      if (view?.typeSelect) view.typeSelect.value = view.type
      return
    }
    const wasEditing = view.isFocused()
    this.model.setType(view.id, type)
    const replacement = this.byId.get(view.id)
    if (replacement && replacement !== view) {
      if (type === 'markdown' && wasEditing) replacement.setEditing(true)
      this.activate(replacement, { mode: wasEditing ? 'edit' : 'command', scroll: false })
    }
  }

  undo () { if (this.canEdit) this.model.undo() }
  redo () { if (this.canEdit) this.model.redo() }

  /** Shift-Enter: run (or render) the active cell and go to the next one, adding one at the end. */
  runAndAdvance () {
    const view = this.active
    if (!view) return
    const wasEditing = this.mode === 'edit'
    this.runCell(view)
    if (view.type === 'markdown') view.setEditing(false)
    const next = this.views[this.indexOf(view) + 1]
    if (next) this.activate(next, { mode: wasEditing && next.type !== 'markdown' ? 'edit' : 'command', caret: 'start' })
    else if (this.canEdit) this.insertAt(this.views.length, 'code', { edit: wasEditing })
    else this.activate(view, { mode: 'command' })
  }

  /** Ctrl-Enter: run (or render) the active cell and stay on it. */
  runInPlace () {
    const view = this.active
    if (!view) return
    this.runCell(view)
    if (view.type === 'markdown') {
      view.setEditing(false)
      this.activate(view, { mode: 'command', scroll: false })
    }
  }

  runCell (view) {
    if (view.type === 'code') this.runCells([view])
  }

  runAll () {
    this.runCells(this.views.filter((v) => v.type === 'code'))
  }

  /** The code cells before `view` (all of them without a selection). */
  runAbove (view) {
    const index = view ? this.views.indexOf(view) : this.views.length
    this.runCells(this.views.slice(0, Math.max(0, index)))
  }

  /** `view` and the code cells after it (all of them without a selection). */
  runBelow (view) {
    const index = view ? this.views.indexOf(view) : 0
    this.runCells(this.views.slice(Math.max(0, index)))
  }

  runCells (views) {
    const ids = views.filter((v) => v.type === 'code').map((v) => v.id)
    if (!ids.length) return
    if (!this.canRun) { this._sayCannotRun(); return }
    this.runs.run(ids)
  }

  // Said at the moment of trying, with the way to ask for the role that can (askaccess.js).
  _sayCannotRun () {
    const what = this.canEdit ? 'You can edit this notebook but not run code in it.' : 'You can view this notebook but not run code in it.'
    sayNotAllowed(this, 'run', what, 'runner')
  }

  setKernel (kernel) {
    this.runs.setKernel(kernel)
  }

  _refreshRunStates () {
    for (const view of this.views) view.setRunState(this.runs.stateOf(view.id))
  }

  setAccess ({ canEdit, canRun }) {
    this.canEdit = Boolean(canEdit)
    this.canRun = Boolean(canRun)
    for (const view of this.views) view.setReadOnly(!this.canEdit)
  }

  setPresence (byCell) {
    // Only cells that had or have someone in them: cursor moves fire this constantly.
    const touched = new Set([...(this._presenceCells ?? []), ...byCell.keys()])
    this._presenceCells = new Set(byCell.keys())
    for (const id of touched) this.byId.get(id)?.setPresence(byCell.get(id) ?? [])
  }

  openFind () { this.find.open() }

  editorKeys (view) {
    return editorKeymap(this, view)
  }

  editorExtensions () {
    this._assist ??= assistExtensions(this)
    return this._assist
  }

  /**
   * Completion ('complete') or help ('inspect') from the kernel: the reply's body, or null. Said
   * out loud (`say`) when the kernel cannot answer; completion stays quiet and Tab just indents.
   */
  async assist (op, code, cursorPos, { say = false } = {}) {
    if (!this.canRun) return null
    const reply = await this.connection.command(op, { code, cursor_pos: cursorPos })
    if (reply?.status === 200) return reply.body
    if (say || reply?.status === 409) {
      const now = Date.now()
      if (now - (this._saidAssist ?? 0) > 4000) {
        this._saidAssist = now
        this.status.toast(reply?.body?.error || 'The kernel did not answer.', 'info')
      }
    }
    return null
  }

  onDragStart (view, event) {
    this.dnd.start(view, event)
  }
}
