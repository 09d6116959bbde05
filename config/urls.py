from django.contrib import admin
from django.urls import include, path

from accounts.views import admin_login, profile
from config.health import healthz, metrics_view

admin.site.login = admin_login  # passwords go through allauth's throttled login only

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/profile/", profile, name="profile"),
    path("accounts/", include("allauth.urls")),
    path("", include("notebooks.urls")),
    path("", include("kernels.urls")),
    path("", include("audit.urls")),
]

handler500 = "config.views.server_error"
