"""`gptlab classify`: label texts with a trained classifier (no training code involved)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gptlab.classifier import classify_texts
from gptlab.cli.common import add_device_flags, load
from gptlab.data.reading import read_utf8
from gptlab.loading import LoadedModel


def add_classify(commands: argparse._SubParsersAction) -> None:
    cls = commands.add_parser("classify", help="label texts with a trained classifier",
                              description="Print label, probability and text for each text.")
    cls.add_argument("--model", required=True,
                     help="a classifier run or checkpoint folder, or the book's classifier .pth (chapter 6)")
    cls.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify")
    cls.add_argument("--file", type=Path, help="a UTF-8 file with one text per line")
    cls.add_argument("--labels", metavar="NAME,NAME",
                     help="class names in class-id order (default: the model's own, else the ids 0,1,...); a .pth "
                          "has none: the book's spam classifier is ham,spam")
    cls.add_argument("--pad-to", type=int, metavar="N",
                     help="pad each text to N tokens with <|endoftext|> and read the last position, as the book's "
                          "classify_review does; its classifiers expect their training length (the book's spam "
                          "classifier: 120). Default: read the last real token, as gptlab's classifiers do")
    add_device_flags(cls)
    cls.add_argument("--json", action="store_true", help="print one JSON object per text")
    cls.set_defaults(func=cmd_classify)


def cmd_classify(args: argparse.Namespace) -> int:
    texts = list(args.texts)
    if args.file:
        texts += [line for line in read_utf8(args.file).splitlines() if line.strip()]
    if not texts:
        raise ValueError("give texts to classify as arguments or with --file")
    loaded = load(args)
    names = label_names(loaded, args.labels, args.model)
    results = [{"text": text, "label": names[int(p.argmax())], "probability": round(float(p.max()), 4),
                "probabilities": {n: round(float(v), 4) for n, v in zip(names, p)}}
               for text, p in zip(texts, classify_texts(loaded, texts, args.pad_to))]
    for result in results:
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{result['label']}\t{result['probability']:.3f}\t{result['text']}")
    return 0


def label_names(loaded: LoadedModel, labels: str | None, model: str) -> list[str]:
    """The class names: `labels` ("ham,spam"), else the classifier's own, else its class ids."""
    classes = loaded.model.config.num_classes
    if classes is None:
        raise ValueError(f"{model} is not a classifier (train one with gptlab finetune classify)")
    if not labels:
        return loaded.meta.labels or [str(i) for i in range(classes)]
    names = [name.strip() for name in labels.split(",")]
    if len(names) != classes:
        raise ValueError(f"--labels {labels} names {len(names)} classes, but {model} has {classes}")
    return names
