"""scripts/step_stats.py: per-step pixel statistics of a few-step generator, the last step being its real sampler."""

import pytest

from fewstep.errors import FewstepError
from fewstep.metrics.evaluate import balanced_labels
from fewstep.runs import load_run

from helpers import load_script, train_tiny_edm


def _script():
    return load_script("step_stats")


def test_rows_are_the_data_then_each_step_ending_with_the_full_sampler(tmp_path):
    from fewstep.cli.commands import train_run

    teacher = str(train_tiny_edm(tmp_path / "edm"))
    run = train_run("dmd2", {"name": "digits"}, str(tmp_path / "dmd2"), extra_method={"teacher": teacher},
                    overrides=["train.steps=1", "train.batch_size=8", "method.critic_updates=1", "method.gen_steps=3"])
    s = _script()
    rows = s.step_stats(str(run), 40)
    assert len(rows) == 4 and rows[0][0].startswith("training images")
    assert rows[0][1]["black"] > 0.3  # digits' black background, so the images are in [-1, 1], not [0, 1]
    loaded = load_run(run)
    full = loaded.generate(balanced_labels(loaded.info["num_classes"], 40), list(range(40)))
    assert rows[-1][1] == pytest.approx(s.pixel_stats(full))
    assert rows[1][1] != pytest.approx(rows[-1][1])  # each row stops the sampler at a different step


def test_a_teacher_run_is_refused_in_one_line(tmp_path):
    teacher = train_tiny_edm(tmp_path / "edm")
    with pytest.raises(FewstepError, match="not an image run with one generator; pass a dmd2 run"):
        _script().step_stats(str(teacher), 8)


def test_a_sample_count_below_one_is_refused_in_one_line():
    with pytest.raises(SystemExit, match="N: a whole number of samples >= 1"):
        _script().main(["runs/anything", "0"])
