"""Algorithms on numpy arrays: no store, no SQL. Cosine k-NN (knn.py), the k-NN graph
(graph.py), label propagation (propagation.py), clustering (cluster.py), which rows to label
next (active.py), metrics (metrics.py), hold-out splits (splits.py), learning curves
(curves.py). Estimators follow scikit-learn: parameters in __init__, fit() returns self and
sets trailing-underscore attributes."""
