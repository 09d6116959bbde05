// The websocket session: a stock y-websocket WebsocketProvider plus this server's extension
// messages (100 SAVED, 101 SESSION, 102 KERNEL, 110/111 kernel commands) and close codes. Everything here reports to the
// UI through the `on*` callbacks; nothing in this module touches the DOM.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import * as authProtocol from 'y-protocols/auth'
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'

export const MSG_SAVED = 100
export const MSG_SESSION = 101
export const MSG_KERNEL = 102
const MSG_COMMAND = 110
const MSG_COMMAND_REPLY = 111
const COMMAND_TIMEOUT_MS = 20000 // above the server's KERNEL_ASSIST_TIMEOUT, so its answer (or error) arrives first
// The server acknowledges every saved change (SAVED) within milliseconds. When it does not for
// this long while the socket looks open, frames have stopped flowing: reconnect.
export const SAVE_ACK_TIMEOUT_MS = 5000
const MSG_AUTH = 2

// The server decided; reconnecting cannot help (4409 is handled by reloading instead).
const TERMINAL_CLOSE_CODES = new Set([4400, 4401, 4403, 4404, 4409, 4413])

export class Connection {
  constructor (cfg, ydoc, callbacks) {
    this.ydoc = ydoc
    this.cb = callbacks
    this.serverClock = 0
    this.everConnected = false
    this.closed = null
    this._savedWaiters = []
    this._commands = new Map() // id -> { resolve, timer }
    this.stalled = false // a change went unacknowledged on an open socket; a new one is coming
    this._ackTimer = null
    this._ackTimeoutMs = Number(cfg.saveAckTimeoutMs) || SAVE_ACK_TIMEOUT_MS
    this._nextCommand = 1
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws'
    this.provider = new WebsocketProvider(`${scheme}://${location.host}${cfg.wsPath}`, cfg.notebookId, ydoc, {
      params: { epoch: cfg.epoch, ext: '1' },
      disableBc: true,
      WebSocketPolyfill: openSocket(takeEarlySocket()),
      shouldReconnect: (event) => !TERMINAL_CLOSE_CODES.has(event.code)
    })
    this._registerHandlers()
    this.provider.on('status', ({ status }) => this._onStatus(status))
    this.provider.on('sync', (synced) => { if (synced) this._onStatus('synced') })
    this.provider.on('connection-close', (event) => this._onClose(event))
    ydoc.on('update', (_update, origin) => {
      if (origin !== this.provider) this._emitSaved()
    })
    window.addEventListener('online', () => this._onStatus(this.provider.wsconnected ? 'connected' : 'connecting'))
    window.addEventListener('offline', () => this._onStatus('disconnected'))
  }

  get awareness () { return this.provider.awareness }

  _registerHandlers () {
    const handlers = this.provider.messageHandlers
    handlers[MSG_SAVED] = (_enc, decoder) => {
      const sv = Y.decodeStateVector(decoding.readVarUint8Array(decoder))
      const clock = sv.get(this.ydoc.clientID) ?? 0
      if (clock > this.serverClock) this._clearAckTimer() // progress: the watch starts again below
      this.serverClock = Math.max(this.serverClock, clock)
      this.serverState = sv
      this._emitSaved()
    }
    handlers[MSG_SESSION] = (_enc, decoder) => {
      const session = readJson(decoder)
      if (session) this.cb.onSession(session)
    }
    handlers[MSG_KERNEL] = (_enc, decoder) => {
      const kernel = readJson(decoder)
      if (kernel) this.cb.onKernel(kernel)
    }
    handlers[MSG_COMMAND_REPLY] = (_enc, decoder) => {
      const reply = readJson(decoder)
      const waiter = reply && this._commands.get(reply.id)
      if (!waiter) return
      this._commands.delete(reply.id)
      clearTimeout(waiter.timer)
      waiter.resolve({ status: reply.status, body: reply.body ?? {} })
    }
    handlers[MSG_AUTH] = (_enc, decoder) => {
      authProtocol.readAuthMessage(decoder, this.ydoc, (_doc, reason) => {
        this._terminate({ code: 0, reason: reason || 'Permission denied.' })
      })
    }
  }

