// Every structural change to the notebook document goes through here.
//
// Rules (jupyter_ydoc YNotebook schema): a cell is a Y.Map; its `source` Y.Text is never
// reassigned. Yjs arrays have no "move", so moving or retyping a cell replaces its Y.Map with a
// fresh copy inside one transaction. All local transactions carry the LOCAL origin so that the
// undo manager tracks only this user's changes.
import * as Y from 'yjs'

export const LOCAL = Object.freeze({ origin: 'local-user' })

export const CELL_TYPES = ['code', 'markdown', 'raw']

export function newCellId () {
  const bytes = crypto.getRandomValues(new Uint8Array(16))
  bytes[6] = (bytes[6] & 0x0f) | 0x40
  bytes[8] = (bytes[8] & 0x3f) | 0x80
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`
}

/** A prelim (not yet integrated) cell map. */
export function makeCell (type, text = '', { id = newCellId(), metadata = null, attachments = null } = {}) {
  const entries = [
    ['id', id],
    ['cell_type', type],
    ['source', new Y.Text(text)],
    ['metadata', metadata ?? new Y.Map()]
  ]
  if (type === 'code') {
    entries.push(['outputs', new Y.Array()], ['execution_count', null])
  } else if (attachments != null) {
    entries.push(['attachments', attachments])
  }
  return new Y.Map(entries)
}

/** Plain JSON of a value that may be a Y type. */
export function toPlain (value) {
  return value instanceof Y.AbstractType ? value.toJSON() : value
}

function cloneValue (value) {
  if (value instanceof Y.AbstractType) return value.clone()
  return value == null ? value : JSON.parse(JSON.stringify(value))
}

export function sourceText (cell) {
  const source = cell.get('source')
  if (source instanceof Y.Text) return source.toString()
  if (Array.isArray(source)) return source.join('')
  return typeof source === 'string' ? source : ''
}

/** A fresh prelim copy of an integrated cell (same id, same content). */
function copyCell (cell, type = cell.get('cell_type')) {
  const copy = makeCell(type, sourceText(cell), {
    id: cell.get('id'),
    metadata: cell.has('metadata') ? cloneValue(cell.get('metadata')) : null,
    attachments: cell.has('attachments') ? cloneValue(cell.get('attachments')) : null
  })
  if (type === 'code' && cell.get('cell_type') === 'code') {
    copy.set('execution_count', cell.get('execution_count') ?? null)
    const outputs = cell.get('outputs')
    if (outputs instanceof Y.Array) {
      copy.set('outputs', outputs.clone())
    } else if (Array.isArray(outputs)) {
      copy.set('outputs', Y.Array.from(outputs.map(cloneValue)))
    }
  }
  return copy
}

export class NotebookModel {
  constructor (ydoc) {
    this.ydoc = ydoc
    this.cells = ydoc.getArray('cells')
    this.undoManager = new Y.UndoManager(this.cells, { trackedOrigins: new Set([LOCAL]) })
  }

  /** One structural change = one undo step, never merged with typing around it. */
  transact (fn) {
    this.undoManager.stopCapturing()
    this.ydoc.transact(fn, LOCAL)
    this.undoManager.stopCapturing()
  }

  indexOfId (id) {
    const arr = this.cells.toArray()
    for (let i = 0; i < arr.length; i++) {
      if (arr[i].get('id') === id) return i
    }
    return -1
  }

  insert (index, type = 'code', text = '') {
    const id = newCellId()
    const cell = makeCell(type, text, { id })
    this.transact(() => this.cells.insert(Math.max(0, Math.min(index, this.cells.length)), [cell]))
    return id
  }

  remove (id) {
    const index = this.indexOfId(id)
    if (index >= 0) this.transact(() => this.cells.delete(index, 1))
    return index
  }

  move (id, toIndex) {
    const from = this.indexOfId(id)
    const to = Math.max(0, Math.min(toIndex, this.cells.length - 1))
    if (from < 0 || from === to) return false
    this.transact(() => {
      const copy = copyCell(this.cells.get(from))
      this.cells.delete(from, 1)
      this.cells.insert(to, [copy])
    })
    return true
  }

  setType (id, type) {
    const index = this.indexOfId(id)
    if (index < 0 || !CELL_TYPES.includes(type)) return false
    const cell = this.cells.get(index)
    if (cell.get('cell_type') === type) return false
    this.transact(() => {
      const copy = copyCell(cell, type)
      this.cells.delete(index, 1)
      this.cells.insert(index, [copy])
    })
    return true
  }

  /**
   * Appends the sources of the cells `ids[1..]` to the first one (one line break between them)
   * and deletes them. The first cell keeps its type; its outputs and count no longer match its
   * source, so they are cleared (as JupyterLab does).
   */
  merge (ids) {
    const indexes = ids.map((id) => this.indexOfId(id)).filter((i) => i >= 0).sort((a, b) => a - b)
    if (indexes.length < 2) return false
    const [first, ...rest] = indexes.map((i) => this.cells.get(i))
    const text = first.get('source')
    if (!(text instanceof Y.Text)) return false
    this.transact(() => {
      for (const cell of rest) text.insert(text.length, '\n' + sourceText(cell))
      if (first.get('cell_type') === 'code') {
        const outputs = first.get('outputs')
        if (outputs instanceof Y.Array && outputs.length) outputs.delete(0, outputs.length)
        first.set('execution_count', null)
      }
      for (const i of indexes.slice(1).reverse()) this.cells.delete(i, 1)
    })
    return true
  }

  /** Plain nbformat cells (no ids) of `ids`, in document order: what C and X put on the clipboard. */
  exportCells (ids) {
    return this.cells.toArray().filter((c) => ids.includes(c.get('id'))).map((c) => {
      const cell = { cell_type: c.get('cell_type'), source: sourceText(c), metadata: toPlain(c.get('metadata')) ?? {} }
      if (cell.cell_type === 'code') {
        cell.outputs = toPlain(c.get('outputs')) ?? []
        cell.execution_count = c.get('execution_count') ?? null
      } else if (c.has('attachments')) {
        cell.attachments = toPlain(c.get('attachments'))
      }
      return cell
    })
  }

  /** Inserts plain cells (from the clipboard) at `index` with new ids; returns the ids. */
  insertCells (index, cells) {
    const ids = []
    const made = cells.filter((c) => c && CELL_TYPES.includes(c.cell_type)).map((c) => {
      const id = newCellId()
      ids.push(id)
      const cell = makeCell(c.cell_type, typeof c.source === 'string' ? c.source : Array.isArray(c.source) ? c.source.join('') : '', {
        id,
        metadata: c.metadata && typeof c.metadata === 'object' && !Array.isArray(c.metadata) ? new Y.Map(Object.entries(c.metadata)) : null
      })
      if (c.cell_type === 'code' && Array.isArray(c.outputs)) {
        cell.set('outputs', Y.Array.from(c.outputs.filter((o) => o && typeof o === 'object').map((o) => new Y.Map(Object.entries(o)))))
        cell.set('execution_count', Number.isInteger(c.execution_count) ? c.execution_count : null)
      }
      return cell
    })
    if (made.length) this.transact(() => this.cells.insert(Math.max(0, Math.min(index, this.cells.length)), made))
    return ids
  }

  removeMany (ids) {
    const indexes = ids.map((id) => this.indexOfId(id)).filter((i) => i >= 0).sort((a, b) => b - a)
    if (indexes.length) this.transact(() => { for (const i of indexes) this.cells.delete(i, 1) })
    return indexes.length
  }

  /** Splits a cell's source at `offset` (UTF-16, as the editor counts): the rest becomes a new cell below. */
  split (id, offset) {
    const index = this.indexOfId(id)
    if (index < 0) return null
    const cell = this.cells.get(index)
    const text = cell.get('source')
    if (!(text instanceof Y.Text)) return null
    const all = text.toString()
    const at = Math.max(0, Math.min(offset, all.length))
    const after = all.slice(at).replace(/^\n/, '')
    const newId = newCellId()
    this.transact(() => {
      text.delete(at, all.length - at)
      if (text.toString().endsWith('\n')) text.delete(text.length - 1, 1)
      this.cells.insert(index + 1, [makeCell(cell.get('cell_type'), after, { id: newId })])
    })
    return newId
  }

  clearOutputs (ids) {
    const cells = this.cells.toArray().filter((c) => ids.includes(c.get('id')) && c.get('cell_type') === 'code')
    if (!cells.length) return
    this.transact(() => {
      for (const c of cells) {
        const outputs = c.get('outputs')
        if (outputs instanceof Y.Array && outputs.length) outputs.delete(0, outputs.length)
        if (c.get('execution_count') != null) c.set('execution_count', null)
      }
    })
  }

  undo () { return this.undoManager.undo() != null }
  redo () { return this.undoManager.redo() != null }
}
