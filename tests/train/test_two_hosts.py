"""Distributed training across a real network interface: two "hosts" on one machine.

Two Linux network namespaces joined by a veth pair stand in for two machines; torchrun starts
rank 0 in one and rank 1 in the other, and gloo talks over the veth (``GLOO_SOCKET_IFNAME``).
The veth's byte counters must grow by at least the embedding traffic the run measured, and the
final checkpoint must be bit-identical to the same config trained with ``--nproc-per-node 2``
on one host. Needs root and ``ip``; skipped where namespaces cannot be created.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from terarec.train import load_config
from tests.helpers import assert_bit_identical, checkpoint_weights, tiny_overrides

pytestmark = pytest.mark.slow

STEPS = 40
SUBNET = "10.77.0"  # private, and unlikely to clash with a real network on a CI machine
PORT = 29517  # each namespace is new and empty, so no other process can hold the port
TIMEOUT = 300


@dataclass(frozen=True)
class Host:
    namespace: str
    interface: str
    address: str

    def exec(self, *command: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *command]

    def tx_bytes(self) -> int:
        path = f"/sys/class/net/{self.interface}/statistics/tx_bytes"
        return int(subprocess.run(self.exec("cat", path), capture_output=True, text=True, check=True).stdout)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], capture_output=True, text=True, check=True)


@pytest.fixture
def hosts() -> Iterator[tuple[Host, Host]]:
    """Two namespaces joined by a veth pair, ``SUBNET.1`` and ``SUBNET.2``; removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("the `ip` command (iproute2) is missing")
    pid = os.getpid()
    # Interface names are limited to 15 characters.
    a, b = Host(f"terarec-a-{pid}", f"trv{pid}a", f"{SUBNET}.1"), Host(f"terarec-b-{pid}", f"trv{pid}b", f"{SUBNET}.2")
    created: list[str] = []
    try:
        try:
            for host in (a, b):
                _ip("netns", "add", host.namespace)
                created.append(host.namespace)
            _ip("link", "add", a.interface, "type", "veth", "peer", "name", b.interface)
            for host in (a, b):
                _ip("link", "set", host.interface, "netns", host.namespace)
                _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", host.interface)
                _ip("-n", host.namespace, "link", "set", "lo", "up")
                _ip("-n", host.namespace, "link", "set", host.interface, "up")
        except subprocess.CalledProcessError as error:
            # CI containers may forbid namespaces or lack the veth driver even as root.
            pytest.skip(f"cannot build the two-host network: {' '.join(error.cmd)}: {error.stderr.strip()}")
        yield a, b
    finally:
        # Deleting a namespace deletes the veth end inside it, and with it the pair; an end
        # never moved into a namespace is deleted by hand.
        for namespace in created:
            subprocess.run(["ip", "netns", "delete", namespace], check=False, capture_output=True)
        subprocess.run(["ip", "link", "delete", a.interface], check=False, capture_output=True)


def _env(interface: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("GLOO_SOCKET_IFNAME", None)
    if interface is not None:
        env["GLOO_SOCKET_IFNAME"] = interface
    # Both layouts get the same OpenMP setting (train.num_threads sets torch's and numba's).
    env["OMP_NUM_THREADS"] = "1"
    return env


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        # Own session: a hung run is stopped with its workers by killing its process group.
        return subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _wait_all(processes: dict[Path, subprocess.Popen[bytes]]) -> None:
    """Waits for every process to exit 0; when one fails or time runs out, kills the rest."""
    deadline = time.monotonic() + TIMEOUT
    try:
        while any(p.poll() is None for p in processes.values()) and time.monotonic() < deadline:
            if any(p.returncode not in (None, 0) for p in processes.values()):
                break
            time.sleep(0.2)
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    for log, process in processes.items():
        assert process.returncode == 0, f"{log.name} (exit {process.returncode}):\n{log.read_text()}"


def _metrics(out: Path) -> dict[str, object]:
    return json.loads((out / "metrics.json").read_text())


def test_two_hosts_over_a_veth_train_what_one_host_trains(hosts: tuple[Host, Host], tmp_path: Path) -> None:
    keys = dict(tiny_overrides(tmp_path / "two_hosts", train__steps=STEPS, train__num_threads=1))
    # The planner weighs a network link that one host does not have, and may replicate a table
    # in one layout only (same model, other summation order): pin every table table-wise.
    keys["sharding.overrides"] = [{"table": f"C{i}", "sharding_type": "table_wise"} for i in range(1, 27)]
    config = tmp_path / "two_hosts.yaml"
    config.write_text(load_config(overrides=list(keys.items())).to_yaml())

    a = hosts[0]
    before = {host: host.tx_bytes() for host in hosts}
    launched = {}
    for rank, host in enumerate(hosts):
        # Static rendezvous: --node-rank fixes which host is rank 0. c10d's dynamic rendezvous
        # orders nodes by a descriptor (hostname, pid), and both namespaces share the hostname.
        rendezvous = [f"--node-rank={rank}", f"--master-addr={a.address}", f"--master-port={PORT}"]
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1", *rendezvous]
        command = host.exec(*torchrun, "-m", "terarec", "train", "--config", str(config))
        log = tmp_path / f"host-{rank}.log"
        launched[log] = _start(command, _env(host.interface), log)
    _wait_all(launched)
    sent = sum(host.tx_bytes() - before[host] for host in hosts)

    two_hosts = _metrics(tmp_path / "two_hosts")
    assert two_hosts["world_size"] == 2 and two_hosts["steps"] == STEPS
    assert sorted({rank for table in two_hosts["placement"].values() for rank in table["ranks"]}) == [0, 1]
    # Every byte one rank sends the other crosses the veth, in one direction or the other; the
    # dense all-reduce, the rendezvous and evaluation come on top of the embedding traffic.
    embedding = two_hosts["comm_bytes_per_step"] * STEPS
    assert embedding > 0 and sent >= embedding, (sent, embedding)

    one_host = tmp_path / "one_host"
    reference = tmp_path / "one_host.yaml"
    reference.write_text(load_config(overrides=[*keys.items(), ("train.out", str(one_host))]).to_yaml())
    command = [sys.executable, "-m", "terarec", "train", "--config", str(reference), "--nproc-per-node", "2"]
    log = tmp_path / "one-host.log"
    _wait_all({log: _start(command, _env(None), log)})
    assert_bit_identical(
        checkpoint_weights(Path(_metrics(one_host)["checkpoint"])), checkpoint_weights(Path(two_hosts["checkpoint"]))
    )
