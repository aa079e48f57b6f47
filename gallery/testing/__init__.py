"""Test helpers for the gallery: a private PostgreSQL with pgvector (pgvector_server.py), used by
gallery/tests/test_semantic_pgvector.py."""
