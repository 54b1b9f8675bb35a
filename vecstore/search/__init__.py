"""Similarity search: which FAISS index a space gets (choice.py), the index itself (index.py),
the cache that keeps each space's index caught up with the database (cache.py), and queries
(query.py)."""
