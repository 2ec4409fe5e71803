"""Agent skills: a directory of skill directories (each with a `SKILL.md`, per the open Agent
Skills format that Codex CLI and Claude Code read) made available to an agent for a run.

Skills are a run-level choice, not a dataset field, so one dataset serves every skill variant.
A run's rows are stamped with a `SkillsRef` whose `hash` covers the directory's file layout and
bytes: optimizers that rewrite a skill in place at the same path still get distinct refs.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import yaml
from pydantic import BaseModel, Field

from nemo_gym.paths import resolve_under_cwd_or_install

SKILL_MD_FILENAME = "SKILL.md"
_HASH_LENGTH = 12


class SkillMetadata(BaseModel):
    """A skill's `SKILL.md` front matter."""

    name: str
    description: str | None = None
    version: str | None = None


class SkillsRef(BaseModel):
    """Which skills a run had: where from, their content hash, and each one's metadata."""

    path: str
    hash: str
    skills: list[SkillMetadata]


class SkillsConfig(BaseModel):
    path: str = Field(description="A directory of skill directories (each with a SKILL.md).")


def hash_skill_dir(root: Path) -> str:
    """A short sha256 over every file's relative path and bytes, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:_HASH_LENGTH]


def parse_skill_md(skill_md_path: Path) -> SkillMetadata:
    """The front matter (between two `---` lines at the top) of a `SKILL.md`; `name` is required."""
    text = skill_md_path.read_text(encoding="utf-8-sig", errors="replace")  # a BOM is tolerated
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        raise ValueError(
            f"{skill_md_path} has no YAML front matter: it must start with a '---' line, then 'name:' "
            "and 'description:', then '---'"
        )
    end = next((index for index in range(1, len(lines)) if lines[index].strip() == "---"), None)
    if end is None:
        raise ValueError(f"{skill_md_path}: the YAML front matter has no closing '---' line")
    try:
        data = yaml.safe_load("\n".join(lines[1:end])) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{skill_md_path}: the YAML front matter is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{skill_md_path}: the front matter must be a mapping, not {type(data).__name__}")
    if not data.get("name"):
        raise ValueError(f"{skill_md_path}: the front matter has no 'name'")
    # The format keeps the version under an optional `metadata:` mapping.
    metadata = data.get("metadata")
    version = metadata.get("version") if isinstance(metadata, dict) else None
    return SkillMetadata(
        name=str(data["name"]),
        description=data.get("description"),
        version=str(version) if version is not None else None,
    )


def load_skill_directory(path: str) -> SkillsRef:
    """Every skill under `path`, with the directory's hash; a clear error for anything malformed."""
    resolved = resolve_under_cwd_or_install(path)
    if not resolved.exists():
        raise ValueError(f"skills.path={path!r}: {resolved} does not exist")
    if not resolved.is_dir():
        raise ValueError(f"skills.path={path!r}: {resolved} is a file, not a directory of skill directories")
    skills = []
    for skill_dir in sorted(d for d in resolved.iterdir() if d.is_dir()):
        skill_md = skill_dir / SKILL_MD_FILENAME
        if not skill_md.is_file():
            raise ValueError(f"skill directory {skill_dir} has no {SKILL_MD_FILENAME}")
        skills.append(parse_skill_md(skill_md))
    if not skills:
        raise ValueError(
            f"skills.path={path!r}: {resolved} holds no skills (expected sub-directories with a {SKILL_MD_FILENAME})"
        )
    return SkillsRef(path=path, hash=hash_skill_dir(resolved), skills=skills)


def stage_skills(path: str, dest_skills_dir: Path) -> None:
    """Copy the skills directory to where an agent runtime looks for skills (`dest` must not exist)."""
    resolved = resolve_under_cwd_or_install(path)
    if not resolved.is_dir():
        raise ValueError(
            f"cannot stage skills: {resolved} (from {path!r}) is not a directory; on several machines it "
            "must be on storage the agent can read"
        )
    shutil.copytree(resolved, dest_skills_dir)


__all__ = [
    "SKILL_MD_FILENAME",
    "SkillMetadata",
    "SkillsConfig",
    "SkillsRef",
    "hash_skill_dir",
    "load_skill_directory",
    "parse_skill_md",
    "stage_skills",
]
