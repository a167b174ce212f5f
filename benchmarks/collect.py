"""Assemble BENCHMARKS.md from the sections the benchmark scripts wrote to benchmarks/results/.

Run the benchmarks first (each writes results/<name>.md), then: python benchmarks/collect.py
"""

import re
from pathlib import Path

ORDER = ["study_cpu", "study_cpu-long", "study_gpu", "evaluation", "evaluate_features",
         "synthetic", "training", "input_path_cpu", "input_path_cuda", "extraction", "rerank",
         "search", "search_approximate_select", "search_approximate_500k", "search_approximate",
         "onnx", "pair_scoring", "footage", "serve"]
HEADER = """# Benchmarks

Measured on this project's machines (2 CPU cores, 24 GiB, no GPU) by the scripts in `benchmarks/`.
Speed goals are ratios against a baseline timed in the same run, because these machines are shared
and noisy; every section names the command that produced it and the machine load at the time.
"""


# a section's relative link points into results/; BENCHMARKS.md sits two folders up
RELATIVE_LINK = re.compile(r"\]\((?![a-z]+:|/|#)([^)]+)\)")


def rebase_links(section: str) -> str:
    return RELATIVE_LINK.sub(r"](benchmarks/results/\1)", section)


def main() -> None:
    here = Path(__file__).parent
    sections = {p.stem: rebase_links(p.read_text().strip())
                for p in sorted((here / "results").glob("*.md"))}
    ordered = [n for n in ORDER if n in sections] + sorted(set(sections) - set(ORDER))
    text = HEADER + "".join(f"\n{sections[name]}\n" for name in ordered)
    (here.parent / "BENCHMARKS.md").write_text(text)
    print(f"BENCHMARKS.md: {len(ordered)} sections ({', '.join(ordered)})")


if __name__ == "__main__":
    main()
