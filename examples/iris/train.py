"""Train the iris reference model and save it as a joblib artifact.

Usage: python examples/iris/train.py OUT_PATH
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import joblib
from model import build_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train and save the iris model.")
    parser.add_argument("out_path", help="where to write the joblib artifact")
    args = parser.parse_args(argv)
    model = build_model()
    parent = os.path.dirname(os.path.abspath(args.out_path))
    os.makedirs(parent, exist_ok=True)
    joblib.dump(model, args.out_path)
    print(f"saved iris model to {args.out_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
