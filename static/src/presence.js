// Who is here: avatars in the header, markers on the cell each person is in, and "follow":
// click someone's avatar to jump to their cell and keep following until you act yourself.
import { h, initials, safeColor } from './dom.js'

// Guests on one link all carry the link's name ("Guest via Seminar link"); each gets an animal
// and a colour of its own, the same in every browser: taken from its id, and where two guests'
// ids land on the same animal or colour, the later id (in id order) takes the next free one.
const ANIMALS = ['Otter', 'Heron', 'Lynx', 'Panda', 'Koala', 'Falcon', 'Walrus', 'Gecko', 'Ibis', 'Marten', 'Quokka', 'Yak',
  'Bison', 'Crane', 'Dingo', 'Egret', 'Ferret', 'Jackal', 'Kiwi', 'Lemur', 'Moose', 'Newt', 'Ocelot', 'Puffin', 'Raven', 'Stoat',
  'Tapir', 'Urial', 'Vole', 'Wombat', 'Zebu', 'Alpaca']

function idHash (id) {
  let hash = 0
  for (const c of String(id)) hash = (hash * 31 + c.charCodeAt(0)) >>> 0
  return hash
}

function guestVia (name) {
  return name.replace(/^Guest\s+/, '')
}

// The first of `choices` from position `start` on that is not in `taken` (all taken: `start`'s).
function firstFree (choices, start, taken) {
  for (let i = 0; i < choices.length; i++) {
    const choice = choices[(start + i) % choices.length]
    if (!taken.has(choice)) return choice
  }
  return choices[start % choices.length]
}

/** Gives each guest among `people` an animal and a colour no one else present shows. */
export function distinguishGuests (people, palette) {
  const guests = people.filter((p) => String(p.id).startsWith('g:')).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  const names = new Set(people.filter((p) => !guests.includes(p)).map((p) => p.name))
  const colours = new Set(people.filter((p) => !guests.includes(p)).map((p) => String(p.color).toLowerCase()))
  for (const guest of guests) {
    const hash = idHash(guest.id)
    const via = guestVia(guest.via)
    const animals = ANIMALS.map((animal) => `Guest ${animal} (${via})`)
    guest.name = firstFree(animals, hash % ANIMALS.length, names)
    names.add(guest.name)
    const own = palette.indexOf(String(guest.color).toLowerCase())
    if (own >= 0) guest.color = firstFree(palette, own, colours)
    colours.add(String(guest.color).toLowerCase())
  }
  return people
}

export class PresenceView {
  constructor ({ awareness, notebook, me, palette }) {
    this.awareness = awareness
    this.palette = (palette || []).map((colour) => String(colour).toLowerCase())
    this.nb = notebook
    this.me = me
    this.following = null
    this.el = h('div', { class: 'nb-avatars', 'aria-label': 'People in this notebook' })
    this.followPill = h('button', { type: 'button', class: 'nb-follow-pill', 'data-testid': 'follow-indicator', hidden: true, onclick: () => this.unfollow() })
    awareness.on('change', () => this.render())
    notebook.onStructureChange = () => this.render()
    // Any action of your own ends following.
    for (const type of ['mousedown', 'keydown', 'wheel', 'touchstart']) {
      notebook.root.addEventListener(type, () => this.unfollow(), { passive: true })
    }
    this.render()
  }

  /** People (deduplicated by user id), each with the set of cells their sockets are in. */
  people () {
    const byUser = new Map()
    const selfId = this.awareness.clientID
    for (const [clientId, state] of this.awareness.getStates()) {
      const user = state?.user
      if (!user || !user.name) continue
      const key = user.id ?? `client:${clientId}`
      let person = byUser.get(key)
      if (!person) {
        person = { id: key, name: String(user.name), via: String(user.name), color: user.color, role: user.role, isMe: false, cells: [] }
        byUser.set(key, person)
      }
      if (clientId === selfId) person.isMe = true
      else if (state.cell) person.cells.push(state.cell)
    }
    if (this.me?.id && byUser.has(this.me.id)) byUser.get(this.me.id).isMe = true
    return distinguishGuests([...byUser.values()], this.palette).sort((a, b) => (b.isMe - a.isMe) || a.name.localeCompare(b.name))
  }

  render () {
    const people = this.people()
    const byCell = new Map()
    for (const person of people) {
      if (person.isMe) continue
      for (const cell of new Set(person.cells)) {
        if (!byCell.has(cell)) byCell.set(cell, [])
        byCell.get(cell).push(person)
      }
    }
    this.nb.setPresence(byCell)
    const signature = people.map((p) => `${p.id}|${p.name}|${p.color}|${p.isMe}|${this.following === p.id}`).join(',')
    if (signature !== this._signature) {
      this._signature = signature
      this.el.replaceChildren(...people.map((p) => this._avatar(p)))
    }
    if (this.following) {
      const person = people.find((p) => p.id === this.following)
      if (!person) this.unfollow()
      else this._jumpTo(person)
    }
  }

  _avatar (person) {
    return h('button', {
      type: 'button',
      class: `nb-avatar${person.isMe ? ' is-me' : ''}${this.following === person.id ? ' is-following' : ''}`,
      'data-testid': 'avatar',
      'data-user-id': person.id,
      'data-me': person.isMe ? 'true' : null,
      title: person.name,
      'aria-label': person.isMe ? `${person.name} (you)` : `${person.name}: follow`,
      style: `--avatar-color:${safeColor(person.color)}`,
      text: initials(person.name),
      onclick: () => (person.isMe ? null : this.follow(person))
    })
  }

  follow (person) {
    if (this.following === person.id) {
      this.unfollow()
      return
    }
    this.following = person.id
    this.lastCell = null
    this.followPill.hidden = false
    this.followPill.textContent = `Following ${person.name} · Stop`
    this._jumpTo(person, true)
    this.render()
  }

  unfollow () {
    if (!this.following) return
    this.following = null
    this.followPill.hidden = true
    this.render()
  }

  _jumpTo (person, force = false) {
    const cellId = person.cells[0]
    if (!cellId || (!force && cellId === this.lastCell)) return
    this.lastCell = cellId
    const view = this.nb.byId.get(cellId)
    if (!view) return
    view.el.scrollIntoView({ block: 'center', behavior: force ? 'smooth' : 'auto' })
    view.el.classList.add('is-followed')
    setTimeout(() => view.el.classList.remove('is-followed'), 1200)
  }
}
