from napari_unet.core.progress import throttled


def test_throttle_keeps_first_latest_and_last():
    clock_values = iter([0.0, 0.1, 0.2, 0.3, 0.35, 0.4, 0.9, 0.95])
    out = list(throttled(range(8), interval=0.25, clock=lambda: next(clock_values)))
    # 0 at t=0; 3 at t=0.3; 6 at t=0.9; then the pending last item 7
    assert out == [0, 3, 6, 7]


def test_throttle_always_passes_final_items():
    clock_values = iter([0.0, 0.01, 0.02])
    out = list(throttled([1, 2, 3], interval=10, is_final=lambda v: v == 2, clock=lambda: next(clock_values)))
    assert out == [1, 2, 3]
