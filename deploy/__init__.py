"""Deployment helpers: the local demo (``python -m deploy.demo``)."""
