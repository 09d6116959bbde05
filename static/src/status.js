// Connection banner, "saved" indicator, kernel status, access messages and toasts.
import { h } from './dom.js'

const STATUS_TEXT = {
  connecting: 'Connecting…',
  connected: 'Connected',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
  closed: 'Disconnected'
}

const KERNEL_TEXT = {
  'not started': 'Kernel not started',
  idle: 'Kernel idle',
  busy: 'Kernel busy',
  starting: 'Kernel starting…',
  restarting: 'Kernel restarting…',
  dead: 'Kernel stopped',
  unavailable: 'No kernel',
  error: 'Kernel error'
}

export class StatusView {
  constructor () {
    this.state = 'connecting'
    this.statusEl = h('div', { class: 'nb-status', 'data-testid': 'status', 'data-state': 'connecting', role: 'status', 'aria-live': 'polite' },
      h('span', { class: 'nb-status-dot', 'aria-hidden': 'true' }),
      this.statusText = h('span', { class: 'nb-status-text', text: STATUS_TEXT.connecting }))
    this.savedEl = h('span', { class: 'nb-saved', 'data-testid': 'saved', 'data-state': 'unknown', 'aria-live': 'polite' })
    this.kernelEl = h('div', { class: 'nb-kernel', 'data-testid': 'kernel-status', 'data-state': 'unknown', title: 'Kernel status' },
      h('span', { class: 'nb-kernel-dot', 'aria-hidden': 'true' }),
      this.kernelText = h('span', { text: 'Kernel not started' }))
    this.connectionBanner = h('div', { class: 'nb-banner nb-banner--warn', 'data-testid': 'connection-banner', hidden: true })
    this.readonlyBanner = h('div', { class: 'nb-banner nb-banner--info', 'data-testid': 'readonly-banner', hidden: true })
    this.accessBanner = h('div', { class: 'nb-banner nb-banner--error', 'data-testid': 'access-banner', role: 'alert', hidden: true })
    this.banners = h('div', { class: 'nb-banners' }, this.accessBanner, this.connectionBanner, this.readonlyBanner)
    this.toasts = h('div', { class: 'nb-toasts', 'aria-live': 'assertive' })
    document.body.appendChild(this.toasts)
  }

  /** A reason the server gave for closing a connection we are retrying. */
  setNotice (reason) {
    this.notice = reason
  }

  setConnection (state) {
    if (this.state === 'closed') return
    if (state === 'connected') this.notice = null
    this.state = state
    this.statusEl.dataset.state = state
    this.statusText.textContent = STATUS_TEXT[state] ?? state
    const notice = {
      reconnecting: 'Connection lost. Reconnecting… Your edits are kept in this tab and will sync when the connection returns.',
      offline: 'You are offline. Your edits are kept in this tab and will sync when you are back online.'
    }[state]
    this.connectionBanner.hidden = !notice
    this.connectionBanner.textContent = notice ? (this.notice ? `${this.notice} ${notice}` : notice) : ''
  }

  setClosed ({ code, reason }) {
    this.state = 'closed'
    this.statusEl.dataset.state = 'closed'
    this.statusEl.dataset.closeCode = String(code)
    this.statusText.textContent = STATUS_TEXT.closed
    this.statusEl.title = reason
    this.connectionBanner.hidden = true
    this.accessBanner.replaceChildren(h('strong', { text: 'Disconnected. ' }), h('span', { text: reason }))
    this.accessBanner.hidden = false
  }

  setSaved (saved, connected, stalled = false) {
    let state; let text
    if (saved) {
      state = 'saved'; text = 'All changes saved'
    } else if (stalled) {
      state = 'unsaved'; text = 'Not saved: the server stopped answering. Reconnecting…'
    } else if (connected) {
      state = 'saving'; text = 'Saving…'
    } else {
      state = 'unsaved'; text = 'Not saved yet (offline)'
    }
    this.savedEl.dataset.state = state
    this.savedEl.textContent = text
  }

  flashSaved () {
    this.toast(this.savedEl.dataset.state === 'saved' ? 'Changes are saved automatically.' : 'Saving… changes are saved automatically.', 'info')
  }

  setReadOnly (readOnly, message) {
    this.readonlyBanner.hidden = !readOnly
    this.readonlyBanner.textContent = readOnly ? (message || 'You can view this notebook but not edit it.') : ''
  }

  setKernel ({ status, message }) {
    const state = String(status || 'unknown')
    this.kernelEl.dataset.state = state
    this.kernelText.textContent = KERNEL_TEXT[state] ?? `Kernel ${state}`
    this.kernelEl.title = message || this.kernelText.textContent
    if (message && (state === 'error' || state === 'dead')) this.toast(message, 'error')
  }

  /** A passing message; `action` ({label, run, testid, sticky}) adds a button and keeps it up longer (until used or dismissed if sticky). */
  toast (message, kind = 'info', action = null) {
    const el = h('div', { class: `nb-toast nb-toast--${kind}`, 'data-testid': 'toast', role: kind === 'error' || kind === 'warn' ? 'alert' : 'status' },
      h('span', { text: message }))
    if (action) {
      el.append(h('button', {
        type: 'button', class: 'nb-toast-action', 'data-testid': action.testid ?? 'toast-action', text: action.label,
        onclick: () => { el.remove(); action.run() }
      }))
    }
    this.toasts.appendChild(el)
    if (action?.sticky) {
      el.append(h('button', { type: 'button', class: 'nb-toast-close', 'aria-label': 'Dismiss', text: '✕', onclick: () => el.remove() }))
      return
    }
    const ms = action || kind === 'warn' ? 10000 : 5000
    setTimeout(() => el.classList.add('is-leaving'), ms)
    setTimeout(() => el.remove(), ms + 400)
  }
}
