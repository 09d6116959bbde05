from django.contrib import admin

from kernels.models import KernelLease, KernelServer, NotebookKernel


@admin.register(KernelServer)
class KernelServerAdmin(admin.ModelAdmin):
    """The token is not shown, not even encrypted."""

    list_display = ("name", "owner", "created_at")
    fields = ("owner", "name", "url", "created_at")
    readonly_fields = ("created_at",)
    raw_id_fields = ("owner",)


@admin.register(NotebookKernel)
class NotebookKernelAdmin(admin.ModelAdmin):
    list_display = ("notebook", "server", "kernelspec", "updated_at")
    raw_id_fields = ("notebook", "server")


@admin.register(KernelLease)
class KernelLeaseAdmin(admin.ModelAdmin):
    list_display = ("notebook", "worker", "expires_at")
    readonly_fields = ("notebook", "worker", "expires_at")
