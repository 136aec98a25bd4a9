"""Run ``train()`` in a process of its own, for the kill-and-resume and torchrun tests (not collected by pytest).

    python run_training.py CONFIG.yaml OUTPUT_DIR [--resume] [--no-dropout] [--pause-after STEP MARKER] [--device D]

``--no-dropout`` turns every dropout layer into the identity, so runs on different process counts see the same
network function (dropout masks are drawn per rank and cannot match). ``--pause-after`` stops the run in the middle
of training: after the metrics line of STEP it writes MARKER and sleeps until the test kills it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from histo_daen.config.load import load_config
from histo_daen.config.schema import TrainConfig
from histo_daen.training import loop


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--no-dropout", action="store_true")
    parser.add_argument("--pause-after", nargs=2, metavar=("STEP", "MARKER"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.no_dropout:
        torch.nn.Dropout.forward = lambda self, x: x  # type: ignore[method-assign]
        torch.nn.Dropout2d.forward = lambda self, x: x  # type: ignore[method-assign]
    if args.pause_after:
        pause_step, marker = int(args.pause_after[0]), Path(args.pause_after[1])
        append = loop.MetricsLog.append

        def append_then_pause(self: loop.MetricsLog, record: dict) -> None:
            append(self, record)
            if record["step"] == pause_step:
                marker.write_text(str(pause_step))
                time.sleep(600)  # the test sends SIGKILL

        loop.MetricsLog.append = append_then_pause  # type: ignore[method-assign]
    cfg = load_config(TrainConfig, args.config)
    loop.train(cfg, output_dir=args.output, device=args.device, resume=args.resume)


if __name__ == "__main__":
    main()
