from django.apps import AppConfig


class GalleryConfig(AppConfig):
    name = "gallery"
    verbose_name = "Gallery"

    def ready(self):
        from django.db.backends.signals import connection_created

        from .semantic.store import load_sqlite_vec

        connection_created.connect(load_sqlite_vec, dispatch_uid="gallery.sqlite_vec")
