"""`vecstore serve`: the labeling loop as a local web service (a JSON API with its OpenAPI
description, and the review UI it serves), over a Store and nothing else. ``create_app`` is
loaded on first use: the command line reads ``ServeOptions`` without the web stack."""

from __future__ import annotations

from typing import Any

from .options import ServeOptions, is_loopback

__all__ = ["ServeOptions", "create_app", "is_loopback"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(name)
