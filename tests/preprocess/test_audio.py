"""Audio preprocessing: PCM scaling, downmix, streaming resample (soxr), windowing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.preprocess.audio import Resampler, Windower, downmix, to_float32


def _sine(freq: float, rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


class TestDownmix:
    """Integer PCM becomes float in [-1, 1]; channels are averaged."""

    def test_int16_full_scale_maps_to_minus_one_and_just_below_one(self) -> None:
        pcm = np.array([-32768, 0, 32767], dtype=np.int16)
        assert to_float32(pcm).tolist() == [-1.0, 0.0, 32767 / 32768]

    def test_stereo_is_the_mean_of_the_channels(self) -> None:
        block = np.array([[1.0, 0.0], [0.5, -0.5], [-1.0, -1.0]], dtype=np.float32)
        assert downmix(block).tolist() == [0.5, 0.0, -1.0]

    def test_mono_column_and_flat_mono_pass_through(self) -> None:
        flat = np.linspace(-1, 1, 7, dtype=np.float32)
        assert np.array_equal(downmix(flat), flat)
        assert np.array_equal(downmix(flat[:, None]), flat)
        assert downmix(flat[:, None]).flags.c_contiguous

    def test_three_dimensional_input_is_refused(self) -> None:
        with pytest.raises(ValueError, match="frames, channels"):
            downmix(np.zeros((2, 2, 2), dtype=np.float32))


class TestResampler:
    """44.1 kHz → 16 kHz keeps frequencies, length and is the same streamed or at once."""

    def test_a_1khz_sine_stays_at_1khz(self) -> None:
        out = Resampler(44100, 16000).process(_sine(1000.0, 44100, 2.0))
        # 2 s at 16 kHz: FFT bins are 0.5 Hz apart.
        assert _peak_hz(out, 16000) == pytest.approx(1000.0, abs=0.5)

    def test_length_follows_the_rate_ratio(self) -> None:
        resampler = Resampler(44100, 16000)
        x = _sine(1000.0, 44100, 3.0)
        n = len(resampler.process(x)) + len(resampler.flush())
        assert n == pytest.approx(len(x) * 16000 / 44100, abs=1)

    def test_streaming_in_odd_chunks_equals_one_shot(self) -> None:
        x = np.random.default_rng(1).uniform(-0.5, 0.5, 44100 * 2).astype(np.float32)
        whole = Resampler(44100, 16000)
        one_shot = np.concatenate([whole.process(x), whole.flush()])
        streamed = Resampler(44100, 16000)
        parts, i = [], 0
        for size in [1, 7, 441, 4410, 999, 13, 22050] * 20:
            parts.append(streamed.process(x[i : i + size]))
            i += size
            if i >= len(x):
                break
        parts.append(streamed.process(x[i:]))
        parts.append(streamed.flush())
        chunked = np.concatenate(parts)
        assert len(chunked) == len(one_shot)
        assert np.max(np.abs(chunked - one_shot)) < 1e-5

    def test_output_is_time_aligned_with_the_input(self) -> None:
        """No filter delay to trim: a click at 1.0 s comes out at 1.0 s."""
        x = np.zeros(44100 * 2, dtype=np.float32)
        x[44100] = 1.0
        resampler = Resampler(44100, 16000)
        out = np.concatenate([resampler.process(x), resampler.flush()])
        assert int(np.argmax(np.abs(out))) == pytest.approx(16000, abs=1)

    def test_equal_rates_pass_through(self) -> None:
        x = _sine(440.0, 16000, 0.5)
        resampler = Resampler(16000, 16000)
        assert np.array_equal(resampler.process(x), x)
        assert len(resampler.flush()) == 0


class TestWindower:
    """Windows of N every hop from any chunking equal slicing the whole signal."""

    @settings(max_examples=60, deadline=None)
    @given(
        total=st.integers(0, 60000),
        cuts=st.lists(st.integers(1, 9000), min_size=1, max_size=40),
        seed=st.integers(0, 2**32 - 1),
    )
    def test_yamnet_windows_from_odd_chunks_equal_slicing(
        self, total: int, cuts: list[int], seed: int
    ) -> None:
        size, hop = 15600, 7680
        x = np.random.default_rng(seed).standard_normal(total).astype(np.float32)
        windower = Windower(size, hop)
        got: list[tuple[int, np.ndarray]] = []
        i = 0
        while i < total:
            for cut in cuts:
                windower.push(x[i : i + cut])
                i += cut
                while (item := windower.pop()) is not None:
                    got.append(item)
        want = [(s, x[s : s + size]) for s in range(0, total - size + 1, hop)]
        assert [s for s, _ in got] == [s for s, _ in want]
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, want, strict=True))

    @settings(max_examples=60, deadline=None)
    @given(size=st.integers(1, 50), hop=st.integers(1, 80), cuts=st.lists(st.integers(0, 90)))
    def test_any_size_and_hop_including_hop_larger_than_size(
        self, size: int, hop: int, cuts: list[int]
    ) -> None:
        x = np.arange(sum(cuts), dtype=np.float32)
        windower = Windower(size, hop)
        got, i = [], 0
        for cut in cuts:
            windower.push(x[i : i + cut])
            i += cut
            while (item := windower.pop()) is not None:
                got.append(item)
        want = list(range(0, len(x) - size + 1, hop))
        assert [s for s, _ in got] == want
        assert all(np.array_equal(w, x[s : s + size]) for s, w in got)

    def test_skip_discards_the_oldest_pending_windows(self) -> None:
        windower = Windower(4, 2)
        windower.push(np.arange(12, dtype=np.float32))  # windows start at 0, 2, 4, 6, 8
        assert windower.pending == 5
        assert windower.skip(3) == 3
        item = windower.pop()
        assert item is not None
        assert item[0] == 6
        assert item[1].tolist() == [6, 7, 8, 9]
        assert windower.skip(10) == 1  # only what is pending
        assert windower.pending == 0

    def test_windows_are_copies_that_later_pushes_do_not_change(self) -> None:
        windower = Windower(3, 3)
        windower.push(np.ones(3, dtype=np.float32))
        item = windower.pop()
        assert item is not None
        windower.push(np.zeros(100, dtype=np.float32))
        assert item[1].tolist() == [1, 1, 1]

    def test_reset_restarts_the_stream_index(self) -> None:
        windower = Windower(2, 1)
        windower.push(np.arange(5, dtype=np.float32))
        windower.reset()
        assert windower.pending == 0
        windower.push(np.arange(2, dtype=np.float32))
        assert windower.pop() is not None
