// Running cells: send the cell ids to the server (a command on the websocket, or a POST when
// the socket is down), then follow the kernel's queue.
// input(): when the kernel status (message 102) carries an input request for this person
// (`input.for_user === cfg.me.id`), a small prompt box asks for the answer and POSTs it to
// `<kernel url>input`; everyone else only sees the cell running.

import { h } from './dom.js'

// A cell shows "queued" from the click until the kernel status (message 102) takes over, so the
// prompt reacts at once even though outputs arrive later through the shared document.

const STALE_PENDING_MS = 15000

export class RunTracker {
  constructor ({ cfg, connection, status, onChange, inputHost = () => null, onInputSent = () => {} }) {
    this.inputHost = inputHost // cell id -> the element the input box goes into (under the cell's output)
    this.onInputSent = onInputSent
    this.url = cfg.urls?.run
    this.kernelUrl = cfg.urls?.kernel ? cfg.urls.kernel.replace(/\/?$/, '/') : null
    this.connection = connection
    this.status = status
    this.onChange = onChange
    this.kernel = { queue: [], running: null }
    this.pending = new Set()
    this.me = cfg.me?.id ?? null
    this.prompt = null // { key, el } while an input box is shown
  }

  stateOf (id) {
    if (this.kernel.running === id) return 'running'
    if (this.kernel.queue.includes(id) || this.pending.has(id)) return 'queued'
    return null
  }

  setKernel (kernel) {
    this.kernel = { queue: Array.isArray(kernel.queue) ? kernel.queue : [], running: kernel.running ?? null }
    this.pending.clear()
    this._showInput(kernel.input)
    this.onChange()
  }

  _showInput (request) {
    const mine = request && this.me && request.for_user === this.me
    const key = mine ? `${request.cell_id}\u0000${request.prompt}` : null
    if (this.prompt?.key === key) return
    this.prompt?.el.remove()
    this.prompt = null
    if (!mine || !this.kernelUrl) return
    const field = h('input', { type: request.password ? 'password' : 'text', class: 'nb-input-field', 'data-testid': 'kernel-input-field', autocomplete: 'off', 'aria-label': request.prompt || 'Input' })
    const form = h('form', { class: 'nb-input-box', role: 'dialog', 'data-testid': 'kernel-input' },
      h('label', { text: request.prompt || 'The cell asks for input:' }), field,
      h('button', { type: 'submit', text: 'Send' }))
    form.addEventListener('submit', async (event) => {
      event.preventDefault()
      form.querySelector('button').disabled = true
      const response = await postJson(this.kernelUrl + 'input', { value: field.value }).catch(() => null)
      if (!response?.ok) {
        form.querySelector('button').disabled = false
        this.status.toast(response ? await describeFailure(response) : 'Could not reach the server.', 'error')
        return
      }
      // the box goes away with the next kernel status; the keyboard stays with the cell
      this.onInputSent(request.cell_id)
    })
    // Inline under the cell that asks, as in Jupyter; floating only if that cell is not on the page.
    const host = this.inputHost(request.cell_id)
    if (host) host.append(form)
    else {
      form.classList.add('is-floating')
      document.body.append(form)
    }
    this.prompt = { key, el: form }
    field.focus({ preventScroll: true })
    form.scrollIntoView({ block: 'nearest' })
  }

  async run (ids) {
    if (!ids.length || !this.url) return
    for (const id of ids) this.pending.add(id)
    this.onChange()
    // The server runs the source it has: let our last keystrokes reach it first.
    await this.connection.whenSaved(3000)
    const error = await this._post(ids)
    if (error) {
      for (const id of ids) this.pending.delete(id)
      this.status.toast(error, 'error')
    } else {
      setTimeout(() => {
        for (const id of ids) this.pending.delete(id)
        this.onChange()
      }, STALE_PENDING_MS)
    }
    this.onChange()
  }

  async _post (ids) {
    // Over the open websocket when we can (no HTTP round trip); HTTP otherwise.
    const reply = await this.connection.command('run', { cell_ids: ids })
    if (reply) return reply.status < 300 ? null : (reply.body?.error || `The server refused to run the cell (${reply.status}).`)
    try {
      const response = await postJson(this.url, { cell_ids: ids })
      return response.ok ? null : await describeFailure(response)
    } catch (err) {
      return `Could not reach the server to run the cell (${err.message}).`
    }
  }

  /** Current kernel state (for the first paint; later changes arrive as message 102). */
  async fetchKernel () {
    if (!this.kernelUrl) return null
    try {
      const response = await fetch(this.kernelUrl, { credentials: 'same-origin', headers: { Accept: 'application/json' } })
      return response.ok ? await response.json() : null
    } catch {
      return null
    }
  }

  /** 'interrupt' | 'restart' | 'shutdown'; returns the new kernel state or null. */
  async kernelAction (action) {
    if (!this.kernelUrl) return null
    try {
      const response = await postJson(this.kernelUrl + action, {})
      if (!response.ok) {
        this.status.toast(await describeFailure(response), 'error')
        return null
      }
      return await response.json().catch(() => null)
    } catch (err) {
      this.status.toast(`Could not reach the server (${err.message}).`, 'error')
      return null
    }
  }
}

function postJson (url, body) {
  return fetch(url, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', 'X-CSRFToken': csrfToken(), Accept: 'application/json' },
    body: JSON.stringify(body)
  })
}

export function csrfToken () {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/)
  return match ? decodeURIComponent(match[1]) : ''
}

async function describeFailure (response) {
  let detail = ''
  try {
    const body = await response.clone().json()
    detail = body.message || body.error || body.detail || ''
  } catch {
    detail = (await response.text().catch(() => '')).slice(0, 200)
  }
  if (response.status === 403) return detail || 'You are not allowed to run code in this notebook.'
  return detail || `The server refused (HTTP ${response.status}).`
}
