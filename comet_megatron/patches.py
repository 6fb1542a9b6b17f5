"""Add ``--moe-comet`` to a Megatron-LM checkout's own ``pretrain_gpt.py``.

    python -m comet_megatron.patches which|check|apply|revert <Megatron-LM checkout>
    python -m comet_megatron.patches list

Two patches ship with the package (``patches/`` in the source tree, ``comet_megatron/patch_files`` once
installed), each a few added lines that import comet_megatron:

* ``megatron-lm-core_v0.16.patch`` - the core_v0.16.x line (``pretrain(..., extra_args_provider=...)``,
  the spec chosen in ``gpt_builders.py``): ``pretrain_gpt.py`` gets the options, ``gpt_builders.py``
  rewrites the spec it built.
* ``megatron-lm-main.patch`` - core_v0.19.x and main (``parse_and_validate_args`` + ``gpt_config_from_args``
  + ``pretrain(cfg_container, ...)``): ``pretrain_gpt.py`` only.

The checkout's layout picks the patch; ``git apply`` applies it (the checkout need not be a git
repository; a repository around it is ignored).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

PATCHES = {
    "core_v0.16": "megatron-lm-core_v0.16.patch",
    "main": "megatron-lm-main.patch",
}


class PatchError(RuntimeError):
    """The checkout cannot be patched (unknown layout, or the patch does not apply)."""


def patch_dir() -> Path:
    """The folder holding the .patch files: installed package data, else ``patches/`` of the source tree."""
    try:
        from importlib.resources import files

        shipped = files("comet_megatron.patch_files").joinpath(PATCHES["main"])  # a namespace package
        if shipped.is_file():
            return Path(str(shipped)).parent
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[1] / "patches"


def detect(checkout: str | os.PathLike) -> str:
    """Which patch fits ``checkout``: ``"main"`` or ``"core_v0.16"``; :class:`PatchError` otherwise."""
    root = Path(checkout)
    script = root / "pretrain_gpt.py"
    if not script.is_file():
        raise PatchError(f"{root} is not a Megatron-LM checkout: it has no pretrain_gpt.py")
    text = script.read_text()
    if "pretrain_cfg_container_from_args" in text and "gpt_config_from_args" in text:
        return "main"
    if "gpt_builder" in text and "extra_args_provider=" in text and (root / "gpt_builders.py").is_file():
        return "core_v0.16"
    raise PatchError(
        f"{script} matches neither supported layout (core_v0.16.x: pretrain(..., extra_args_provider=...) with "
        "gpt_builders.py; core_v0.19.x/main: parse_and_validate_args + gpt_config_from_args + "
        "pretrain_cfg_container_from_args): patch it by hand after patches/README.md"
    )


def patch_path(name: str, directory: str | os.PathLike | None = None) -> Path:
    return Path(directory or patch_dir()) / PATCHES[name]


def _git_apply(checkout: Path, patch: Path, *flags: str) -> subprocess.CompletedProcess:
    # Stop git from finding a repository *around* the checkout (it would resolve the patch's paths
    # against that repository's root); the checkout's own .git, if any, is still used.
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(checkout.resolve().parent)}
    return subprocess.run(
        ["git", "apply", *flags, str(patch)], cwd=checkout, env=env, capture_output=True, text=True, check=False
    )


def is_applied(checkout, directory=None) -> bool:
    checkout = Path(checkout)
    return _git_apply(checkout, patch_path(detect(checkout), directory), "--reverse", "--check").returncode == 0


def check(checkout, directory=None) -> str:
    """Return a one-line status; raise :class:`PatchError` when the patch neither applies nor is applied."""
    checkout = Path(checkout)
    name = detect(checkout)
    patch = patch_path(name, directory)
    result = _git_apply(checkout, patch, "--check")
    if result.returncode == 0:
        return f"{patch.name} applies to {checkout}"
    if is_applied(checkout, directory):
        return f"{patch.name} is already applied to {checkout}"
    raise PatchError(f"{patch.name} does not apply to {checkout}:\n{result.stderr.strip()}")


def apply(checkout, directory=None) -> str:
    """Apply the matching patch (a no-op when it is already applied); returns a one-line status."""
    checkout = Path(checkout)
    status = check(checkout, directory)
    if "already applied" in status:
        return status
    patch = patch_path(detect(checkout), directory)
    result = _git_apply(checkout, patch)
    if result.returncode:
        raise PatchError(f"git apply {patch.name} failed in {checkout}:\n{result.stderr.strip()}")
    return f"applied {patch.name} to {checkout}"


def revert(checkout, directory=None) -> str:
    checkout = Path(checkout)
    if not is_applied(checkout, directory):
        raise PatchError(f"the comet-megatron patch is not applied to {checkout}")
    patch = patch_path(detect(checkout), directory)
    result = _git_apply(checkout, patch, "--reverse")
    if result.returncode:
        raise PatchError(f"git apply --reverse {patch.name} failed in {checkout}:\n{result.stderr.strip()}")
    return f"reverted {patch.name} in {checkout}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comet_megatron.patches", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("which", "check", "apply", "revert", "list"))
    parser.add_argument("checkout", nargs="?", help="a Megatron-LM checkout (the folder with pretrain_gpt.py)")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, file in PATCHES.items():
            print(f"{name}: {patch_dir() / file}")
        return 0
    if not args.checkout:
        parser.error(f"{args.command} needs the path of a Megatron-LM checkout")
    try:
        if args.command == "which":
            print(patch_path(detect(args.checkout)))
        else:
            print({"check": check, "apply": apply, "revert": revert}[args.command](args.checkout))
    except PatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
