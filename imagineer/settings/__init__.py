"""Settings package.

`imagineer.settings.base` reads everything from the environment and is what
manage.py, gunicorn and the workers use; `imagineer.settings.test` sets a few
test defaults before importing it.
"""
