"""A room's sequence bookkeeping and gap repair. Runs in the event loop; never blocks.

A mixin of `collab.rooms.Room`. Rules:
- `seq` is the highest sequence number up to which the Doc holds every update; numbers seen
  beyond a hole are kept in `_ahead`, and a hole is repaired from the database after
  `GAP_REPAIR_DELAY` unless it is filled meanwhile (with several workers writing, a hole opens
  and closes at nearly every batch);
- repair applies every row it reads, a compacted snapshot included (it may stand for missing
  updates under the number of one of the room's own); it relays the rows it lacked by number,
  never a diff of the Doc, which would also carry updates the Doc held pending behind the gap
  and had already relayed: nothing reaches a client twice;
- the periodic check asks the database only while it can matter (`_should_poll`), and reads
  what it lacks only once it is clear the messages will not bring it (`_lost_since_last_check`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from datetime import datetime

from django.utils import timezone
from pycrdt import get_update

from collab import metrics, yupdate
from collab.conf import conf
from collab.fanout import fanout
from collab.tasks import detach, on_edit_thread
from collab.yupdate import is_panic, not_all_in
from config.failures import FailureLog
from notebooks import updatelog
from notebooks.models import Notebook

log = logging.getLogger("collab.rooms")


class GapRepair:
    def _mark(self, seq: int) -> None:
        if seq <= self.seq:
            return
        if seq == self.seq + 1:
            self.seq = seq
            while self.seq + 1 in self._ahead:
                self._ahead.remove(self.seq + 1)
                self.seq += 1
            if not self._ahead and self._repair_handle is not None:
                # The hole is filled (most often by this worker's own write returning): no repair.
                self._repair_handle.cancel()
                self._repair_handle = None
            if self._early:
                self._apply_early_again()
        else:
            self._ahead.add(seq)
            self._schedule_repair()

    def _apply_early_again(self) -> None:
        """Another worker's update applied beyond a hole may follow the missing one (the hole is
        most often a batch of this room's own, whose numbers come when its write returns, so
        updates beyond are not held back): pycrdt 0.14.13 then keeps it aside, and once the
        missing one comes may leave part of it out of the document and raise no events for it
        (see `not_all_in`). When the hole is filled it is applied again, which puts it in, and
        the watch of the document reads the cells afresh."""
        ready = sorted(seq for seq in self._early if seq <= self.seq)
        if not ready:
            return
        for seq in ready:
            self._apply_remote(self._early.pop(seq))  # Yjs ignores what the Doc holds
        self._docwatch.reset()

    def _apply_remote(self, data: bytes) -> None:
        """Apply an update another worker or the database holds (saved already)."""
        before = self.doc.get_state()
        self._deleted = None  # it may delete what this room's copy of the delete set holds
        try:
            self.doc.apply_update(data)
        except BaseException as exc:
            if is_panic(exc):
                self._reload_after_panic(exc)
            raise
        # What of it was new here counts towards MAX_DOCUMENT_PIECES (refused on its own worker).
        with contextlib.suppress(ValueError):
            self.pieces += yupdate.pieces(get_update(data, before))

    def _schedule_repair(self) -> None:
        if self._repair_handle is None:
            self._repair_handle = asyncio.get_running_loop().call_later(
                conf("GAP_REPAIR_DELAY"), lambda: detach(self._repair_or_leave_it())
            )

    async def _repair_or_leave_it(self) -> None:
        """A repair started by a timer: if the database is away, `_watch` (which logs an outage
        once) repairs when it is back; one line here, not a traceback per gap."""
        try:
            await self.repair()
        except Exception as exc:
            log.info("gap repair of %s failed (%r); the room's periodic check retries", self.id, exc)

    async def repair(self) -> None:
        """Fetch from the database every update this Doc may have missed, and relay to the
        local sockets exactly those (a fan-out message may have brought some meanwhile)."""
        self._repair_handle = None
        if self.closed:
            return
        after = self.seq
        try:
            rows, last, snapshot_first = await on_edit_thread(updatelog.updates_after)(
                self.id, after, self.epoch
            )
        except updatelog.Replaced:  # and the "replaced" message never came: close as it would
            log.info("notebook %s was replaced while its room was behind; closing the room", self.id)
            detach(self.on_fanout({"type": "replaced", "notebook": self.id, "origin": "repair"}))
            return
        # Our own batch may have committed before that read while its numbers are not known
        # here yet: wait for them, or its rows would look missing and reach the sockets twice.
        inflight = self._inflight_done
        if inflight is not None and not inflight.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(inflight)
        if self.closed:
            return
        relay: list[bytes] = []
        self._docwatch.changed = False
        for i, (seq, data) in enumerate(rows):
            if i == 0 and snapshot_first:
                # The snapshot, standing for after+1..seq (seq may be after+1 itself): it may
                # carry, under the number of one of our own updates, the very ones missing here,
                # and the whole document besides. Relay what it adds: the new items, and the
                # document's deletions (a deletion alone leaves the state vector as it was).
                before = self.doc.get_state()
                self._apply_remote(data)
                relay.append(self.doc.get_update(before))
            else:
                # Every row is applied (Yjs ignores what the Doc holds); only those it did not
                # hold by number are relayed: the others reached the sockets already.
                self._apply_remote(data)
                if seq > self.seq and seq not in self._ahead:
                    relay.append(data)
        # The rows were everything after our watermark up to `last` at least (on PostgreSQL
        # they are read after the counter, so they may go past it, without holes).
        self.seq = max(self.seq, last, *(seq for seq, _ in rows))
        self._ahead = {seq for seq in self._ahead if seq > self.seq}
        if any(seq <= self.seq for seq in self._early):  # applied again above, in order
            self._early = {seq: data for seq, data in self._early.items() if seq > self.seq}
            self._docwatch.reset()
        metrics.inc("gap_updates_repaired", len(relay))
        if relay:
            self.size += sum(map(len, relay))
            self.send_updates_local(relay)
        self._unique_ids_after_remote()

    def _fetch_stored(self, last: int) -> None:
        """Another worker committed a batch too large for its fan-out message, up to `last`:
        read it from the database beside the fan-out reader (which serves every room)."""
        if last > self.seq:
            self._active_at = asyncio.get_running_loop().time()
            detach(self._fetch_stored_up_to(last))

    async def _fetch_stored_up_to(self, last: int) -> None:
        async with self._fetching:
            if last > self.seq and not self.closed:  # an earlier read may have brought it
                await self._repair_or_leave_it()

    def _should_poll(self) -> bool:
        """Ask the database for the notebook's counter only when it can matter: while the
        fan-out is down, while a gap is open, while edits flow in a room someone uses (a lost
        message would otherwise go unnoticed until the next edit), and, in a room someone uses
        without editing, at its first check after loading (what was published before it joined
        its group) and then every RESYNC_IDLE_INTERVAL (a lost last message). A room nobody
        uses costs no query."""
        if fanout().down or self._ahead:
            return True
        if not (self.sockets or self.holders):
            return False
        now = asyncio.get_running_loop().time()
        editing = now - self._active_at < conf("RESYNC_ACTIVE_FOR")
        return editing or now - self._polled_at >= conf("RESYNC_IDLE_INTERVAL")

    async def _watch(self) -> None:
        """Periodic safety net: catch up with updates whose fan-out message never came, and
        re-check access so that expiry takes effect without anyone acting. A failure is
        logged once, and once more when the check works again."""
        interval = conf("RESYNC_INTERVAL")
        failures = FailureLog(log, f"room watch of {self.id}")
        loop = asyncio.get_running_loop()
        tick = self._access_tick_at = loop.time()
        while True:
            # By the clock: one interval after the previous tick began, at once if it took longer
            # (sockets whose access ended meanwhile wait no whole interval more).
            tick = max(tick + interval, loop.time())
            await asyncio.sleep(tick - loop.time())
            try:
                if self._recheck_everyone:
                    await self._recheck_access()
                if self._unconfirmed:
                    await self.confirm_claims()
                if self._should_poll():
                    self._polled_at = asyncio.get_running_loop().time()
                    latest = await on_edit_thread(_notebook_seq)(self.id)
                    if latest is None:
                        await self.on_fanout({"type": "access", "notebook": self.id})
                    elif latest > self.seq and self._lost_since_last_check():
                        await self.repair()
                    self._checked_seq = latest
                await self._recheck_due_sockets()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures.failed(exc, f"retrying every {interval} s")
            else:
                failures.worked()

    async def _recheck_due_sockets(self) -> None:
        """This tick's access re-checks (`_due_for_access_check`). Those of sockets whose access
        ended run all at once: their queries queue together on the database thread, and each
        socket is closed as soon as its own check answers, not after the checks and closing
        records of every socket before it. The spread ones run one after another, and stop if
        another access ends meanwhile: that one's sockets are checked at once, then the rest (a
        tick's share took 2.5 s on a busy PostgreSQL, and a link that expired meanwhile waited
        for it). A check that fails is tried again at the next tick."""
        while True:
            ended, spread, next_end = self._due_for_access_check()
            results = await asyncio.gather(*(s.recheck_access() for s in ended), return_exceptions=True)
            failed = {
                s: error for s, error in zip(ended, results, strict=True) if isinstance(error, Exception)
            }
            if failed:
                self._recheck_soon([*failed, *spread])
                raise next(iter(failed.values()))
            for i, socket in enumerate(spread):
                if next_end is not None and timezone.now() >= next_end:
                    self._recheck_soon(spread[i:])
                    break
                try:
                    await socket.recheck_access()
                except Exception:
                    self._recheck_soon(spread[i:])
                    raise
            else:
                return

    def _due_for_access_check(self) -> tuple[list, list, datetime | None]:
        """This tick's sockets to check again: those whose access ended, the others' spread
        re-checks, and when the next access ends. A socket is due one ACCESS_RECHECK_INTERVAL
        after its last check (its joining, at first), or when its access ends by itself (its
        link's expiry) if sooner.
        - Every socket whose access ended is checked, whatever the cap below: a link that
          expires closes its sockets at its expiry, within a tick, all of them, where they
          waited for their next spread re-check (10.5-14.6 s after it with the 15 s interval).
          The check asks the database: the link may have been extended, or another link or a
          grant may give access still.
        - Of the other overdue sockets, the most overdue, at most twice their share of the time
          since the previous tick: a lecture's thousand sockets checked at once held the worker
          for about a second (a few queries each) while it was fanning out. The share is
          counted by the clock, not in ticks, so ticks that overrun (checks that close sockets
          cost more queries) do not fall further behind at every tick.
        - And any socket still at least half an interval overdue: every socket is checked
          within one and a half intervals and a tick of its last check, however the share
          shrinks as sockets close (200 sockets whose access was lost unannounced were checked
          up to 2.2 s after their check before, with a 1 s interval)."""
        now = asyncio.get_running_loop().time()
        wall = timezone.now()
        interval = conf("ACCESS_RECHECK_INTERVAL")
        due = self._recheck_due
        for socket in [s for s in due if s not in self.sockets]:
            del due[socket]
        for socket in self.sockets:
            due.setdefault(socket, now + interval)  # checked on joining
        ended, next_end = self._access_ends(wall)
        ending = set(ended)
        overdue = sorted((s for s, at in due.items() if at <= now and s not in ending), key=due.__getitem__)
        since, self._access_tick_at = min(now - self._access_tick_at, interval), now
        share = math.ceil(2 * len(self.sockets) * since / interval)
        late = sum(1 for socket in overdue if due[socket] <= now - interval / 2)  # the first ones
        spread = overdue[: max(share, late)]
        for socket in ended + spread:
            due[socket] = now + interval
        return ended, spread, next_end

    def _access_ends(self, wall: datetime) -> tuple[list, datetime | None]:
        """The sockets whose access ended by itself by `wall`, and when the next one's ends."""
        ended, next_end = [], None
        for socket in self.sockets:
            ends = socket.access_ends_at
            if ends is not None and ends <= wall:
                ended.append(socket)
            elif ends is not None and (next_end is None or ends < next_end):
                next_end = ends
        return ended, next_end

    def _recheck_soon(self, sockets: list) -> None:
        """Checks that failed (the database away), or that an access ending cut short: first
        in line next time, not one interval later."""
        for socket in sockets:
            if socket in self._recheck_due:
                self._recheck_due[socket] = 0.0

    def _lost_since_last_check(self) -> bool:
        """The database is ahead: repair now if its messages cannot come (the fan-out is down,
        or they were published before this room joined its group: the first check after
        loading), or if what the database held at the check before has still not come. With
        edits flowing the database is ahead at nearly every check by updates whose messages are
        on the way; reading them again on every worker would only load the database."""
        checked = self._checked_seq
        return fanout().down or checked is None or self.seq < checked

    async def _on_remote_updates(self, first: int, updates: list[bytes]) -> None:
        fresh = []
        self._docwatch.changed = False
        for seq, data in enumerate(updates, start=first):
            if seq <= self.seq or seq in self._ahead:
                continue
            self._apply_remote(data)
            self.size += len(data)
            if seq > self.seq + 1 and not_all_in(data, self.doc.get_state()):
                self._early[seq] = data  # it follows the missing one: see `_apply_early_again`
            fresh.append(data)
            self._mark(seq)
        if fresh:
            self._active_at = asyncio.get_running_loop().time()
            self.send_updates_local(fresh)
            self._unique_ids_after_remote()


def _notebook_seq(notebook_id: str) -> int | None:
    return (
        Notebook.objects.filter(pk=notebook_id, deleted_at__isnull=True).values_list("seq", flat=True).first()
    )
