"""A throwaway single-node SLURM cluster on this machine, for tests that need a real scheduler.

`install()` gets Debian's `slurm-wlm` and `munge` with apt-get when they are missing; `Cluster(folder)` writes
a configuration for this host (its short host name, which slurmctld and slurmd insist on, and the layout
`slurmd -C` reports), starts its own munged, slurmctld and slurmd and waits until the node is idle; `stop()`
cancels the cluster's jobs, ends exactly the daemons it started, by process id, and removes the
configuration. The daemons run in the foreground as children of this process, on free ports, with their
state, logs and the munge key and socket in `folder`.

The configuration itself has to be at SLURM's default place, /etc/slurm/slurm.conf (and gres.conf beside
it): Snakemake's job step plugin removes every `SLURM_*` variable but the job's identity, `SLURM_CONF`
included, before it calls `srun` inside the job, so the job step finds only the default file. A
slurm.conf already there that this module did not write is left alone, and the cluster is unavailable.

No cgroups and no systemd: `proctrack/linuxproc`, `task/none`. No accounting (no slurmdbd): `sacct` does not
work, so Snakemake's SLURM executor has to query job states with `squeue`; `MinJobAge` keeps finished jobs
visible to `squeue` and `scontrol` for an hour. `DefMemPerCPU` keeps a job that asks for no memory from
taking the whole node. `gpus=N` advertises N fake GPUs (gres backed by character devices such as /dev/null):
SLURM schedules them and sets `CUDA_VISIBLE_DEVICES`, though there is no device behind them.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import apt_packages
from apt_packages import Unavailable, which

PACKAGES = ("slurm-wlm", "munge")
COMMANDS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel", "srun")
CONF_DIR = Path("/etc/slurm")
MARKER = "# Written by tests/slurm_cluster.py"
FAKE_GPU_FILES = ("/dev/null", "/dev/zero", "/dev/full")


def install(timeout: float = 600) -> float:
    """Install slurm-wlm and munge with apt-get unless their commands are all there; the seconds it took."""
    return apt_packages.install(PACKAGES, COMMANDS, timeout)


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's choice)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def node_layout() -> dict[str, str]:
    """This machine as `slurmd -C` sees it: CPUs, Boards, SocketsPerBoard, CoresPerSocket, ThreadsPerCore,
    RealMemory (MB)."""
    printed = subprocess.run([which("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(re.findall(r"(\w+)=(\S+)", printed.splitlines()[0]))
    keys = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    return {key: fields[key] for key in keys}


class Cluster:
    """One controller and one compute node (this machine) in `folder`, with `gpus` fake GPUs."""

    partition = "debug"

    def __init__(self, folder: Path, gpus: int = 0):
        self.folder = Path(folder)
        if not 0 <= gpus <= len(FAKE_GPU_FILES):
            raise ValueError(f"at most {len(FAKE_GPU_FILES)} fake GPUs")
        self.gpus = gpus
        self.gpu_files = FAKE_GPU_FILES[:gpus]
        self.host = socket.gethostname().split(".")[0]  # what `hostname -s` prints
        self.conf = CONF_DIR / "slurm.conf"
        self.gres_conf = CONF_DIR / "gres.conf"  # SLURM reads it from slurm.conf's folder
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.daemons: dict[str, subprocess.Popen] = {}
        self.start_seconds: float | None = None
        self.lock = None

    # configuration

    def ours(self, path: Path) -> bool:
        """Whether `path` is missing or a file this module wrote (which it may overwrite or remove)."""
        return not path.exists() or path.read_text(errors="replace").startswith(MARKER)

    def write_config(self) -> None:
        if os.geteuid() != 0:
            raise Unavailable("a test cluster needs root (slurmd, and the configuration in /etc/slurm)")
        CONF_DIR.mkdir(parents=True, exist_ok=True)
        # one test cluster at a time on this machine: they would share /etc/slurm
        self.lock = os.open(CONF_DIR, os.O_RDONLY)  # a lock on the folder itself, held until stop()
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.lock)
            self.lock = None
            raise Unavailable("another test cluster of tests/slurm_cluster.py is running on this machine") from None
        for path in (self.conf, self.gres_conf):
            if not self.ours(path):
                self.release()
                raise Unavailable(f"{path} exists and belongs to another SLURM setup: not touching it")
        folder = self.folder
        for sub in ("state", "spool", "log", "munge"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / "munge").chmod(0o700)  # munged refuses a key or socket folder others may write to
        key = folder / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            key.chmod(0o400)
        layout = node_layout()
        cpus = int(layout["CPUs"])
        memory = int(layout["RealMemory"]) * 9 // 10  # leave the system some headroom
        layout["RealMemory"] = str(memory)
        node = " ".join(f"{key}={value}" for key, value in layout.items())
        gres = f" Gres=gpu:{self.gpus}" if self.gpus else ""
        ports = set()
        while len(ports) < 2:
            ports.add(free_port())
        controller_port, node_port = sorted(ports)
        lines = [
            f"{MARKER}: a single-node test cluster (state in {folder}), no cgroups, no accounting.",
            "ClusterName=mmneuron-test",
            f"SlurmctldHost={self.host}(127.0.0.1)",
            f"SlurmctldPort={controller_port}",
            f"SlurmdPort={node_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={folder / 'munge' / 'munge.socket'}",
            "MailProg=/bin/true",
            "MpiDefault=none",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "ReturnToService=2",
            f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
            f"SlurmdPidFile={folder / 'slurmd.pid'}",
            f"StateSaveLocation={folder / 'state'}",
            f"SlurmdSpoolDir={folder / 'spool'}",
            f"SlurmctldLogFile={folder / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={folder / 'log' / 'slurmd.log'}",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            f"DefMemPerCPU={max(100, min(1000, memory // max(cpus, 1)))}",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            *(["GresTypes=gpu"] if self.gpus else []),
            "InactiveLimit=0",
            "KillWait=5",
            "MinJobAge=3600",
            "Waittime=0",
            f"NodeName={self.host} NodeAddr=127.0.0.1 {node}{gres} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        if self.gpus:
            # A GPU count without File= makes slurmd find none and the node INVAL: character devices that are
            # always there stand in, one per GPU (slurmd only looks at their device numbers).
            files = "".join(f"NodeName={self.host} Name=gpu File={path}\n" for path in self.gpu_files)
            self.gres_conf.write_text(f"{MARKER}\n{files}")
        elif self.gres_conf.exists():
            self.gres_conf.unlink()

    def remove_config(self) -> None:
        if self.lock is None:
            return  # the files may be another test cluster's now
        for path in (self.conf, self.gres_conf):
            if path.exists() and self.ours(path):
                path.unlink()
        self.release()

    def release(self) -> None:
        if self.lock is not None:
            os.close(self.lock)  # and with it the lock
            self.lock = None

    # daemons

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.folder / "log" / f"{name}.out", "ab")  # noqa: SIM115 (kept open by the child)
        with log:
            self.daemons[name] = subprocess.Popen(
                [which(name), *args], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env
            )

    def _check_alive(self) -> None:
        for name, process in self.daemons.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.logs()}")

    def _wait(self, what: str, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"SLURM test cluster: {what} not ready after {timeout:.0f} s:\n{self.logs()}")
            time.sleep(0.2)

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """A SLURM client command against this cluster, its output as text."""
        return subprocess.run(
            [which(command[0]), *command[1:]], capture_output=True, text=True, env=self.env, check=check
        )

    def node_state(self) -> str:
        result = self.run("sinfo", "--noheader", "--Node", "--format=%T", check=False)
        return result.stdout.strip() if result.returncode == 0 else ""

    def start(self, timeout: float = 60) -> Cluster:
        """Configure and start munged, slurmctld and slurmd; return once the node is idle."""
        start = time.monotonic()
        self.write_config()
        munge = self.folder / "munge"
        try:
            self._spawn(
                "munged",
                "--foreground",
                "--force",  # a root-owned key in a private folder is fine for a test
                f"--key-file={munge / 'munge.key'}",
                f"--socket={munge / 'munge.socket'}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--seed-file={munge / 'munged.seed'}",
                f"--log-file={self.folder / 'log' / 'munged.log'}",
            )
            self._wait("munged", (munge / "munge.socket").exists, timeout)
            self._spawn("slurmctld", "-D", "-f", str(self.conf))
            self._wait("slurmctld", lambda: "UP" in self.run("scontrol", "ping", check=False).stdout, timeout)
            self._spawn("slurmd", "-D", "-f", str(self.conf))
            self._wait("the node", lambda: self.node_state() in ("idle", "mixed", "allocated"), timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - start
        return self

    def stop(self, timeout: float = 15) -> None:
        """Cancel the cluster's jobs, then end the daemons this object started (reverse order, by pid)."""
        if "slurmctld" in self.daemons and self.daemons["slurmctld"].poll() is None:
            self.run("scancel", "--full", f"--partition={self.partition}", check=False)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                result = self.run("squeue", "--noheader", "--format=%i", check=False)
                if result.returncode != 0 or not result.stdout.strip():
                    break
                time.sleep(0.5)
        for name in reversed(list(self.daemons)):
            process = self.daemons.pop(name)
            if process.poll() is None:
                process.terminate()  # SIGTERM to this pid only
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.remove_config()

    def logs(self, lines: int = 15) -> str:
        """The last lines of every daemon log, for error messages."""
        parts = []
        for path in sorted((self.folder / "log").glob("*")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def jobs(self) -> dict[str, dict[str, str]]:
        """Every job the controller still knows (`MinJobAge` keeps finished ones an hour), by job id: the
        fields of `scontrol show job` (JobState, ExitCode, Comment, TresPerJob, Partition, ...)."""
        printed = self.run("scontrol", "--oneliner", "show", "job").stdout
        jobs = {}
        for line in printed.splitlines():
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            if "JobId" in fields:
                jobs[fields["JobId"]] = fields
        return jobs

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
