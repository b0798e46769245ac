"""Pull a model from a Hugging Face Hub repo: list the repo, choose the files the model's
family needs (plan.py), download them with huggingface_hub (which resumes partial files)
and place them. The hub is huggingface_hub's default, or `HF_ENDPOINT`; tokens are its
own (`HF_TOKEN`, `hf auth login`) unless --token is given.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from pixelpool.pull import place
from pixelpool.pull.plan import PullError, config_plan, diffusers_plan, single_file, tagger_plan
from pixelpool.pull.progress import bar, tqdm_for


@contextmanager
def _hub_errors(repo_id: str, revision: str | None) -> Iterator[None]:
    """huggingface_hub's exceptions as one-line messages with an exit status."""
    try:
        yield
    except HFValidationError as exc:
        raise PullError(f"{repo_id!r} is not a repo id (owner/name) or an http(s) URL", 2) from exc
    except GatedRepoError as exc:
        raise PullError(
            f"{repo_id} is gated: accept its terms on the hub, then set HF_TOKEN"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise PullError(f"repo {repo_id} not found (a private repo needs HF_TOKEN)") from exc
    except RevisionNotFoundError as exc:
        raise PullError(f"repo {repo_id} has no revision {revision!r}") from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        url = exc.response.request.url if exc.response is not None else ""
        raise PullError(f"the hub refused: HTTP {status} for {url}") from exc
    except PullError:
        raise
    except Exception as exc:  # connection errors: their classes vary with huggingface_hub's version
        where = os.environ.get("HF_ENDPOINT") or "the hub"
        raise PullError(f"cannot reach {where}: {type(exc).__name__}: {exc}") from exc


class _Repo:
    """One revision of a repo, downloading into one staging folder."""

    def __init__(
        self, repo_id: str, revision: str | None, token: str | None, staging: Path
    ) -> None:
        self.repo_id, self.revision, self.token, self.staging = repo_id, revision, token, staging
        self.endpoint = os.environ.get("HF_ENDPOINT") or None  # None: huggingface_hub's default
        api = HfApi(endpoint=self.endpoint, token=token)
        with _hub_errors(repo_id, revision):
            info = api.model_info(repo_id, revision=revision, files_metadata=True)
        self.commit = info.sha or revision
        self.sizes = {s.rfilename: int(s.size or 0) for s in info.siblings or ()}

    def fetch(self, names: tuple[str, ...] | list[str], quiet: bool = True) -> None:
        """Download `names` into the staging folder (a complete file is not fetched again,
        a partial one is resumed)."""
        with bar(quiet) as progress, _hub_errors(self.repo_id, self.revision):
            total = sum(self.sizes.get(n, 0) for n in names)
            task = progress.add_task(self.repo_id, total=total)
            done = 0
            for name in names:
                hf_hub_download(
                    self.repo_id, name, revision=self.commit, local_dir=self.staging,
                    endpoint=self.endpoint, token=self.token, tqdm_class=tqdm_for(progress, task),
                )  # fmt: skip
                done += self.sizes.get(name, 0)
                progress.update(task, completed=done)

    def read_json(self, name: str) -> dict:
        self.fetch([name])
        try:
            data = json.loads((self.staging / name).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PullError(f"{self.repo_id}: {name} is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise PullError(f"{self.repo_id}: {name} is not a JSON object")
        return data


def pull_repo(
    repo_id: str,
    models_dir: Path,
    *,
    revision: str | None = None,
    file: str | None = None,
    to: str | None = None,
    name: str | None = None,
    token: str | None = None,
    quiet: bool = False,
) -> Path:
    """Place the model of `repo_id` under models_dir and return its path. A failed pull
    keeps its staging folder only when it holds a partial download to resume."""
    staging = place.staging_dir(models_dir, f"{repo_id}@{revision or ''}")
    try:
        target = _pull(repo_id, models_dir, staging, revision, file, to, name, token, quiet)
    except PullError:
        if not any(staging.rglob("*.incomplete")):
            place.clean_staging(staging)
        raise
    place.clean_staging(staging)
    return target


def _pull(
    repo_id: str,
    models_dir: Path,
    staging: Path,
    revision: str | None,
    file: str | None,
    to: str | None,
    name: str | None,
    token: str | None,
    quiet: bool,
) -> Path:
    repo = _Repo(repo_id, revision, token, staging)
    files = list(repo.sizes)
    default_name = repo_id.rstrip("/").split("/")[-1]
    plan = None
    if file is None and "model_index.json" in files:
        plan = diffusers_plan(files, repo.read_json("model_index.json"), to)
    elif file is None and "config.json" in files:
        plan = config_plan(files, repo.read_json("config.json"), to)
    elif file is None:
        plan = tagger_plan(files, to)
    if plan is None:
        chosen = single_file(files, file)
        repo.fetch([chosen], quiet)
        path = staging / chosen
        folder = to or place.classify_file(path)
        stem = Path(chosen).name.removesuffix(".safetensors")
        return place.place_file(path, models_dir, folder, name or stem)
    target = models_dir / plan.folder / (name or default_name)
    if target.exists():  # before the download, not after
        raise PullError(f"{target} already exists; remove it first or pass --name")
    repo.fetch(plan.files, quiet)
    return place.place_folder(staging, plan.files, models_dir, plan.folder, name or default_name)
