"""LR and momentum schedules against hand-computed values (docs/reference-notes.md#muon, #lr-schedule)."""

from __future__ import annotations

import pytest

from golf_jax.optim.schedule import lr_scale, muon_momentum


def _wall(step: int, elapsed_s: float, warmdown: int = 4000, cap: float = 600.0) -> float:
    return lr_scale(step, elapsed_s, iterations=20000, warmdown_iters=warmdown,
                    max_wallclock_seconds=cap, mode="wallclock")


def test_wallclock_mode():
    # 0.6 s/step -> warmdown 2400 s > remaining 540 s -> 540/2400.
    assert _wall(100, 60.0) == pytest.approx(0.225, abs=1e-12)
    # PR #1318 pace, 91.2 ms/step: at step 5000 (456 s) warmdown = 364.8 s,
    # remaining 144 s -> 144/364.8.
    assert _wall(5000, 456.0) == pytest.approx(0.39473684210526316, abs=1e-12)
    # 0.06 s/step, warmdown 100 -> 6 s < remaining 540 s -> not yet.
    assert _wall(1000, 60.0, warmdown=100) == 1.0
    # Step 0 at 0 s: step time 0, warmdown 0 s < 600 s remaining -> 1.
    assert _wall(0, 0.0) == 1.0
    # At and past the cap: remaining 0 -> 0.
    assert _wall(6582, 600.0) == 0.0
    assert _wall(6600, 650.0) == 0.0
    assert _wall(100, 60.0, warmdown=0) == 1.0  # no warmdown


def test_wallclock_mode_without_cap_uses_iterations():
    # Like the reference: no cap -> iteration warmdown; (20000-17000)/4000.
    assert _wall(17000, 1e6, cap=0.0) == pytest.approx(0.75, abs=1e-12)


def _iters(step: int, iterations: int = 20000, warmdown: int = 4000) -> float:
    return lr_scale(step, 123.0, iterations=iterations, warmdown_iters=warmdown,
                    max_wallclock_seconds=600.0, mode="iterations")


def test_iterations_mode():
    assert _iters(0) == 1.0
    assert _iters(15999) == 1.0
    assert _iters(16000) == 1.0  # 4000/4000
    assert _iters(17000) == pytest.approx(0.75, abs=1e-12)
    assert _iters(19999) == pytest.approx(0.00025, abs=1e-12)
    # Warmdown longer than the run starts below 1: 100/400.
    assert _iters(0, iterations=100, warmdown=400) == pytest.approx(0.25, abs=1e-12)
    assert _iters(50, warmdown=0) == 1.0
    # Reference quirk: step >= iterations is outside the warmdown window -> 1.0.
    assert _iters(20000) == 1.0


def _frac(step: int, elapsed_s: float, cap: float = 600.0, min_lr: float = 0.0) -> float:
    return lr_scale(step, elapsed_s, iterations=1000, warmdown_iters=0,
                    max_wallclock_seconds=cap, mode="wallclock_fraction",
                    warmdown_frac=0.72, min_lr=min_lr)


def test_wallclock_fraction_mode():
    assert _frac(10, 100.0) == 1.0  # frac 1/6 < 0.28
    assert _frac(10, 168.0) == pytest.approx(1.0, abs=1e-12)  # frac 0.28: 0.72/0.72
    assert _frac(10, 300.0) == pytest.approx(0.5 / 0.72, abs=1e-12)  # 0.694444...
    assert _frac(10, 600.0) == 0.0
    # frac 590/600: (1/60)/0.72 = 0.0231 < min_lr 0.1 -> 0.1.
    assert _frac(10, 590.0, min_lr=0.1) == pytest.approx(0.1, abs=1e-12)
    # No cap: frac = step/iterations = 0.64 -> 0.36/0.72 = 0.5.
    assert _frac(640, 1e6, cap=0.0) == pytest.approx(0.5, abs=1e-12)
    zero = lr_scale(10, 590.0, iterations=1000, warmdown_iters=0, max_wallclock_seconds=600.0,
                    mode="wallclock_fraction", warmdown_frac=0.0)
    assert zero == 1.0


def test_bad_mode():
    with pytest.raises(ValueError, match="wallclock"):
        lr_scale(1, 1.0, iterations=10, warmdown_iters=5, max_wallclock_seconds=1.0,
                 mode="cosine")


def test_muon_momentum_warmup():
    assert muon_momentum(0, 0.92, 0.99, 1500) == pytest.approx(0.92, abs=1e-12)
    assert muon_momentum(300, 0.92, 0.99, 1500) == pytest.approx(0.934, abs=1e-12)
    assert muon_momentum(750, 0.92, 0.99, 1500) == pytest.approx(0.955, abs=1e-12)
    assert muon_momentum(1500, 0.92, 0.99, 1500) == pytest.approx(0.99, abs=1e-12)
    assert muon_momentum(6000, 0.92, 0.99, 1500) == pytest.approx(0.99, abs=1e-12)
    assert muon_momentum(0, 0.92, 0.99, 0) == 0.99
