// The notebook's title in the editor: click (or Enter on it) to rename, for those who may edit.
// Saved through the rename endpoint the notebook lists use; the page title follows.
import { h } from './dom.js'
import { csrfToken } from './runs.js'

const MAX_TITLE = 200

export function renamableTitle (el, cfg, status, canEdit) {
  const url = `/n/${cfg.notebookId}/rename`
  let current = cfg.title || 'Untitled notebook'
  const start = () => {
    if (!canEdit() || el.querySelector('input')) return
    const input = h('input', { class: 'nb-title-input', 'data-testid': 'title-input', value: current, maxlength: String(MAX_TITLE), 'aria-label': 'Notebook title' })
    el.replaceChildren(input)
    input.select()
    let done = false
    const finish = async (save) => {
      if (done) return
      done = true
      const title = input.value.trim().slice(0, MAX_TITLE)
      el.textContent = current
      if (!save || !title || title === current) return
      const ok = await saveTitle(url, title, location.pathname)
      if (!ok) { status.toast('The notebook could not be renamed. Try again.', 'error'); return }
      current = title
      el.textContent = title
      el.title = title
      document.title = document.title.replace(/^.*? · /, `${title} · `)
    }
    input.addEventListener('keydown', (e) => {
      e.stopPropagation() // command-mode keys must not see the typing
      if (e.key === 'Enter') { e.preventDefault(); finish(true) } else if (e.key === 'Escape') { e.preventDefault(); finish(false) }
    })
    input.addEventListener('blur', () => finish(true))
  }
  el.addEventListener('click', start)
  el.addEventListener('keydown', (e) => { if (e.key === 'Enter' && e.target === el) { e.preventDefault(); start() } })
  const sync = () => {
    el.classList.toggle('is-renamable', canEdit())
    if (canEdit()) { el.tabIndex = 0; el.setAttribute('role', 'button'); el.title = `${current} (click to rename)` } else { el.removeAttribute('tabindex'); el.removeAttribute('role'); el.title = current }
  }
  sync()
  return { sync }
}

async function saveTitle (url, title, next) {
  try {
    const body = new URLSearchParams({ title, next })
    const response = await fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'X-CSRFToken': csrfToken(), 'Content-Type': 'application/x-www-form-urlencoded' },
      body,
      redirect: 'manual' // it answers with a redirect back to the editor: no need to load the page
    })
    return response.type === 'opaqueredirect' || response.ok
  } catch {
    return false
  }
}
