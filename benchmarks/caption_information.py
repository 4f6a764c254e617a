"""How much of the class do adaptation setting A's captions say? (CPU, seconds)

Setting A's base (``benchmarks/adapt_digits.py``) is pretrained with label-free shape captions
("a bold narrow digit, loop top, heavy low, leans left"). Does a method that only learns a
prompt (textual inversion) stall there because the captions say too little? This measures the
class information in the caption vocabulary, per seed split, two ways: each train
image's caption reduced to its attributes (ink, width, balance, lean, loop), the most frequent
class per attribute tuple learned on the train split and its accuracy on the test split's
captions (unseen tuples: the most frequent class); and a logistic regression on the attribute
words (one-hot), which also generalises to unseen combinations. ``--captions detailed``: the
richer vocabulary of ``adapt_digits.py --base-captions detailed`` (the same words plus a 4x4
ink map, each of its 16 cells an attribute). It says much more, yet textual inversion on a
base pretrained with it does not improve (README, adaptation benchmark): the answer is no.

    python benchmarks/caption_information.py [--seeds 0 1 2] [--captions generic detailed]
        [--out runs/adapt-digits] [--json benchmarks/results/caption_information.json]
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

from adapt_digits import digits_split
from common import machine, mean_std, write_result

RESULTS = Path(__file__).resolve().parent / "results"


def attributes(caption: str) -> tuple[str, ...]:
    """The caption's attribute words, whatever the phrasing."""
    from synthset.adapt.tiny_base import INK, LEAN, MASS, WIDTH

    words = tuple(next(w for w in vocab if w in caption) for vocab in (INK, WIDTH, MASS, LEAN))
    loop = [p.strip() for p in re.split(r"[,:]", caption) if "loop" in p]
    return (*words, loop[0] if loop else "")


def detailed_attributes(caption: str) -> tuple[str, ...]:
    """A detailed caption's generic words and its 16 ink-map cells."""
    words, _, cells = caption.partition(", map ")
    return (*words.split(", "), *cells.replace(" ", ""))


def caption_accuracy(splits_file: Path, kind: str = "generic") -> dict[str, float]:
    """Test accuracy of the caption -> majority-class lookup learned on train, and of a
    logistic regression on the caption's attribute words."""
    from adapt_digits import detailed_captions

    from synthset.adapt.tiny_base import generic_captions
    from synthset.data.splits import load_splits

    splits = load_splits(splits_file, names=("train", "test"))
    if kind == "detailed":
        keys = {
            k: [detailed_attributes(c) for c in detailed_captions(v)] for k, v in splits.items()
        }
    else:
        keys = {k: [attributes(c) for c in generic_captions(v)] for k, v in splits.items()}
    labels = {k: [lbl for _, lbl in v] for k, v in splits.items()}
    table: dict[tuple[str, ...], collections.Counter[int]] = collections.defaultdict(
        collections.Counter
    )
    for key, lbl in zip(keys["train"], labels["train"], strict=True):
        table[key][lbl] += 1
    fallback = collections.Counter(labels["train"]).most_common(1)[0][0]
    hits = sum(
        (table[key].most_common(1)[0][0] if key in table else fallback) == lbl
        for key, lbl in zip(keys["test"], labels["test"], strict=True)
    )
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import OneHotEncoder

    words = OneHotEncoder(handle_unknown="ignore").fit(keys["train"])
    regression = LogisticRegression(max_iter=3000).fit(
        words.transform(keys["train"]), labels["train"]
    )
    return {
        "test_accuracy": round(hits / len(labels["test"]), 4),
        "logistic_test_accuracy": round(
            float(regression.score(words.transform(keys["test"]), labels["test"])), 4
        ),
        "distinct_train_captions": len(table),
        "test_images": len(labels["test"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--captions", nargs="+", choices=["generic", "detailed"], default=["generic", "detailed"]
    )
    parser.add_argument("--out", type=Path, default=Path("runs/adapt-digits"))
    parser.add_argument("--json", type=Path, default=RESULTS / "caption_information.json")
    args = parser.parse_args()
    splits = {s: digits_split(s, args.out / "splits" / f"seed{s}") for s in args.seeds}
    kinds: dict[str, dict[str, object]] = {}
    for kind in args.captions:
        per_seed = {str(s): caption_accuracy(f, kind) for s, f in splits.items()}
        kinds[kind] = {
            "summary": {
                key: mean_std([r[key] for r in per_seed.values()])
                for key in ("test_accuracy", "logistic_test_accuracy")
            },
            "per_seed": per_seed,
        }
        print(kind, kinds[kind]["summary"])
    result = {
        "benchmark": "caption_information",
        "command": "python benchmarks/caption_information.py --seeds "
        + " ".join(map(str, args.seeds))
        + " --captions "
        + " ".join(args.captions),
        "what": "caption attributes -> majority class on train (test_accuracy) and a logistic "
        "regression on the attribute words (logistic_test_accuracy), accuracy on test captions",
        "captions": kinds,
        "machine": machine(),
    }
    write_result(args.json, result)


if __name__ == "__main__":
    main()
