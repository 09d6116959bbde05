// Boot: read the page's editor_config, open the shared document and mount the editor.
import './editor.css'
import 'katex/dist/katex.min.css'
import * as Y from 'yjs'
import { Connection } from './connection.js'
import { NotebookModel } from './model.js'
import { NotebookView } from './notebook.js'
import { PresenceView } from './presence.js'
import { StatusView } from './status.js'
import { h, icon, iconButton } from './dom.js'
import { shortcutsHelp } from './keyboard.js'
import { shareDialog } from './share.js'
import { OfflineStore } from './offline.js'
import { renamableTitle } from './title.js'

function readConfig () {
  const el = document.getElementById('editor-config')
  if (!el) throw new Error('editor-config is missing from the page')
  return JSON.parse(el.textContent)
}

function buildShell (app, cfg, status) {
  const title = h('h1', { class: 'nb-title', 'data-testid': 'notebook-title', title: cfg.title, text: cfg.title || 'Untitled notebook' })
  const back = cfg.urls?.list ? h('a', { class: 'nb-icon-btn nb-back', href: cfg.urls.list, title: 'All notebooks', 'aria-label': 'All notebooks', html: icon('back') }) : null
  // pages about this notebook that only its owner may open
  const notebookMenu = cfg.isOwner
    ? menu('Notebook pages', 'notebook-menu', [['Activity: who did what', 'open-activity'], ['Kernel settings', 'open-kernel-settings']], { cls: '' })
    : null
  const download = cfg.urls?.download
    ? h('a', { class: 'nb-btn nb-btn--ghost', href: cfg.urls.download, 'data-testid': 'download', title: 'Download as .ipynb' }, h('span', { html: icon('download') }), h('span', { class: 'nb-btn-label', text: 'Download' }))
    : null
  const addCode = h('button', { type: 'button', class: 'nb-btn nb-edit-only', 'data-testid': 'add-code', title: 'Add a code cell below the selected one (B)' }, h('span', { html: icon('plus') }), h('span', { text: 'Code' }))
  const addMd = h('button', { type: 'button', class: 'nb-btn nb-edit-only', 'data-testid': 'add-markdown', title: 'Add a markdown cell below the selected one' }, h('span', { html: icon('plus') }), h('span', { text: 'Markdown' }))
  const runAll = h('button', { type: 'button', class: 'nb-btn nb-run-only', 'data-testid': 'run-all', title: 'Run all code cells' }, h('span', { html: icon('runAll') }), h('span', { class: 'nb-btn-label', text: 'Run all' }))
  const interrupt = iconButton('stop', 'Interrupt the kernel', { class: 'nb-icon-btn nb-run-only', 'data-testid': 'kernel-interrupt' })
  const restart = iconButton('restart', 'Restart the kernel', { class: 'nb-icon-btn nb-run-only nb-wide-only', 'data-testid': 'kernel-restart' })
  const runMenu = menu('More run and kernel actions', 'run-menu', [
    ['Run the cells above the selected one', 'run-above'],
    ['Run the selected cell and all below', 'run-below'],
    ['Restart the kernel and run all', 'restart-run-all'],
    ['Shut the kernel down', 'kernel-shutdown']
  ])
  const editMenu = menu('Cell actions', 'edit-menu', [
    ['Cut cells (X)', 'cut-cells'],
    ['Copy cells (C)', 'copy-cells'],
    ['Paste cells below (V)', 'paste-cells'],
    ['Merge cells (Shift-M)', 'merge-cells'],
    ['Clear the selected cells’ outputs', 'clear-outputs'],
    ['Clear all outputs', 'clear-all-outputs']
  ], { cls: 'nb-edit-only', text: 'Edit' })
  const undo = iconButton('undo', 'Undo (Z / Ctrl-Z)', { class: 'nb-icon-btn nb-edit-only nb-undo', 'data-testid': 'undo' })
  const redo = iconButton('redo', 'Redo (Shift-Z / Ctrl-Y)', { class: 'nb-icon-btn nb-edit-only nb-redo', 'data-testid': 'redo' })
  const help = shortcutsHelp(h)
  const cells = h('main', { class: 'nb-notebook', 'aria-label': 'Notebook cells' })
  const header = h('header', { class: 'nb-header' },
    h('div', { class: 'nb-header-main' },
      back,
      h('div', { class: 'nb-title-block' }, title, h('div', { class: 'nb-subtitle' }, status.savedEl)),
      h('div', { class: 'nb-header-right' }, status.statusEl)),
    h('div', { class: 'nb-toolbar', role: 'toolbar', 'aria-label': 'Notebook actions' },
      addCode, addMd, editMenu.el, h('span', { class: 'nb-sep nb-edit-only' }), undo, redo,
      h('span', { class: 'nb-sep nb-edit-only nb-run-only' }), runAll, interrupt, restart, runMenu.el, status.kernelEl,
      h('span', { class: 'nb-spacer' }), help.button, download, notebookMenu?.el),
    status.banners)
  app.replaceChildren(header, cells, help.dialog)
  return { header, title, cells, addCode, addMd, runAll, interrupt, restart, runMenu, editMenu, notebookMenu, undo, redo, help }
}

