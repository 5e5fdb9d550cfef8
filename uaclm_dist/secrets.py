"""Secrets in the environment never reach a file uaclm writes.

A secret is an environment variable named like one (:func:`is_secret_name`: ``WANDB_API_KEY``,
``HF_TOKEN``, ``RAY_AUTH_TOKEN`` and any ``*_TOKEN`` / ``*_KEY`` / ``*_SECRET`` / ``*_PASSWORD``).
Such variables are never forwarded to Ray workers or jobs (``cluster.PASSTHROUGH_ENV`` holds
none, checked when the runtime env is built), and :func:`redact` replaces their values in
the text of what a run saves about itself (``config.yaml``, ``run_info.json``), in case a user
pasted one into a config value. Torch-free and light: imported by config writers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

#: Names that are secrets whatever their suffix.
SECRET_NAMES = frozenset(
    {"WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "RAY_AUTH_TOKEN", "GITHUB_TOKEN"}
)
#: Name suffixes that mark a secret.
SECRET_SUFFIXES = ("_TOKEN", "_KEY", "_SECRET", "_PASSWORD", "_PASSWD")
#: Values shorter than this are not redacted (a secret of "1" would redact every digit 1).
MIN_SECRET_CHARS = 8


def is_secret_name(name: str) -> bool:
    """Whether an environment variable called ``name`` holds a secret."""
    upper = name.upper()
    return upper in SECRET_NAMES or upper.endswith(SECRET_SUFFIXES)


def secret_values(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{name: value}`` of the secrets set in ``environ`` (default ``os.environ``) that are
    long enough to redact safely."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items() if is_secret_name(k) and len(v) >= MIN_SECRET_CHARS}


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with every secret value replaced by ``<redacted $NAME>`` (longest first, so a
    secret containing another is replaced whole)."""
    secrets = secret_values(environ)
    for name, value in sorted(secrets.items(), key=lambda kv: -len(kv[1])):
        text = text.replace(value, f"<redacted ${name}>")
    return text
