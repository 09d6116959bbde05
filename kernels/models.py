"""Kernel servers people register, each notebook's kernel choice, and the driving-worker lease."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from notebooks import crypto


class KernelServer(models.Model):
    """A Jupyter Server or Kernel Gateway that a person registered for their own notebooks.

    The token is stored encrypted (`notebooks.crypto`) and never leaves the server: no template,
    no JSON response, no websocket frame shows it (nor the URL, except to its owner's form)."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="kernel_servers"
    )
    name = models.CharField(max_length=100)
    url = models.URLField(max_length=500)
    token_encrypted = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "pk"]
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="kernel_server_name_per_owner")]

    def __str__(self) -> str:
        return self.name

    def set_token(self, token: str) -> None:
        self.token_encrypted = crypto.encrypt(token) if token else ""

    def token(self) -> str:
        return crypto.decrypt(self.token_encrypted) if self.token_encrypted else ""


class NotebookKernel(models.Model):
    """Which server (None: the deployment's default) and kernelspec ("": the server's default)
    a notebook's kernel is started on. Chosen by the notebook's owner."""

    notebook = models.OneToOneField(
        "notebooks.Notebook", on_delete=models.CASCADE, primary_key=True, related_name="kernel_choice"
    )
    server = models.ForeignKey(
        KernelServer, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    kernelspec = models.CharField(max_length=200, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.notebook_id}: {self.server or 'default server'} / {self.kernelspec or 'default'}"


class KernelLease(models.Model):
    """The one worker process that drives a notebook's kernel (see `kernels.cluster`).

    `worker` is that process's channel-layer channel name: other workers forward kernel requests
    straight to it. The holder renews `expires_at`; an expired lease may be taken by anyone."""

    notebook = models.OneToOneField(
        "notebooks.Notebook", on_delete=models.CASCADE, primary_key=True, related_name="kernel_lease"
    )
    worker = models.CharField(max_length=200)
    expires_at = models.DateTimeField()
    # The kernel the holder drives, so that a worker taking over an expired lease reconnects to
    # it (same session id: the Jupyter Server replays what it buffered) instead of orphaning it.
    server_url = models.CharField(max_length=500, blank=True, default="")
    kernel_id = models.CharField(max_length=100, blank=True, default="")
    session_id = models.CharField(max_length=100, blank=True, default="")
    # The run in flight: {"msg_id", "cell_id", "user_id", "who", "code"}; null when none is known.
    running = models.JSONField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.notebook_id} -> {self.worker} until {self.expires_at:%H:%M:%S}"
