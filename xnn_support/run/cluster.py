"""Notebooks on a Dask cluster: ``xnn reproduce --cluster SPEC`` and ``xnn sweep ... --cluster SPEC``.

The field's engine does the scheduling (Dask distributed; dask-jobqueue for SLURM/PBS); this module
adds what a notebook grid needs on top of it:

* **SPEC** (:func:`parse_cluster`): ``local:N`` (a :class:`distributed.LocalCluster` of N worker
  processes, one thread each), ``tcp://host:8786`` (a running scheduler), ``slurm:key=value,...`` or
  ``pbs:key=value,...`` (dask-jobqueue; ``jobs``, ``cores``, ``memory``, ``processes``, ``queue``,
  ``walltime``, ``account``, ``resources`` (a worker resource such as ``gpu=1``), any other key
  goes to the cluster class). :func:`job_script` shows the batch script without submitting it.
* **One notebook per worker at a time**: tasks run :func:`run_task` on a worker, which executes the
  notebook with the same :func:`~.runner.run_notebook` as ``xnn run`` (every cell must run, declared
  metrics recorded) into a private temporary folder and **returns** the executed notebook, ledger and
  marker as bytes; the client writes them into OUT with :func:`write_back` (atomic writes, the marker
  last), so workers need no shared file system. ``in_place=True`` lets a worker write into OUT itself
  when OUT is on a shared file system.
* **Faults**: a worker killed mid-notebook makes the scheduler run that notebook elsewhere, up to
  ``retries`` times (``distributed.scheduler.allowed-failures``), then the task fails with the reason;
  a client killed mid-grid leaves every finished point complete in OUT (written as it arrives) and
  ``--resume`` re-runs only the others (:func:`~.integrity.output_problem` decides). Two workers
  training the same model key wait for each other (:func:`xnn_support.core.cache.key_lock`).
* **Progress**: a line per task when it starts (with its worker), is re-run elsewhere, and ends (with
  its duration), and the dashboard address at the start.
* **Resources**: tasks may carry Dask resource annotations (``--resources gpu=1``); a grid that asks for
  a resource no worker has is refused before anything is submitted (it would wait forever).
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import dask
from distributed import Client, LocalCluster, get_worker

from ..core.ledger import atomic_write_bytes
from .catalog import ParameterError, find_notebook
from .integrity import paths
from .runner import RunResult, run_notebook

__all__ = ["ClusterSpec", "parse_cluster", "parse_resources", "connect", "job_script", "Task", "run_task",
           "write_back", "run_on_cluster"]

_TOPIC = "xnn-task"
_JOBQUEUE = {"slurm": "SLURMCluster", "pbs": "PBSCluster"}
_HELP = "pass local:N (e.g. local:2), a scheduler address tcp://host:8786, or slurm:cores=4,memory=16GB,jobs=2"


@dataclass(frozen=True)
class ClusterSpec:
    """A parsed ``--cluster`` value."""
    kind: str                                   # "local" | "address" | "slurm" | "pbs"
    workers: int = 0                            # local: worker processes; jobqueue: jobs
    address: str = ""
    options: Dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.kind == "local":
            return f"local:{self.workers}"
        if self.kind == "address":
            return self.address
        return f"{self.kind}:" + ",".join(f"{k}={v}" for k, v in self.options.items())


def parse_cluster(spec: str) -> ClusterSpec:
    """``local:N`` | ``local`` (one worker per CPU) | ``tcp://host:port`` | ``slurm:k=v,...`` | ``pbs:k=v,...``."""
    if not isinstance(spec, str) or not spec.strip():
        raise ParameterError(f"--cluster: got {spec!r}; {_HELP}")
    spec = spec.strip()
    if spec.startswith(("tcp://", "tls://", "ucx://", "inproc://")):
        return ClusterSpec("address", address=spec)
    kind, _, rest = spec.partition(":")
    if kind == "local":
        n = rest or str(os.cpu_count() or 1)
        if not n.isdigit() or int(n) < 1:
            raise ParameterError(f"--cluster {spec!r}: the number of workers must be an integer >= 1; {_HELP}")
        return ClusterSpec("local", workers=int(n))
    if kind in _JOBQUEUE:
        opts: Dict[str, str] = {}
        for item in filter(None, rest.split(",")):
            k, eq, v = item.partition("=")
            if not eq or not k:
                raise ParameterError(f"--cluster {spec!r}: {item!r} is not key=value; e.g. {kind}:cores=4,memory=16GB")
            opts[k.strip()] = v.strip()
        jobs = opts.pop("jobs", "1")
        if not jobs.isdigit() or int(jobs) < 1:
            raise ParameterError(f"--cluster {spec!r}: jobs must be an integer >= 1, got {jobs!r}")
        return ClusterSpec(kind, workers=int(jobs), options=opts)
    raise ParameterError(f"--cluster: unknown kind {kind!r} in {spec!r}; {_HELP}")