  /**
   * A kernel request over the open socket (cheaper than an HTTP request): resolves to
   * {status, body}, or null when the socket is not connected (the caller then uses HTTP).
   */
  command (op, args = {}) {
    const ws = this.provider.ws
    if (!this.provider.wsconnected || !ws || ws.readyState !== 1) return Promise.resolve(null)
    const id = this._nextCommand++
    const encoder = encoding.createEncoder()
    encoding.writeVarUint(encoder, MSG_COMMAND)
    encoding.writeVarString(encoder, JSON.stringify({ id, op, args }))
    ws.send(encoding.toUint8Array(encoder))
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this._commands.delete(id); resolve(null) }, COMMAND_TIMEOUT_MS)
      this._commands.set(id, { resolve, timer })
    })
  }

  localClock () {
    return Y.decodeStateVector(Y.encodeStateVector(this.ydoc)).get(this.ydoc.clientID) ?? 0
  }

  isSaved () {
    return this.serverClock >= this.localClock()
  }

  /** Whether the server has saved everything in the state vector `sv` (a Map, any clients). */
  covers (sv) {
    for (const [client, clock] of sv) if ((this.serverState?.get(client) ?? 0) < clock) return false
    return true
  }

  /** Resolves once the server has committed every local change (or after `timeoutMs`). */
  whenSaved (timeoutMs = 3000, done = () => this.isSaved()) {
    if (done()) return Promise.resolve(true)
    return new Promise((resolve) => {
      const waiter = { resolve, done }
      waiter.timer = setTimeout(() => {
        this._savedWaiters = this._savedWaiters.filter((w) => w !== waiter)
        resolve(false)
      }, timeoutMs)
      this._savedWaiters.push(waiter)
    })
  }

  _emitSaved () {
    const saved = this.isSaved()
    if (saved) {
      this.stalled = false
      this._clearAckTimer()
    } else if (this.provider.wsconnected && !this._ackTimer && !this.closed) {
      this._ackTimer = setTimeout(() => this._onAckTimeout(), this._ackTimeoutMs)
    }
    if (this._savedWaiters.length) {
      const ready = this._savedWaiters.filter((w) => w.done())
      this._savedWaiters = this._savedWaiters.filter((w) => !ready.includes(w))
      for (const w of ready) { clearTimeout(w.timer); w.resolve(true) }
    }
    this.cb.onSaved(saved, this.provider.wsconnected, this.stalled)
  }

  _clearAckTimer () {
    clearTimeout(this._ackTimer)
    this._ackTimer = null
  }

  // The socket is open but our changes are not being acknowledged (a proxy or network that holds
  // frames, a worker that stopped reading): say "Not saved" and replace the socket; the new
  // one's sync handshake sends every change the server lacks.
  _onAckTimeout () {
    this._ackTimer = null
    if (this.closed || this.isSaved() || !this.provider.wsconnected) return
    this.stalled = true
    this.cb.onSaved(false, true, true)
    this.provider.disconnect()
    this.provider.connect()
  }

  _onStatus (status) {
    if (this.closed) return
    performance.mark(`nb:${status}`) // for profiling page start-up (Performance panel, tests)
    let state
    if (status === 'synced') {
      this.everConnected = true
      state = 'connected'
    } else if (status === 'connected' && this.provider.synced) {
      state = 'connected'
    } else if (!navigator.onLine) {
      state = 'offline'
    } else {
      state = this.everConnected ? 'reconnecting' : 'connecting'
    }
    this.cb.onStatus(state)
    this._emitSaved()
  }

  _onClose (event) {
    if (!event) return
    if (!TERMINAL_CLOSE_CODES.has(event.code)) {
      // e.g. 4429 "too many people in this notebook": worth saying while we retry
      if (event.code >= 4000 && event.reason) this.cb.onNotice?.(event.reason)
      return
    }
    if (event.code === 4409) {
      if (!reloadOnce()) {
        this._terminate({ code: 4409, reason: 'This notebook was replaced by a new version. Reload the page to continue.' })
      }
      return
    }
    this._terminate({ code: event.code, reason: event.reason || defaultReason(event.code) })
  }

  _terminate (info) {
    if (this.closed) return
    this.closed = info
    this.provider.disconnect()
    this.cb.onClosed(info)
  }
}

/** The socket preconnect.js opened before this bundle ran, if any; none is opened after this. */
export function takeEarlySocket () {
  const early = window.__nbEarlySocket || null
  window.__nbEarlySocket = false
  return early
}

/**
 * The provider's WebSocket constructor: its first connection adopts `early` (the page's early
 * socket, when it was opened for the same URL), later ones are plain WebSockets. An early socket
 * the provider does not take is closed.
 */
export function openSocket (early) {
  let first = true
  return function (url, protocols) {
    const adopt = first && early && early.url === url
    if (first && early && !adopt) early.ws.close()
    first = false
    return adopt ? new AdoptedSocket(early) : new WebSocket(url, protocols)
  }
}

/**
 * The early socket behind the WebSocket interface y-websocket uses. The provider's handlers are
 * set right after construction; the events that happened before (open, the server's first
 * frames, even a close) are replayed to them in order in a microtask, then later ones are passed
 * on as they come. The early script already sent sync step 1 with an empty state vector, and the
 * server's answer to it holds the whole document, so the provider's own first sync step 1 would
 * only fetch a part of it again: it is not sent.
 */
class AdoptedSocket {
  constructor (early) {
    this._early = early
    this._ws = early.ws
    this.url = early.url
    this.onopen = this.onmessage = this.onerror = this.onclose = null
    this._step1Skipped = false
    queueMicrotask(() => early.attach((type, event) => this[`on${type}`]?.(event)))
  }

  get CONNECTING () { return 0 }
  get OPEN () { return 1 }
  get CLOSING () { return 2 }
  get CLOSED () { return 3 }
  get readyState () { return this._ws.readyState }
  get binaryType () { return this._ws.binaryType }
  set binaryType (value) { this._ws.binaryType = value }
  get bufferedAmount () { return this._ws.bufferedAmount }

  send (data) {
    const bytes = data instanceof Uint8Array ? data : null
    if (!this._step1Skipped && this._early.step1Sent && bytes && bytes[0] === 0 && bytes[1] === 0) {
      this._step1Skipped = true // [messageSync, sync step 1]: see the class comment
      return
    }
    this._ws.send(data)
  }

  close (code, reason) { this._ws.close(code, reason) }
}

function readJson (decoder) {
  try {
    return JSON.parse(decoding.readVarString(decoder))
  } catch (err) {
    console.error('Malformed extension message', err)
    return null
  }
}

function defaultReason (code) {
  return {
    4400: 'The server could not understand this editor. Reload the page.',
    4401: 'You are signed out, or the link you used is no longer valid.',
    4403: 'You no longer have access to this notebook.',
    4404: 'This notebook no longer exists.',
    4413: 'This notebook is too large to edit here.'
  }[code] || 'The server closed the connection.'
}

// 4409: the document was replaced. Reload to get the new epoch, but never loop tightly if the
// server keeps answering 4409 (the page would flash forever).
function reloadOnce () {
  const key = 'nb-reload-at'
  const last = Number(sessionStorage.getItem(key) || 0)
  if (Date.now() - last < 10000) return false
  sessionStorage.setItem(key, String(Date.now()))
  location.reload()
  return true
}
