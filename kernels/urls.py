from django.urls import path

from kernels import pages, views

urlpatterns = [
    path("n/<uuid:notebook_id>/kernel/", views.status, name="kernel_status"),
    path("n/<uuid:notebook_id>/kernel/run", views.run, name="kernel_run"),
    path("n/<uuid:notebook_id>/kernel/input", views.answer_input, name="kernel_input"),
    path("n/<uuid:notebook_id>/kernel/interrupt", views.interrupt, name="kernel_interrupt"),
    path("n/<uuid:notebook_id>/kernel/restart", views.restart, name="kernel_restart"),
    path("n/<uuid:notebook_id>/kernel/shutdown", views.shutdown, name="kernel_shutdown"),
    path("n/<uuid:notebook_id>/kernel/settings", pages.kernel_settings, name="kernel_settings"),
]
