"""Celery apps that integration tests run in real ``celery worker`` processes."""
