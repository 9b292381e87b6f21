"""The one table of ``bench/gpu_suite.sh``: the throughput bench's images per second and every rehearsed
stage's seconds per item, peak GPU memory and projected hours, read from the JSON files in ``FOLDER``.

    python bench/gpu_suite_table.py FOLDER
"""

import json
import sys
from pathlib import Path


def rows(folder: Path) -> list[list[str]]:
    """| measurement | setting | figure | peak GPU MiB | projected h |, throughput first."""
    throughput = json.loads((folder / "throughput.json").read_text())
    table = [
        [f"training {preset}", column, f"{speed:.3g} images/s", "", ""]
        for preset, speeds in throughput["images_per_second"].items()
        for column, speed in zip(throughput["columns"], speeds, strict=True)
    ]
    for path in sorted(folder.glob("rehearsal_*.json")):
        rehearsal = json.loads(path.read_text())
        for stage in rehearsal["stages"]:
            gpu = stage["peak_gpu_mib"]
            table.append(
                [
                    f"{rehearsal['experiment']} {stage['name']}",
                    f"per {stage['item']}",
                    f"{stage['seconds_per_item']:.3g} s",
                    "" if gpu is None else f"{gpu:.0f}",
                    f"{stage['projected_seconds'] / 3600:.3g}",
                ]
            )
    return table


def main() -> None:
    folder = Path(sys.argv[1])
    throughput = json.loads((folder / "throughput.json").read_text())
    print(f"{throughput['device']}, torch {throughput['torch']}")
    print("| measurement | setting | figure | peak GPU MiB | projected h |\n|---|---|---|---|---|")
    for row in rows(folder):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
