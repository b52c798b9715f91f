"""Choose ensemble members by measurement: every candidate member's probabilities on the selection
split (PublicTest) once, then every combination's accuracy and macro-F1, averaged in NumPy.

    python benchmarks/bench_ensemble.py --data $FER_DATA_DIR models/fer2013_ensemble.safetensors runs/*/best.safetensors

An ensemble file counts as its members. Selection uses the validation split only (the held-back
test split is never read here); prints a table, best first. ``--cache DIR`` keeps each
checkpoint's probabilities under a name holding a hash of the checkpoint file and of the faces
(and the TTA mode: ``--tta crops`` scores every combination with ten-crop TTA; ``--baseline-tta``
sets the first checkpoint's apart, so a candidate with crops can be paired with the ensemble as
shipped).

``--split-check N`` says what choosing among combinations is worth: N times, the faces are halved
at random, the most accurate combination on one half is scored on the other, and so is the
ensemble of every candidate. When the two agree, the leading combinations differ by noise. When
the first checkpoint is an ensemble file, its own members are the baseline: each halving also
scores the chosen combination minus the baseline on the same unseen faces (a paired difference,
far less noisy than either accuracy), which is what replacing the shipped ensemble would gain.

``--bootstrap N`` scores combinations fixed in advance against that baseline on the same faces:
the baseline plus every other candidate, the other candidates alone, the baseline plus each one,
each one in place of the baseline's least accurate member, and all of them in place of as many of
its least accurate members; a paired bootstrap over the faces (N resamplings) gives each
difference's 95 % interval.

``--calibration`` prints, for the baseline and for the other candidates alone, the expected
calibration error of their mean before and after one temperature (fitted on all faces, and on the
other half of them: two-fold, as ``fer calibrate`` reports it), and after a temperature per member
followed by one for the mean (also two-fold): whether members calibrated one by one average into
a better-calibrated ensemble.

``--replace I=J`` (repeatable) scores one swap fixed in advance: the baseline with its member I
replaced by candidate J (numbered from 0 as the member lines print them), e.g. ``--replace 0=0
--replace 2=1`` for two children in place of their parents. It prints the swap and the baseline
side by side (accuracy, macro-F1, log-loss as they are and after one temperature fitted on the
other half of the faces, ECE likewise) and the paired bootstrap interval of the difference
(``--bootstrap N`` resamplings, 2,000 without it): a decision rule's every figure from one command.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score, log_loss

from fer_utils.data import load_dataset
from fer_utils.model.assembly import load_model
from fer_utils.model.calibration import base_model, fit_temperature, scaled_probabilities
from fer_utils.model.factory import Ensemble
from fer_utils.runtime.onnx import file_digest
from fer_utils.runtime.preprocess import TTA_MODES
from fer_utils.train.evaluation import (
    cross_fitted_probabilities,
    evaluate_model,
    expected_calibration_error,
    two_fold_halves,
)


def member_probabilities(path: Path, faces, tta: str = "none") -> dict[str, np.ndarray]:
    model, checkpoint = load_model(path)
    model = base_model(model)
    # each member at its own input size and normalization (a Lite1 member uses ImageNet's)
    described = [d.with_tta(tta) for d in checkpoint.member_descriptions()]
    if isinstance(model, Ensemble):
        names = [f"{path.stem}[{i}]@{d.image_size}" for i, d in enumerate(described)]
        return {
            n: evaluate_model(m, faces, d).probabilities
            for n, m, d in zip(names, model.members, described, strict=True)
        }
    return {f"{path.parent.name}@{described[0].image_size}": evaluate_model(model, faces, described[0]).probabilities}


def split_check(
    hits: np.ndarray, repeats: int, seed: int = 0, baseline: int = -1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``hits``: combinations x faces, True where right (the last row: every candidate). Per random
    halving, the accuracy on the other half of the combination most accurate on one half, and of
    the last row: what selecting among combinations buys out of sample; and the chosen
    combination's accuracy minus row ``baseline``'s on the same faces (the paired gain)."""
    rng = np.random.default_rng(seed)
    chosen, every, gain = [], [], []
    for _ in range(repeats):
        order = rng.permutation(hits.shape[1])
        pick, score = order[: len(order) // 2], order[len(order) // 2 :]
        best = int(np.argmax(hits[:, pick].mean(1)))
        chosen.append(hits[best, score].mean())
        every.append(hits[-1, score].mean())
        gain.append(chosen[-1] - hits[baseline, score].mean())
    return np.array(chosen), np.array(every), np.array(gain)


def paired_interval(diff: np.ndarray, repeats: int, seed: int = 0) -> tuple[float, float]:
    """95 % interval of the mean of per-face differences (``diff``: +1, 0 or -1 per face), from
    ``repeats`` bootstrap resamplings of the faces."""
    rng = np.random.default_rng(seed)
    means = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(repeats)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def per_member_scaled(
    members: list[np.ndarray], labels: np.ndarray, fit_on: np.ndarray, apply_to: np.ndarray
) -> np.ndarray:
    """The mean of the members' probabilities on ``apply_to``, each member scaled by its own
    temperature and then the mean by one more, all fitted on the faces ``fit_on``."""

    def mean(faces: np.ndarray) -> np.ndarray:
        return np.mean([scaled_probabilities(p[faces], t) for p, t in zip(members, temperatures, strict=True)], axis=0)

    temperatures = [fit_temperature(p[fit_on], labels[fit_on]) for p in members]
    return scaled_probabilities(mean(apply_to), fit_temperature(mean(fit_on), labels[fit_on]))


def calibration_line(members: list[np.ndarray], labels: np.ndarray) -> str:
    """ECE of the members' mean: as it is, after one temperature (fitted on all faces / two-fold),
    and after a temperature per member and one for the mean (two-fold)."""
    mean = np.mean(members, axis=0)
    after = scaled_probabilities(mean, fit_temperature(mean, labels))
    each = np.empty_like(mean)
    halves = two_fold_halves(len(labels))
    for held, fit_on in (halves, halves[::-1]):
        each[held] = per_member_scaled(members, labels, fit_on, held)
    ece = [expected_calibration_error(labels, p) for p in (mean, after, cross_fitted_probabilities(mean, labels), each)]
    return (
        f"ECE {ece[0]:.4f}; one temperature {ece[1]:.4f} (two-fold {ece[2]:.4f}); "
        f"a temperature per member, then one: two-fold {ece[3]:.4f}"
    )


def summary_line(members: list[np.ndarray], labels: np.ndarray) -> str:
    """Accuracy, macro-F1, log-loss and ECE of the members' mean; log-loss and ECE also after one
    temperature fitted on the other half of the faces (two-fold, as ``fer calibrate`` reports)."""
    mean = np.mean(members, axis=0)
    held = cross_fitted_probabilities(mean, labels)
    classes = range(mean.shape[1])
    return (
        f"accuracy {(mean.argmax(1) == labels).mean():.4f}  "
        f"macro-F1 {f1_score(labels, mean.argmax(1), average='macro'):.4f}  "
        f"log-loss {log_loss(labels, mean, labels=classes):.4f} / {log_loss(labels, held, labels=classes):.4f}  "
        f"ECE {expected_calibration_error(labels, mean):.4f} / {expected_calibration_error(labels, held):.4f}"
    )


def swapped(first: tuple[str, ...], candidates: list[str], pairs: list[str]) -> tuple[list[str], str]:
    """The baseline's members with the swaps ``pairs`` ("I=J": member I out, candidate J in) made,
    and a label naming them; a clear error for an index out of range or a member swapped twice."""
    combo, label = list(first), []
    for pair in pairs:
        try:
            i, j = (int(x) for x in pair.split("="))
            old, new = first[i], candidates[j]
        except (ValueError, IndexError):
            raise SystemExit(
                f"--replace {pair}: expected I=J with I a baseline member (0-{len(first) - 1}) "
                f"and J a candidate (0-{len(candidates) - 1})"
            ) from None
        if old not in combo:
            raise SystemExit(f"--replace {pair}: baseline member {i} is already replaced")
        combo[combo.index(old)] = new
        label.append(f"{new} in place of {old}")
    return combo, "; ".join(label)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--min-size", type=int, default=2)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument(
        "--tta",
        default="none",
        choices=TTA_MODES,
        help="test-time augmentation of every member (each at its own input size: an ensemble's member "
        "sees exactly what it sees inside the ensemble)",
    )
    parser.add_argument(
        "--baseline-tta",
        default=None,
        choices=TTA_MODES,
        help="TTA of the first checkpoint's members only (default: --tta), e.g. one member with ten crops "
        "against the shipped ensemble as it is used, without TTA",
    )
    parser.add_argument("--cache", type=Path, default=None, help="keep each checkpoint's probabilities here (.npz)")
    parser.add_argument(
        "--split-check",
        type=int,
        default=0,
        metavar="N",
        help="N random halvings: the best combination on one half, scored on the other, against every candidate",
    )
    parser.add_argument(
        "--calibration",
        action="store_true",
        help="ECE of the baseline and of the others alone: one temperature, or one per member first",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=0,
        metavar="N",
        help="fixed combinations against the first ensemble file's members, with paired 95%% intervals",
    )
    parser.add_argument(
        "--replace",
        action="append",
        default=[],
        metavar="I=J",
        help="one swap fixed in advance: baseline member I out, candidate J in (repeatable); "
        "prints its accuracy, log-loss and ECE beside the baseline's, with a paired interval",
    )
    args = parser.parse_args()
    faces = load_dataset(args.data, progress=False).split(args.split)
    faces_hash = hashlib.sha256(faces.images.tobytes() + faces.labels.tobytes()).hexdigest()[:12]
    probs: dict[str, np.ndarray] = {}
    for i, path in enumerate(args.checkpoints):
        tta = args.baseline_tta if i == 0 and args.baseline_tta else args.tta
        # keyed by the checkpoint's bytes and the faces, so a rebuilt model or other data is never
        # answered from an old entry of the same name
        key = f"{file_digest(path)[:12]}-{faces_hash}" + ("" if tta == "none" else f"-{tta}")
        stored = args.cache / f"{path.parent.name}-{path.stem}-{key}.npz" if args.cache else None
        if stored is not None and stored.is_file():
            probs.update(dict(np.load(stored)))
            continue
        found = member_probabilities(path, faces, tta)
        if stored is not None:
            stored.parent.mkdir(parents=True, exist_ok=True)
            np.savez(stored, **found)
        probs.update(found)
    first = tuple(n for n in probs if n.startswith(f"{args.checkpoints[0].stem}["))
    candidates = [n for n in probs if n not in first]
    for name, p in probs.items():
        role = f"baseline member {first.index(name)}" if name in first else f"candidate {candidates.index(name)}"
        print(f"{role}: {name}: accuracy {(p.argmax(1) == faces.labels).mean():.4f}")
    rows = []
    names = list(probs)
    hits = []  # per combination, which faces it gets right (for --split-check)
    for k in range(args.min_size, len(names) + 1):
        for combo in itertools.combinations(names, k):
            mean = np.mean([probs[n] for n in combo], axis=0)
            predicted = mean.argmax(1)
            hits.append(predicted == faces.labels)
            rows.append(
                (
                    hits[-1].mean(),
                    f1_score(faces.labels, predicted, average="macro"),
                    log_loss(faces.labels, mean, labels=range(mean.shape[1])),
                    combo,
                )
            )
    # the baseline: the first checkpoint's own members, when it is an ensemble file
    combos = [r[3] for r in rows]
    baseline = combos.index(first) if first in combos else len(combos) - 1
    if args.split_check:
        chosen, every, gain = split_check(np.stack(hits), args.split_check, baseline=baseline)
        print(
            f"split check ({args.split_check} halvings): the best combination on one half scores "
            f"{chosen.mean():.4f} ± {chosen.std():.4f} on the other; all {len(names)} candidates: "
            f"{every.mean():.4f} ± {every.std():.4f}"
        )
        print(
            f"paired gain over {' + '.join(combos[baseline]) if first in combos else 'every candidate'} "
            f"on the unseen half: {gain.mean():+.4f} ± {gain.std():.4f}, better in {(gain > 0).mean():.0%} "
            "of the halvings"
        )
    if args.bootstrap and first in combos:
        others = [n for n in names if n not in first]
        fixed = {"baseline + all others": names, "the others alone": others}
        fixed.update({f"baseline + {n}": [*first, n] for n in others})
        # replacing members instead of adding them: the baseline's least accurate member(s) out
        weakest = sorted(first, key=lambda n: (probs[n].argmax(1) == faces.labels).mean())
        fixed.update({f"{n} in place of {weakest[0]}": [m for m in first if m != weakest[0]] + [n] for n in others})
        if 1 < len(others) < len(first):
            out = weakest[: len(others)]
            fixed[f"all others in place of {' + '.join(out)}"] = [m for m in first if m not in out] + others
        print(f"\nagainst {' + '.join(first)} ({hits[baseline].mean():.4f}), paired bootstrap x {args.bootstrap}:")
        for label, combo in fixed.items():
            right = np.mean([probs[n] for n in combo], axis=0).argmax(1) == faces.labels
            diff = right.astype(float) - hits[baseline]
            low, high = paired_interval(diff, args.bootstrap)
            print(f"{right.mean():.4f}  {diff.mean():+.4f}  95% [{low:+.4f}, {high:+.4f}]  {label}")
    if args.replace:
        if not first:
            raise SystemExit("--replace needs an ensemble file as the first checkpoint (its members are the baseline)")
        combo, label = swapped(first, candidates, args.replace)
        right = [np.mean([probs[n] for n in c], axis=0).argmax(1) == faces.labels for c in (combo, first)]
        diff = right[0].astype(float) - right[1]
        resamplings = args.bootstrap or 2000
        low, high = paired_interval(diff, resamplings)
        print(f"\nthe swap fixed in advance: {label}")
        print("(log-loss and ECE: as they are / after one temperature, two-fold)")
        print(f"baseline: {summary_line([probs[n] for n in first], faces.labels)}")
        print(f"swap:     {summary_line([probs[n] for n in combo], faces.labels)}")
        print(
            f"paired difference: {diff.mean():+.4f} ({int(diff.sum()):+d} face{'' if abs(diff.sum()) == 1 else 's'}), "
            f"95% [{low:+.4f}, {high:+.4f}] ({resamplings} resamplings)"
        )
    if args.calibration and first in combos:
        print("\ncalibration (15 bins):")
        for label, combo in (("baseline", first), ("the others alone", [n for n in names if n not in first])):
            if combo:
                print(f"{label}: {calibration_line([probs[n] for n in combo], faces.labels)}")
    rows.sort(key=lambda r: -r[0])
    print(
        f"\n{len(rows)} combinations on {args.split} ({len(faces)} faces, TTA {args.tta}"
        + (f", the first checkpoint's {args.baseline_tta}" if args.baseline_tta else "")
        + "), best first:"
    )
    for accuracy, macro_f1, loss, combo in rows[: args.top]:
        print(f"{accuracy:.4f}  macro-F1 {macro_f1:.4f}  log-loss {loss:.4f}  {' + '.join(combo)}")


if __name__ == "__main__":
    main()
