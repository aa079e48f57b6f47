"""The admin's sign-in, throttled like the site's (installed on admin.site in imagineer/urls.py).

Django's admin login checks passwords with no limit at all, so it would be the way around allauth's
rate limits on /accounts/login/. This form authenticates through allauth's adapter instead, which
counts failures against the same `login_failed` limits (ACCOUNT_RATE_LIMITS: per client IP and per
login name, kept in Django's cache, so they hold across processes) and refuses once they are spent,
even the right password. A failure at either page counts at both.
"""

from __future__ import annotations

from django.contrib.admin.forms import AdminAuthenticationForm


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    def clean(self):
        from allauth.account.adapter import get_adapter

        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if username is not None and password:
            # Raises ValidationError ("Too many failed login attempts") once the limits are used up;
            # a success gives back the attempt it took, as allauth's own login form does.
            self.user_cache = get_adapter(self.request).authenticate(
                self.request, username=username, password=password
            )
            if self.user_cache is None:
                raise self.get_invalid_login_error()
            self.confirm_login_allowed(self.user_cache)
        return self.cleaned_data
