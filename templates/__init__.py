"""Jinja templates of psbridge, installed as the package `generator.templates` (see pyproject.toml)."""