def parse_resources(text: Optional[str]) -> Dict[str, float]:
    """``"gpu=1,mem=8e9"`` -> ``{"gpu": 1.0, "mem": 8e9}`` (a Dask resource annotation); None -> {}."""
    out: Dict[str, float] = {}
    for item in filter(None, (text or "").split(",")):
        k, eq, v = item.partition("=")
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise ParameterError(f"--resources: {item!r} is not name=number; e.g. --resources gpu=1") from None
        if not eq or not k.strip() or out[k.strip()] <= 0:
            raise ParameterError(f"--resources: {item!r} is not name=positive number; e.g. --resources gpu=1")
    return out


def _jobqueue_cluster(spec: ClusterSpec):
    """The dask-jobqueue cluster object of a ``slurm:``/``pbs:`` spec (no job is submitted yet)."""
    import dask_jobqueue  # a cluster-only dependency: imported when a batch cluster is asked for

    opts: Dict[str, Any] = dict(spec.options)
    kw: Dict[str, Any] = {"cores": int(opts.pop("cores", 1)), "memory": opts.pop("memory", "4GB"),
                          "processes": int(opts.pop("processes", 1)), "python": sys.executable}
    for k in ("queue", "walltime", "account"):
        if k in opts:
            kw[k] = opts.pop(k)
    res = opts.pop("resources", None)
    if res:
        kw["worker_extra_args"] = ["--resources", res.replace(";", ",")]
    kw.update(opts)
    return getattr(dask_jobqueue, _JOBQUEUE[spec.kind])(**kw)


def job_script(spec) -> str:
    """The batch script a ``slurm:``/``pbs:`` spec would submit (for checking it; nothing is submitted)."""
    spec = parse_cluster(spec) if isinstance(spec, str) else spec
    if spec.kind not in _JOBQUEUE:
        raise ParameterError(f"job_script: {spec} is not a batch-queue cluster; pass slurm:... or pbs:...")
    cluster = _jobqueue_cluster(spec)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


#: dask's own monitors, off or slowed: the statistical profiler (a stack sample every 10 ms), the GIL monitor (every
#: 1 ms) and the 20 ms event-loop tick cost a 2-worker local cluster ~12% of one core in all while two notebooks
#: ran (measured 2026-12-02: 4.0 + 3.9 % per worker, 4.4 % client + scheduler), ~3% with these settings; the
#: dashboard stays on.
QUIET_MONITORS = {"distributed.worker.profile.enabled": False,
                  "distributed.admin.system-monitor.gil.enabled": False,
                  "distributed.admin.tick.interval": "1000ms"}


