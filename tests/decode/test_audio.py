"""Audio decoders: output checks, sigmoid vs softmax scores, top-k with an allow-list, smoothing."""

from __future__ import annotations

import numpy as np
import pytest

from edged.decode.audio import DECODERS, ScoreSmoother, SoftmaxDecoder, YamnetDecoder, top_k
from edged.errors import ModelError
from edged.infer.base import TensorSpec

LABELS = ("Speech", "Dog", "Music", "Typing")


def _spec(*shape: int, name: str = "scores") -> TensorSpec:
    return TensorSpec(name=name, shape=shape, dtype=np.dtype(np.float32))


class TestCheck:
    """A model whose outputs do not fit is refused with its shapes in the message."""

    @pytest.mark.parametrize("name", sorted(DECODERS))
    @pytest.mark.parametrize("shape", [(1, 4), (4,)])
    def test_one_output_of_label_count_fits(self, name: str, shape: tuple[int, ...]) -> None:
        DECODERS[name](labels=LABELS).check([_spec(*shape)])

    @pytest.mark.parametrize("name", sorted(DECODERS))
    def test_two_outputs_are_refused_with_their_shapes(self, name: str) -> None:
        with pytest.raises(ModelError, match=r"\[\[1, 4\], \[1, 1024\]\]"):
            DECODERS[name](labels=LABELS).check([_spec(1, 4), _spec(1, 1024)])

    @pytest.mark.parametrize("shape", [(2, 4), (1, 1, 4), ()])
    def test_batch_or_rank_mismatch_is_refused(self, shape: tuple[int, ...]) -> None:
        with pytest.raises(ModelError, match="expects an output"):
            YamnetDecoder(LABELS).check([_spec(*shape)])

    def test_label_count_mismatch_is_refused(self) -> None:
        with pytest.raises(ModelError, match="521 classes, but 4 labels"):
            YamnetDecoder(LABELS).check([_spec(1, 521)])

    def test_without_labels_any_class_count_fits(self) -> None:
        YamnetDecoder().check([_spec(1, 521)])

    def test_softmax_needs_two_classes(self) -> None:
        with pytest.raises(ModelError, match="at least 2"):
            SoftmaxDecoder().check([_spec(1, 1)])


class TestScores:
    """Sigmoid scores are kept per class; softmax makes (or keeps) a distribution."""

    def test_yamnet_scores_are_independent_and_clipped(self) -> None:
        out = np.array([[0.9, 0.8, 1.0000001, -1e-7]], dtype=np.float32)
        scores = YamnetDecoder(LABELS).scores([out])
        assert scores.tolist() == pytest.approx([0.9, 0.8, 1.0, 0.0])

    def test_softmax_of_logits_sums_to_one_and_keeps_the_order(self) -> None:
        logits = np.array([[2.0, 1.0, 0.1, 1000.0]], dtype=np.float32)  # 1000 must not overflow
        probs = SoftmaxDecoder(LABELS).scores([logits])
        assert probs.sum() == pytest.approx(1.0)
        assert int(np.argmax(probs)) == 3
        assert np.all(np.isfinite(probs))

    def test_softmax_keeps_an_output_that_already_is_a_distribution(self) -> None:
        probs = np.array([[0.7, 0.2, 0.1, 0.0]], dtype=np.float32)
        assert SoftmaxDecoder(LABELS).scores([probs]).tolist() == pytest.approx(
            [0.7, 0.2, 0.1, 0.0]
        )


class TestTopK:
    """Best first, limited to k, restricted to the allow-list."""

    SCORES = np.array([0.2, 0.9, 0.5, 0.7], dtype=np.float32)

    def test_best_first(self) -> None:
        got = top_k(self.SCORES, LABELS, 3)
        assert [(c.label, c.class_id) for c in got] == [("Dog", 1), ("Typing", 3), ("Music", 2)]
        assert got[0].score == pytest.approx(0.9)

    def test_allow_list_picks_among_allowed_labels_only(self) -> None:
        got = top_k(self.SCORES, LABELS, 5, allow={"Speech", "Music"})
        assert [c.label for c in got] == ["Music", "Speech"]

    def test_k_larger_than_classes_returns_all(self) -> None:
        assert len(top_k(self.SCORES, LABELS, 50)) == 4

    def test_unlabelled_classes_are_named_by_index(self) -> None:
        assert [c.label for c in top_k(self.SCORES, (), 2)] == ["1", "3"]

    def test_same_as_a_full_sort(self) -> None:
        scores = np.random.default_rng(3).random(521).astype(np.float32)
        got = [c.class_id for c in top_k(scores, (), 10)]
        assert got == list(np.argsort(-scores)[:10])


class TestSmoother:
    """Scores are averaged over the last n windows."""

    def test_mean_over_the_last_n_windows(self) -> None:
        smooth = ScoreSmoother(2)
        a, b, c = (np.full(2, v, dtype=np.float32) for v in (0.0, 1.0, 0.5))
        assert smooth(a).tolist() == [0.0, 0.0]
        assert smooth(b).tolist() == [0.5, 0.5]
        assert smooth(c).tolist() == [0.75, 0.75]  # a has left the window
        smooth.reset()
        assert smooth(c).tolist() == [0.5, 0.5]

    def test_one_window_is_no_smoothing(self) -> None:
        x = np.array([0.3, 0.6], dtype=np.float32)
        assert ScoreSmoother(1)(x) is x
