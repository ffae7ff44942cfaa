"""The web pages and JSON API (FastAPI, server-rendered Jinja2 templates)."""

from relink.web.app import create_app

__all__ = ["create_app"]
