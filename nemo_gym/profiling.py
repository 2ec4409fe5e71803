"""CPU profiles of a server or an agent run, written to a directory as text and pstats files.

Built on the standard library's cProfile, timed on process CPU time, so it needs nothing
installed. `dump()` writes `<name>.log` (the functions by cumulative time, optionally only the
lines that mention `required_str`) and `<name>.prof` (load it with `pstats` or snakeviz); when
`gprof2dot` and Graphviz's `dot` are installed it also renders `<name>.png`, the call graph.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pydantic import BaseModel, PrivateAttr, field_validator


class Profiler(BaseModel):
    name: str
    base_profile_dir: Path
    # Keep only the report lines that contain this text (a package or file name, say).
    required_str: str | None = None
    _profile: cProfile.Profile | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _one_word(cls, name: str) -> str:
        if not name or any(ch.isspace() for ch in name):
            raise ValueError(f"a profiler name is used in file names and may not contain spaces: {name!r}")
        return name

    def start(self) -> None:
        self._profile = cProfile.Profile(time.process_time)
        self._profile.enable()
        print(f"profiling {self.name}", file=sys.stderr)

    def stop(self) -> None:
        if self._profile is not None:
            self._profile.disable()
        self.dump()
        print(f"profile of {self.name} written to {self.base_profile_dir}", file=sys.stderr)

    def dump(self) -> None:
        if self._profile is None:
            raise RuntimeError(f"profiler {self.name!r} was never started")
        self.base_profile_dir.mkdir(parents=True, exist_ok=True)
        prof_path = self.base_profile_dir / f"{self.name}.prof"
        self._profile.dump_stats(prof_path)
        buffer = io.StringIO()
        pstats.Stats(str(prof_path), stream=buffer).sort_stats("cumulative").print_stats()
        lines = buffer.getvalue().splitlines(keepends=True)
        header_end = next(
            (i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), len(lines) - 1
        )
        kept = lines[: header_end + 1] + [
            line for line in lines[header_end + 1 :] if self.required_str is None or self.required_str in line
        ]
        (self.base_profile_dir / f"{self.name}.log").write_text("".join(kept))
        self._render_graph(prof_path)

    def _render_graph(self, prof_path: Path) -> None:
        gprof2dot, dot = shutil.which("gprof2dot"), shutil.which("dot")
        if gprof2dot is None or dot is None:
            return
        dot_path = prof_path.with_suffix(".dot")
        subprocess.run(
            [gprof2dot, "-f", "pstats", "-e", "5", "-n", "5", "-o", str(dot_path), str(prof_path)], check=True
        )
        subprocess.run([dot, "-Tpng", "-o", str(prof_path.with_suffix(".png")), str(dot_path)], check=True)


__all__ = ["Profiler"]
