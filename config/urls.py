from django.contrib import admin
from django.urls import include, path

from accounts.views import profile

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/profile/", profile, name="profile"),
    path("accounts/", include("allauth.urls")),
    path("", include("notebooks.urls")),
    path("", include("kernels.urls")),
    path("", include("audit.urls")),
]

handler500 = "config.views.server_error"
