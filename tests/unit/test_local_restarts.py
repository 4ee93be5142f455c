"""Issue 26: the local stack starts a worker that dies again, as a Deployment would,
after a growing pause, and gives up on one that keeps dying or refuses its
configuration (the stack then stops with its log, as for any part)."""

from workers.localstack.restarts import CONFIG_ERROR, Restarts


def test_a_worker_that_dies_is_started_again_after_a_growing_pause():
    r = Restarts(limit=4, window=120)
    assert r.died("worker0", -9, now=0.0) == 1
    assert r.ready(0.5) == [] and r.ready(1.0) == ["worker0"] and r.ready(5.0) == []
    assert r.died("worker0", -9, now=10.0) == 2
    assert r.died("worker0", -9, now=20.0) == 4
    assert r.died("worker0", -9, now=30.0) is None  # the 4th within 120 s: a crash loop


def test_deaths_long_ago_do_not_count():
    r = Restarts(limit=4, window=120)
    for t in (0.0, 10.0, 20.0):
        assert r.died("worker0", -9, now=t) is not None
    assert r.died("worker0", -9, now=200.0) == 1  # the others are out of the window


def test_a_worker_refusing_its_configuration_is_not_started_again():
    assert Restarts().died("worker0", CONFIG_ERROR, now=0.0) is None


def test_each_worker_counts_its_own_deaths():
    r = Restarts(limit=2)
    assert r.died("worker0", -9, now=0.0) == 1
    assert r.died("worker1", -9, now=0.0) == 1
    assert sorted(r.ready(1.0)) == ["worker0", "worker1"]
