"""The update log: every accepted update is a `NotebookUpdate` row, numbered per notebook.

Synchronous ORM code; the room calls it through `database_sync_to_async`. Rules:
- `append()` assigns sequence numbers inside one transaction, so workers writing to the same
  notebook never collide and a reader can tell a gap from the numbers alone.
- the document is `snapshot` (state up to `snapshot_seq`) + the rows after it; `compact()`
  folds old rows into a new snapshot and checks that nothing changed before it commits; it
  folds outside any lock, so the room runs it in its own thread and writes never wait for it.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.db.models import BinaryField, Case, F, Value, When
from django.utils import timezone
from pycrdt import Doc, merge_updates

from notebooks import docschema
from notebooks.models import Notebook, NotebookUpdate, WriterClaim

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    epoch: str
    state: bytes  # one merged Yjs update holding the whole document
    seq: int
    snapshot_seq: int = 0
    pieces: int | None = None  # the Yjs blocks `state` holds, once a room counted them


@dataclass
class Pending:
    """An update waiting for the next batch write."""

    data: bytes
    user_id: int | None
    link_id: int | None


def _merge(updates: list[bytes]) -> bytes:
    updates = [u for u in updates if u]
    if not updates:
        return Doc().get_update()
    return updates[0] if len(updates) == 1 else merge_updates(*updates)


def load(notebook_id) -> Loaded | None:
    nb, rows = _read(notebook_id)
    if nb is None:
        return None
    state = _merge([bytes(nb["snapshot"]), *(data for _, data in rows)])
    return Loaded(epoch=str(nb["epoch"]), state=state, seq=nb["seq"], snapshot_seq=nb["snapshot_seq"])


def _head(notebook_id, lock: bool = False, after: int | None = None) -> dict | None:
    """The notebook's row. With `after`, its snapshot only if it stands for updates after
    `after` (else b""): a room catching up reads its few new rows, not the whole document each
    time (every other worker's room does so for each large batch, `GapRepair._fetch_stored`)."""
    rows = Notebook.objects.filter(pk=notebook_id)
    if lock:
        rows = rows.select_for_update()
    if after is None:
        return rows.values("epoch", "snapshot", "snapshot_seq", "seq").first()
    needed = Case(
        When(snapshot_seq__gt=after, then=F("snapshot")), default=Value(b""), output_field=BinaryField()
    )
    head = rows.annotate(needed=needed).values("epoch", "needed", "snapshot_seq", "seq").first()
    if head is not None:
        head["snapshot"] = head.pop("needed")
    return head


def _read(notebook_id, after: int | None = None) -> tuple[dict | None, list[tuple[int, bytes]]]:
    """The notebook's row and its update rows after `after` (default: after the snapshot, or
    from the snapshot if it is past `after`), read so that they fit together.

    Two statements: on PostgreSQL each sees what was committed when it started, so a compaction
    committing between them would leave a hole (the old snapshot, then only the rows after the
    new one). Sequence numbers have no holes, so one shows; the second try locks the notebook
    row, which a compaction's swap also locks."""
    for lock in (False, True):
        with transaction.atomic():
            nb = _head(notebook_id, lock, after)
            if nb is None:
                return None, []
            start = nb["snapshot_seq"] if after is None else max(after, nb["snapshot_seq"])
            rows = NotebookUpdate.objects.filter(notebook_id=notebook_id, seq__gt=start).order_by("seq")
            found = [(seq, bytes(data)) for seq, data in rows.values_list("seq", "data")]
        if _follows(start, found, nb["seq"]):
            break
    else:
        log.error("the update log of %s has a hole after %s", notebook_id, start)
    return nb, found


def _follows(start: int, rows: list[tuple[int, bytes]], last: int) -> bool:
    """Whether `rows` are every row from `start` + 1 on, up to `last` at least."""
    seqs = [seq for seq, _ in rows]
    return seqs == list(range(start + 1, start + 1 + len(seqs))) and start + len(seqs) >= last


class Replaced(Exception):
    """The document was replaced (a new epoch) after these updates were made."""


def append(notebook_id, batch: list[Pending], epoch: str | None = None) -> int:
    """Write a batch of updates; return the sequence number of the first. With `epoch`,
    refuse (raise Replaced) if the document has since been replaced: updates made to the old
    document must never land on the new one.

    Two statements in one transaction (UPDATE ... RETURNING, then one multi-row INSERT), in
    SQL rather than the ORM: this runs for every batch of keystrokes and kernel output, and the
    ORM's query building cost more than the database did."""
    last_user = next((p.user_id for p in reversed(batch) if p.user_id), None)
    ops, qn = connection.ops, connection.ops.quote_name
    nb, up = Notebook._meta, NotebookUpdate._meta
    pk = nb.pk.get_db_prep_value(notebook_id, connection)
    now = ops.adapt_datetimefield_value(timezone.now())
    sets = ["seq = seq + %s", "updated_at = %s"]
    params: list = [len(batch), now]
    if last_user:
        sets.append(f"{qn(nb.get_field('last_edited_by').column)} = %s")
        params.append(last_user)
    where = f"{qn(nb.pk.column)} = %s"
    params.append(pk)
    if epoch is not None:
        where += " AND epoch = %s"
        params.append(nb.get_field("epoch").get_db_prep_value(epoch, connection))
    columns = ", ".join(
        qn(up.get_field(name).column) for name in ("notebook", "seq", "data", "user", "link", "created_at")
    )
    # Names come from the models, values are parameters.
    update = f"UPDATE {qn(nb.db_table)} SET {', '.join(sets)} WHERE {where} RETURNING seq"  # noqa: S608
    rows_per_insert = settings.COLLAB["PERSIST_INSERT_ROWS"]
    if connection.vendor == "postgresql" and len(batch) <= rows_per_insert:
        # One statement, so one round trip and no BEGIN/COMMIT of its own: the numbering and
        # the rows commit together as one.
        types = [up.get_field(name).db_type(connection) for name in ("data", "user", "link")]
        row = f"(%s::integer, %s::{types[0]}, %s::{types[1]}, %s::{types[2]})"
        statement = (
            f"WITH u AS ({update}) INSERT INTO {qn(up.db_table)} ({columns}) "  # noqa: S608
            f"SELECT %s, u.seq - %s + v.i, v.data, v.user_id, v.link_id, %s FROM u, "
            f"(VALUES {', '.join([row] * len(batch))}) AS v(i, data, user_id, link_id) RETURNING seq"
        )
        values = [x for i, p in enumerate(batch, start=1) for x in (i, p.data, p.user_id, p.link_id)]
        with connection.cursor() as cursor:
            cursor.execute(statement, [*params, pk, len(batch), now, *values])
            seqs = [seq for (seq,) in cursor.fetchall()]
        if not seqs:
            if Notebook.objects.filter(pk=notebook_id).exists():
                raise Replaced(notebook_id)
            raise LookupError(f"notebook {notebook_id} no longer exists")
        return min(seqs)
    insert = f"INSERT INTO {qn(up.db_table)} ({columns}) VALUES "  # noqa: S608
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(update, params)
        row = cursor.fetchone()
        if row is None:
            if Notebook.objects.filter(pk=notebook_id).exists():
                raise Replaced(notebook_id)
            raise LookupError(f"notebook {notebook_id} no longer exists")
        first = row[0] - len(batch) + 1
        for start in range(0, len(batch), rows_per_insert):
            chunk = batch[start : start + rows_per_insert]
            rows = []
            for i, p in enumerate(chunk, start=first + start):
                rows += [pk, i, p.data, p.user_id, p.link_id, now]
            cursor.execute(insert + ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(chunk)), rows)
    return first


