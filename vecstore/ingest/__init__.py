"""Getting images into a store: walk a folder (scan.py), read and decode each file once
(decode.py), register images, paths and descriptor vectors (register.py), embed what a space
lacks (embedding.py), labels from folders and metadata (pipeline.py, metadata.py), and vectors
computed elsewhere (vector_file.py, vectors_import.py)."""
