"""Semantic search: CLIP embeddings of images (clip.py), stored and searched behind one selector (store.py)."""
