"""The lowest layer: how Django code runs beside the event loop.

The database thread pool and its health, per-process caches with invalidation, the worker loop
shared by the writers, the 503 while the database is away, and the admin and page bases every
app extends. It imports no other first-party package.
"""
