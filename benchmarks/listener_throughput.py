"""Listener throughput: storescp, Orthanc and our listener, side by side, on one storescu load.

Usage::

    .venv/bin/python benchmarks/listener_throughput.py [--count 200] [--associations 4]

Sends ``--count`` slices of 512 x 512 CT (the project's synthetic head phantom, new UIDs for
every run) with DCMTK ``storescu`` over one association, then split over ``--associations``
concurrent associations, to DCMTK ``storescp`` (writing to a temporary folder, no fsync), to
Orthanc with its default storage settings (durable storage and index), to the listener's
pynetdicom SCP alone in one process (its AE, server class and connection settings, with a
C-STORE handler that answers success and does nothing else: pynetdicom's receive path, before
any work of ours), and to ``stroke-triage listen`` (SQLite records, ``--processes``
receiving processes) with ``durability = fsync`` and with ``durability = os``.

Every DCMTK end gets ``TCP_NODELAY=1`` in its environment: storescu, echoscu, storescp and
Orthanc (which receives through DCMTK; without it every C-STORE response waits for a delayed
ACK, and Orthanc stalls near 20 img/s). The report prints each receiver's configuration
(Orthanc's storage durability settings included), the load average at the start of each
round, images per second, each receiver's start-up time (start to first answered C-ECHO),
the ratios of issue 25's goals (and issue 16's), the ceiling the no-op SCP implies, Orthanc's
and our listener's ratio to that no-op SCP (for scale), and the time of the listener's durable
write alone (each run into a new folder: the listener always writes new files). Every receiver
runs from the start to the end; each of ``--repeat`` rounds sends to each in turn, so that a
change in the load of a shared machine falls on all of them alike. Numbers are wall-clock times
of the storescu processes, the best of the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydicom
from pydicom.uid import generate_uid

if TYPE_CHECKING:
    from pynetdicom.events import Event

REPO_ROOT = Path(__file__).resolve().parents[1]
CALLED_AE = "BENCH"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
BARE_NAME = "listener's pynetdicom SCP, no-op handler"
ORTHANC_NAME = "Orthanc (default storage)"


@dataclass(frozen=True)
class Receiver:
    """A running receiver: its name, port, configuration and, for ours, its database file."""

    name: str
    port: int
    configuration: str
    database: Path | None = None
    startup_s: float = 0.0


#: Orthanc's storage settings, written out although they are its defaults (Orthanc 1.10), so
#: that the report says what was measured: every file fsynced, stored as received.
ORTHANC_STORAGE = {
    "SyncStorageArea": True,
    "StorageCompression": False,
    "OverwriteInstances": False,
    "DicomThreadsCount": 4,
}


def load_average() -> str:
    """The 1-minute load average, as printed with every figure."""
    return f"{os.getloadavg()[0]:.2f}"


def tool_version(command: list[str]) -> str:
    """The first line a tool prints for its version."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0].strip("$ ").removeprefix("dcmtk: ") if lines else "?"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_template(folder: Path, count: int) -> list[Path]:
    """``count`` slices of 512 x 512 synthetic head CT."""
    from model.phantom import write_phantom_series

    return sorted(write_phantom_series(folder, n_slices=count, size=512))


def fresh_copies(template: list[Path], folder: Path, groups: int) -> list[list[Path]]:
    """Copies of the slices with new UIDs, split into ``groups`` lists (one per association)."""
    folder.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    lists: list[list[Path]] = [[] for _ in range(groups)]
    for index, source in enumerate(template):
        dataset = pydicom.dcmread(source)
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study, series
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        target = folder / f"{index:04d}.dcm"
        dataset.save_as(target, enforce_file_format=True)
        lists[index % groups].append(target)
    return lists


def wait_echo(port: int, timeout_s: float = 60.0) -> float:
    """Wait until the receiver answers C-ECHO; return the seconds waited."""
    start = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = subprocess.run(
            ["echoscu", "-aec", CALLED_AE, "127.0.0.1", str(port)],
            capture_output=True,
            check=False,
            env=DCMTK_ENV,
        )
        if done.returncode == 0:
            return time.perf_counter() - start
        time.sleep(0.05)
    raise RuntimeError(f"Nothing answered C-ECHO on port {port} within {timeout_s} s.")


