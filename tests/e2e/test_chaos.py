"""Issue 6's chaos run, in the suite: 60 files, 2 workers, workers and models killed,
and (issue 10) S3 answering 503 SlowDown / 500 InternalError for 3 s, twice."""

import pytest

from bench import chaos

pytestmark = pytest.mark.slow


@pytest.mark.timeout(900)
def test_every_file_scored_exactly_once_under_faults():
    report = chaos.run(files=60, worker_kills=5, model_kills=2, sigterms=2, seed=1, s3_faults=2)
    print(report.table())
    assert report.faults.get("S3 503 SlowDown for 3 s") == 1
    assert report.faults.get("S3 500 InternalError for 3 s") == 1
    assert report.s3_requests_failed > 0, "no S3 request went through a fault window"
    assert report.faults.get("worker kill -9") == 5
    assert report.faults.get("worker SIGTERM (scale-in)") == 2
    assert report.faults.get("model process kill -9") == 2, "no model was running to kill"
    assert report.steps_run_again > 0, "the faults hit no work in progress"
    assert report.correct == 60, (report.wrong, report.errors, report.lost)
    assert report.duplicates == [] and report.lost == [] and report.errors == []
    assert report.orphans == [] and report.leftovers == []
