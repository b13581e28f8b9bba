"""``syncnet score --backend ray``: the same work on Ray actors, each holding loaded engines.

Ray places the actors (on a local instance, or across the cluster at ``--ray-address``); each actor loads the
engines once and scores one video at a time, and a video goes to whichever actor is free. The video paths must be
readable where the actors run (a shared file system on a cluster); the results file is written here, by the driver.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence

from syncnet.batch_workers import MAX_ATTEMPTS, WORKER_DIED, Scored, Settings, error_row, prepare_worker, score_video
from syncnet.errors import BadArgument

log = logging.getLogger(__name__)

# Ray starts its workers at niceness 15, below everything else on the machine; a local instance started here runs
# them at 0, as the local backend's processes run (a cluster's own setting is left alone).
RAY_WORKER_NICENESS = "RAY_worker_niceness"


class Scorer:
    """A Ray actor's state: the engines, loaded once when the actor starts."""

    def __init__(self, settings: Settings, threads: int):
        self.settings = settings
        prepare_worker(settings, threads)

    def score(self, path: str) -> Scored:
        return score_video(path, self.settings)


def run_on_ray(
    paths: Sequence[str], settings: Settings, workers: int | None, threads: int | None, address: str | None
) -> Iterator[Scored]:
    """Score ``paths`` on ``workers`` actors of ``threads`` CPUs each (default: as many 1-CPU actors as CPUs).

    Starts a local Ray instance when Ray is not running in this process and no ``address`` is given (and shuts it
    down at the end); connects to the cluster at ``address`` otherwise.
    """
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        verbose = log.isEnabledFor(logging.INFO)  # the CLI's --verbose: the actors' logs come here too
        try:
            with _environment(RAY_WORKER_NICENESS, "0"):
                ray.init(address=address, include_dashboard=False, log_to_driver=verbose,
                         logging_level=logging.WARNING if verbose else logging.ERROR)
        except ConnectionError as error:
            raise BadArgument(f"cannot connect to the Ray cluster at {address}: {error}") from None
    try:
        threads = threads or 1
        cpus = int(ray.cluster_resources().get("CPU", 1))
        count = min(workers or cpus // threads, max(1, cpus // threads))
        if workers and count < workers:
            log.warning("the Ray cluster has %d CPUs: %d workers of %d threads instead of %d", cpus, count, threads,
                        workers)
        actor = ray.remote(num_cpus=threads, max_restarts=0)(Scorer)
        yield from _score(ray, [actor.remote(settings, threads) for _ in range(max(1, count))], paths, settings,
                          lambda: actor.remote(settings, threads))
    finally:
        if started_here:
            ray.shutdown()


def _score(ray, actors: list, paths: Sequence[str], settings: Settings, new_actor) -> Iterator[Scored]:
    """Hand each free actor the next video; an actor that dies is replaced and its video tried once more."""
    todo = list(reversed(paths))
    idle = list(actors)
    running: dict = {}  # ObjectRef -> (path, actor)
    attempts: dict[str, int] = {}
    try:
        while todo or running:
            while todo and idle:
                actor, path = idle.pop(), todo.pop()
                running[actor.score.remote(path)] = (path, actor)
            ready, _ = ray.wait(list(running), num_returns=1)
            path, actor = running.pop(ready[0])
            try:
                scored = ray.get(ready[0])
            except ray.exceptions.RayActorError:
                ray.kill(actor)
                actor = new_actor()
                attempts[path] = attempts.get(path, 0) + 1
                if attempts[path] < MAX_ATTEMPTS:
                    todo.append(path)
                    scored = None
                else:
                    scored = Scored(path, [error_row(path, WORKER_DIED, settings)])
            idle.append(actor)
            if scored is not None:
                yield scored
    finally:
        for actor in idle + [actor for _, actor in running.values()]:
            ray.kill(actor)


@contextlib.contextmanager
def _environment(name: str, value: str):
    """``name=value`` in the environment while Ray starts its processes (unless the user set it), then as it was."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        del os.environ[name]


def _import_ray():
    try:
        import ray
    except ImportError:
        raise BadArgument("--backend ray needs Ray: pip install 'fcn-syncnet[ray]'") from None
    return ray
