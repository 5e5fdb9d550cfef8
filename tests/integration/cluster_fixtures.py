"""Real Slurm (munge + slurmctld + slurmd) and Ray clusters on this machine, for the launcher tests.

Everything here starts processes in a private state folder and stops them by pid:

* :class:`Munge` - a munged with its own key and socket (nothing under /etc is touched).
* :class:`SlurmCluster` - slurmctld in the root network namespace plus one slurmd per node,
  either this machine (single node) or one network namespace per node (two "hosts" on a bridge,
  shared/CLUSTER_TESTING.md). Each cluster has its own slurm.conf (``SLURM_CONF``), ports and
  state, so it never meets another Slurm on the machine.
* :class:`NetnsNetwork` - bridge + veth pairs + namespaces with 10.99.0.1x addresses.
* :class:`LocalHead` - a Ray head through ``launchers/local_head.sh``.

``ray stop`` is never used (it kills every Ray on the machine). Processes that jobs start (srun
steps, Ray nodes and their workers) inherit ``SLURM_CONF=<this cluster's conf>`` in their
environment; :func:`kill_marked` finds leftovers by that marker and kills exactly those pids.

Usage outside pytest (debugging)::

    python tests/integration/cluster_fixtures.py single|two   # start, print env, wait for Enter
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SLURM_COMMANDS = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol",
                  "scancel", "srun")  # fmt: skip
DEBIAN_PACKAGES = ("slurm-wlm", "munge")


class Unavailable(Exception):
    """The machine cannot run this kind of cluster; the message says why (tests skip on it)."""


# ------------------------------------------------------------------------------ processes


def short_tmpdir(prefix: str) -> Path:
    """A short folder under /tmp: Ray and munge socket paths must stay below ~107 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def stop_process(proc: subprocess.Popen | None, timeout: float = 15) -> None:
    """SIGTERM, wait, then SIGKILL one process we started."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def pids_with_env(marker: str) -> list[int]:
    """Pids whose environment contains ``marker`` (e.g. ``SLURM_CONF=/tmp/ult.../slurm.conf``)."""
    needle = marker.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            found.append(int(entry.name))
    return found


def kill_marked(marker: str, grace: float = 10) -> list[int]:
    """SIGTERM then SIGKILL every process whose environment holds ``marker``; returns them."""
    pids = pids_with_env(marker)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.time() + grace
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    for pid in pids:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
    return pids


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def run(cmd: Sequence[str], env: dict | None = None, timeout: float = 60, check: bool = True,
        cwd: str | Path | None = None) -> subprocess.CompletedProcess:  # fmt: skip
    proc = subprocess.run(list(cmd), env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=cwd)  # fmt: skip
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def wait_for(what: str, predicate, timeout: float, interval: float = 0.5, diagnose=None):
    """Poll ``predicate`` until it returns a truthy value; raise with ``diagnose()`` on timeout."""
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            extra = f"\n{diagnose()}" if diagnose else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


def free_port_block(size: int = 100, start: int = 33000, stop: int = 60000) -> int:
    """First port of ``size`` consecutive ports that are all free now (Ray of a local head)."""
    for base in range(start + (os.getpid() % 50) * size, stop, size):
        if all(_port_free(p) for p in range(base, base + size)):
            return base
    raise RuntimeError(f"no {size} free consecutive ports in {start}..{stop}")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------- availability


def require_root() -> None:
    if os.geteuid() != 0:
        raise Unavailable("needs root (munged/slurmd/network namespaces run as root here)")


def ensure_slurm_installed() -> None:
    """Slurm + munge commands present, installing the Debian packages once if root can."""
    missing = [c for c in SLURM_COMMANDS if shutil.which(c) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise Unavailable(f"Slurm/munge not installed ({', '.join(missing)} missing) and not "
                          f"installable here (needs root and apt-get: "
                          f"apt-get install -y {' '.join(DEBIAN_PACKAGES)})")  # fmt: skip
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        run(["apt-get", "update", "-qq"], env=env, timeout=600)
        run(["apt-get", "install", "-y", "-qq", *DEBIAN_PACKAGES], env=env, timeout=1200)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"installing {' '.join(DEBIAN_PACKAGES)} failed: {exc}") from exc
    missing = [c for c in SLURM_COMMANDS if shutil.which(c) is None]
    if missing:
        raise Unavailable(f"still missing after installing Slurm: {', '.join(missing)}")


def require_netns() -> None:
    require_root()
    for cmd in ("ip", "nsenter"):
        if shutil.which(cmd) is None:
            raise Unavailable(f"'{cmd}' not found (iproute2 / util-linux)")
    probe = f"ulprobe{os.getpid()}"
    proc = run(["ip", "netns", "add", probe], check=False)
    if proc.returncode != 0:
        raise Unavailable(f"cannot create network namespaces: {proc.stderr.strip()}")
    run(["ip", "netns", "del", probe], check=False)


# -------------------------------------------------------------------------------- munge


class Munge:
    """munged with a private key and socket (foreground, so its pid is the daemon's)."""

    def __init__(self, state: Path):
        self.dir = state / "munge"
        self.socket = self.dir / "munge.sock"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Munge:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        key = self.dir / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        os.chmod(key, 0o400)
        log = (self.dir / "munged.log").open("w")
        self.proc = subprocess.Popen(
            ["munged", "--foreground", "--force", f"--key-file={key}",
             f"--socket={self.socket}", f"--pid-file={self.dir / 'munged.pid'}",
             f"--log-file={self.dir / 'munged.log'}", f"--seed-file={self.dir / 'munged.seed'}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for("munged", self._works, 20, diagnose=lambda: self._log())
        return self

    def _works(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"munged exited ({self.proc.returncode}):\n{self._log()}")
        if not self.socket.exists():
            return False
        cred = run(["munge", "-n", "-S", str(self.socket)], check=False)
        if cred.returncode != 0:
            return False
        proc = subprocess.run(["unmunge", "-S", str(self.socket)], input=cred.stdout,
                              capture_output=True, text=True, check=False)  # fmt: skip
        return proc.returncode == 0

    def _log(self) -> str:
        path = self.dir / "munged.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def stop(self) -> None:
        stop_process(self.proc)


# -------------------------------------------------------------------------------- network


@dataclass
class NetnsNetwork:
    """A bridge with one veth-connected network namespace per node (CLUSTER_TESTING.md)."""

    n: int = 2
    prefix: str = "ul"  # short: interface names are limited to 15 characters
    bridge_ip: str = "10.99.0.1"
    namespaces: list[str] = field(default_factory=list)
    created_links: list[str] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br0"

    def node_ip(self, i: int) -> str:
        return f"10.99.0.1{i}"

    def netns_path(self, i: int) -> str:
        return f"/var/run/netns/{self.prefix}n{i}"

    def setup(self) -> NetnsNetwork:
        require_netns()
        used = run(["ip", "-o", "-4", "addr", "show", "to", "10.99.0.0/24"]).stdout.strip()
        if used:
            raise RuntimeError(f"10.99.0.0/24 is already in use on this machine (another "
                               f"test's network namespaces?):\n{used}")  # fmt: skip
        try:
            self._ip("link", "add", self.bridge, "type", "bridge")
            self.created_links.append(self.bridge)
            self._ip("addr", "add", f"{self.bridge_ip}/24", "dev", self.bridge)
            self._ip("link", "set", self.bridge, "up")
            for i in range(1, self.n + 1):
                ns, veth = f"{self.prefix}n{i}", f"{self.prefix}veth{i}"
                self._ip("netns", "add", ns)
                self.namespaces.append(ns)
                self._ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
                self.created_links.append(veth)
                self._ip("link", "set", veth, "master", self.bridge)
                self._ip("link", "set", veth, "up")
                self._ip("netns", "exec", ns, "ip", "addr", "add", f"{self.node_ip(i)}/24",
                         "dev", "eth0")  # fmt: skip
                self._ip("netns", "exec", ns, "ip", "link", "set", "eth0", "up")
                self._ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
            self.check_connectivity()
        except BaseException:
            self.teardown()
            raise
        return self

    def check_connectivity(self) -> None:
        """Every namespace opens a TCP connection to the bridge address (no ping needed)."""
        with socket.socket() as listener:
            listener.bind((self.bridge_ip, 0))
            listener.listen(self.n)
            port = listener.getsockname()[1]
            probe = (
                "import socket, sys; "
                "socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)"
            )
            for i in range(1, self.n + 1):
                self.exec(i, [sys.executable, "-c", probe, self.bridge_ip, str(port)],
                          timeout=30)  # fmt: skip

    def exec(self, i: int, cmd: Sequence[str], **kw) -> subprocess.CompletedProcess:
        return run(["nsenter", f"--net={self.netns_path(i)}", *cmd], **kw)

    def teardown(self) -> None:
        for ns in reversed(self.namespaces):
            run(["ip", "netns", "del", ns], check=False)
        for link in reversed(self.created_links):
            if Path(f"/sys/class/net/{link}").exists():
                run(["ip", "link", "del", link], check=False)
        self.namespaces.clear()
        self.created_links.clear()

    @staticmethod
    def _ip(*args: str) -> None:
        run(["ip", *args])


# ---------------------------------------------------------------------------------- slurm


@dataclass
class SlurmNode:
    name: str
    addr: str
    cpus: int
    memory_mb: int
    netns: str | None = None  # /var/run/netns/... or None: this machine's namespace


class SlurmCluster:
    """slurmctld + slurmd(s) with a private slurm.conf; jobs run as root.

    ``env`` is the environment for Slurm commands (``SLURM_CONF`` set); job processes inherit
    it, which marks them for :func:`kill_marked`.
    """

    def __init__(self, state: Path, nodes: Sequence[SlurmNode], ctld_addr: str, munge: Munge):
        self.state, self.nodes, self.ctld_addr, self.munge = state, list(nodes), ctld_addr, munge
        self.conf = state / "slurm.conf"
        self.ctld: subprocess.Popen | None = None
        self.slurmds: dict[str, subprocess.Popen] = {}
        self.ctld_port, self.slurmd_port = free_port(), free_port()
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        for key in ("SLURM_JOB_ID", "SLURM_JOBID", "RAY_ADDRESS"):
            self.env.pop(key, None)

    @property
    def marker(self) -> str:
        return f"SLURM_CONF={self.conf}"

    def write_conf(self) -> None:
        s = self.state
        host = socket.gethostname()  # slurmctld must run on the SlurmctldHost
        lines = [
            "ClusterName=uaclmtest",
            f"SlurmctldHost={host}({self.ctld_addr})",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            # A requeued job waits cred_expire seconds before it may start again (default 120).
            f"AuthInfo=socket={self.munge.socket},cred_expire=10",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={s}/ctld",
            f"SlurmdSpoolDir={s}/spool/%n",
            f"SlurmctldPidFile={s}/slurmctld.pid",
            f"SlurmdPidFile={s}/slurmd-%n.pid",
            f"SlurmctldLogFile={s}/slurmctld.log",
            f"SlurmdLogFile={s}/slurmd-%n.log",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "GresTypes=gpu",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=2,bf_interval=1",
            "ReturnToService=2",
            "JobRequeue=1",
            "MinJobAge=600",
            "KillWait=10",
            "InactiveLimit=0",
            "SlurmdTimeout=60",
        ]
        for n in self.nodes:
            lines.append(f"NodeName={n.name} NodeAddr={n.addr} CPUs={n.cpus} "
                         f"RealMemory={n.memory_mb} State=UNKNOWN")  # fmt: skip
        names = ",".join(n.name for n in self.nodes)
        lines.append(f"PartitionName=debug Nodes={names} Default=YES MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")
        (s / "ctld").mkdir(parents=True, exist_ok=True)
        for n in self.nodes:
            (s / "spool" / n.name).mkdir(parents=True, exist_ok=True)

    def start(self) -> SlurmCluster:
        self.write_conf()
        try:
            log = (self.state / "slurmctld.stdout").open("w")
            # -i: ignore saved state; -D: foreground (its pid is the daemon's)
            self.ctld = subprocess.Popen(
                ["slurmctld", "-D", "-i", "-f", str(self.conf)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            wait_for("slurmctld", lambda: self._ping(), 30, diagnose=self.logs)
            for n in self.nodes:
                cmd = ["slurmd", "-D", "-N", n.name, "-f", str(self.conf)]
                if n.netns:
                    # nsenter, not `ip netns exec` (which remounts /sys and breaks slurmd)
                    cmd = ["nsenter", f"--net={n.netns}", *cmd]
                out = (self.state / f"slurmd-{n.name}.stdout").open("w")
                self.slurmds[n.name] = subprocess.Popen(cmd, env=self.env, stdout=out,
                                                        stderr=subprocess.STDOUT)  # fmt: skip
            wait_for("all nodes idle", self._nodes_idle, 60, diagnose=self.logs)
        except BaseException:
            self.stop()
            raise
        return self

    def _ping(self) -> bool:
        if self.ctld.poll() is not None:
            raise RuntimeError(f"slurmctld exited ({self.ctld.returncode}):\n{self.logs()}")
        return run(["scontrol", "ping"], env=self.env, check=False).returncode == 0

    def _nodes_idle(self) -> bool:
        for name, proc in self.slurmds.items():
            if proc.poll() is not None:
                raise RuntimeError(f"slurmd {name} exited ({proc.returncode}):\n{self.logs()}")
        out = run(["sinfo", "-h", "-N", "-o", "%N %t"], env=self.env, check=False).stdout
        states = dict(line.split() for line in out.splitlines() if line.strip())
        return len(states) == len(self.nodes) and all(v == "idle" for v in states.values())

    def logs(self, tail: int = 4000) -> str:
        parts = []
        for path in sorted(self.state.glob("*.log")) + sorted(self.state.glob("*.stdout")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    # ---- jobs

    def sbatch(self, args: Sequence[str], cwd: Path, env: dict | None = None) -> str:
        proc = run(["sbatch", "--parsable", *args], env={**self.env, **(env or {})}, cwd=cwd)
        return proc.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (empty once the job is forgotten)."""
        proc = run(["scontrol", "-o", "show", "job", job_id], env=self.env, check=False)
        fields = {}
        for token in re.findall(r"(\w+)=(\S*)", proc.stdout):
            fields.setdefault(token[0], token[1])
        return fields

    def wait_job(self, job_id: str, states: Iterable[str], timeout: float) -> dict[str, str]:
        wanted = set(states)
        return wait_for(f"job {job_id} in {sorted(wanted)}",
                        lambda: (j := self.job(job_id)).get("JobState") in wanted and j,
                        timeout, interval=1,
                        diagnose=lambda: f"{self.job(job_id)}\n{self.logs(2000)}")  # fmt: skip

    def cancel_all(self, timeout: float = 60) -> None:
        run(["scancel", "--full", "--signal=KILL", "--user=root"], env=self.env, check=False)
        run(["scancel", "--user=root"], env=self.env, check=False)

        def empty():
            out = run(["squeue", "-h", "-o", "%i %T"], env=self.env, check=False)
            return out.returncode == 0 and not out.stdout.strip()

        try:
            wait_for("all jobs gone", empty, timeout, interval=1)
        except TimeoutError:
            pass

    def stop(self) -> None:
        """Cancel every job, stop the daemons, then kill anything the jobs left behind."""
        if self.ctld is not None and self.ctld.poll() is None:
            self.cancel_all()
        for proc in self.slurmds.values():
            stop_process(proc)
        stop_process(self.ctld)
        self.leftovers = kill_marked(self.marker)


def single_node_cluster(state: Path, munge: Munge, cpus: int | None = None,
                        memory_mb: int = 8000) -> SlurmCluster:  # fmt: skip
    """This machine as node ``<hostname>`` (address 127.0.0.1)."""
    cpus = cpus or os.cpu_count() or 1
    node = SlurmNode(socket.gethostname(), "127.0.0.1", cpus, memory_mb)
    return SlurmCluster(state, [node], "127.0.0.1", munge).start()


def two_node_cluster(state: Path, munge: Munge, net: NetnsNetwork,
                     memory_mb: int = 6000) -> SlurmCluster:  # fmt: skip
    """node1, node2 in network namespaces (10.99.0.11, .12); slurmctld on the bridge."""
    cpus = max(1, (os.cpu_count() or 2) // net.n)
    nodes = [SlurmNode(f"node{i}", net.node_ip(i), cpus, memory_mb, net.netns_path(i))
             for i in range(1, net.n + 1)]  # fmt: skip
    return SlurmCluster(state, nodes, net.bridge_ip, munge).start()


# -------------------------------------------------------------------------------- Ray head


class LocalHead:
    """A Ray head via launchers/local_head.sh, with its own ports, temp dir and token file."""

    def __init__(self, state: Path):
        self.state = state
        self.port_base = free_port_block()
        token = state / "auth_token"
        token.write_text(secrets.token_hex(32))
        os.chmod(token, 0o600)
        self.env = {**os.environ, "UACLM_HEAD_DIR": str(state / "h"),
                    "UACLM_RAY_PORT_BASE": str(self.port_base),
                    "RAY_AUTH_TOKEN_PATH": str(token), "RAY_AUTH_MODE": "token",
                    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # fmt: skip
        self.env.pop("RAY_ADDRESS", None)
        self.env.pop("RAY_AUTH_TOKEN", None)

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.port_base + 1}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port_base}"

    def script(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return run([str(REPO / "launchers" / "local_head.sh"), *args], env=self.env,
                   timeout=timeout, check=False, cwd=REPO)  # fmt: skip

    def start(self) -> LocalHead:
        proc = self.script("start")
        if proc.returncode != 0:
            self.stop()
            raise RuntimeError(f"local_head.sh start failed:\n{proc.stdout}\n{proc.stderr}")
        self.start_output = proc.stdout + proc.stderr
        return self

    def pid(self) -> int | None:
        path = self.state / "h" / "head.pid"
        return int(path.read_text()) if path.exists() else None

    def stop(self) -> None:
        pid = self.pid()
        self.stop_output = self.script("stop", timeout=120)
        # Anything still in the head's process group (the group is the recorded pid's).
        if pid is not None:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# ------------------------------------------------------------------------------- manual use

if __name__ == "__main__":
    kind = sys.argv[1] if len(sys.argv) > 1 else "single"
    ensure_slurm_installed()
    root = short_tmpdir("ulc")
    m = Munge(root).start()
    network = NetnsNetwork().setup() if kind == "two" else None
    try:
        c = (two_node_cluster(root, m, network) if network
             else single_node_cluster(root, m))  # fmt: skip
        try:
            print(f"export SLURM_CONF={c.conf}")
            input("cluster up; Enter stops it ")
        finally:
            c.stop()
    finally:
        if network:
            network.teardown()
        m.stop()


#: Recognisable fake credentials: set in the environment of real runs, then searched for in
#: every file they wrote (issue 13: secrets never leak).
FAKE_SECRETS = {
    "WANDB_API_KEY": "fake-wandb-key-7f3a9c1e5b",
    "HF_TOKEN": "hf_fakeTokenQ8w2Xk4Lm9",
    "MY_SERVICE_PASSWORD": "fake-password-6d0e2b8a",
}


def files_holding_secrets(root: Path, values: tuple[str, ...] | None = None) -> list[str]:
    """Files under ``root`` (text or binary) that contain any of the secret ``values``
    (default: :data:`FAKE_SECRETS`)."""
    values = tuple(FAKE_SECRETS.values()) if values is None else values
    found = []
    for path in Path(root).rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path}: {v[:8]}..." for v in values if v.encode() in data]
    return found
