"""Every generated results section: its page, the command that measures it, the paths whose
changes make it stale, how it is measured and how it is rendered.

A section is measured into a folder (``runs/results/<name>-<date>`` for the demos; a sweep's own
``output_dir``), which first gets ``provenance.json``; it is then rendered from that folder into
its block of the page (:mod:`.markers`). Adding a section: one :class:`Section` in
:data:`SECTIONS` and its two marker lines on the page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from uaclm_dist.evaluate.compare import MIN_CLASS_COUNT, TOO_FEW
from uaclm_dist.results.tables import (
    EvalResults,
    detection_table,
    ood_table,
    paired_table,
    seeds_table,
)

__all__ = ["CODE_PATHS", "SECTIONS", "Section"]

#: What every trained-and-evaluated number depends on.
CODE_PATHS: tuple[str, ...] = (
    "uaclm_dist/train",
    "uaclm_dist/losses",
    "uaclm_dist/modeling",
    "uaclm_dist/data",
    "uaclm_dist/evaluate",
    "ds_configs",
    "constraints-cpu.txt",
)
VQA_SEEDS = (0, 1)
RESULTS_PAGE = "docs/RESULTS.md"
TOO_FEW_NOTE = f"{TOO_FEW}: fewer than {MIN_CLASS_COUNT} answers in a class"


@dataclass(frozen=True)
class Section:
    """One generated block.

    Attributes:
        name: the block's name on its page (``<!-- generated: NAME ...``).
        page: the Markdown file, relative to the repository root.
        command: what a person runs to regenerate it (written into the marker).
        depends_on: files or folders (repository-relative); a commit touching any of them after
            the block's commit makes the block stale.
        measure: ``measure(folder) -> [argv, ...]``, the commands that fill ``folder``, run in the
            repository root in order.
        render: ``render(folder) -> Markdown`` from what the commands wrote.
        folder: ``folder(repo, stamp) -> Path``, where the measurement goes.
    """

    name: str
    page: str
    command: str
    depends_on: tuple[str, ...]
    measure: Callable[[Path], list[list[str]]]
    render: Callable[[Path], str]
    folder: Callable[[Path, str], Path]


def _run_folder(name: str) -> Callable[[Path, str], Path]:
    return lambda repo, stamp: repo / "runs" / "results" / f"{name}-{stamp}"


def _sweep_folder(spec: str) -> Callable[[Path, str], Path]:
    def folder(repo: Path, stamp: str) -> Path:
        out = Path(yaml.safe_load((repo / spec).read_text())["output_dir"])
        return out if out.is_absolute() else repo / out

    return folder


# ------------------------------------------------------------------------------------ the demo


def _measure_demo(folder: Path) -> list[list[str]]:
    return [["make", "-o", "venv", "demo", f"DEMO_DIR={folder}"]]


def _render_demo(folder: Path) -> str:
    run = EvalResults(folder / "eval")
    runs = {"": run}
    first = next(iter(run.metrics.values()))
    parts = [
        f"Hallucination detection on {first['n_examples']} held-out questions (positive class: "
        "a wrong answer; 0.5 is chance); AUROC by DeLong, accuracy by bootstrap, 95% intervals; "
        f'"{TOO_FEW_NOTE}".',
        "",
        detection_table(runs),
        "",
    ]
    ood = ood_table(runs)
    if ood:
        parts += [
            f"Out-of-domain detection: the same methods on {run.n_ood} prompts from outside the "
            "demo's domain (`data.ood`; positive class: an OOD prompt). `Length only` ranks by "
            "answer length: a score must beat it to say more than the prompt's surface does.",
            "",
            ood,
            "",
        ]
    own = "".join(f" `{m}` is compared with its control `{b}` instead."
                  for m, b in (run.comparison.get("pairs") or {}).items())  # fmt: skip
    parts += [
        f"Paired differences against `{run.baseline}` on the same questions (each method with "
        "its own correct / wrong answers; t intervals, AUROC by DeLong; **H**: excludes 0 after "
        f"Holm over the evaluation's {run.comparison['n_comparisons']} comparisons).{own}",
        "",
        paired_table(run),
    ]
    return "\n".join(parts)


# ------------------------------------------------------------------------------ the VQA demo


def _measure_vqa(folder: Path) -> list[list[str]]:
    return [["make", "-o", "venv", "demo-vqa", f"VQA_DIR={folder}/seed{s}",
             f"VQA_OVERRIDES=optim.seed={s}"] for s in VQA_SEEDS]  # fmt: skip


def _render_vqa(folder: Path) -> str:
    runs = {f" (seed {s})": EvalResults(folder / f"seed{s}" / "eval") for s in VQA_SEEDS}
    first = next(iter(runs.values()))
    n = next(iter(first.metrics.values()))["n_examples"]
    seeds = " and ".join(map(str, VQA_SEEDS))
    return "\n".join(
        [
            f"Training seeds {seeds} (`optim.seed`; the same split and the same {n} held-out "
            "questions in both). Hallucination AUROC (positive class: a wrong answer), 95% "
            f'intervals; "{TOO_FEW_NOTE}".',
            "",
            detection_table(runs),
            "",
            f"Paired differences against `{first.baseline}` per seed (same questions, own labels; "
            "**H**: excludes 0 after Holm within that seed's evaluation), and whether the "
            "unadjusted "
            "interval excludes 0 on the same side in every seed:",
            "",
            seeds_table(runs),
        ]
    )


# ----------------------------------------------------------------------------------- sweeps


def _measure_sweep(target: str) -> Callable[[Path], list[list[str]]]:
    return lambda folder: [["make", "-o", "venv", target]]


def _render_sweep(folder: Path) -> str:
    """``sweep.md`` of ``uaclm sweep collect``, its headings moved under the page's."""
    sweep_md = folder / "sweep.md"
    if not sweep_md.is_file():
        raise FileNotFoundError(f"{sweep_md} not found: the sweep was not collected")
    return "\n".join("###" + line if line.startswith("#") else line
                     for line in sweep_md.read_text().splitlines())  # fmt: skip


SECTIONS: dict[str, Section] = {s.name: s for s in (
    Section("demo", RESULTS_PAGE, "make results-demo", (*CODE_PATHS, "configs/demo.yaml"),
            _measure_demo, _render_demo, _run_folder("demo")),
    Section("vqa", RESULTS_PAGE, "make results-vqa",
            (*CODE_PATHS, "configs/demo_vqa.yaml"),
            _measure_vqa, _render_vqa, _run_folder("vqa")),
    Section("study", RESULTS_PAGE, "make results-study",
            (*CODE_PATHS, "configs/demo.yaml", "configs/sweeps/study.yaml", "uaclm_dist/sweep"),
            _measure_sweep("study"), _render_sweep, _sweep_folder("configs/sweeps/study.yaml")),
    Section("sizes", RESULTS_PAGE, "make results-sizes",
            (*CODE_PATHS, "configs/sweeps/real_sizes.yaml", "uaclm_dist/sweep"),
            _measure_sweep("study-sizes"), _render_sweep,
            _sweep_folder("configs/sweeps/real_sizes.yaml")),
)}  # fmt: skip
