"""`python -m cxrvlp.core.data.synthetic OUT_DIR [--seed N] [--scale F] [--image-size PX] [--names ...]`."""

from __future__ import annotations

import argparse
import json
import sys

from cxrvlp.core.data.synthetic.mirrors import DATASET_NAMES, write_all


def main(argv: list[str] | None = None) -> int:
    """Write the synthetic mirrors and print {name: folder} as JSON."""
    ap = argparse.ArgumentParser(prog="python -m cxrvlp.core.data.synthetic", description=__doc__)
    ap.add_argument("out", help="folder to write the mirrors into (one sub-folder per dataset)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every default count")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--names", nargs="+", choices=DATASET_NAMES, default=None)
    args = ap.parse_args(argv)
    out = write_all(args.out, seed=args.seed, scale=args.scale, image_size=args.image_size, names=args.names)
    print(json.dumps({k: str(v) for k, v in out.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
