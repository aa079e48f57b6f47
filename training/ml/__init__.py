"""Imagineer's machine-learning library: tiny test models, pipeline loading, LoRA training and generation.

This package is imported by the web process (for validation helpers and parameter text), so importing it
must stay cheap: torch, diffusers, transformers, peft and accelerate are imported only inside the
functions that need them. Import the submodules directly, e.g. ``from training.ml.train import train_lora``.
"""
