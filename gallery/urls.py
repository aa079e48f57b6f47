from django.urls import path

from . import views

app_name = "gallery"
urlpatterns = [
    path("", views.index, name="index"),
    path("mine/", views.mine, name="mine"),
    path("trash/", views.trash, name="trash"),
    path("upload/", views.upload, name="upload"),
    path("upload/file/", views.upload_file, name="upload_file"),
    path("bulk/", views.bulk, name="bulk"),
    path("preferences/", views.preferences, name="preferences"),
    path("duplicates/", views.duplicates, name="duplicates"),
    path("duplicates/resolve/", views.duplicates_resolve, name="duplicates_resolve"),
    path("search/", views.semantic_search, name="semantic_search"),
    path("images/<int:pk>/", views.image_detail, name="image_detail"),
    path("images/<int:pk>/like/", views.image_more_like, name="image_more_like"),
    path("images/<int:pk>/edit/", views.image_edit, name="image_edit"),
    path("images/<int:pk>/trash/", views.image_trash, name="image_trash"),
    path("images/<int:pk>/restore/", views.image_restore, name="image_restore"),
    path("images/<int:pk>/thumbnail.webp", views.image_thumbnail, name="image_thumbnail"),
    path("images/<int:pk>/preview.webp", views.image_preview, name="image_preview"),
    path("images/<int:pk>/original", views.image_original, name="image_original"),
    path("albums/", views.albums, name="albums"),
    path("albums/new/", views.album_create, name="album_create"),
    path("albums/<int:pk>/", views.album_detail, name="album_detail"),
    path("albums/<int:pk>/edit/", views.album_edit, name="album_edit"),
    path("albums/<int:pk>/delete/", views.album_delete, name="album_delete"),
    path("albums/<int:pk>/reorder/", views.album_reorder, name="album_reorder"),
    path("albums/<int:pk>/cover/", views.album_cover, name="album_cover"),
    path("albums/<int:pk>/members/", views.album_member_set, name="album_member_set"),
    path("albums/<int:pk>/members/<int:member_pk>/remove/", views.album_member_remove, name="album_member_remove"),
    path("albums/<int:pk>/links/", views.album_link_create, name="album_link_create"),
    path("albums/<int:pk>/links/<int:link_pk>/revoke/", views.album_link_revoke, name="album_link_revoke"),
    path("shared/<str:token>/", views.shared_album, name="shared_album"),
    path("shared/<str:token>/images/<int:pk>/<str:kind>.webp", views.shared_image, name="shared_image"),
    path("albums/<int:pk>/move/<int:image_pk>/<str:direction>/", views.album_move, name="album_move"),
]
