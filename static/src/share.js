// The sharing dialog: who is online now (from awareness) and the server-rendered sharing
// page (people, invitations, links) in a frame, so every sharing rule stays on the server.
import { h, initials, safeColor } from './dom.js'

export function shareDialog (cfg, presence) {
  if (!cfg.canShare || !cfg.urls?.share) return { button: null, dialog: null }
  const online = h('ul', { class: 'nb-share-online', 'data-testid': 'online-now' })
  const frame = h('iframe', { class: 'nb-share-frame', title: 'Sharing settings', 'data-testid': 'share-frame' })
  const close = h('button', { type: 'button', class: 'nb-btn nb-btn--ghost', text: 'Close', 'data-testid': 'share-close' })
  const dialog = h('dialog', { class: 'nb-share-dialog', 'aria-label': 'Share this notebook' },
    h('div', { class: 'nb-share-head' }, h('h2', { text: 'Share “' + (cfg.title || 'notebook') + '”' }), close),
    h('h3', { text: 'Online now' }), online, frame)
  const renderOnline = () => {
    online.replaceChildren(...presence.people().map((p) => h('li', {},
      h('span', { class: 'nb-avatar nb-avatar--sm', style: `background:${safeColor(p.color)}`, text: initials(p.name) }),
      h('span', { text: p.name + (p.isMe ? ' (you)' : '') }),
      h('span', { class: 'nb-share-role', text: p.role || '' }))))
  }
  const button = h('button', { type: 'button', class: 'nb-btn nb-btn--primary', 'data-testid': 'share', title: 'Share this notebook' }, h('span', { text: 'Share' }))
  button.addEventListener('click', () => {
    frame.src = cfg.urls.share + '?embed=1'
    renderOnline()
    dialog.showModal()
  })
  presence.awareness.on('change', () => { if (dialog.open) renderOnline() })
  close.addEventListener('click', () => dialog.close())
  return { button, dialog }
}