@contextlib.contextmanager
def connect(spec, *, retries: int = 2, worker_resources: Optional[Dict[str, float]] = None,
            log: Callable[[str], None] = print) -> Iterator[Client]:
    """A :class:`distributed.Client` on the cluster of ``spec`` (closed afterwards, with the cluster if we
    started it). ``retries``: how many worker deaths a task survives before it fails. ``worker_resources``:
    what each ``local`` worker offers (e.g. ``{"gpu": 1}``)."""
    spec = parse_cluster(spec) if isinstance(spec, str) else spec
    with contextlib.ExitStack() as stack:
        stack.enter_context(dask.config.set({"distributed.scheduler.allowed-failures": int(retries),
                                             "distributed.worker.daemon": False, **QUIET_MONITORS}))
        if spec.kind == "local":
            threads = str(max(1, (os.cpu_count() or 1) // spec.workers))
            cluster = stack.enter_context(LocalCluster(
                n_workers=spec.workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                resources=worker_resources or None, silence_logs=logging.ERROR,
                env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}))
            client = stack.enter_context(Client(cluster))
        elif spec.kind == "address":
            client = stack.enter_context(Client(spec.address, timeout="30s"))
        else:
            cluster = stack.enter_context(contextlib.closing(_jobqueue_cluster(spec)))
            cluster.scale(jobs=spec.workers)
            client = stack.enter_context(Client(cluster))
        log(f"cluster {spec}: dashboard {client.dashboard_link}")
        yield client


@dataclass
class Task:
    """One notebook run of a grid: ``info`` with ``params`` into ``out_dir`` (a folder of OUT)."""
    label: str
    info: Any                                   # NotebookInfo on the client
    params: Dict[str, Any]
    out_dir: Path
    resources: Dict[str, float] = field(default_factory=dict)


def _announce(event: str) -> None:
    """Tell the client (through the scheduler's event log, topic ``xnn``) that this task reached ``event``."""
    try:
        w = get_worker()
    except ValueError:  # not on a worker
        return
    w.log_event(_TOPIC, {"key": str(w.get_current_task()), "worker": w.address, "event": event})


def _worker_address() -> str:
    try:
        return get_worker().address
    except ValueError:  # run outside a worker (tests, the sequential path)
        return f"local:{os.getpid()}"


def run_task(name: str, nb_bytes: bytes, params: Dict[str, Any], *, out_dir: Optional[str] = None,
             timeout: Optional[int] = None) -> Dict[str, Any]:
    """Run on a worker: execute notebook ``name`` (given as bytes) with ``params``; return status, timing,
    worker and, unless ``out_dir`` (a shared folder written in place) is given, the output files as bytes."""
    t0 = time.time()
    _announce("start")
    with tempfile.TemporaryDirectory(prefix="xnn-task-") as tmp:
        nbdir = Path(tmp, "notebooks")
        nbdir.mkdir()
        (nbdir / f"{name}.ipynb").write_bytes(nb_bytes)
        info = find_notebook(name, nbdir)
        target = Path(out_dir) if out_dir else Path(tmp, "out")
        r = run_notebook(info, params, target, timeout=timeout)
        files = {} if out_dir else {p.name: p.read_bytes() for p in sorted(target.iterdir())
                                    if p.is_file() and p.name != ".xnn.lock"}
    return {"name": name, "status": r.status, "duration": r.duration, "error": r.error, "params": r.params,
            "files": files, "worker": _worker_address(), "host": socket.gethostname(), "wall": time.time() - t0}


def write_back(result: Dict[str, Any], out_dir: Path) -> None:
    """Write a task's files into ``out_dir`` as the runner does: the old marker goes first (from then on
    the point is not complete), every file atomically, the new marker last."""
    out_dir = Path(out_dir)
    name = result["name"]
    marker = paths(out_dir, name)[3]
    marker.unlink(missing_ok=True)
    files = result.get("files") or {}
    for fname, data in files.items():
        if fname != marker.name:
            atomic_write_bytes(out_dir / fname, data)
    if marker.name in files:
        atomic_write_bytes(marker, files[marker.name])


def _check_resources(client: Client, tasks: List[Task]) -> None:
    wanted = {k for t in tasks for k in t.resources}
    if not wanted:
        return
    info = client.scheduler_info()["workers"]
    offered = {k for w in info.values() for k in (w.get("resources") or {})}
    missing = sorted(wanted - offered)
    if missing:
        raise ParameterError(f"--resources asks for {missing} but no worker of this cluster offers it "
                             f"(workers offer {sorted(offered) or 'nothing'}); start workers with "
                             f"`--resources {missing[0]}=1` or drop --resources")


def _result_of(task: Task, res: Dict[str, Any]) -> RunResult:
    out, _, ledger, _, _ = paths(task.out_dir, task.info.name)
    return RunResult(task.info.name, res["status"], res["duration"], str(out) if out.exists() else None,
                     str(ledger) if ledger.exists() else None, res.get("error"), res.get("params", {}))


def run_on_cluster(client: Client, tasks: List[Task], *, in_place: bool = False, timeout: Optional[int] = None,
                   log: Callable[[str], None] = print, poll: float = 0.5) -> List[RunResult]:
    """Submit every task, write each result into its folder as it arrives, log a line per state change
    (started on a worker, re-run after a worker died, finished with duration); results in task order."""
    _check_resources(client, tasks)
    futures = {}
    for t in tasks:
        t.out_dir.mkdir(parents=True, exist_ok=True)
        key = f"xnn-{t.label}-{uuid.uuid4().hex[:8]}"
        futures[key] = client.submit(run_task, t.info.name, t.info.path.read_bytes(), t.params,
                                     out_dir=str(t.out_dir.resolve()) if in_place else None, timeout=timeout,
                                     key=key, pure=False, resources=t.resources or None)
    by_key = dict(zip(futures, tasks))
    results: Dict[str, RunResult] = {}
    where: Dict[str, str] = {}
    n = len(tasks)
    seen = 0
    while len(results) < n:
        events = client.get_events(_TOPIC)
        for _, ev in events[seen:]:
            k, w = ev.get("key"), ev.get("worker")
            if k in by_key and k not in results and ev.get("event") == "start":
                verb = "running" if k not in where else f"re-running (worker {where[k]} lost)"
                log(f"[{len(results)}/{n}] {by_key[k].label}: {verb} on {w}")
                where[k] = w
        seen = len(events)
        for k, fut in futures.items():
            if k in results or fut.status == "pending":
                continue
            t = by_key[k]
            if fut.status == "finished":
                res = fut.result()
                if not in_place:
                    write_back(res, t.out_dir)
                results[k] = _result_of(t, res)
                err = "" if res["status"] == "ok" else f"  -- {results[k].describe_error()}"
                log(f"[{len(results)}/{n}] {t.label}: {res['status']} in {res['duration']:.1f} s on {res['worker']}{err}")
            else:  # error / lost / cancelled: e.g. KilledWorker after `retries` worker deaths
                exc = fut.exception() if fut.status == "error" else None
                reason = f"{type(exc).__name__}: {exc}" if exc is not None else fut.status
                results[k] = RunResult(t.info.name, "failed", 0.0, None, None,
                                       {"cell": None, "ename": "ClusterTaskFailed", "evalue": reason[:2000]},
                                       t.params)
                log(f"[{len(results)}/{n}] {t.label}: failed on the cluster -- {reason[:300]}")
        time.sleep(poll if len(results) < n else 0)
    return [results[k] for k in futures]
