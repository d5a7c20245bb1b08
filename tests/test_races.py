"""Sessions started together write the same rows at once: on a real PostgreSQL, 8 processes
publish the saved view (one experiment tag, ``tracking.Session.publish_view``) at the same
moment, several rounds. Before the retry, a loser of the insert race failed its session with
"duplicate key value violates unique constraint experiment_tag_pk" after its report was written
(seen in tests/test_server.py's eight sessions)."""
import multiprocessing

import pytest

pytestmark = pytest.mark.integration
mlflow = pytest.importorskip("mlflow")
PROCESSES, ROUNDS = 8, 4


def _publish(uri: str, barrier, index: int) -> list[str]:
    """Start a session, then publish its view at the barrier, ``ROUNDS`` times: the errors, one
    per round that failed (a racer that fails a round still meets the others at the next)."""
    import tracking
    store = tracking.connect(uri)
    session = tracking.Session.start(store, name=f"racer-{index}", params={}, tags={})
    errors = []
    for _ in range(ROUNDS):
        barrier.wait(timeout=120)
        try:
            session.publish_view()
        except Exception as exc:          # the answer names it; the test shows it
            errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
    session.finish("FINISHED")
    return errors


def test_sessions_publishing_the_view_at_one_moment_all_succeed(pg_cluster):
    database = "view_race"
    pg_cluster.start(database)
    uri = pg_cluster.uri(database)
    import tracking
    tracking.connect(uri)                 # the schema made once, before the racers
    # forked from a server process that imported MLflow once but never connected: no connection
    # inherited from this process, and not eight imports of MLflow (spawned, they took 22 CPU-s)
    fresh = multiprocessing.get_context("forkserver")
    fresh.set_forkserver_preload(["tracking", "mlflow.store.db.utils", "mlflow.store.tracking.sqlalchemy_store"])
    with fresh.Manager() as manager, fresh.Pool(PROCESSES) as pool:
        barrier = manager.Barrier(PROCESSES)
        answers = pool.starmap(_publish, [(uri, barrier, i) for i in range(PROCESSES)])
    assert answers == [[]] * PROCESSES, answers
    store = tracking.connect(uri, create=False)
    [tag] = [v for k, v in store.client.get_experiment(store.experiment_id).tags.items()
             if k.startswith("mlflow.sharedViewState.")]
    assert "backprop-bench: racer-" in tag