/** A small dropdown of buttons; `items` are [label, test id]; `on(testId, handler)` wires one. */
function menu (label, testId, items, { cls = 'nb-run-only', text = null } = {}) {
  const buttons = Object.fromEntries(items.map(([text, id]) => [id, h('button', { type: 'button', role: 'menuitem', 'data-testid': id, text })]))
  const summary = text
    ? h('summary', { class: 'nb-btn', title: label, 'aria-label': label, text })
    : h('summary', { class: 'nb-btn nb-icon-btn', title: label, 'aria-label': label, html: icon('more') })
  const el = h('details', { class: `nb-menu ${cls}`, 'data-testid': testId }, summary,
    h('div', { class: 'nb-menu-items', role: 'menu' }, ...Object.values(buttons)))
  const close = () => { el.open = false }
  document.addEventListener('click', (event) => { if (!el.contains(event.target)) close() })
  el.addEventListener('keydown', (event) => { if (event.key === 'Escape') { close(); el.querySelector('summary').focus() } })
  return {
    el,
    on (id, handler) { buttons[id].addEventListener('click', () => { close(); handler() }) }
  }
}

// The site's own top bar may be sticky; the editor's header sticks just below it.
function alignStickyHeader () {
  const bar = document.querySelector('body > header')
  if (!bar) return
  const position = getComputedStyle(bar).position
  const offset = position === 'sticky' || position === 'fixed' ? bar.offsetHeight : 0
  document.documentElement.style.setProperty('--nb-sticky-top', `${offset}px`)
}

