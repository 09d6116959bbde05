"""Create a demo user (demo@example.com / demo-password) with a demo notebook."""

from __future__ import annotations

from allauth.account.models import EmailAddress
from django.core.management.base import BaseCommand

from accounts.models import User
from notebooks import actions
from notebooks.nbio import blank_notebook

DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "demo-password"  # noqa: S105 - a documented demo account on a local install


class Command(BaseCommand):
    help = "Create a demo user and notebook."

    def handle(self, **options):
        user, created = User.objects.get_or_create(email=DEMO_EMAIL, defaults={"display_name": "Demo User"})
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save()
        EmailAddress.objects.update_or_create(
            user=user, email=DEMO_EMAIL, defaults={"verified": True, "primary": True}
        )
        if not user.notebooks.exists():
            nb = blank_notebook()
            nb.cells = [
                {
                    "cell_type": "markdown",
                    "id": "intro",
                    "metadata": {},
                    "source": "# Welcome\nThis notebook is shared in real time. Try $e^{i\\pi} + 1 = 0$.",
                },
                {
                    "cell_type": "code",
                    "id": "hello",
                    "metadata": {},
                    "execution_count": None,
                    "outputs": [],
                    "source": "print('Hello, world')",
                },
            ]
            actions._create(user, "Demo notebook", nb, None, "notebook.created")
        self.stdout.write(f"Demo login: {DEMO_EMAIL} / {DEMO_PASSWORD}")
