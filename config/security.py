"""The Content-Security-Policy header (Django 5.2 has none of its own). The policy is the
CONTENT_SECURITY_POLICY setting, so a deployment can tighten it; empty sends none."""

from __future__ import annotations

from django.conf import settings


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        policy = settings.CONTENT_SECURITY_POLICY
        if policy and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = policy
        return response
