"""
The PostgreSQL backend: an index several gateway nodes share, with bodies in
an S3-compatible object store or in PostgreSQL itself.
"""