def updates_after(
    notebook_id, after_seq: int, epoch: str | None = None
) -> tuple[list[tuple[int, bytes]], int, bool]:
    """Rows after `after_seq`, the notebook's last seq, and whether the first row is the
    snapshot: if compaction already folded some of them away, the snapshot comes first with its
    own seq (applying it again is harmless: Yjs ignores what a document already holds). With
    `epoch`, raise Replaced if the document has since been replaced: its rows belong to another
    document, and merged into the old one they would show both."""
    nb, rows = _read(notebook_id, after_seq)
    if nb is None:
        return [], after_seq, False
    if epoch is not None and str(nb["epoch"]) != str(epoch):
        raise Replaced(notebook_id)
    if after_seq < nb["snapshot_seq"]:
        rows.insert(0, (nb["snapshot_seq"], bytes(nb["snapshot"])))
        return rows, nb["seq"], True
    return rows, nb["seq"], False


def compact(notebook_id, keep_recent: int) -> tuple[int, int]:
    """Fold all but the newest `keep_recent` updates into the snapshot; return
    (rows removed, the snapshot's seq).

    The folding (merging, and checking that the document stays the same) happens outside any
    lock; only the final swap locks the notebook row, briefly, so appends to the notebook do
    not wait for a compaction. Rows up to the fold point never change, so the swap only has to
    check that nobody moved the snapshot meanwhile (another compaction, a replacement)."""
    with transaction.atomic():
        nb = Notebook.objects.filter(pk=notebook_id).values("snapshot", "snapshot_seq", "seq").first()
        if nb is None:
            return 0, 0
        base_seq, upto = nb["snapshot_seq"], nb["seq"] - keep_recent
        if upto <= base_seq:
            return 0, base_seq
        old = list(
            NotebookUpdate.objects.filter(notebook_id=notebook_id, seq__gt=base_seq, seq__lte=upto)
            .order_by("seq")
            .values_list("data", flat=True)
        )
    snapshot = fold(bytes(nb["snapshot"]), [bytes(d) for d in old])
    with transaction.atomic():
        current = (
            Notebook.objects.select_for_update().filter(pk=notebook_id).values_list("snapshot_seq", flat=True)
        ).first()
        if current != base_seq:  # compacted or replaced meanwhile: leave it to that one
            return 0, current or 0
        Notebook.objects.filter(pk=notebook_id).update(snapshot=snapshot, snapshot_seq=upto)
        removed, _ = NotebookUpdate.objects.filter(notebook_id=notebook_id, seq__lte=upto).delete()
    return removed, upto


