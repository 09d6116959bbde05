from django.urls import path

from audit import views

urlpatterns = [
    path("n/<uuid:notebook_id>/activity", views.notebook_activity, name="notebook_activity"),
]
