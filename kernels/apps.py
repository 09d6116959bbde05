from django.apps import AppConfig

from collab import commands


class KernelsConfig(AppConfig):
    name = "kernels"

    def ready(self) -> None:
        from kernels.commands import KernelCommands  # imports models, not loaded before ready()

        commands.register(KernelCommands())
