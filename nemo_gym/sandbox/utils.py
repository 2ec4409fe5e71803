"""Small helpers servers use around sandboxes."""

from __future__ import annotations

# Thread-pool and parallelism knobs that tools size from the host's core count rather than the
# sandbox's CPU limit (BLAS/OpenMP, Python's cpu_count on 3.13+, Go, Rust, Node, pytest-xdist,
# CMake, ...). With a small limit on a wide host they oversubscribe and get throttled or killed,
# so servers set all of them to the limit. MAKEFLAGS is left alone on purpose: setting `-j`
# there would turn serial `make` runs parallel.
CPU_CAP_ENV_VARS: tuple[str, ...] = (
    "OMP_NUM_THREADS",
    "OMP_THREAD_LIMIT",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "BLIS_NUM_THREADS",
    "PYTHON_CPU_COUNT",
    "NUMBA_NUM_THREADS",
    "LOKY_MAX_CPU_COUNT",
    "POLARS_MAX_THREADS",
    "PYTEST_XDIST_AUTO_NUM_WORKERS",
    "DJANGO_TEST_PROCESSES",
    "GOMAXPROCS",
    "CARGO_BUILD_JOBS",
    "RAYON_NUM_THREADS",
    "RUST_TEST_THREADS",
    "UV_THREADPOOL_SIZE",
    "CMAKE_BUILD_PARALLEL_LEVEL",
)


def cpu_cap_env(cpu: float | int | None) -> dict[str, str]:
    """Every `CPU_CAP_ENV_VARS` name set to the whole number of cores in `cpu` (at least 1);
    {} when there is no limit. Callers merge their explicit env over it."""
    if cpu is None:
        return {}
    cores = str(max(1, int(cpu)))
    return dict.fromkeys(CPU_CAP_ENV_VARS, cores)


def rewrite_image(image: str | None, rewrites: list[dict[str, str]]) -> str | None:
    """Swap the prefix of `image` by the first rule `{from: prefix, to: replacement}` that
    matches (a registry mirror, say); unchanged when none does."""
    if image is None:
        return None
    for rule in rewrites:
        prefix = rule["from"]
        if image.startswith(prefix):
            return rule["to"] + image[len(prefix) :]
    return image
