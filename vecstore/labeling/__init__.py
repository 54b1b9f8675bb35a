"""Labeling workflows, joining the database (vecstore.db) and the algorithms on arrays
(vecstore.learn): expert labels (labels.py), clustering, propagation, evaluation, learning
curves, what to label next, and the pseudo-label export."""
