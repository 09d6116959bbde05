from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone


class Role(models.TextChoices):
    """What a person may do with one notebook; each role includes the ones before it."""

    VIEWER = "viewer", "Can view"
    EDITOR = "editor", "Can edit"
    RUNNER = "runner", "Can edit and run"
    OWNER = "owner", "Owner"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def can_edit(self) -> bool:
        return self.rank >= Role.EDITOR.rank

    def can_run(self) -> bool:
        return self.rank >= Role.RUNNER.rank

    def is_owner(self) -> bool:
        return self is Role.OWNER

    @staticmethod
    def highest(*roles: str | None) -> Role | None:
        """The highest of some roles (None where there is none)."""
        ranked = [Role(r) for r in roles if r]
        return max(ranked, key=lambda r: r.rank) if ranked else None


class NotebookQuerySet(models.QuerySet):
    def alive(self) -> NotebookQuerySet:
        return self.filter(deleted_at__isnull=True)

    def trashed(self) -> NotebookQuerySet:
        return self.filter(deleted_at__isnull=False)


class Notebook(models.Model):
    """A notebook. Its content is a pycrdt document: `snapshot` (the state up to
    `snapshot_seq`) plus the rows of `NotebookUpdate` after it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notebooks")
    title = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now_add=True)
    last_edited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    deleted_at = models.DateTimeField(null=True, blank=True)
    # A new epoch means the document was replaced: clients holding the old one must reload.
    epoch = models.UUIDField(default=uuid.uuid4)
    seq = models.BigIntegerField(default=0, help_text="Last sequence number given to an update.")
    snapshot = models.BinaryField(default=b"")
    snapshot_seq = models.BigIntegerField(default=0)
    editors_can_share = models.BooleanField(default=False)
    # Counts sharing changes (`actions.notify_after_commit`): a room that loads for a join
    # compares it with the one the join's access check read (`collab.rooms.Room.start`).
    access_version = models.BigIntegerField(default=0)

    objects = NotebookQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["owner", "deleted_at", "-updated_at"])]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("notebook", args=[self.id])

    @property
    def in_trash(self) -> bool:
        return self.deleted_at is not None


class NotebookUpdate(models.Model):
    """One Yjs update accepted from a client (or written by the server), in log order."""

    notebook = models.ForeignKey(Notebook, on_delete=models.CASCADE, related_name="updates")
    seq = models.BigIntegerField()
    data = models.BinaryField()
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    link = models.ForeignKey(
        "notebooks.ShareLink", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["notebook", "seq"], name="unique_update_seq")]


class WriterClaim(models.Model):
    """Whose a Yjs client id in a notebook's document is: the person (`Principal.key`) who first
    showed presence or wrote under it, or "room" for a room's own changes. Yjs names an item by
    its writer's client id and clock, and a document takes nothing else under an id and clock
    it holds: an editor writing under another person's next clock takes that person's edit at
    that clock away from everyone. Kept in the database, not in a worker's memory, so that a
    worker that has never seen the person's presence still knows (`collab.rooms`).

    `has_content`: the document holds items under the id, so it is kept for good; set when a
    claim finds it so (`notebooks.claims`). An id without is released once its person holds too
    many such, or once unused for a while."""

    notebook = models.ForeignKey(Notebook, on_delete=models.CASCADE, related_name="+")
    client = models.BigIntegerField()
    person = models.CharField(max_length=60)
    created_at = models.DateTimeField(auto_now_add=True)
    has_content = models.BooleanField(default=False)
    seen_at = models.DateTimeField(default=timezone.now)  # last claimed by its person

    class Meta:
        constraints = [models.UniqueConstraint(fields=["notebook", "client"], name="unique_writer_claim")]
        indexes = [models.Index(fields=["notebook", "person"], name="writer_claim_person")]


class Grant(models.Model):
    """A person's role on a notebook, given directly or through an accepted invitation."""

    class Via(models.TextChoices):
        DIRECT = "direct", "Added by the owner"
        INVITATION = "invitation", "Email invitation"
        TRANSFER = "transfer", "Former owner"

    notebook = models.ForeignKey(Notebook, on_delete=models.CASCADE, related_name="grants")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="grants")
    role = models.CharField(max_length=10, choices=Role.choices)
    via = models.CharField(max_length=12, choices=Via.choices, default=Via.DIRECT)
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["notebook", "user"], name="unique_grant")]


