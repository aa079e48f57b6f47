from django.conf import settings

# The nav section of each page, by URL namespace; the names listed under a namespace belong to another
# section than the namespace's own (album pages live in `gallery`, generation pages in `training`).
_NAV_SECTIONS = {
    "gallery": ("gallery", {"albums": ("album",)}),
    "scraping": ("scrapes", {}),
    "labeling": ("labeling", {}),
    "training": ("training", {"generate": ("generate", "generation", "image_regenerate")}),
}


def nav_section(request) -> str:
    """The top-level section a page belongs to ("" for none), which the nav marks as the current one."""
    match = getattr(request, "resolver_match", None)
    if match is None or match.namespace not in _NAV_SECTIONS:
        return ""
    section, others = _NAV_SECTIONS[match.namespace]
    name = match.url_name or ""
    for other, prefixes in others.items():
        if name.startswith(prefixes):
            return other
    return section


def site(request):
    return {"SITE_NAME": settings.SITE_NAME, "GOOGLE_LOGIN_ENABLED": settings.GOOGLE_LOGIN_ENABLED,
            "nav_section": nav_section(request)}
