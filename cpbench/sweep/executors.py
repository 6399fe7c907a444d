"""Executors: where units run. Each takes UnitStates, runs `cpbench.sweep.worker.execute_unit` on their `todo`
unit, and hands back (state, payload, exception) as units finish.

- `LocalExecutor`: in this process, one unit at a time.
- `RayExecutor`: Ray core tasks (`ray.init(address=...)`; `auto` = a running cluster; none = a local one). Each unit
  asks for `num_gpus` from its estimate (or `--gpus-per-unit`), `memory`, and `max_retries` (a worker that dies is
  rerun by Ray) with `retry_exceptions=[RetryableUnitError]`. Payloads (artifact bytes) come back through the object
  store. Every wait has a timeout; `close` cancels what is left and shuts down a cluster this process started.
- `SubmititExecutor`: SLURM job arrays through submitit (`cluster="local"` runs the same jobs as local processes, as
  in CI). Its folder must be on a filesystem shared by the driver and the nodes: checked on the driver (not tmpfs)
  and by every job (a token file the driver wrote must be visible).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

from cpbench.base.errors import CpbenchError

# Environment forwarded to Ray workers when set on the driver (caches, threads, offline flags, import path).
FORWARDED_ENV = ("CPBENCH_CACHE", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CPBENCH_THREADS", "HF_HUB_OFFLINE",
                 "HF_DATASETS_OFFLINE", "HF_HOME", "TOKENIZERS_PARALLELISM", "PYTHONPATH",
                 "CPBENCH_SWEEP_FAULT_DIR", "CPBENCH_LOCK_TIMEOUT")  # fmt: skip


def forwarded_env() -> dict[str, str]:
    return {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}


class LocalExecutor:
    """Runs units in this process, one at a time, through the same worker function and return path as Ray."""

    name = "local"
    driver_retries = True

    def __init__(self) -> None:
        self._queue: list[Any] = []

    def preflight(self, states: Iterable[Any]) -> None:
        return None

    def submit(self, states: list[Any]) -> None:
        self._queue.extend(states)

    def poll(self, running: list[Any], timeout: float, unit_timeout: float) -> list[tuple[Any, Any, Any]]:
        from cpbench.sweep.worker import execute_unit

        st = next(s for s in self._queue if s in running)
        self._queue.remove(st)
        try:
            return [(st, execute_unit(st.todo.to_json()), None)]
        except CpbenchError as exc:
            return [(st, None, exc)]
        except Exception as exc:  # noqa: BLE001 - reported per unit, the sweep goes on
            return [(st, None, exc)]

    def cancel(self, st: Any) -> None:
        if st in self._queue:
            self._queue.remove(st)

    def close(self) -> None:
        self._queue.clear()


class RayExecutor:
    name = "ray"
    driver_retries = False  # Ray reruns dead workers itself (max_retries)

    def __init__(self, address: str | None = None, *, retries: int = 2, gpus_per_unit: float | None = None,
                 get_timeout_s: float = 600.0, init_timeout_s: float = 120.0, echo: Any = print):  # fmt: skip
        try:
            import ray
        except ImportError:
            raise CpbenchError("--executor ray needs Ray: pip install 'cpbench[scale]'") from None
        self.ray = ray
        self.retries = retries
        self.gpus_per_unit = gpus_per_unit
        self.get_timeout_s = get_timeout_s
        self.echo = echo
        self.started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"address": address, "log_to_driver": False}
            if address is None:  # a local cluster just for this sweep
                kwargs.update(include_dashboard=False)
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise CpbenchError(f"cannot connect to the Ray cluster at {address or 'a new local cluster'}: "
                                   f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None  # fmt: skip
            self.started = True
        from cpbench.sweep.worker import RetryableUnitError, execute_unit

        self._remote = ray.remote(execute_unit)
        self._retryable = [RetryableUnitError]
        self._gpu_total = float(ray.cluster_resources().get("GPU", 0.0))

    def _gpus(self, st: Any) -> float:
        if self.gpus_per_unit is not None:
            return float(self.gpus_per_unit)
        if self._gpu_total <= 0:
            return 0.0
        return float(st.estimate.gpus if st.estimate is not None else 1)

    @staticmethod
    def _memory(st: Any) -> int:
        """Ray `memory` (bytes) to reserve for a unit: its host-memory estimate (0 when unknown)."""
        gb = getattr(st.estimate, "host_mem_gb", None) if st.estimate is not None else None
        return int(gb * 2**30) if gb else 0

    def preflight(self, states: Iterable[Any]) -> None:
        """Fail with one line when a unit asks for more GPUs or host memory than any node of the cluster has."""
        states = list(states)
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        per_node = max((float(n.get("Resources", {}).get("GPU", 0.0)) for n in nodes), default=0.0)
        total = self.ray.cluster_resources()
        if self._gpu_total <= 0 and self.gpus_per_unit is None and states:
            self.echo("note: the Ray cluster has no GPUs; units run on CPU workers")
        mem_node = max((float(n.get("Resources", {}).get("memory", 0.0)) for n in nodes), default=0.0)
        for st in states:
            host = self._memory(st)
            if host and mem_node and host > mem_node:
                raise CpbenchError(f"unit {st.name} needs ~{host / 2**30:.0f} GB of host memory (base weights loaded "
                                   f"to compress) but the largest Ray node offers {mem_node / 2**30:.0f} GB")  # fmt: skip
            need = self._gpus(st)
            if need > per_node:
                mem = st.estimate.gpu_mem_gb if st.estimate is not None else None
                raise CpbenchError(
                    f"unit {st.name} needs {need:g} GPU(s)" + (f" (~{mem:g} GB)" if mem else "")
                    + f" but the largest node of the Ray cluster has {per_node:g} (cluster total: "
                    f"{total.get('GPU', 0):g} GPU, {total.get('CPU', 0):g} CPU); use --gpus-per-unit or a bigger node"
                )  # fmt: skip

    def submit(self, states: list[Any]) -> None:
        env = forwarded_env()
        for st in states:
            opts: dict[str, Any] = {
                "num_gpus": self._gpus(st),
                "num_cpus": 1,
                "max_retries": self.retries,
                "retry_exceptions": self._retryable,
                "name": f"cpbench:{st.name}",
            }
            if self._memory(st):
                opts["memory"] = self._memory(st)
            if env:
                opts["runtime_env"] = {"env_vars": env}
            st.handle = self._remote.options(**opts).remote(st.todo.to_json())

    def poll(self, running: list[Any], timeout: float, unit_timeout: float) -> list[tuple[Any, Any, Any]]:
        ray = self.ray
        by_ref = {st.handle: st for st in running}
        ready, _ = ray.wait(list(by_ref), num_returns=1, timeout=timeout)
        out: list[tuple[Any, Any, Any]] = []
        for ref in ready:
            st = by_ref.pop(ref)
            try:
                out.append((st, ray.get(ref, timeout=self.get_timeout_s), None))
            except Exception as exc:  # noqa: BLE001 - RayTaskError wraps the worker's; reported per unit
                out.append((st, None, getattr(exc, "cause", None) or exc))
        now = time.monotonic()
        for ref, st in by_ref.items():
            if now - st.started > unit_timeout:
                ray.cancel(ref, force=True)
                out.append((st, None, TimeoutError(f"unit ran longer than {unit_timeout:g} s (--unit-timeout)")))
        return out

    def cancel(self, st: Any) -> None:
        if st.handle is not None:
            try:
                self.ray.cancel(st.handle, force=True)
            except Exception:  # noqa: BLE001 - already finished or the cluster is gone
                pass

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False


def _fs_type(path: Path) -> str:
    """Filesystem type of the mount holding `path` (from /proc/mounts; '' when unknown)."""
    try:
        mounts = [ln.split() for ln in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return ""
    p, best, kind = str(path.resolve()), "", ""
    for m in mounts:
        if len(m) >= 3 and (p == m[1] or p.startswith(m[1].rstrip("/") + "/")) and len(m[1]) >= len(best):
            best, kind = m[1], m[2]
    return kind


class SubmititExecutor:
    name = "slurm"
    driver_retries = True  # a job that died (preempted, node failure, time limit) is resubmitted by the driver

    def __init__(self, folder: str | os.PathLike, *, cluster: str | None = None, partition: str | None = None,
                 gpus_per_node: int | None = None, time_min: int = 24 * 60, max_parallel: int = 8,
                 cpus_per_task: int = 8, mem_gb: int | None = None, echo: Any = print):  # fmt: skip
        try:
            import submitit
        except ImportError:
            raise CpbenchError("--executor slurm needs submitit: pip install 'cpbench[scale]'") from None
        self.folder = Path(folder).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.executor = submitit.AutoExecutor(folder=self.folder, cluster=cluster)
        self.cluster = self.executor.cluster
        if self.cluster == "slurm" and _fs_type(self.folder) in ("tmpfs", "ramfs", "overlay"):
            raise CpbenchError(f"--slurm-folder {self.folder} is on {_fs_type(self.folder)}, not a filesystem the "
                               f"compute nodes share; use a shared path (home, project or scratch)")  # fmt: skip
        params: dict[str, Any] = {"timeout_min": int(time_min), "cpus_per_task": int(cpus_per_task),
                                  "name": "cpbench-sweep"}  # fmt: skip
        if mem_gb:
            params["mem_gb"] = int(mem_gb)
        if self.cluster == "slurm":
            params["slurm_array_parallelism"] = int(max_parallel)
            if partition:
                params["slurm_partition"] = partition
            if gpus_per_node is not None:
                params["slurm_gpus_per_node"] = int(gpus_per_node)
        self.executor.update_parameters(**params)
        self.gpus_per_node = gpus_per_node
        # jobs check that they see this file: the folder (pickled units and results) must be shared
        self.token = self.folder / f".cpbench-shared-{uuid.uuid4().hex[:12]}"
        self.token.write_text("cpbench sweep driver\n")
        self.echo = echo
        if self.cluster == "slurm":
            echo(f"note: SLURM jobs read and write {self.folder}: it must be on a filesystem shared with the nodes")

    def preflight(self, states: Iterable[Any]) -> None:
        return None

    def submit(self, states: list[Any]) -> None:
        from cpbench.sweep.worker import execute_unit

        if self.cluster == "slurm" and self.gpus_per_node is None:
            # one array shares its parameters: the largest GPU count any unit of the batch was estimated to need
            need = max((st.estimate.gpus for st in states if st.estimate is not None), default=1)
            self.executor.update_parameters(slurm_gpus_per_node=int(need))
        with self.executor.batch():  # one job array
            jobs = [self.executor.submit(execute_unit, st.todo.to_json(), shared_token=str(self.token))
                    for st in states]  # fmt: skip
        for st, job in zip(states, jobs):
            st.handle = job

    def poll(self, running: list[Any], timeout: float, unit_timeout: float) -> list[tuple[Any, Any, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            out: list[tuple[Any, Any, Any]] = []
            now = time.monotonic()
            for st in running:
                job = st.handle
                if job.done():
                    try:
                        out.append((st, job.result(), None))
                    except Exception as exc:  # noqa: BLE001 - FailedJobError / UncompletedJobError, per unit
                        out.append((st, None, exc))
                elif now - st.started > unit_timeout:
                    job.cancel(check=False)
                    out.append((st, None, TimeoutError(f"unit ran longer than {unit_timeout:g} s (--unit-timeout)")))
            if out or time.monotonic() >= deadline:
                return out
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))

    def cancel(self, st: Any) -> None:
        if st.handle is not None and not st.handle.done():
            try:
                st.handle.cancel(check=False)
            except Exception:  # noqa: BLE001
                pass

    def close(self) -> None:
        try:
            self.token.unlink()
        except OSError:
            pass
