"""Model references as a trial records them: a local folder inside the project relative to it
(`./...`), so a copied or moved project uses its own copies; read back absolute."""

from __future__ import annotations

import os


def portable_ref(ref: str) -> str:
    """A model reference as recorded: a local folder inside the working directory (the project,
    against which `models_dir` and the default stores resolve) relative to it and marked `./`,
    so a copied or moved project finds its own models and never the original's; anything else
    (a provider's model id, a folder outside the project) as it is."""
    if not os.path.isabs(ref):
        return ref
    inside = os.path.relpath(ref)
    return ref if inside.startswith("..") else "./" + inside


def local_ref(ref: str, project_dir: str | None = None) -> str:
    """A recorded model reference as used: `portable_ref`'s `./` paths absolute again, in the
    working directory's project; where that has no such folder (a command run from elsewhere),
    in `project_dir`, the folder it was recorded from (only read from there, never written)."""
    if not ref.startswith("./"):
        return ref
    here = os.path.abspath(ref)
    if project_dir is None or os.path.exists(here):
        return here
    there = os.path.join(project_dir, ref[2:])
    return there if os.path.exists(there) else here
