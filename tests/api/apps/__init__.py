"""Celery apps that the API tests run in real worker processes."""
