"""`gptlab classify`: label texts with a trained classifier (no training code involved)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gptlab.checkpoint import load_model
from gptlab.classifier import classify_texts
from gptlab.data.reading import read_utf8
from gptlab.devices import pick_device


def add_classify(commands: argparse._SubParsersAction) -> None:
    cls = commands.add_parser("classify", help="label texts with a trained classifier",
                              description="Print label, probability and text for each text.")
    cls.add_argument("--model", required=True, help="a classifier run or checkpoint folder")
    cls.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify")
    cls.add_argument("--file", help="a file with one text per line")
    cls.add_argument("--device", default="auto", help="cpu, cuda, mps or auto (default: auto)")
    cls.add_argument("--json", action="store_true", help="print one JSON object per text")
    cls.set_defaults(func=cmd_classify)


def cmd_classify(args: argparse.Namespace) -> int:
    texts = list(args.texts)
    if args.file:
        texts += [line for line in read_utf8(Path(args.file)).splitlines() if line.strip()]
    if not texts:
        raise ValueError("give texts to classify as arguments or with --file")
    loaded = load_model(args.model, device=pick_device(args.device))
    names = loaded.meta.labels
    if loaded.model.config.num_classes is None or not names:
        raise ValueError(f"{args.model} is not a classifier (train one with gptlab finetune classify)")
    results = [{"text": text, "label": names[int(p.argmax())], "probability": round(float(p.max()), 4),
                "probabilities": {n: round(float(v), 4) for n, v in zip(names, p)}}
               for text, p in zip(texts, classify_texts(loaded, texts))]
    for result in results:
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{result['label']}\t{result['probability']:.3f}\t{result['text']}")
    return 0