@contextmanager
def storescp(workdir: Path) -> Iterator[Receiver]:
    """DCMTK storescp, one process per association (--fork), writing files to a folder."""
    port = free_port()
    output = workdir / "storescp-out"
    output.mkdir()
    command = ["storescp", "--fork", "-aet", CALLED_AE, "-od", str(output), str(port)]
    process = subprocess.Popen(
        command, env=DCMTK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    configuration = (
        f"{tool_version(['storescp', '--version'])}: `{' '.join(command[:-3])} DIR PORT`, "
        "TCP_NODELAY=1, one process per association, files written without fsync"
    )
    try:
        yield Receiver("DCMTK storescp", port, configuration, startup_s=wait_echo(port))
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def orthanc(workdir: Path) -> Iterator[Receiver]:
    """Orthanc with its default storage settings (it fsyncs its files; SQLite index).

    Orthanc receives through DCMTK, so it gets ``TCP_NODELAY=1`` like every DCMTK end.
    """
    port, storage = free_port(), workdir / "orthanc-db"
    config = {
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpPort": free_port(),
        "DicomPort": port,
        "DicomAet": CALLED_AE,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [],
        **ORTHANC_STORAGE,
    }
    (workdir / "orthanc.json").write_text(json.dumps(config))
    executable = shutil.which("Orthanc") or "Orthanc"
    process = subprocess.Popen(
        [executable, str(workdir / "orthanc.json")],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    settings = ", ".join(f"{key} {json.dumps(value)}" for key, value in ORTHANC_STORAGE.items())
    configuration = (
        f"{tool_version([executable, '--version'])}: TCP_NODELAY=1, {settings}, "
        "SQLite index and files on the benchmark's disk. (strace of Orthanc 1.10.1: each file "
        "is written in place and fdatasynced once; no temporary file, rename or folder fsync; "
        "its SQLite index is in WAL mode, synced at checkpoints, not per instance)"
    )
    try:
        yield Receiver(ORTHANC_NAME, port, configuration, startup_s=wait_echo(port))
    finally:
        process.terminate()
        process.wait(timeout=30)


def _bare_store(event: Event) -> int:
    """EVT_C_STORE: answer success without reading or writing anything."""
    return 0x0000


def serve_bare(port: int) -> None:
    """The listener's own SCP with a no-op C-STORE handler on 127.0.0.1 ``port`` (``--serve-bare``).

    The same AE (every storage SOP class in every transfer syntax, 128 KiB PDUs), server class
    (contexts shared between associations) and connection handler (TCP_NODELAY, the shorter
    reactor sleep) as ``stroke-triage listen``, in one process; nothing is read or written.
    """
    sys.path.insert(0, str(REPO_ROOT))
    from pynetdicom import evt

    from listener.config import ListenerConfig
    from listener.handlers import handle_connection_open
    from listener.scp import ListenerServer, build_ae

    ae = build_ae(ListenerConfig(ae_title=CALLED_AE))
    handlers: list[Any] = [
        (evt.EVT_CONN_OPEN, handle_connection_open),
        (evt.EVT_C_STORE, _bare_store),
    ]
    server = ae.make_server(("127.0.0.1", port), evt_handlers=handlers, server_class=ListenerServer)
    server.serve_forever()


@contextmanager
def bare_pynetdicom(workdir: Path) -> Iterator[Receiver]:
    """:func:`serve_bare` in a separate Python process (this file with ``--serve-bare``)."""
    port = free_port()
    log = (workdir / "bare.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve-bare", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    configuration = (
        "this file with --serve-bare: the listener's AE, server class and connection handler "
        "in one process, a C-STORE handler that answers success and stores nothing"
    )
    try:
        yield Receiver(BARE_NAME, port, configuration, startup_s=wait_echo(port))
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@contextmanager
def our_listener(
    workdir: Path,
    *,
    wait_for_database: bool,
    tree: Path,
    durability: str,
    processes: int,
    label: str = "",
) -> Iterator[Receiver]:
    """``stroke-triage listen`` on embedded defaults (SQLite), no series judged during the run.

    ``label`` tells this listener's rows apart (another checkout, for a comparison).
    """
    port = free_port()
    data_dir = workdir / "listener-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STROKE_TRIAGE_")}
    env.update(
        {
            "PYTHONPATH": str(tree),
            "STROKE_TRIAGE_DATA_DIR": str(data_dir),
            "STROKE_TRIAGE_LOG_LEVEL": "WARNING",
            "STROKE_TRIAGE_LISTENER__AE_TITLE": CALLED_AE,
            "STROKE_TRIAGE_LISTENER__HOST": "127.0.0.1",
            "STROKE_TRIAGE_LISTENER__PORT": str(port),
            "STROKE_TRIAGE_LISTENER__QUIET_PERIOD_S": "3600",
            "STROKE_TRIAGE_LISTENER__DURABILITY": durability,
            "STROKE_TRIAGE_LISTENER__PROCESSES": str(processes),
        }
    )
    if wait_for_database:
        env["STROKE_TRIAGE_LISTENER__WAIT_FOR_DATABASE"] = "true"
    log = (workdir / "listener.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "stroke_triage", "listen"],
        env=env,
        cwd=tree,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    name = f"stroke-triage {durability}, {processes} proc" + (
        " (wait for DB)" if wait_for_database else ""
    )
    name += f" ({label})" if label else ""
    durable = (
        "each file fsynced, renamed into place, its folder fsynced, before success"
        if durability == "fsync"
        else "each file renamed into place, no fsync"
    )
    configuration = (
        f"`stroke-triage listen` from {tree}: durability {durability} ({durable}), "
        f"{processes} receiving process(es), SQLite records (committed in batches), "
        "log level WARNING" + (", success after the database commit" if wait_for_database else "")
    )
    try:
        startup = wait_echo(port)
        yield Receiver(name, port, configuration, data_dir / "stroke-triage.db", startup)
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def send(receiver: Receiver, groups: list[list[Path]]) -> float:
    """Send each group over its own association, all at once; return the seconds taken."""
    start = time.perf_counter()
    processes = [
        subprocess.Popen(
            ["storescu", "-aec", CALLED_AE, "127.0.0.1", str(receiver.port), *map(str, files)],
            env=DCMTK_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for files in groups
    ]
    for process in processes:
        _, stderr = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"storescu failed: {stderr.decode(errors='replace')[-2000:]}")
    return time.perf_counter() - start


def recorded(database: Path, study_count: int, expected: int, timeout_s: float = 60.0) -> float:
    """Seconds until the database holds ``expected`` instances more than before the run."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        with sqlite3.connect(database) as connection:
            count = connection.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
        if count >= study_count + expected:
            return time.perf_counter() - start
        time.sleep(0.01)
    raise RuntimeError(f"The listener did not record {expected} instances in {timeout_s} s.")


def instance_count(database: Path | None) -> int:
    """Instances recorded so far (0 for storescp)."""
    if database is None or not database.exists():
        return 0
    with sqlite3.connect(database) as connection:
        return int(connection.execute("SELECT COUNT(*) FROM instances").fetchone()[0])


def measure_once(
    receiver: Receiver, template: list[Path], folder: Path, groups: int
) -> tuple[float, float | None]:
    """Images per second of one run into ``receiver``, and its database records' lag."""
    lists = fresh_copies(template, folder, groups)
    before = instance_count(receiver.database)
    seconds = send(receiver, lists)
    lag = None
    if receiver.database is not None:
        lag = recorded(receiver.database, before, len(template))
    return len(template) / seconds, lag


def durable_write_ms(template: list[Path], folder: Path, *, fsync: bool) -> float:
    """Milliseconds per slice for the listener's own atomic write, alone, in this process.

    ``folder`` must not exist yet: the listener always writes new files, and replacing files
    (freeing their blocks, slow on a mount with ``discard``) would measure something else.
    """
    from dicom_edge import write_atomic

    payloads = [path.read_bytes() for path in template]
    folder.mkdir()
    start = time.perf_counter()
    for index, payload in enumerate(payloads):
        write_atomic(folder / f"{index}.dcm", payload, fsync=fsync)
    return (time.perf_counter() - start) / len(payloads) * 1e3


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="slices per run")
    parser.add_argument("--associations", type=int, default=4, help="concurrent associations")
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds over every receiver; the best run counts"
    )
    parser.add_argument(
        "--wait-for-database",
        action="store_true",
        help="also measure our listener answering only after the database commit",
    )
    parser.add_argument(
        "--listener-tree",
        type=Path,
        default=REPO_ROOT,
        help="run the listener from another checkout (to compare versions)",
    )
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        default=None,
        help="also run the listener from this checkout, in the same rounds (before and after)",
    )
    parser.add_argument(
        "--processes", type=int, default=2, help="stroke-triage receiving processes (N)"
    )
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_bare is not None:
        serve_bare(args.serve_bare)
        return 0
    for tool in ("storescp", "storescu", "echoscu", "Orthanc"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed (apt-get install dcmtk orthanc).")

    load_at_start = load_average()
    # One association, then several (once only when --associations is 1).
    cases = sorted({1, args.associations})
    best: dict[tuple[str, int], tuple[float, float | None]] = {}
    receivers: dict[str, Receiver] = {}
    round_loads: list[str] = []
    with tempfile.TemporaryDirectory(prefix="listener-bench-") as temp, ExitStack() as running:
        workdir = Path(temp)
        template = make_template(workdir / "template", args.count)
        kinds: list[tuple[str, str, bool]] = [
            ("storescp", "", False),
            ("orthanc", "", False),
            ("bare", "", False),
            ("ours", "fsync", False),
            ("ours", "os", False),
        ]
        if args.wait_for_database:
            kinds.append(("ours", "fsync", True))
        if args.baseline_tree is not None:
            kinds += [("baseline", "fsync", False), ("baseline", "os", False)]
        for kind, durability, wait in kinds:
            folder = workdir / f"{kind}-{durability}-{int(wait)}"
            folder.mkdir()
            context = (
                storescp(folder)
                if kind == "storescp"
                else orthanc(folder)
                if kind == "orthanc"
                else bare_pynetdicom(folder)
                if kind == "bare"
                else our_listener(
                    folder,
                    wait_for_database=wait,
                    tree=args.listener_tree if kind == "ours" else args.baseline_tree,
                    durability=durability,
                    processes=args.processes,
                    label="" if kind == "ours" else "baseline",
                )
            )
            receiver = running.enter_context(context)
            receivers[receiver.name] = receiver
        # Every receiver runs all along; each round sends to each in turn, so that a change
        # of the machine's load (shared with others) falls on all of them alike.
        for run in range(args.repeat):
            round_loads.append(load_average())
            for groups in cases:
                for name, receiver in receivers.items():
                    folder = workdir / f"send-{receiver.port}-{groups}-{run}"
                    rate, lag = measure_once(receiver, template, folder, groups)
                    if rate > best.get((name, groups), (0.0, None))[0]:
                        best[name, groups] = (rate, lag)
        running.close()

        floor_synced = durable_write_ms(template, workdir / "floor-fsync", fsync=True)
        floor_cached = durable_write_ms(template, workdir / "floor-os", fsync=False)

    rows = [(name, groups, *best[name, groups]) for name in receivers for groups in cases]
    print(
        f"{args.count} slices of 512x512 CT, best of {args.repeat} rounds (each round sends to "
        f"every receiver in turn), TCP_NODELAY=1 on every DCMTK end; load average "
        f"{load_at_start} at the start, {', '.join(round_loads)} at the start of each round, "
        f"{load_average()} at the end, on {os.cpu_count()} CPUs\n"
    )
    print("| receiver | configuration |\n| --- | --- |")
    for name, receiver in receivers.items():
        print(f"| {name} | {receiver.configuration} |")
    print_rates(rows, receivers, cases)
    rates = {(name, groups): value for name, groups, value, _ in rows}
    print_goals(rates, args.associations, args.processes)
    reference = rates["DCMTK storescp", 1]
    bare_ratio = rates[BARE_NAME, 1] / reference
    print(
        f"\nThe listener's pynetdicom SCP with a no-op handler reaches {rates[BARE_NAME, 1]:.0f} "
        f"img/s on one association, {bare_ratio:.2f}x storescp: pynetdicom's receive path alone, "
        "before any work of ours."
    )
    ceiling = 1e3 / floor_synced
    print(
        f"\nThe durable write alone (temp file, fsync, rename, fsync of the folder) takes "
        f"{floor_synced:.2f} ms per slice here ({floor_cached:.2f} ms without the two fsyncs):"
        f"\none association that waits for each response can get at most {ceiling:.0f} img/s, "
        f"{ceiling / reference:.2f}x storescp (which does not fsync), before any network "
        "or DICOM work."
    )
    print_scale(rates, args.associations, args.processes)
    print(f"load average at the end: {load_average()} on {os.cpu_count()} CPUs")
    return 0


def print_scale(rates: dict[tuple[str, int], float], many: int, processes: int) -> None:
    """Orthanc and our listener against the no-op SCP, and the no-op SCP against Orthanc."""
    ceiling = rates[BARE_NAME, 1]
    ours = rates[f"stroke-triage fsync, {processes} proc", 1]
    print(
        "\nFor scale, against the same no-op SCP on one association: Orthanc (C++, one "
        f"fdatasync per image, no folder flush) reaches {rates[ORTHANC_NAME, 1] / ceiling:.2f}x, "
        f"our listener {ours / ceiling:.2f}x."
    )
    if many > 1:
        print(
            f"On {many} associations the no-op SCP (one process, no work at all) reaches "
            f"{rates[BARE_NAME, many] / rates[ORTHANC_NAME, many]:.2f}x Orthanc."
        )


def print_rates(
    rows: list[tuple[str, int, float, float | None]],
    receivers: dict[str, Receiver],
    cases: list[int],
) -> None:
    """The table of images per second and ratios."""
    rates = {(name, groups): value for name, groups, value, _ in rows}
    reference = {groups: rates["DCMTK storescp", groups] for groups in cases}
    durable = {groups: rates[ORTHANC_NAME, groups] for groups in cases}
    print(
        "\n| receiver | associations | img/s | ratio to storescp | ratio to Orthanc "
        "| DB records lag (s) | start-up to C-ECHO (s) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, groups, value, lag in rows:
        lag_text = "-" if lag is None else f"{lag:.2f}"
        print(
            f"| {name} | {groups} | {value:.0f} | {value / reference[groups]:.2f}x "
            f"| {value / durable[groups]:.2f}x | {lag_text} | {receivers[name].startup_s:.2f} |"
        )


def print_goals(rates: dict[tuple[str, int], float], many: int, processes: int) -> None:
    """Issue 25's goals (durable listener against Orthanc and its own ceiling), then 16's."""
    ours_fsync = f"stroke-triage fsync, {processes} proc"
    ours_os = f"stroke-triage os, {processes} proc"
    goals = [
        ("25", "1 assoc, fsync vs Orthanc", rates[ours_fsync, 1] / rates[ORTHANC_NAME, 1], 1.0),
        (
            "25",
            f"{many} assoc, fsync vs Orthanc",
            rates[ours_fsync, many] / rates[ORTHANC_NAME, many],
            1.2,
        ),
        (
            "25",
            "1 assoc, fsync vs the no-op pynetdicom SCP",
            rates[ours_fsync, 1] / rates[BARE_NAME, 1],
            0.6,
        ),
        ("16", "1 assoc, os vs storescp", rates[ours_os, 1] / rates["DCMTK storescp", 1], 0.5),
    ]
    if many > 1:
        goals += [
            (
                "16",
                f"{many} assoc vs 1 assoc, fsync, N={processes}",
                rates[ours_fsync, many] / rates[ours_fsync, 1],
                1.6,
            ),
            (
                "16",
                f"{many} assoc vs 1 assoc, os, N={processes}",
                rates[ours_os, many] / rates[ours_os, 1],
                1.6,
            ),
        ]
    print("\n| issue | goal | measured | target | met |\n| --- | --- | --- | --- | --- |")
    for issue, label, measured, target in goals:
        met = "yes" if measured >= target else "NO"
        print(f"| {issue} | {label} | {measured:.2f}x | >= {target:.1f}x | {met} |")


if __name__ == "__main__":
    raise SystemExit(main())
