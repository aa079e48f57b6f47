"""Scraping's extension points live in gallery.hooks (found_text_hooks), so labeling can fill them
without importing scraping. Kept as an alias for scraping's own code and tests."""

from gallery.hooks import found_text_hooks as scraped_label_hooks  # noqa: F401
