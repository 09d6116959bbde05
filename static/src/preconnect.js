// The editor page's first script (built to dist/preconnect.js, a classic `async` script in the
// head right after the editor's config; imports nothing):
// opens the notebook's WebSocket and asks for the whole document (sync step 1 with an empty
// state vector) while the editor bundle is still being fetched and compiled, so that the
// server's handshake, access check, room load and answer overlap with it. Every event of the
// socket is kept, in order, until the editor adopts it (connection.js, `openSocket`) and sees them
// as if they were happening then. Nothing here touches the document or the DOM.
//
// window.__nbEarlySocket: undefined until this runs; { url, ws, step1Sent, ... } once it has;
// false once the editor has booted (from then on this script does nothing: a late copy must not
// open a second socket).
(() => {
  const configEl = document.getElementById('editor-config')
  if (!configEl || window.__nbEarlySocket !== undefined || typeof WebSocket !== 'function') return
  let cfg
  try {
    cfg = JSON.parse(configEl.textContent)
  } catch {
    return // the editor reports a broken page itself
  }
  if (!cfg || !cfg.wsPath || !cfg.notebookId) return
  performance.mark('nb:preconnect')
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws'
  // exactly the URL y-websocket builds for this notebook (the editor adopts the socket only then)
  const params = { epoch: cfg.epoch, ext: '1' }
  const query = Object.entries(params).map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&')
  const url = `${scheme}://${location.host}${cfg.wsPath}/${cfg.notebookId}?${query}`
  let ws
  try {
    ws = new WebSocket(url)
  } catch {
    return
  }
  ws.binaryType = 'arraybuffer' // before any message arrives: y-websocket reads ArrayBuffers
  const early = {
    url,
    ws,
    step1Sent: false,
    queue: [], // [type, event] until the editor attaches
    sink: null,
    attach (sink) {
      const queued = this.queue
      this.queue = []
      this.sink = sink
      for (const [type, event] of queued) sink(type, event)
    }
  }
  const pass = (type) => (event) => {
    if (early.sink) early.sink(type, event)
    else early.queue.push([type, event])
  }
  const opened = pass('open')
  ws.onopen = (event) => {
    performance.mark('nb:socket-open')
    // y-websocket sync step 1 for an empty document: [messageSync, step1, length 1, no clients]
    ws.send(new Uint8Array([0, 0, 1, 0]))
    early.step1Sent = true
    opened(event)
  }
  ws.onmessage = pass('message')
  ws.onerror = pass('error')
  ws.onclose = pass('close')
  window.__nbEarlySocket = early
})()
