"""Shared helpers of the Python tests: servers as child processes, bounded waits."""

import os
import queue
import re
import signal
import subprocess
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
SERVING_LINE = re.compile(r"^remote_xcomm: serving (?P<key>.+) on (?P<host>[^ ]+):(?P<port>\d+)$")
EXAMPLE_KEY = {"dag_id": "example_dag", "task_id": "hello_task", "run_id": "manual__2026-11-29", "map_index": -1}
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


def example_binary(name):
    """build/examples/<name>, from RX_EXAMPLE_SERVER / RX_EXAMPLE_CLIENT (set by CTest)."""
    path = os.environ.get(f"RX_EXAMPLE_{name.upper()}")
    if not path or not os.path.exists(path):
        raise RuntimeError(f"RX_EXAMPLE_{name.upper()} does not name the C++ example {name}")
    return path


def python_server_command(*extra):
    return [sys.executable, os.path.join(HERE, "server.py"), "--port", "0", *extra]


def python_client_command(port, count=1):
    return [sys.executable, os.path.join(HERE, "client.py"), "--url", "127.0.0.1", "--port", str(port), "-n",
            str(count)]


class ServerProcess:
    """A server child process whose output is drained by threads; `port` once it serves."""

    def __init__(self, command):
        self.lines = []
        self.errors = []
        self._stdout = queue.Queue()
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, errors="replace")
        self._pumps = [threading.Thread(target=self._pump, args=(stream, lines, announce), daemon=True)
                       for stream, lines, announce in ((self.process.stdout, self.lines, True),
                                                       (self.process.stderr, self.errors, False))]
        for pump in self._pumps:
            pump.start()
        self.port = self._read_port()

    def _pump(self, stream, lines, announce):
        for line in stream:
            lines.append(line.rstrip("\n"))
            if announce:
                self._stdout.put(line.rstrip("\n"))
        if announce:
            self._stdout.put(None)

    def _read_port(self):
        try:
            line = self._stdout.get(timeout=STARTUP_TIMEOUT)
        except queue.Empty:
            self.kill()
            raise AssertionError(f"server printed nothing in {STARTUP_TIMEOUT} s")
        match = SERVING_LINE.match(line or "")
        if not match:
            self.kill()
            raise AssertionError(f"unexpected first line {line!r}; stderr: {self.errors}")
        return int(match.group("port"))

    def stop(self, signal_number=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Sends the signal and returns the exit status (fails the test if it does not exit)."""
        if self.process.poll() is None:
            self.process.send_signal(signal_number)
        try:
            status = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"server did not exit within {timeout} s of signal {signal_number}")
        self._close()
        return status

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)
        self._close()

    def _close(self):
        for pump in self._pumps:  # they end at the pipes' end of file, once the process is gone
            pump.join(timeout=STOP_TIMEOUT)
        for stream in (self.process.stdout, self.process.stderr):
            stream.close()

    def output(self):
        return "stdout:\n" + "\n".join(self.lines) + "\nstderr:\n" + "\n".join(self.errors)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


def example_data(**xcoms):
    return dict(EXAMPLE_KEY, xcoms=xcoms)
