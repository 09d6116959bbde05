// Tiny DOM helpers and the icon set (inline SVG, stroke icons drawn on a 16px grid).

export function h (tag, attrs = {}, ...children) {
  const el = document.createElement(tag)
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue
    if (key === 'class') el.className = value
    else if (key === 'text') el.textContent = value
    else if (key === 'html') el.innerHTML = value // only ever our own constant icon markup
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value)
    else el.setAttribute(key, value === true ? '' : value)
  }
  for (const child of children.flat(Infinity)) {
    if (child != null) el.append(child)
  }
  return el
}

const PATHS = {
  plus: 'M8 3v10M3 8h10',
  trash: 'M3 4.5h10M6.5 4.5V3h3v1.5M4.5 4.5l.6 8.5h5.8l.6-8.5',
  up: 'M8 13V3M4 7l4-4 4 4',
  down: 'M8 3v10M4 9l4 4 4-4',
  play: 'M5 3.5v9l7.5-4.5z',
  runAll: 'M3 3.5v9l6-4.5zM9.5 3.5v9l6-4.5z',
  download: 'M8 2.5v8M4.5 7 8 10.5 11.5 7M3 13.5h10',
  grip: 'M6 4h.01M10 4h.01M6 8h.01M10 8h.01M6 12h.01M10 12h.01',
  back: 'M10 3.5 5.5 8l4.5 4.5',
  undo: 'M5 3 2 6l3 3M2 6h7.5a3.5 3.5 0 0 1 0 7H6',
  redo: 'M11 3l3 3-3 3M14 6H6.5a3.5 3.5 0 0 0 0 7H10',
  eye: 'M1.5 8S4 3.5 8 3.5 14.5 8 14.5 8 12 12.5 8 12.5 1.5 8 1.5 8zM8 10a2 2 0 1 0 0-4 2 2 0 0 0 0 4z',
  stop: 'M4.5 4.5h7v7h-7z',
  restart: 'M13 8a5 5 0 1 1-1.5-3.55M13 2.5v3h-3',
  more: 'M3.5 8h.01M8 8h.01M12.5 8h.01'
}

export function icon (name) {
  const width = name === 'grip' ? 2.4 : 1.6
  return `<svg viewBox="0 0 16 16" width="16" height="16" aria-hidden="true" focusable="false"><path d="${PATHS[name]}" fill="${name === 'play' || name === 'runAll' || name === 'stop' ? 'currentColor' : 'none'}" stroke="currentColor" stroke-width="${width}" stroke-linecap="round" stroke-linejoin="round"/></svg>`
}

export function iconButton (iconName, label, attrs = {}) {
  return h('button', { type: 'button', class: 'nb-icon-btn', title: label, 'aria-label': label, html: icon(iconName), ...attrs })
}

export function initials (name) {
  // "Guest Otter (via Seminar link)": the part in brackets is not the person's name
  const parts = String(name || '?').replace(/\s*\([^)]*\)\s*$/, '').trim().split(/\s+/).filter(Boolean)
  if (!parts.length) return '?'
  const first = parts[0][0]
  const last = parts.length > 1 ? parts[parts.length - 1][0] : ''
  return (first + last).toUpperCase()
}

/** A CSS colour we can safely put in a style attribute (the server sends #rrggbb). */
export function safeColor (color) {
  return /^#[0-9a-fA-F]{3,8}$/.test(color || '') ? color : '#64748b'
}
