// Saying "your role cannot do this" at the moment of trying, with a button that files an access
// request (the same one the 403 page files) for the role that can.
import { csrfToken } from './runs.js'

const LABELS = { editor: 'Can edit', runner: 'Can edit and run' }
const QUIET_MS = 4000 // however often the keys are pressed, say it once every few seconds

/** Whether this person can ask: signed in (guests without an account sign in first). */
export function canAsk (cfg) {
  return Boolean(cfg.urls?.requestAccess && String(cfg.me?.id ?? '').startsWith('u:'))
}

export async function requestAccess (cfg, role) {
  const response = await fetch(cfg.urls.requestAccess, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'X-CSRFToken': csrfToken(), 'Content-Type': 'application/x-www-form-urlencoded', Accept: 'application/json' },
    body: new URLSearchParams({ role, message: '' })
  })
  const data = await response.json().catch(() => ({}))
  if (!response.ok) throw new Error(data.error || `The request could not be sent (${response.status}).`)
  return data.message || 'Your request was sent.'
}

/** Toast `message` (throttled per `key`), with "Ask for <role>" when this person can ask. */
export function sayNotAllowed (owner, key, message, role) {
  const now = Date.now()
  owner._saidNotAllowed ??= {}
  if (now - (owner._saidNotAllowed[key] ?? 0) < QUIET_MS) return
  owner._saidNotAllowed[key] = now
  const { cfg, status } = owner
  if (!canAsk(cfg)) {
    status.toast(`${message} Ask the owner to share it with you as “${LABELS[role]}”.`, 'warn')
    return
  }
  status.toast(message, 'warn', {
    label: `Ask for ${LABELS[role]}`,
    testid: role === 'runner' ? 'ask-run' : 'ask-edit',
    sticky: true,
    run: () => requestAccess(cfg, role).then(
      (done) => status.toast(done, 'info'),
      (err) => status.toast(err.message, 'error')
    )
  })
}

/** A viewer trying to edit (clicking into a cell's source, or Enter, the key for edit mode). */
export function watchReadOnlyTyping (root, owner) {
  const say = () => sayNotAllowed(owner, 'edit', 'You can view this notebook but not edit it.', 'editor')
  root.addEventListener('click', (event) => {
    if (!owner.canEdit && event.target.closest?.('.cm-editor')) say()
  })
  root.addEventListener('keydown', (event) => {
    if (owner.canEdit || event.key !== 'Enter' || event.shiftKey || event.ctrlKey || event.metaKey || event.altKey) return
    if (event.target.closest?.('.cell') && !event.target.closest('button, select, input, textarea, a')) say()
  })
}
