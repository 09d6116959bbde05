from django.urls import path

from notebooks.views import lists, notebook

urlpatterns = [
    path("", lists.home, name="home"),
    path("notebooks/", lists.my_notebooks, name="my_notebooks"),
    path("notebooks/shared/", lists.shared_with_me, name="shared_with_me"),
    path("notebooks/trash/", lists.trash, name="trash"),
    path("notebooks/new", lists.create, name="create"),
    path("notebooks/upload", lists.upload, name="upload"),
    path("n/<uuid:notebook_id>/", notebook.editor, name="notebook"),
    path("n/<uuid:notebook_id>/download", notebook.download, name="download"),
    path("n/<uuid:notebook_id>/rename", notebook.rename, name="rename"),
    path("n/<uuid:notebook_id>/duplicate", notebook.duplicate, name="duplicate"),
    path("n/<uuid:notebook_id>/delete", notebook.delete, name="delete"),
    path("n/<uuid:notebook_id>/restore", notebook.restore, name="restore"),
    path("n/<uuid:notebook_id>/purge", notebook.purge, name="purge"),
    path("n/<uuid:notebook_id>/replace", notebook.replace, name="replace"),
]

from notebooks.views import share  # noqa: E402

urlpatterns += [
    path("s/", share.open_pending_link, name="open_pending_link"),
    path("s/<str:token>", share.open_link, name="open_link"),
    path("n/<uuid:notebook_id>/share", share.share, name="share"),
    path("n/<uuid:notebook_id>/leave", share.leave, name="leave"),
]

from notebooks.views import requests as access_requests  # noqa: E402

urlpatterns += [
    path("n/<uuid:notebook_id>/request-access", access_requests.request_access, name="request_access"),
    path("n/<uuid:notebook_id>/requests/<str:request_id>", access_requests.decide, name="decide_request"),
    path("invite/", access_requests.open_pending_invitation, name="open_pending_invitation"),
    path("invite/<str:token>", access_requests.open_invitation, name="open_invitation"),
]
