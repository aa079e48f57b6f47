"""Error monitoring through sentry-sdk, switched on by SENTRY_DSN (see settings)."""

from __future__ import annotations


def init_sentry(dsn: str, *, environment: str, traces_sample_rate: float = 0.0) -> None:
    """Send unhandled errors of the web (Django) and the workers (RQ) to the Sentry server at `dsn`."""
    import sentry_sdk
    from sentry_sdk.integrations.django import DjangoIntegration
    from sentry_sdk.integrations.rq import RqIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        integrations=[DjangoIntegration(), RqIntegration()],
        traces_sample_rate=traces_sample_rate,
        # Never send cookies, user e-mails or request bodies: images and captions may be private.
        send_default_pii=False,
    )
