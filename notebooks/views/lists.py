from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from notebooks import access as acl
from notebooks import actions
from notebooks.models import LinkJoin, Notebook, ShareLink
from notebooks.nbio import NotebookFileError
from notebooks.views.common import busy, principal


def home(request):
    if request.user.is_authenticated:
        return redirect("my_notebooks")
    return render(request, "notebooks/home.html")


@login_required
def my_notebooks(request):
    notebooks = (
        Notebook.objects.alive()
        .filter(owner=request.user)
        .select_related("owner", "last_edited_by")
        .order_by("-updated_at")
    )
    return render(request, "notebooks/list.html", {"notebooks": notebooks, "tab": "mine"})


@login_required
def shared_with_me(request):
    usable = ShareLink.objects.usable().values("pk")
    via_link = LinkJoin.objects.filter(user=request.user, link__in=usable).values("link__notebook_id")
    candidates = (
        Notebook.objects.alive()
        .filter(Q(grants__user=request.user) | Q(id__in=via_link))
        .exclude(owner=request.user)
        .select_related("owner", "last_edited_by")
        .distinct()
        .order_by("-updated_at")
    )
    who = principal(request)
    notebooks = [nb for nb in candidates if acl.resolve(who, nb) is not None]  # caps and makers
    return render(request, "notebooks/list.html", {"notebooks": notebooks, "tab": "shared"})


@login_required
def trash(request):
    notebooks = Notebook.objects.trashed().filter(owner=request.user).order_by("-deleted_at")
    return render(request, "notebooks/trash.html", {"notebooks": notebooks, "tab": "trash"})


@login_required
@require_POST
def create(request):
    notebook = actions.create_blank(request.user, request)
    return redirect(notebook)


@login_required
@require_POST
def upload(request):
    try:
        with actions.import_slot():  # before the files are parsed as notebooks
            files = request.FILES.getlist("files")
            if not files:
                messages.error(request, "Choose one or more .ipynb files to upload.")
            for upload in files:
                try:
                    actions.import_upload(request.user, upload, request)
                except (NotebookFileError, acl.Refused) as e:
                    messages.error(request, f"{upload.name} was not imported: {e}")
                else:
                    messages.success(request, f"{upload.name} was imported.")
    except actions.ImportsBusy as e:
        return busy(request, e)
    return redirect("my_notebooks")