function boot () {
  performance.mark('nb:boot')
  const cfg = readConfig()
  alignStickyHeader()
  window.addEventListener('resize', alignStickyHeader)
  const app = document.getElementById('nb-app') ?? document.body
  const ydoc = new Y.Doc()
  const model = new NotebookModel(ydoc)
  const status = new StatusView()
  const shell = buildShell(app, cfg, status)
  const session = { canEdit: Boolean(cfg.canEdit), canRun: Boolean(cfg.canRun) }
  let notebook = null
  let offline = null
  let title = null
  const applyAccess = (message) => {
    app.classList.toggle('nb-readonly', !session.canEdit)
    app.classList.toggle('nb-norun', !session.canRun)
    title?.sync()
    status.setReadOnly(!session.canEdit, message)
    notebook?.setAccess(session)
  }
  const connection = new Connection(cfg, ydoc, {
    onStatus: (state) => {
      status.setConnection(state)
      if (state === 'connected') shell.cells.classList.add('is-synced')
    },
    onSaved: (saved, connected, stalled) => {
      status.setSaved(saved, connected, stalled)
      offline?.onSaved(saved)
    },
    onNotice: (reason) => status.setNotice(reason),
    onSession: (s) => {
      session.canEdit = Boolean(s.canEdit)
      session.canRun = Boolean(s.canRun)
      applyAccess(s.message)
      if (s.message && session.canEdit) status.toast(s.message, 'info')
    },
    onKernel: (k) => { status.setKernel(k); notebook?.setKernel(k) },
    onClosed: (info) => {
      status.setClosed(info)
      session.canEdit = false
      session.canRun = false
      applyAccess('')
      status.readonlyBanner.hidden = true
      if (info.code === 4413) offline?.refused()
    }
  })
  offline = new OfflineStore({ cfg, ydoc, connection, status, canEdit: () => session.canEdit })
  offline.restore().catch((err) => console.error('Could not read the edits kept in this browser', err))
  const awareness = connection.awareness
  if (cfg.me) awareness.setLocalStateField('user', cfg.me)
  notebook = new NotebookView({ root: shell.cells, model, awareness, connection, cfg, status })
  shell.header.querySelector('.nb-toolbar').after(notebook.find.el)
  applyAccess('')
  const presence = new PresenceView({ awareness, notebook, me: cfg.me, palette: cfg.palette })
  shell.header.querySelector('.nb-header-right').prepend(presence.el, presence.followPill)
  const share = shareDialog(cfg, presence)
  if (share.button) {
    shell.header.querySelector('.nb-header-right').append(share.button)
    app.append(share.dialog)
  }
  notebook.onHelp = shell.help.open
  const addBelowActive = (type) => notebook.addCell(notebook.active, 1, type)
  shell.addCode.addEventListener('click', () => addBelowActive('code'))
  shell.addMd.addEventListener('click', () => addBelowActive('markdown'))
  shell.runAll.addEventListener('click', () => notebook.runAll())
  const kernelAction = async (action) => {
    const state = await notebook.runs.kernelAction(action)
    if (state?.status) { status.setKernel(state); notebook.setKernel(state) }
  }
  shell.interrupt.addEventListener('click', () => kernelAction('interrupt'))
  const confirmRestart = () => window.confirm('Restart the kernel? Variables and imports will be lost for everyone in this notebook.')
  notebook.onInterrupt = () => { if (notebook.canRun) kernelAction('interrupt'); else notebook._sayCannotRun() }
  notebook.onRestart = () => {
    if (!notebook.canRun) notebook._sayCannotRun()
    else if (confirmRestart()) kernelAction('restart')
  }
  shell.restart.addEventListener('click', () => { if (confirmRestart()) kernelAction('restart') })
  shell.runMenu.on('run-above', () => notebook.runAbove(notebook.active))
  shell.runMenu.on('run-below', () => notebook.runBelow(notebook.active))
  shell.runMenu.on('restart-run-all', async () => {
    if (!confirmRestart()) return
    await kernelAction('restart')
    notebook.runAll()
  })
  shell.runMenu.on('kernel-shutdown', () => {
    if (window.confirm('Shut the kernel down? Variables and imports will be lost for everyone in this notebook.')) kernelAction('shutdown')
  })
  if (session.canRun) {
    // Asked once the document is in (the socket often says it first), or after a few seconds
    // without it: not in the way of the first sync, on the server or in this page.
    let asked = false
    const askKernel = () => {
      if (asked) return
      asked = true
      clearTimeout(timer)
      notebook.runs.fetchKernel().then((state) => {
        if (state?.status && status.kernelEl.dataset.state === 'unknown') { status.setKernel(state); notebook.setKernel(state) }
      })
    }
    const timer = setTimeout(askKernel, 3000)
    connection.provider.once('sync', askKernel)
  }
  shell.notebookMenu?.on('open-activity', () => { location.href = `/n/${cfg.notebookId}/activity` })
  shell.notebookMenu?.on('open-kernel-settings', () => { location.href = `/n/${cfg.notebookId}/kernel/settings` })
  title = renamableTitle(shell.title, cfg, status, () => session.canEdit)
  shell.editMenu.on('cut-cells', () => notebook.copyCells({ cut: true }))
  shell.editMenu.on('copy-cells', () => notebook.copyCells())
  shell.editMenu.on('paste-cells', () => notebook.pasteCells())
  shell.editMenu.on('merge-cells', () => notebook.mergeBelow(notebook.active))
  shell.editMenu.on('clear-outputs', () => notebook.clearOutputs())
  shell.editMenu.on('clear-all-outputs', () => notebook.clearOutputs(true))
  shell.undo.addEventListener('click', () => notebook.undo())
  shell.redo.addEventListener('click', () => notebook.redo())
  status.setSaved(true, false)
  // Closing the tab (or reloading) with changes the server has not acknowledged: let the browser ask.
  window.addEventListener('beforeunload', (event) => {
    if (connection.isSaved()) return
    event.preventDefault()
    event.returnValue = ''
  })
  window.__editor = { ydoc, provider: connection.provider, model, notebook, connection, offline }
}

boot()
