import io

from rich.console import Console

from magkit.cli._render import LINE_INTERVAL_S, LINE_MIN_S, LineProgress


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def lines(buf):
    return [line for line in buf.getvalue().splitlines() if line]


def test_log_lines_count_steps_and_estimate_the_time_left():
    buf, clock = io.StringIO(), Clock()
    prog = LineProgress(console=Console(file=buf, width=200), clock=clock)
    with prog:
        task = prog.add_task("graphmnl", total=4, info="")
        clock.t = 30.0
        prog.update(task, completed=1, info="seed 0: ok")
        clock.t = 35.0
        prog.update(task, completed=2)  # within LINE_MIN_S of the previous line: folded into the next one
        clock.t = 90.0
        prog.update(task, completed=3)
        clock.t = 91.0
        prog.update(task, completed=4)  # the last step is always written
    out = lines(buf)
    assert out == ["graphmnl 1/4 seed 0: ok elapsed 0:00:30 ETA 0:01:30",
                   "graphmnl 3/4 seed 0: ok elapsed 0:01:30 ETA 0:00:30",
                   "graphmnl 4/4 seed 0: ok elapsed 0:01:31"]


def test_a_quiet_stretch_still_writes_a_line_and_resumed_steps_do_not_count_as_measured():
    buf, clock = io.StringIO(), Clock()
    prog = LineProgress(console=Console(file=buf, width=200), clock=clock)
    task = prog.add_task("sweep", total=None, info="")
    prog.update(task, total=10, completed=6, info="6 cells already done")
    clock.t = LINE_INTERVAL_S + 1
    prog.update(task, completed=6.5)  # no whole step, but a minute without a line
    clock.t = LINE_INTERVAL_S + LINE_MIN_S + 2
    prog.update(task, completed=7)
    out = lines(buf)
    assert out[0] == "sweep 6/10 6 cells already done elapsed 0:00:00"
    assert out[1] == "sweep 6.5/10 6 cells already done elapsed 0:01:01 ETA 0:07:07"
    # 1 step measured in 72 s since the task started (the 6 recorded cells are not): 3 left -> 3:36
    assert out[2] == "sweep 7/10 6 cells already done elapsed 0:01:12 ETA 0:03:36"


def test_percent_form_and_reset():
    buf, clock = io.StringIO(), Clock()
    prog = LineProgress(count=False, console=Console(file=buf, width=200), clock=clock)
    task = prog.add_task("demo", total=8, info="")
    clock.t = 20.0
    prog.update(task, completed=2)
    prog.reset(task, total=5, description="search [x]")
    clock.t = 40.0
    prog.update(task, completed=1, info="trial 1")
    assert lines(buf) == ["demo 25% elapsed 0:00:20 ETA 0:01:00", "search [x] 20% trial 1 elapsed 0:00:20 ETA 0:01:20"]


def test_large_and_fractional_counts_are_written_in_full():
    buf, clock = io.StringIO(), Clock()
    prog = LineProgress(console=Console(file=buf, width=200), clock=clock)
    task = prog.add_task("encoding", total=2_000_000, info="")
    prog.update(task, completed=1_500_000)
    other = prog.add_task("gcn", total=3, info="")
    prog.update(other, completed=1 + 1 / 3)
    assert lines(buf) == ["encoding 1500000/2000000 elapsed 0:00:00", "gcn 1.33/3 elapsed 0:00:00"]


def test_reset_without_a_total_keeps_the_tasks_as_the_bar_does():
    buf, clock = io.StringIO(), Clock()
    prog = LineProgress(console=Console(file=buf, width=200), clock=clock)
    task = prog.add_task("search", total=8, info="")
    prog.reset(task, description="refit")
    prog.update(task, completed=2)
    assert lines(buf) == ["refit 2/8 elapsed 0:00:00"]
