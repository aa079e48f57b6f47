"""allauth adapters: signup can be closed by setting; Google only when configured."""

from allauth.account.adapter import DefaultAccountAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.conf import settings


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request):
        return settings.ACCOUNT_ALLOW_REGISTRATION


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    def is_open_for_signup(self, request, sociallogin):
        return settings.ACCOUNT_ALLOW_REGISTRATION

    def list_providers(self, request):
        if not settings.GOOGLE_LOGIN_ENABLED:
            return []
        return super().list_providers(request)
