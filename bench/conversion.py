"""How long turning dataset rows into tunesmith records takes (data.formats.convert, one process).

    .venv/bin/python bench/conversion.py [--rows 2000] [--repeat 5]

Converts --rows ShareGPT conversations of 6 turns (about 450 characters each) for stage sft and prints the median
wall time over --repeat runs. This was a wall-clock assertion in the tests (< 3 s; ~0.2 s on a laptop core).
"""

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from datasets import Dataset, disable_progress_bars

    from tunesmith.data.formats import convert
    from tunesmith.data.registry import DatasetSpec

    disable_progress_bars()
    turns = [{"from": "human", "value": "question " * 20}, {"from": "gpt", "value": "answer " * 50}] * 3
    rows = Dataset.from_list([{"conversations": turns, "tools": ""}] * args.rows)
    spec = DatasetSpec(name="big", load_from="file", location="mem", formatting="sharegpt")
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        records = convert(rows, spec, "sft")
        times.append(time.perf_counter() - start)
    assert len(records) == args.rows and len(records[0]["prompt"]) == 5
    print(
        f"convert {args.rows} sharegpt rows (sft): median {statistics.median(times):.3f} s of {args.repeat} "
        f"(min {min(times):.3f}, max {max(times):.3f})"
    )


if __name__ == "__main__":
    main()
