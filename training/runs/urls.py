from django.urls import path

from . import views, views_eval

urlpatterns = [
    path("", views.index, name="index"),
    path("runs/new/", views.run_create, name="run_create"),
    path("runs/new/estimate/", views.run_estimate, name="run_estimate"),
    path("runs/<int:pk>/", views.run_detail, name="run_detail"),
    path("runs/<int:pk>/cancel/", views.run_cancel, name="run_cancel"),
    path("runs/<int:pk>/resume/", views.run_resume, name="run_resume"),
    path("runs/<int:pk>/download/<str:what>/", views.run_download, name="run_download"),
    path("runs/<int:pk>/samples/<int:step>/<int:index>.png", views.run_sample, name="run_sample"),
    path("runs/<int:pk>/checkpoints/<int:step>/lora/", views_eval.run_checkpoint_lora, name="run_checkpoint_lora"),
    path("runs/<int:pk>/grids/", views_eval.run_grid_create, name="run_grid_create"),
    path("grids/<int:pk>/", views_eval.grid_detail, name="grid_detail"),
    path("grids/<int:pk>/grid.png", views_eval.grid_download, name="grid_download"),
    path("grids/<int:pk>/cells/<int:row>/<int:col>.png", views_eval.grid_cell, name="grid_cell"),
    path("loras/compare/", views_eval.lora_compare, name="lora_compare"),
    path("loras/", views.lora_list, name="lora_list"),
    path("loras/<int:pk>/", views.lora_detail, name="lora_detail"),
    path("loras/<int:pk>/edit/", views.lora_edit, name="lora_edit"),
    path("loras/<int:pk>/download/<str:fmt>/", views.lora_download, name="lora_download"),
]
