// Drag a cell by its gutter handle and drop it above or below another cell (HTML5 drag and drop;
// touch screens use the move up / move down buttons instead).

export class CellDragAndDrop {
  constructor (nb) {
    this.nb = nb
    this.dragging = null
    nb.list.addEventListener('dragover', (e) => this._over(e))
    nb.list.addEventListener('drop', (e) => this._drop(e))
    nb.list.addEventListener('dragend', () => this._clear())
  }

  start (view, event) {
    if (!this.nb.canEdit || !event.target.closest?.('.cell-drag')) {
      event.preventDefault()
      return
    }
    this.dragging = view
    event.dataTransfer.effectAllowed = 'move'
    event.dataTransfer.setData('text/plain', view.id)
    event.dataTransfer.setDragImage(view.el, 24, 24)
    view.el.classList.add('is-dragging')
  }

  _target (event) {
    const el = event.target.closest?.('.cell')
    const view = el && this.nb.viewByEl.get(el)
    if (!view) return null
    const rect = el.getBoundingClientRect()
    return { view, after: event.clientY > rect.top + rect.height / 2 }
  }

  _over (event) {
    if (!this.dragging) return
    const target = this._target(event)
    if (!target) return
    event.preventDefault()
    this._clearMarks()
    target.view.el.classList.add(target.after ? 'drop-after' : 'drop-before')
  }

  _drop (event) {
    const dragged = this.dragging
    const target = this._target(event)
    this._clear()
    if (!dragged || !target || target.view === dragged) return
    event.preventDefault()
    const from = this.nb.indexOf(dragged)
    let to = this.nb.indexOf(target.view) + (target.after ? 1 : 0)
    if (from < to) to -= 1
    this.nb.model.move(dragged.id, to)
  }

  _clearMarks () {
    for (const el of this.nb.list.querySelectorAll('.drop-before, .drop-after')) el.classList.remove('drop-before', 'drop-after')
  }

  _clear () {
    this.dragging?.el.classList.remove('is-dragging')
    this.dragging = null
    this._clearMarks()
  }
}