class Invitation(models.Model):
    """An email invitation; binds into a Grant when that address signs up or logs in."""

    notebook = models.ForeignKey(Notebook, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=10, choices=Role.choices)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    withdrawn_at = models.DateTimeField(null=True, blank=True)


class ShareLinkQuerySet(models.QuerySet):
    """ "Valid now" is written once, here: not revoked and not expired. `usable()` keeps only
    such links; `with_validity()` marks each link with `valid_now` (for a link looked up by its
    token, whose holder is told why it does not open)."""

    @staticmethod
    def _valid_now(now=None) -> models.Q:
        now = now or timezone.now()
        return models.Q(revoked_at__isnull=True) & (
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )

    def usable(self, now=None) -> ShareLinkQuerySet:
        return self.filter(self._valid_now(now))

    def expired(self, now=None) -> ShareLinkQuerySet:
        """Links that stopped opening because their time ran out (not revoked)."""
        return self.filter(revoked_at__isnull=True).exclude(self._valid_now(now))

    def with_validity(self, now=None) -> ShareLinkQuerySet:
        valid = models.ExpressionWrapper(self._valid_now(now), output_field=models.BooleanField())
        return self.annotate(valid_now=valid)


class ShareLink(models.Model):
    """A link that reaches one notebook with one role. The token is looked up by its hash and
    kept encrypted (`notebooks.crypto`) so it can be copied again; links made before that have
    no `token_encrypted`. The one `general` link per notebook is its general access ("anyone
    signed in / anyone with the link"); restricted means it is revoked or absent."""

    notebook = models.ForeignKey(Notebook, on_delete=models.CASCADE, related_name="links")
    token_hash = models.CharField(max_length=64, unique=True)
    token_encrypted = models.TextField(blank=True, default="")
    general = models.BooleanField(default=False)
    label = models.CharField(max_length=80)
    role = models.CharField(max_length=10, choices=Role.choices)
    require_login = models.BooleanField(default=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    max_uses = models.PositiveIntegerField(null=True, blank=True)
    use_count = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ShareLinkQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["notebook"], condition=models.Q(general=True), name="one_general_link"
            )
        ]


class LinkJoin(models.Model):
    """Someone who opened a share link: a signed-in user or a guest (by session key)."""

    link = models.ForeignKey(ShareLink, on_delete=models.CASCADE, related_name="joins")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    guest_key = models.CharField(max_length=40, blank=True)
    first_seen_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["link", "user", "guest_key"], name="unique_link_join")]


class Removal(models.Model):
    """Someone an owner removed from a notebook (a user, or a guest by session key): the links
    they joined no longer let them back in. Sharing with a user again lifts it."""

    notebook = models.ForeignKey(Notebook, on_delete=models.CASCADE, related_name="removals")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    guest_key = models.CharField(max_length=40, blank=True)
    removed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["notebook", "user"], name="unique_removal"),
            models.UniqueConstraint(
                fields=["notebook", "guest_key"],
                condition=models.Q(user__isnull=True),
                name="unique_guest_removal",
            ),
        ]


class AccessRequest(models.Model):
    """Someone asking for a role on a notebook: one row per person and notebook; asking again
    updates it and makes it pending again. Decisions are kept here and in the audit log."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        APPROVED = "approved", "Approved"
        DECLINED = "declined", "Declined"

    notebook = models.ForeignKey(Notebook, on_delete=models.CASCADE, related_name="access_requests")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    role = models.CharField(max_length=10, choices=Role.choices)
    message = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(default=timezone.now)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["notebook", "user"], name="unique_access_request")]
