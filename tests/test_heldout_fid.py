"""scripts/heldout_fid.py: FID against the test split, on the same seed blocks as fewstep eval."""

import pytest

from fewstep.metrics.distances import frechet_distance
from fewstep.metrics.evaluate import balanced_labels, decoder_for, generate
from fewstep.metrics.evaluator import get_evaluator
from fewstep.runs import load_run

from helpers import load_script, train_tiny_edm


def test_train_fids_are_fewstep_evals_blocks_and_test_fids_read_the_held_out_split(tmp_path):
    from fewstep.api import evaluate

    teacher = str(train_tiny_edm(tmp_path / "edm"))
    got = load_script("heldout_fid").heldout_fids(teacher, 150, 2, steps=3)
    run = load_run(teacher)
    want = evaluate(run, 150, 2, steps=3)["blocks"]["fid"]
    assert got["train"] == pytest.approx(want, rel=1e-6)  # the same seeds, decoding and features as fewstep eval
    ds, decoder = decoder_for(run)
    ev = get_evaluator(ds.name)
    samples, _ = generate(run, balanced_labels(10, 150), list(range(1_000_000, 1_000_150)), steps=3)
    feats, _ = ev.features_and_logits(decoder.decode(samples))
    assert got["test"][1] == pytest.approx(frechet_distance(feats, ev.test_features), rel=1e-6)
    assert got["test"] != pytest.approx(got["train"])


def test_bad_arguments_get_the_usage_line():
    with pytest.raises(SystemExit, match="python scripts/heldout_fid.py N REPEATS"):
        load_script("heldout_fid").main(["4000", "runs/x"])
    with pytest.raises(SystemExit, match="RUN@STEPS with STEPS a whole number"):
        load_script("heldout_fid").main(["4000", "1", "runs/x@many"])
