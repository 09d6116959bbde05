// Unsaved edits survive a closed tab, a crash or a dead connection: while local changes stay
// unacknowledged for a moment, the document is kept in IndexedDB (y-indexeddb), under a name made
// of the notebook, its epoch and the person (another account signing in to this browser never
// sees, sends or is offered them). The next time the notebook opens in this browser for them:
//  - same epoch and the person may still edit: the stored updates join the live document and
//    the normal sync sends what the server lacks (same CRDT history, so nothing is duplicated);
//  - the document was replaced (another epoch) or the role no longer allows editing: they are
//    never merged; the person is told and offered them as an .ipynb download.
// The store is deleted as soon as the server has acknowledged everything.
import * as Y from 'yjs'
import { IndexeddbPersistence } from 'y-indexeddb'

const KEEP_AFTER_MS = 1000 // unacknowledged for this long: start keeping the document
// `place`: the notebook and the person, "<notebook>:<person>"
const INDEX_KEY = (place) => `nb-unsaved:${place}`
const dbName = (place, epoch) => `nb:${place}:${epoch}`

export class OfflineStore {
  constructor ({ cfg, ydoc, connection, status, canEdit = () => Boolean(cfg.canEdit) }) {
    this.cfg = cfg
    this.canEdit = canEdit
    this.ydoc = ydoc
    this.connection = connection
    this.status = status
    this.persistence = null
    this.timer = null
    this.available = typeof indexedDB !== 'undefined'
    this.place = `${cfg.notebookId}:${cfg.me?.id ?? ''}`
  }

  /** Called before the socket's first sync: brings back what the last visit left unsaved. */
  async restore () {
    if (!this.available) return
    const pending = readIndex(this.place)
    if (!pending) return
    if (pending.epoch === this.cfg.epoch && this.canEdit()) {
      this.restoring = true // until the server holds it all, whatever this tab's own clock says
      this._attach()
      await this.persistence.whenSynced
      // Kept until the server holds all of it: the stored updates are another client's, so
      // this tab's own "saved" clock says nothing about them.
      const stored = Y.decodeStateVector(Y.encodeStateVector(this.ydoc))
      this.status.toast('Edits from your last visit that had not reached the server are being saved now.', 'info')
      const ok = await this.connection.whenSaved(60000, () => this.connection.covers(stored))
      this.restoring = false
      if (ok && this.connection.isSaved()) this._release()
      return
    }
    const reason = pending.epoch !== this.cfg.epoch
      ? 'this notebook was replaced by another version since then'
      : 'you can no longer edit this notebook'
    const stored = new Y.Doc()
    const persistence = new IndexeddbPersistence(dbName(this.place, pending.epoch), stored)
    await persistence.whenSynced
    const file = new Blob([JSON.stringify(toIpynb(stored), null, 1)], { type: 'application/x-ipynb+json' })
    const forget = () => { persistence.clearData(); clearIndex(this.place) }
    this.status.toast(`Edits from your last visit were not saved: ${reason}. Download them to keep them.`, 'warn', {
      label: 'Download',
      testid: 'download-unsaved',
      sticky: true,
      run: () => { download(file, `${this.cfg.title || 'notebook'} (unsaved edits).ipynb`); forget() }
    })
  }

  /** Follows the saved state (the Connection's onSaved). */
  onSaved (saved) {
    if (!this.available || !this.canEdit()) return
    if (saved) {
      clearTimeout(this.timer)
      this.timer = null
      if (this.persistence && !this.restoring) this._release()
      return
    }
    if (this.persistence || this.timer) return
    this.timer = setTimeout(() => {
      this.timer = null
      if (!this.connection.isSaved()) this._attach()
    }, KEEP_AFTER_MS)
  }

  /**
   * The server refused a change of this tab and closed its socket (4413: too large, or deleting
   * in too many places): what this tab holds unsaved would be refused again at every visit, so
   * it is offered as a download and forgotten; the next visit starts from the saved notebook.
   */
  refused () {
    clearTimeout(this.timer)
    this.timer = null
    this.restoring = false
    const file = new Blob([JSON.stringify(toIpynb(this.ydoc), null, 1)], { type: 'application/x-ipynb+json' })
    if (this.available) this._release()
    this.status.toast('Your last change was not saved. Reload the page to go on from the saved notebook; download your version to keep it.', 'warn', {
      label: 'Download',
      testid: 'download-unsaved',
      sticky: true,
      run: () => download(file, `${this.cfg.title || 'notebook'} (unsaved edits).ipynb`)
    })
  }

  _attach () {
    if (this.persistence) return
    writeIndex(this.place, this.cfg.epoch)
    const persistence = this.persistence = new IndexeddbPersistence(dbName(this.place, this.cfg.epoch), this.ydoc)
    // `synced` comes before the first write is committed; a read after it waits for the commit
    this.kept = false
    persistence.whenSynced.then(() => new Promise((resolve) => {
      if (!persistence.db) return resolve()
      const request = persistence.db.transaction('updates', 'readonly').objectStore('updates').count()
      request.onsuccess = request.onerror = () => resolve()
    })).then(() => { if (this.persistence === persistence) this.kept = true })
  }

  _release () {
    const persistence = this.persistence
    this.persistence = null
    clearIndex(this.place)
    persistence?.clearData()
  }
}

function readIndex (id) {
  try {
    return JSON.parse(localStorage.getItem(INDEX_KEY(id)) || 'null')
  } catch {
    return null
  }
}

function writeIndex (id, epoch) {
  try { localStorage.setItem(INDEX_KEY(id), JSON.stringify({ epoch, at: Date.now() })) } catch { /* storage full or denied */ }
}

function clearIndex (id) {
  try { localStorage.removeItem(INDEX_KEY(id)) } catch { /* denied */ }
}

/** An nbformat notebook from a YNotebook document. */
export function toIpynb (ydoc) {
  const meta = ydoc.getMap('meta').toJSON()
  return {
    nbformat: meta.nbformat ?? 4,
    nbformat_minor: meta.nbformat_minor ?? 5,
    metadata: meta.metadata ?? {},
    cells: ydoc.getArray('cells').toJSON()
  }
}

function download (blob, name) {
  const a = document.createElement('a')
  a.href = URL.createObjectURL(blob)
  a.download = name
  document.body.append(a)
  a.click()
  a.remove()
  setTimeout(() => URL.revokeObjectURL(a.href), 60000)
}
