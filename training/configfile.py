"""Training configs as TOML files with single inheritance.

A top-level ``base = "other.toml"`` (relative to the file naming it) reads that config first
and overrides it table by table, key by key, so a second training stage or a larger data
variant names only what it changes. Both training tasks read their configs through
:func:`read_config`; each then checks its own required keys.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` overridden by ``over``: nested tables merge key by key, other values replace."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_config(path: str | Path, error: type[Exception],
                _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read ``path`` and the chain of ``base`` files it names, merged.

    Args:
        path: the TOML file.
        error: the exception type raised, with the file named (each task has its own).

    Raises:
        error: a file that cannot be read, is not valid TOML, or a ``base`` cycle.
    """
    path = Path(path)
    if path.resolve() in _seen:
        raise error(f"{path}: config base cycle through {[str(p) for p in _seen]}")
    try:
        cfg = tomllib.loads(path.read_text())
    except OSError as e:
        raise error(f"{path}: cannot read config ({e.strerror})") from e
    except tomllib.TOMLDecodeError as e:
        raise error(f"{path}: not valid TOML ({e})") from e
    if "base" in cfg:
        parent = read_config(path.parent / cfg.pop("base"), error, (*_seen, path.resolve()))
        cfg = merged(parent, cfg)
    return cfg
