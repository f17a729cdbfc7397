import time

from longrl.train.timing import PhaseTimer


def test_phase_timer_reports_wall_and_cpu_seconds_per_phase():
    timer = PhaseTimer()
    with timer("busy"):
        end = time.process_time() + 0.05
        while time.process_time() < end:
            pass
    with timer("idle"):
        time.sleep(0.05)
    metrics = timer.metrics()
    assert metrics["time/busy_cpu_s"] >= 0.05
    assert metrics["time/idle_cpu_s"] < metrics["time/idle_s"]
    assert metrics["time/step_s"] == metrics["time/busy_s"] + metrics["time/idle_s"]
    assert metrics["time/step_cpu_s"] == metrics["time/busy_cpu_s"] + metrics["time/idle_cpu_s"]
