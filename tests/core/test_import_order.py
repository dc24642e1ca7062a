"""Every module the settings name, imported first in a fresh process once Django is set up: a
system check (Django runs them in no fixed order) or a management command may be the first to
import any of them. An outside probe found ``manage.py check``, ``migrate``, ``scripts/run`` and
the worker failing 12 times in 12 on its clone: ``core.api`` imported ``rest_framework.views`` at
its top, whose APIView reads DEFAULT_PARSER_CLASSES (``core.api.JSONParser``) while ``core.api``
was half loaded. The suite never saw it: pytest-django runs no system checks, and here the checks
happened to import DRF first."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
OURS = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}


def named_modules() -> set[str]:
    """The first-party modules of the dotted paths in the settings the frameworks import lazily."""
    paths: list[str] = [settings.ROOT_URLCONF + ".urlpatterns", settings.ASGI_APPLICATION, *settings.MIDDLEWARE]
    for value in settings.REST_FRAMEWORK.values():
        paths += [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)]
    modules = set()
    for path in paths:
        if path.split(".")[0] in OURS:
            modules.add(path.rsplit(".", 1)[0])
    return modules


def import_first(module: str) -> tuple[str, int, str]:
    code = f"import django; django.setup(); import {module}"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "axisor.settings"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    return module, done.returncode, done.stderr[-1500:]


def test_each_module_the_settings_name_can_be_imported_first():
    modules = named_modules()
    assert {"core.api", "core.middleware", "axisor.urls", "accounts.authentication"} <= modules, modules
    with ThreadPoolExecutor(4) as pool:
        failed = [(m, err) for m, rc, err in pool.map(import_first, sorted(modules)) if rc]
    assert not failed, failed
