"""JAX's persistent compilation cache: a program compiled once per machine, not per start.

Compiling the engines' programs is most of the time a fresh process spends before its
first result (a warfarin what-if: ≈ 94 s of XLA compilation in a 156 s cold start on the
shared 2-core machine). :func:`enable_compilation_cache` points JAX's persistent cache at
a folder under the user's cache directory, so the next process loads those programs
from disk instead. It runs once, when :mod:`twinsim.simulators` is imported.

Where the cache lives (``TWINSIM_CACHE_DIR``):

- unset: ``<user cache dir>/twinsim/jax`` (platformdirs: ``~/.cache/twinsim/jax`` on
  Linux, honouring ``XDG_CACHE_HOME``; ``~/Library/Caches/twinsim/jax`` on macOS);
- a path: that folder (created if needed);
- ``off`` (or ``0``, ``false``, ``no``, ``none``, ``disabled``): no persistent cache.

A cache folder configured for JAX itself (``JAX_COMPILATION_CACHE_DIR`` or
``jax.config.update("jax_compilation_cache_dir", ...)`` before twinsim is imported) is
left as it is, and so are JAX's own threshold settings when given in the environment.

Two processes may share the folder. JAX's cache writes an entry with a plain
``write_bytes`` (not a rename), so a reader in another process could see half an entry;
with a size bound set (:data:`MAX_SIZE_BYTES`) JAX's cache takes a ``filelock`` lock on the
folder around every read and write, so an entry is read only once it is whole. Two
processes compiling the same program both compile; the first to finish writes the
entry and the second finds it there and leaves it (``put`` keeps an existing entry).
The bound also keeps the folder from growing without end: least recently used entries
are evicted beyond it. A damaged entry (a process killed while writing it) makes JAX
warn and compile again; deleting the folder clears it.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

__all__ = ["CACHE_ENV_VAR", "compilation_cache_dir", "enable_compilation_cache"]

#: Environment variable naming the cache folder (or ``off``).
CACHE_ENV_VAR = "TWINSIM_CACHE_DIR"

#: Values of :data:`CACHE_ENV_VAR` that turn the persistent cache off.
OFF_VALUES = frozenset({"off", "0", "false", "no", "none", "disable", "disabled"})

#: Programs that compile faster than this are not written (s). JAX's default (1 s) keeps
#: only the few largest programs; measured on a cold warfarin what-if (152 programs,
#: 94.4 s of compilation), 0.1 s keeps 46 programs and 90.4 s of it, while the other 106
#: (eager operations of a few ms each) would cost a file each for 4 s in all.
MIN_COMPILE_TIME_S = 0.1

#: Upper bound of the cache folder's size (bytes); beyond it the least recently used
#: entries are evicted. Setting a bound also turns on JAX's lock around reads and writes.
MAX_SIZE_BYTES = 2 * 1024**3

_JAX_ENV = {
    "jax_persistent_cache_min_compile_time_secs": "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
    "jax_persistent_cache_min_entry_size_bytes": "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES",
    "jax_compilation_cache_max_size": "JAX_COMPILATION_CACHE_MAX_SIZE",
}

_enabled: Path | None = None


def _default_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("twinsim", appauthor=False)) / "jax"


def compilation_cache_dir() -> Path | None:
    """The folder of JAX's persistent compilation cache in this process, or ``None``.

    Returns
    -------
    pathlib.Path or None
        The folder JAX reads and writes compiled programs in; ``None`` when the
        persistent cache is off (``TWINSIM_CACHE_DIR=off``).

    Examples
    --------
    >>> import twinsim.simulators as ts
    >>> folder = ts.compilation_cache_dir()
    >>> folder is None or folder.is_dir()
    True
    """
    configured = jax.config.jax_compilation_cache_dir
    if not configured or not jax.config.jax_enable_compilation_cache:
        return None
    return Path(configured)


def enable_compilation_cache(path: str | os.PathLike[str] | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache (once per process; later calls keep it).

    Parameters
    ----------
    path
        The cache folder. Default: ``$TWINSIM_CACHE_DIR`` if set (``off`` disables the
        cache), else ``<user cache dir>/twinsim/jax``. A folder already configured for
        JAX (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) wins over both.

    Returns
    -------
    pathlib.Path or None
        The folder in use, or ``None`` when the cache is off or the folder cannot be
        created (then every process compiles, as without the cache; a warning says why).

    Examples
    --------
    >>> from twinsim.simulators import enable_compilation_cache
    >>> folder = enable_compilation_cache()  # already done when twinsim was imported
    >>> folder is None or folder.is_dir()
    True
    """
    global _enabled
    if _enabled is not None or jax.config.jax_compilation_cache_dir:
        # once per process: JAX opens its cache folder at the first compilation and keeps it
        _enabled = compilation_cache_dir()
        return _enabled
    if path is None:
        setting = os.environ.get(CACHE_ENV_VAR, "").strip()
        if setting.lower() in OFF_VALUES:
            return None
        folder = Path(setting).expanduser() if setting else _default_dir()
    else:
        folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        import warnings

        warnings.warn(
            f"twinsim: cannot create the compilation cache folder {str(folder)!r} ({error}); "
            f"every start compiles afresh. Set {CACHE_ENV_VAR} to a writable folder, or to "
            "'off' to silence this warning.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    defaults = {
        "jax_persistent_cache_min_compile_time_secs": MIN_COMPILE_TIME_S,
        # -1: every size is written (JAX's 0 lets a filesystem-specific minimum apply)
        "jax_persistent_cache_min_entry_size_bytes": -1,
        "jax_compilation_cache_max_size": MAX_SIZE_BYTES,
    }
    for name, value in defaults.items():
        if _JAX_ENV[name] not in os.environ:  # JAX read the user's own setting already
            jax.config.update(name, value)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    _enabled = folder
    return folder
