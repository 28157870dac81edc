"""Where the real fall recordings are (the shared WEDA-FALL and SisFall data, never copied into the repository).

Looked up in order: `$CARELOOP_FALLS_DIR`; `shared/data/falls` beside any folder above the checkout (the team's
layout is `<workplace>/main` next to `<workplace>/shared`); `/work/shared/data/falls`, this workplace's shared
folder, for clones made elsewhere (CI).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "CARELOOP_FALLS_DIR"
_WORKPLACE = Path("/work/shared/data/falls")


class FallsDataMissing(RuntimeError):
    """The recordings are not where we looked; the message says where and how to point at them."""


def _candidates() -> list[Path]:
    found = [Path(os.environ[ENV])] if os.environ.get(ENV) else []
    here = Path(__file__).resolve()
    found += [parent / "shared" / "data" / "falls" for parent in here.parents]
    found.append(_WORKPLACE)
    return found


def falls_root() -> Path:
    """The folder holding one sub-folder per dataset (weda-fall/, sisfall/)."""
    for candidate in _candidates():
        if (candidate / "weda-fall" / "trials.csv").is_file() or (candidate / "sisfall" / "trials.csv").is_file():
            return candidate
    looked = ", ".join(str(c) for c in _candidates())
    raise FallsDataMissing(
        f"real fall recordings not found (looked in {looked}); set {ENV} to the folder holding weda-fall/ and sisfall/"
    )


def falls_dataset(name: str) -> Path:
    """The folder of one dataset, e.g. "weda-fall"; raises FallsDataMissing when it is not there."""
    folder = falls_root() / name
    if not (folder / "trials.csv").is_file():
        raise FallsDataMissing(f"{folder / 'trials.csv'} is missing; set {ENV} to the folder holding {name}/")
    return folder