def fold(snapshot: bytes, updates: list[bytes]) -> bytes:
    """The snapshot and the updates after it as one new snapshot, checked to be the same
    document (pycrdt-store's squash once wrote an empty one)."""
    before = _merge([snapshot, *updates])
    after = _doc_update(before)
    if not _same_document(before, after):
        raise RuntimeError("compaction would change the document; left as is")
    return after


def _doc_update(update: bytes) -> bytes:
    doc = Doc()
    doc.apply_update(update)
    return doc.get_update()


def _same_document(a: bytes, b: bytes) -> bool:
    doc_a, doc_b = Doc(), Doc()
    doc_a.apply_update(a)
    doc_b.apply_update(b)
    return doc_a.get_state() == doc_b.get_state() and docschema.content(doc_a) == docschema.content(doc_b)


def replace(notebook_id, state: bytes) -> str:
    """Replace the whole document (a new epoch): the update log starts afresh."""
    epoch = uuid.uuid4()
    with transaction.atomic():
        NotebookUpdate.objects.filter(notebook_id=notebook_id).delete()
        WriterClaim.objects.filter(notebook_id=notebook_id).delete()  # its writers start afresh
        Notebook.objects.filter(pk=notebook_id).update(
            snapshot=state, snapshot_seq=F("seq"), epoch=epoch, updated_at=timezone.now()
        )
    return str(epoch)
