#!/usr/bin/env python
"""Multi-seed ablations on shapes: train and evaluate every row of the ablation groups with every
seed, one run at a time, and print each group's table (mean ± std over seeds, and each row's
paired difference to its baseline on the same seeds).

    python tools/ablate.py                                  # every group of the file, its seeds
    python tools/ablate.py --groups readme --seeds 1 2 3    # some groups, some seeds
    python tools/ablate.py --groups readme --rows retinanet iou_balanced_retinanet --seeds 4 5
    python tools/ablate.py --set primitives                 # the groups of another dataset
    python tools/ablate.py --tables                         # print the tables only, train nothing
    python tools/ablate.py --write-tables                   # regenerate the tables in the docs
    python tools/ablate.py --check-tables                   # exit 1 when a docs table is stale

Runs already in the results file are skipped, and an interrupted training continues from its
last checkpoint, so running the same command again resumes the set (docs/results.md). A run
whose training fails is reported at the end (exit status 1), after the other runs.
"""
import argparse
import glob
import logging
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from d2ext.ablation import (  # noqa: E402
    AblationError,
    ablation_set_files,
    group_table,
    load_ablation_sets,
    load_ablations,
    read_results,
    render_tables,
    run_ablation,
    stale_tables,
)
from d2ext.atomic import write_text_atomically  # noqa: E402

RESULTS_DIR = "docs/results"


def table_files():
    """The Markdown files that may hold generated tables: README.md and docs/*.md."""
    docs = glob.glob(os.path.join(REPO, "docs", "*.md"))
    return [os.path.join(REPO, "README.md")] + sorted(docs)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="shapes",
                        help="the ablation set: docs/results/SET_ablations.yaml (the groups) and "
                             "docs/results/SET.json (the runs); default %(default)s")
    parser.add_argument("--output-root", default="output/ablate",
                        help="where the runs' OUTPUT_DIRs go (default %(default)s)")
    parser.add_argument("--groups", nargs="+", default=None, help="default: every group")
    parser.add_argument("--rows", nargs="+", default=None,
                        help="train only the rows of these names in the groups (default: every "
                             "row); the tables still show every row")
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="default: the ablation file's seeds")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--tables", action="store_true", help="print the tables, train nothing")
    mode.add_argument("--write-tables", action="store_true",
                      help="regenerate the tables in README.md and docs/*.md")
    mode.add_argument("--check-tables", action="store_true",
                      help="exit 1 when a table in README.md or docs/*.md is stale")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.chdir(REPO)
    try:
        if args.write_tables or args.check_tables:
            sets = load_ablation_sets(RESULTS_DIR)
            stale = stale_tables(table_files(), sets)
            if args.check_tables:
                for path in stale:
                    print(f"stale tables: {os.path.relpath(path)} "
                          "(python tools/ablate.py --write-tables)")
                return 1 if stale else 0
            for path in stale:
                with open(path) as f:
                    text = f.read()
                write_text_atomically(path, render_tables(text, sets))
                print(f"wrote {os.path.relpath(path)}")
            return 0
        ablations, results = ablation_set_files(args.set, RESULTS_DIR)
        seeds, groups = load_ablations(ablations)
        if args.groups:
            unknown = sorted(set(args.groups) - set(groups))
            if unknown:
                raise AblationError(f"{ablations}: no group {unknown}; groups: {sorted(groups)}")
            groups = {g: groups[g] for g in args.groups}
        if args.rows:
            unknown = sorted(set(args.rows) - {row.name for spec in groups.values()
                                               for row in spec["rows"]})
            if unknown:
                raise AblationError(f"{ablations}: no row {unknown} in the groups "
                                    f"{sorted(groups)}")
        runs, failure = read_results(results), None
        if not args.tables:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
            try:
                runs = run_ablation(groups, args.seeds or seeds, results, args.output_root,
                                    rows=args.rows)
            except AblationError as e:  # runs that failed; the others are in the file
                failure, runs = e, read_results(results)
    except AblationError as e:
        raise SystemExit(f"ablate: {e}")
    for group, spec in groups.items():
        print(f"\n## {group}: {spec['title']}\n")
        print(group_table(group, spec, runs))
    if failure:
        raise SystemExit(f"ablate: {failure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
