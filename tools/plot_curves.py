#!/usr/bin/env python
"""Training curves of one or more train_net.py runs, in one PNG.

    python tools/plot_curves.py RUN_DIR [RUN_DIR ...] [--output FILE.png] \\
        [--metrics total_loss loss_cls ...]

Reads each RUN_DIR/metrics.json and plots every --metrics key (default: every logged loss)
against iteration, one subplot per key and one line per run, and the final evaluation's AP
(bbox/AP, AP50, ..., AP95) of each run that logged one. Writes FILE.png (default
<first RUN_DIR>/curves.png) and FILE.json (the plotted numbers) beside it, and prints the PNG's
path. A RUN_DIR without metrics.json, or a malformed line in one, is an error naming it.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from d2ext.tooling import pyplot, write_figure_and_json  # noqa: E402
from d2ext.visualization import curves_figure, training_curves  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="train_net.py OUTPUT_DIRs (each with a metrics.json)")
    parser.add_argument("--output", default=None, metavar="FILE.png",
                        help="the PNG to write (default: <first RUN_DIR>/curves.png)")
    parser.add_argument("--metrics", nargs="+", default=None, metavar="KEY",
                        help="metrics.json keys to plot (default: every key with 'loss')")
    args = parser.parse_args(argv)
    output = args.output or os.path.join(args.run_dirs[0], "curves.png")
    name, ext = os.path.splitext(os.path.basename(output))
    if ext != ".png":
        parser.error(f"--output must name a .png file, got {output}")
    curves = training_curves(args.run_dirs, args.metrics)
    png, _ = write_figure_and_json(curves_figure(curves, pyplot()), curves,
                                   os.path.dirname(output) or ".", name, unprinted=("series",))
    return png, curves


if __name__ == "__main__":
    main()
