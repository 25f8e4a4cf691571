#!/usr/bin/python3
"""Turns Google Benchmark JSON from the bench/ binaries into docs/benchmarks.md and a PNG plot.

Usage:
  scripts/bench_report.py [--markdown docs/benchmarks.md] [--plot docs/benchmarks.png]
                          [--merged results/benchmarks.json] [--command "how it was run"]
                          [--revision GIT_REVISION] RESULT.json...

Each pair of twins (names equal but for a final raw_grpc / rxcomm / rxcomm_server part) gets its
ratios read off the same run: p50 ratio = ours p50 / raw p50 (lower is better), throughput ratio
= ours rate / raw rate (higher is better). rxcomm is our client to our server, rxcomm_server a raw
gRPC client to our server. Round trips run in one process (processes:1) and in two
(processes:2, the server in a child process); each mode gets its table. BM_PollerCapture
(bench/bm_capture.cpp) gets a table of its own. With repetitions the medians are used.

The text between <!-- analysis:begin --> and <!-- analysis:end --> in an existing markdown
file is kept, so the "Targets and where the time goes" section survives regeneration.

Needs Debian's python3-matplotlib; run it with /usr/bin/python3.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

ANALYSIS_BEGIN = "<!-- analysis:begin -->"
ANALYSIS_END = "<!-- analysis:end -->"
ANALYSIS_PLACEHOLDER = """\
_Not written yet. Whoever takes the final measurement writes here, for each target of the
issue that is missed: the profile (perf, callgrind, heaptrack), where the time or memory goes,
and what was or could be done. This section is kept when the page is regenerated._
"""

VARIANTS = ("raw_grpc", "rxcomm", "rxcomm_server")
# What each variant that is not the baseline puts against raw gRPC.
VARIANT_LABELS = {"rxcomm": "our client → our server", "rxcomm_server": "raw client → our server"}
# Parts Google Benchmark appends to a run name; they do not tell twins apart.
DECORATIONS = re.compile(r"^(real_time|process_time|manual_time|(iterations|repeats|min_time|threads):.*)$")

# Issue 3's and issue 6's targets, checked against this run (the lead owns them; see docs/benchmarks.md).
UNARY_P50_TARGET = 1.10
UNARY_THROUGHPUT_TARGET = 0.90
SERVER_THROUGHPUT_TARGET = 0.95
CAPTURE_RATIO_TARGET = 2.0
HANDOFF_NS_TARGET = 100.0
DENSITY_KIB_TARGET = 2.0
# Issue 7: the Exchange stream against raw gRPC.
EXCHANGE_VS_UNARY_THROUGHPUT_TARGET = 10.0  # Exchange at 4,096 ÷ raw unary at 64
EXCHANGE_VS_STREAM_THROUGHPUT_TARGET = 3.0  # Exchange at 256 ÷ raw bidi echo at 256
EXCHANGE_P50_TARGET = 1.10                  # Exchange at 1 ÷ raw bidi echo at 1
EXCHANGE_CPU_TARGET = 0.25                  # CPU per message, Exchange at 4,096 ÷ raw unary at 64
FAN_OUT_VS_UNARY_THROUGHPUT_TARGET = 5.0    # fan-out to 10,000 endpoints ÷ raw unary at 64


@dataclass
class Result:
    """One benchmark's figures: the median over repetitions of every number it reported."""

    run_name: str
    family: str
    params: dict[str, str]
    variant: str | None
    values: dict[str, float]
    spread: dict[str, float] = field(default_factory=dict)  # coefficient of variation, if repeated
    repetitions: int = 1
    error: str | None = None

    def get(self, key: str, default: float = float("nan")) -> float:
        return self.values.get(key, default)

    @property
    def pair_key(self) -> str:
        parts = [self.family] + [f"{k}:{v}" for k, v in self.params.items()]
        return "/".join(parts)

    @property
    def label(self) -> str:
        return " ".join([self.family.removeprefix("BM_")] + [f"{k}={v}" for k, v in self.params.items()])


def parse_name(run_name: str) -> tuple[str, dict[str, str], str | None, list[str]]:
    parts = [p for p in run_name.split("/") if not DECORATIONS.match(p)]
    family = parts[0]
    params: dict[str, str] = {}
    tags: list[str] = []
    variant = None
    for part in parts[1:]:
        if ":" in part:
            key, value = part.split(":", 1)
            params[key] = value
        elif part in VARIANTS:
            variant = part
        else:
            tags.append(part)
    if tags:
        family = "/".join([family] + tags)
    return family, params, variant, tags


NUMERIC_SKIP = {"family_index", "per_family_instance_index", "repetition_index", "threads", "repetitions"}


def numbers(entry: dict) -> dict[str, float]:
    out = {}
    for key, value in entry.items():
        if key in NUMERIC_SKIP or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[key] = float(value)
    return out


def load(paths: list[Path]) -> tuple[list[dict], list[dict]]:
    contexts, entries = [], []
    for path in paths:
        text = path.read_text()
        if not text.strip():  # a binary whose filter matched nothing writes an empty file
            print(f"skipping {path}: empty", file=sys.stderr)
            continue
        data = json.loads(text)
        context = data.get("context", {})
        context["_file"] = path.name
        contexts.append(context)
        entries.extend(data.get("benchmarks", []))
    return contexts, entries


def collect(entries: list[dict]) -> list[Result]:
    """Groups entries by run name; prefers the median aggregate, else the median of the runs."""
    by_name: dict[str, dict[str, list[dict]]] = {}
    order: list[str] = []
    for entry in entries:
        name = entry.get("run_name", entry["name"])
        if name not in by_name:
            by_name[name] = {"iteration": [], "median": [], "cv": [], "mean": []}
            order.append(name)
        if entry.get("run_type") == "aggregate":
            kind = entry.get("aggregate_name", "")
            if kind in by_name[name]:
                by_name[name][kind].append(entry)
        else:
            by_name[name]["iteration"].append(entry)

    results = []
    for name in order:
        group = by_name[name]
        family, params, variant, _ = parse_name(name)
        error = None
        for entry in group["iteration"] + group["median"]:
            if entry.get("error_occurred"):
                error = entry.get("error_message", "error")
        if group["median"]:
            values = numbers(group["median"][0])
            spread = numbers(group["cv"][0]) if group["cv"] else {}
            repetitions = int(group["median"][0].get("repetitions", 1))
        elif group["iteration"]:
            runs = [numbers(e) for e in group["iteration"]]
            keys = set().union(*runs)
            values = {k: statistics.median([r[k] for r in runs if k in r]) for k in keys}
            spread = {}
            if len(runs) > 1:
                for k in keys:
                    samples = [r[k] for r in runs if k in r]
                    mean = statistics.fmean(samples)
                    if len(samples) > 1 and mean:
                        spread[k] = statistics.stdev(samples) / mean
            repetitions = len(runs)
        else:
            continue
        results.append(Result(name, family, params, variant, values, spread, repetitions, error))
    return results


@dataclass
class Pair:
    key: str
    raw: Result
    ours: Result
    rate_counter: str

    @property
    def p50_ratio(self) -> float:
        return ratio(self.ours.get("p50_us"), self.raw.get("p50_us"))

    @property
    def p99_ratio(self) -> float:
        return ratio(self.ours.get("p99_us"), self.raw.get("p99_us"))

    @property
    def throughput_ratio(self) -> float:
        return ratio(self.ours.get(self.rate_counter), self.raw.get(self.rate_counter))

    @property
    def cpu_ratio(self) -> float:
        return ratio(cpu_us(self.ours), cpu_us(self.raw))

    def side_cpu_ratio(self, side: str) -> float:
        key = f"{side}_cpu_us_per_request"
        return ratio(self.ours.get(key), self.raw.get(key))

    @property
    def processes(self) -> str:
        return self.raw.params.get("processes", "1")

    @property
    def label(self) -> str:
        params = {k: v for k, v in self.raw.params.items() if k != "processes"}
        text = " ".join([self.raw.family.removeprefix("BM_")] + [f"{k}={v}" for k, v in params.items()])
        return f"{text}, {VARIANT_LABELS.get(self.ours.variant or '', self.ours.variant)}"


def cpu_us(result: Result) -> float:
    """CPU µs per request, both sides: the counter if the benchmark reports it, else the process's CPU time."""
    value = result.get("cpu_us_per_request")
    return value if value == value else result.get("cpu_time") / 1000

def ratio(a: float, b: float) -> float:
    if b != b or a != a or b == 0:  # NaN or zero
        return float("nan")
    return a / b


def rate_counter_of(result: Result) -> str:
    for name in ("requests_per_second", "messages_per_second", "items_per_second"):
        if name in result.values:
            return name
    return "items_per_second"


def natural_key(text: str) -> list:
    """Sorts "in_flight:64" after "in_flight:1" however the run interleaved them."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def find_pairs(results: list[Result]) -> list[Pair]:
    twins: dict[str, dict[str, Result]] = {}
    for result in results:
        if result.variant:
            twins.setdefault(result.pair_key, {})[result.variant] = result
    pairs = []
    for key, group in twins.items():
        for variant in VARIANTS[1:]:
            if "raw_grpc" in group and variant in group:
                pairs.append(Pair(key, group["raw_grpc"], group[variant], rate_counter_of(group["raw_grpc"])))
    return sorted(pairs, key=lambda p: natural_key(p.key + "/" + (p.ours.variant or "")))


# ---------------------------------------------------------------------------------------------
# Formatting


def fmt(value: float, digits: int = 3) -> str:
    if value != value:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def fmt_ratio(value: float) -> str:
    return "–" if value != value else f"{value:.2f}×"


def fmt_cv(result: Result, key: str) -> str:
    cv = result.spread.get(key)
    return "" if cv is None else f" ±{cv * 100:.0f}%"


def time_ns(result: Result) -> float:
    """Real time per iteration in ns (main() normalises every entry's time unit to ns)."""
    return result.get("real_time")


def table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> str:
    align = align or ["l"] + ["r"] * (len(header) - 1)
    marks = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / (1024 * 1024):.1f} GiB"
    except OSError:
        pass
    return "unknown"


def previous_analysis(markdown: Path) -> str:
    if markdown.exists():
        text = markdown.read_text()
        begin, end = text.find(ANALYSIS_BEGIN), text.find(ANALYSIS_END)
        if begin != -1 and end > begin:
            return text[begin + len(ANALYSIS_BEGIN) : end].strip("\n") + "\n"
    return ANALYSIS_PLACEHOLDER


# ---------------------------------------------------------------------------------------------
# Sections


def section_targets(results: list[Result], pairs: list[Pair]) -> str:
    def pair_where(family: str, in_flight: str, processes: str, variant: str) -> Pair | None:
        for p in pairs:
            if (p.raw.family == family and p.raw.params.get("in_flight") == in_flight and p.processes == processes
                    and p.ours.variant == variant and "socket" not in p.raw.params):
                return p
        return None

    mode = {"1": "one process", "2": "two processes"}
    rows = []
    for processes in ("1", "2"):
        unary1 = pair_where("BM_UnaryRoundTrip", "1", processes, "rxcomm")
        unary64 = pair_where("BM_UnaryRoundTrip", "64", processes, "rxcomm")
        server64 = pair_where("BM_UnaryRoundTrip", "64", processes, "rxcomm_server")
        if unary1:
            r = unary1.p50_ratio
            rows.append([f"our client → our server, p50 at 1 in flight, ÷ raw gRPC ({mode[processes]})",
                         f"≤ {UNARY_P50_TARGET:.2f}×", fmt_ratio(r), verdict(r <= UNARY_P50_TARGET, r)])
        if unary64:
            r = unary64.throughput_ratio
            rows.append([f"our client → our server, throughput at 64 in flight, ÷ raw gRPC ({mode[processes]})",
                         f"≥ {UNARY_THROUGHPUT_TARGET:.2f}×", fmt_ratio(r), verdict(r >= UNARY_THROUGHPUT_TARGET, r)])
        if server64:
            r = server64.throughput_ratio
            rows.append([f"raw client → our server, throughput at 64 in flight, ÷ raw gRPC ({mode[processes]})",
                         f"≥ {SERVER_THROUGHPUT_TARGET:.2f}×", fmt_ratio(r), verdict(r >= SERVER_THROUGHPUT_TARGET, r)])
    for processes in ("1", "2"):
        raw_unary64 = pair_where("BM_UnaryRoundTrip", "64", processes, "rxcomm")
        stream1 = pair_where("BM_StreamEcho", "1", processes, "rxcomm_server")
        stream256 = pair_where("BM_StreamEcho", "256", processes, "rxcomm_server")
        stream4096 = pair_where("BM_StreamEcho", "4096", processes, "rxcomm_server")
        if stream4096 and raw_unary64:
            unary = raw_unary64.raw
            r = ratio(stream4096.ours.get("messages_per_second"), unary.get("requests_per_second"))
            rows.append([f"Exchange at 4,096 in flight ÷ raw unary at 64, throughput ({mode[processes]})",
                         f"≥ {EXCHANGE_VS_UNARY_THROUGHPUT_TARGET:.0f}×", fmt_ratio(r),
                         verdict(r >= EXCHANGE_VS_UNARY_THROUGHPUT_TARGET, r)])
            c = ratio(cpu_us(stream4096.ours), cpu_us(unary))
            rows.append([f"Exchange at 4,096 ÷ raw unary at 64, CPU per message ({mode[processes]})",
                         f"≤ {EXCHANGE_CPU_TARGET:.2f}×", fmt_ratio(c), verdict(c <= EXCHANGE_CPU_TARGET, c)])
        if stream256:
            r = stream256.throughput_ratio
            rows.append([f"Exchange at 256 in flight ÷ raw bidi echo at 256, throughput ({mode[processes]})",
                         f"≥ {EXCHANGE_VS_STREAM_THROUGHPUT_TARGET:.0f}×", fmt_ratio(r),
                         verdict(r >= EXCHANGE_VS_STREAM_THROUGHPUT_TARGET, r)])
        if stream1:
            r = stream1.p50_ratio
            rows.append([f"Exchange at 1 in flight ÷ raw bidi echo at 1, p50 ({mode[processes]})",
                         f"≤ {EXCHANGE_P50_TARGET:.2f}×", fmt_ratio(r), verdict(r <= EXCHANGE_P50_TARGET, r)])
        # The same stream driven by our client (rx::Client on the Exchange transport).
        client4096 = pair_where("BM_StreamEcho", "4096", processes, "rxcomm")
        client1 = pair_where("BM_StreamEcho", "1", processes, "rxcomm")
        if client4096 and raw_unary64:
            r = ratio(client4096.ours.get("messages_per_second"), raw_unary64.raw.get("requests_per_second"))
            rows.append([f"our client on Exchange at 4,096 ÷ raw unary at 64, throughput ({mode[processes]})",
                         f"≥ {EXCHANGE_VS_UNARY_THROUGHPUT_TARGET:.0f}×", fmt_ratio(r),
                         verdict(r >= EXCHANGE_VS_UNARY_THROUGHPUT_TARGET, r)])
        if client1:
            r = client1.p50_ratio
            rows.append([f"our client on Exchange at 1 ÷ raw bidi echo at 1, p50 ({mode[processes]})",
                         f"≤ {EXCHANGE_P50_TARGET:.2f}×", fmt_ratio(r), verdict(r <= EXCHANGE_P50_TARGET, r)])
        for r in results:
            if (r.family == "BM_FanOut" and r.params.get("processes") == processes
                    and r.params.get("endpoints") == "10000" and raw_unary64):
                x = ratio(r.get("requests_per_second"), raw_unary64.raw.get("requests_per_second"))
                rows.append([f"fan-out to 10,000 endpoints ({r.params.get('transport')}) ÷ raw unary at 64, "
                             f"throughput ({mode[processes]})", f"≥ {FAN_OUT_VS_UNARY_THROUGHPUT_TARGET:.0f}×",
                             fmt_ratio(x), verdict(x >= FAN_OUT_VS_UNARY_THROUGHPUT_TARGET, x)])
    for result in results:
        if result.family == "BM_PollerCapture" and result.params.get("loaded_servers") == "2":
            r = result.get("capture_ratio")
            rows.append(["probe p50 with two loops saturated ÷ probe p50 idle (poller capture)",
                         f"≤ {CAPTURE_RATIO_TARGET:.0f}×", fmt_ratio(r), verdict(r <= CAPTURE_RATIO_TARGET, r)])
    for result in results:
        if result.family.startswith("BM_LoopHandoffDispatchEach"):
            ns = time_ns(result)
            rows.append(["loop hand-off per message (dispatched each)", f"< {HANDOFF_NS_TARGET:.0f} ns", f"{fmt(ns)} ns",
                         verdict(ns < HANDOFF_NS_TARGET, ns)])
    densest = [r for r in results if r.family == "BM_EndpointDensity/server_attached"]
    if densest:
        top = max(densest, key=lambda r: float(r.params.get("endpoints", "0")))
        kib = top.get("kib_per_endpoint")
        rows.append([f"idle endpoint RSS at {int(float(top.params['endpoints'])):,} endpoints (server)",
                     f"< {DENSITY_KIB_TARGET:.0f} KiB", f"{fmt(kib)} KiB", verdict(kib < DENSITY_KIB_TARGET, kib)])
    if not rows:
        return ""
    return "## Targets (issues 3, 6 and 7), checked against this run\n\n" + table(
        ["target", "wanted", "this run", "met"], rows, ["l", "r", "r", "l"]) + "\n"


def verdict(ok: bool, value: float) -> str:
    if value != value:
        return "–"
    return "yes" if ok else "**no**"


def section_pairs(pairs: list[Pair]) -> str:
    if not pairs:
        return ""
    sections = []
    one = [p for p in pairs if p.processes == "1"]
    two = [p for p in pairs if p.processes == "2"]
    if one:
        rows = []
        for p in one:
            rows.append(pair_row(p) + [
                f"{fmt(cpu_us(p.raw))} / {fmt(cpu_us(p.ours))}", fmt_ratio(p.cpu_ratio),
                f"{fmt(p.raw.get('sleeps_per_request'), 2)} / {fmt(p.ours.get('sleeps_per_request'), 2)}",
                fmt(p.ours.get("loop_thread_jobs_per_request"), 2),
            ])
        sections.append(
            "## Remote XComm against raw gRPC, one process\n\n"
            "Client and server in the benchmark's process, sharing gRPC's threads (which hides part of a client's "
            "cost). Each row is a pair of twins from the same run: raw gRPC / ours. Ratios are ours ÷ raw "
            "(latency and CPU: lower is better; throughput: higher is better). CPU is the process's CPU time per "
            "request, client and server together, in µs. Sleeps are voluntary context switches of all the "
            "process's threads per request: each is a thread that some later message has to wake, the cost the "
            "hand-off design must not add. Loop jobs count work that reached a Loop's own thread instead of running "
            "on the gRPC thread that delivered it.\n\n"
            + table(PAIR_HEADER + ["CPU µs/req raw / ours", "CPU ratio", "sleeps/req raw / ours",
                                   "loop-thread jobs/req ours"], rows)
            + "\n")
    if two:
        rows = []
        for p in two:
            rows.append(pair_row(p) + [
                f"{fmt(p.raw.get('client_cpu_us_per_request'))} / {fmt(p.ours.get('client_cpu_us_per_request'))}",
                fmt_ratio(p.side_cpu_ratio("client")),
                f"{fmt(p.raw.get('server_cpu_us_per_request'))} / {fmt(p.ours.get('server_cpu_us_per_request'))}",
                fmt_ratio(p.side_cpu_ratio("server")),
                f"{fmt(p.raw.get('sleeps_per_request'), 2)} / {fmt(p.ours.get('sleeps_per_request'), 2)}",
                fmt(p.ours.get("loop_thread_jobs_per_request"), 2),
            ])
        sections.append(
            "## Remote XComm against raw gRPC, two processes\n\n"
            "The server in a process of its own (`bench/bench_server.cpp`, started by the benchmark), as users run "
            "it. Columns as above; CPU is each process's CPU time per request, client and server apart (the "
            "client's of a raw client → our server pair is the same raw client twice). Sleeps and loop jobs count "
            "both processes.\n\n"
            + table(PAIR_HEADER + ["client CPU µs/req raw / ours", "client CPU ratio", "server CPU µs/req raw / ours",
                                   "server CPU ratio", "sleeps/req raw / ours", "loop-thread jobs/req ours"], rows)
            + "\n")
    return "\n".join(sections)


PAIR_HEADER = ["benchmark", "p50 µs raw / ours", "p50 ratio", "p99 µs raw / ours", "p99 ratio", "throughput raw / ours",
               "throughput ratio"]


def pair_row(p: Pair) -> list[str]:
    unit = "msg/s" if "messages" in p.rate_counter else "req/s"
    return [
        p.label,
        f"{fmt(p.raw.get('p50_us'))} / {fmt(p.ours.get('p50_us'))}",
        fmt_ratio(p.p50_ratio),
        f"{fmt(p.raw.get('p99_us'))} / {fmt(p.ours.get('p99_us'))}",
        fmt_ratio(p.p99_ratio),
        f"{fmt(p.raw.get(p.rate_counter))}{fmt_cv(p.raw, p.rate_counter)} / "
        f"{fmt(p.ours.get(p.rate_counter))}{fmt_cv(p.ours, p.rate_counter)} {unit}",
        fmt_ratio(p.throughput_ratio),
    ]


def section_capture(results: list[Result]) -> str:
    rows = []
    for r in results:
        if r.family == "BM_PollerCapture":
            rows.append([r.params.get("loaded_servers", "?"), r.params.get("in_flight", "?"),
                         r.params.get("task_us", "?"), fmt(r.get("probe_p50_idle_us")), fmt(r.get("probe_p50_us")),
                         fmt_ratio(r.get("capture_ratio")), fmt(r.get("probe_p99_us")),
                         fmt(r.get("load_requests_per_second")), f"{r.get('task_bodies_on_loop_thread') * 100:.0f}%",
                         r.error or ""])
    if not rows:
        return ""
    return ("## Poller capture\n\nTwo `rx::Server`s in one process (`bench_server --server=busy`), each on a Loop "
            "with an io_context thread of its own; their tasks compute 200 µs without yielding. The benchmark loads "
            "1 or 2 of them with a raw client (32 in flight each) while a probe sends requests that need no loop "
            "work (invalid JSON, refused with INVALID_ARGUMENT on the gRPC thread) to the first, one at a time. "
            "Ratio = probe p50 under load ÷ probe p50 on the idle servers (target ≤ 2× with two loops loaded). "
            "\"On loop thread\" is the share of task bodies run by a loop's own io_context thread rather than a "
            "borrowed gRPC thread (`bench/bm_capture.cpp`).\n\n"
            + table(["loaded servers", "in flight each", "task µs", "probe p50 idle µs", "probe p50 loaded µs",
                     "ratio", "probe p99 loaded µs", "load req/s", "on loop thread", "error"], rows,
                    ["r", "r", "r", "r", "r", "r", "r", "r", "r", "l"]) + "\n")


def section_network(results: list[Result], pairs: list[Pair]) -> str:
    paired = {p.raw.run_name for p in pairs} | {p.ours.run_name for p in pairs}
    rows = []
    for r in results:
        if r.variant is None or r.run_name in paired or r.family == "BM_FanOut":
            continue
        counter = rate_counter_of(r)
        unit = "msg/s" if "messages" in counter else "req/s"
        rows.append([f"{r.label} ({r.variant})", fmt(r.get("p50_us")), fmt(r.get("p99_us")),
                     f"{fmt(r.get(counter))}{fmt_cv(r, counter)} {unit}", fmt(cpu_us(r)),
                     fmt(r.get("sleeps_per_request"), 2), r.error or ""])
    if not rows:
        return ""
    return ("## Runs without a twin\n\n"
            + table(["benchmark", "p50 µs", "p99 µs", "throughput", "CPU µs/msg", "sleeps/msg", "error"], rows,
                    ["l", "r", "r", "r", "r", "r", "l"]) + "\n")


def section_fan_out(results: list[Result]) -> str:
    rows = []
    for r in sorted((r for r in results if r.family == "BM_FanOut"), key=lambda r: natural_key(r.run_name)):
        rows.append([r.params.get("processes", "?"), f"{int(float(r.params.get('endpoints', '0'))):,}",
                     r.params.get("transport", "?"), f"{fmt(r.get('requests_per_second'))}{fmt_cv(r, 'requests_per_second')}",
                     fmt(r.get("batch_p50_ms")), fmt(cpu_us(r)), fmt(r.get("sleeps_per_request"), 2), r.error or ""])
    if not rows:
        return ""
    return ("## Fan-out\n\n`rx::fan_out` of one request to each of N endpoints of one server, batch after batch, "
            "with a window of 4,096 in flight; results per second count every endpoint's reply. Its baseline is raw "
            "unary at 64 in flight (the targets above).\n\n"
            + table(["processes", "endpoints", "transport", "results/s", "batch p50 ms", "CPU µs/result",
                     "sleeps/result", "error"], rows, ["r", "r", "l", "r", "r", "r", "r", "l"]) + "\n")


def section_unix(results: list[Result]) -> str:
    by_name = {r.run_name: r for r in results}
    rows = []
    for r in results:
        if r.params.get("socket") != "unix":
            continue
        tcp = by_name.get(r.run_name.replace("/socket:unix", ""))
        if tcp is None:
            continue
        counter = rate_counter_of(r)
        rows.append([f"{r.family.removeprefix('BM_')} in_flight={r.params.get('in_flight')} ({r.variant})",
                     fmt(tcp.get(counter)), fmt(r.get(counter)), fmt_ratio(ratio(r.get(counter), tcp.get(counter))),
                     fmt(tcp.get("p50_us")), fmt(r.get("p50_us")), fmt_ratio(ratio(r.get("p50_us"), tcp.get("p50_us")))])
    if not rows:
        return ""
    return ("## Unix domain socket against TCP loopback (two processes)\n\nThe same twins with the server listening "
            "on `unix:/tmp/…` (`ServerOptions::address`) instead of 127.0.0.1.\n\n"
            + table(["benchmark", "TCP /s", "Unix /s", "Unix ÷ TCP", "TCP p50 µs", "Unix p50 µs", "Unix ÷ TCP p50"],
                    rows, ["l", "r", "r", "r", "r", "r", "r"]) + "\n")


def section_overload(results: list[Result]) -> str:
    rows = []
    for r in sorted((r for r in results if r.family == "BM_OverloadMemory"), key=lambda r: natural_key(r.run_name)):
        rows.append([r.params.get("transport", "?"), f"{int(float(r.params.get('flood', '0'))):,}",
                     r.params.get("limits", "?"), f"{int(r.get('held', 0)):,}", f"{int(r.get('refused', 0)):,}",
                     fmt(r.get("server_rss_growth_mib")), fmt(r.get("kib_per_held")),
                     fmt(r.get("client_rss_growth_mib")), r.error or ""])
    if not rows:
        return ""
    return ("## Memory under overload\n\n`bm_overload`: a flood of sends from our client to a server (its own process) "
            "whose tasks never answer. With limits on (the defaults; unary runs lower "
            "`max_requests_in_flight` to 10,000), a unary call over the limit is refused at once and an Exchange "
            "stream stops reading at its limit (`max_stream_requests_in_flight`, 16,384), so HTTP/2 flow control "
            "keeps the rest in the client; with limits off the server takes everything. Server RSS after "
            "`malloc_trim`, once nothing moved for 0.5 s.\n\n"
            + table(["transport", "flood", "limits", "held", "refused", "server RSS growth MiB", "KiB per held",
                     "client RSS growth MiB", "error"], rows, ["l", "r", "l", "r", "r", "r", "r", "r", "l"]) + "\n")


def section_handoff(results: list[Result]) -> str:
    rows = []
    for r in results:
        if r.family.startswith("BM_LoopHandoff"):
            ns = time_ns(r)
            rows.append([r.label, f"{fmt(ns)}{fmt_cv(r, 'real_time')}", fmt(r.get("items_per_second") / 1e6)])
    if not rows:
        return ""
    return ("## Loop hand-off (no network)\n\nA payload delivered to a task waiting in `get()` until its `push()` has "
            "completed, on one loop run by the benchmark thread (`bench/bm_handoff.cpp`).\n\n"
            + table(["benchmark", "ns per message", "million messages/s"], rows) + "\n")


def section_codec(results: list[Result]) -> str:
    rows = []
    for r in results:
        if r.family in ("BM_JsonParse", "BM_JsonSerialize", "BM_ProtoEncode", "BM_ProtoDecode"):
            rows.append([r.label, fmt(r.get("message_bytes")), fmt(time_ns(r) / 1000),
                         f"{fmt(r.get('bytes_per_second') / (1024 * 1024))}{fmt_cv(r, 'bytes_per_second')}"])
    if not rows:
        return ""
    return ("## Codec\n\nJSON with the library's codec (boost::json); proto encode/decode of a SendRequest carrying "
            "that JSON. Sizes are the payload's JSON text; message bytes include the proto framing.\n\n"
            + table(["benchmark", "message bytes", "µs per message", "MiB/s"], rows) + "\n")


def section_density(results: list[Result]) -> str:
    rows = []
    for r in sorted(results, key=lambda r: (r.family, r.get("endpoints"))):
        if r.family.startswith("BM_EndpointDensity"):
            rows.append([r.family.removeprefix("BM_EndpointDensity/"), f"{int(r.get('endpoints')):,}",
                         fmt(r.get("bytes_per_endpoint")), fmt(r.get("kib_per_endpoint")),
                         f"{fmt(r.get('rss_before_mib'))} → {fmt(r.get('rss_after_mib'))}", r.error or ""])
    if not rows:
        return ""
    return ("## Endpoint density\n\nResident memory per idle endpoint (its task suspended in `get()`), from VmRSS "
            "before and after (`bench/bm_density.cpp` says how each variant gets there).\n\n"
            + table(["variant", "endpoints", "bytes / endpoint", "KiB / endpoint", "RSS MiB", "error"], rows,
                    ["l", "r", "r", "r", "r", "l"]) + "\n")


def section_machine(contexts: list[dict], command: str, revision: str) -> str:
    first = contexts[0] if contexts else {}
    loads = ", ".join(
        f"{c['_file']}: " + " ".join(f"{x:.2f}" for x in c.get("load_avg", [])) for c in contexts if c.get("load_avg"))
    builds = sorted({c.get("library_build_type", "?") for c in contexts})
    lines = [
        f"- **Date**: {first.get('date', dt.datetime.now().astimezone().isoformat(timespec='seconds'))}"
        f" (report written {dt.datetime.now().astimezone().isoformat(timespec='seconds')})",
        f"- **Machine**: {os.cpu_count()} CPUs (`nproc`), {cpu_model()}, {memory_total()} RAM, "
        f"kernel {platform.release()}, host `{first.get('host_name', platform.node())}`",
        f"- **Build**: Release; revision `{revision}`; Google Benchmark library built as {', '.join(builds)} "
        "(Debian's package; it times our code, its own build type does not change that)",
        f"- **Load average when each binary started** (1, 5, 15 min): {loads or 'not reported'}",
        f"- **Reproduce**: `{command}`",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Plot


def short_label(result: Result) -> str:
    text = result.label.replace("UnaryRoundTrip ", "unary ").replace("StreamEcho ", "stream\n")
    text = text.replace("processes=1 ", "1 proc ").replace("processes=2 ", "2 procs ").replace("in_flight=", "×")
    return text.replace(" payload_bytes=", "\n") + " B"


def pair_short_label(pair: Pair) -> str:
    text = pair.raw.label.replace("UnaryRoundTrip ", "").replace(" payload_bytes=", "\n").replace("in_flight=", "×")
    text = text.replace("processes=1", "1 proc").replace("processes=2", "2 procs")
    return text + " B\n" + ("server" if pair.ours.variant == "rxcomm_server" else "client+server")


def annotate_bars(ax, xs, values, clip: float | None = None) -> None:
    for x, v in zip(xs, values):
        if v == v:
            ax.annotate(fmt(v), (x, min(v, clip) if clip else v), ha="center", va="bottom", fontsize=7)


def plot(pairs: list[Pair], results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paired = {p.raw.run_name for p in pairs} | {p.ours.run_name for p in pairs}
    streams = [r for r in results if r.variant and r.run_name not in paired]
    handoff = [r for r in results if r.family.startswith("BM_LoopHandoff")]
    density = sorted((r for r in results if r.family.startswith("BM_EndpointDensity")),
                     key=lambda r: (r.family, r.get("endpoints")))
    codec = [r for r in results if r.family in ("BM_JsonParse", "BM_JsonSerialize", "BM_ProtoEncode",
                                                "BM_ProtoDecode")]

    fig, axes = plt.subplots(2, 3, figsize=(24, 10))
    (ax_ratio, ax_rate, ax_latency), (ax_handoff, ax_density, ax_codec) = axes

    # Ratios, clipped so that one wild p99 does not flatten the rest; every bar carries its value.
    clip = 3.0
    xs = list(range(len(pairs)))
    width = 0.2
    series = [("p50 latency", [p.p50_ratio for p in pairs], "tab:blue"),
              ("p99 latency", [p.p99_ratio for p in pairs], "tab:cyan"),
              ("throughput", [p.throughput_ratio for p in pairs], "tab:green"),
              ("CPU per request", [p.cpu_ratio for p in pairs], "tab:red")]
    for i, (name, values, color) in enumerate(series):
        offset = (i - (len(series) - 1) / 2) * width
        ax_ratio.bar([x + offset for x in xs], [min(v, clip) for v in values], width, label=name, color=color)
        annotate_bars(ax_ratio, [x + offset for x in xs], values, clip)
    ax_ratio.axhline(1.0, color="black", linewidth=0.8)
    ax_ratio.axhline(UNARY_P50_TARGET, color="tab:blue", linestyle=":", linewidth=1, label="p50 target (≤)")
    ax_ratio.axhline(UNARY_THROUGHPUT_TARGET, color="tab:green", linestyle=":", linewidth=1,
                     label="throughput target (≥)")
    ax_ratio.set_ylim(0, clip * 1.1)
    ax_ratio.set_xticks(xs, [pair_short_label(p) for p in pairs])
    ax_ratio.set_ylabel(f"Remote XComm ÷ raw gRPC (bars clipped at {clip:g}×)")
    ax_ratio.set_title("Ratios to raw gRPC, same run")
    ax_ratio.legend(fontsize=7)

    labels = [pair_short_label(p) for p in pairs] + [short_label(r) for r in streams]
    raw_rates = [p.raw.get(p.rate_counter) for p in pairs] + [r.get(rate_counter_of(r)) for r in streams]
    our_rates = [p.ours.get(p.rate_counter) for p in pairs] + [float("nan")] * len(streams)
    xs = list(range(len(labels)))
    ax_rate.bar([x - 0.2 for x in xs], [v / 1000 for v in raw_rates], 0.4, label="raw gRPC", color="tab:gray")
    ax_rate.bar([x + 0.2 for x in xs], [v / 1000 for v in our_rates], 0.4, label="Remote XComm", color="tab:orange")
    annotate_bars(ax_rate, [x - 0.2 for x in xs], [v / 1000 for v in raw_rates])
    annotate_bars(ax_rate, [x + 0.2 for x in xs], [v / 1000 for v in our_rates])
    ax_rate.set_xticks(xs, labels)
    ax_rate.set_ylabel("thousand requests (stream: messages) / s")
    ax_rate.set_title("Throughput")
    ax_rate.legend(fontsize=7)

    bars = [("raw p50", [p.raw.get("p50_us") for p in pairs] + [r.get("p50_us") for r in streams], "tab:gray"),
            ("Remote XComm p50", [p.ours.get("p50_us") for p in pairs] + [float("nan")] * len(streams),
             "tab:orange"),
            ("raw p99", [p.raw.get("p99_us") for p in pairs] + [r.get("p99_us") for r in streams], "silver"),
            ("Remote XComm p99", [p.ours.get("p99_us") for p in pairs] + [float("nan")] * len(streams),
             "navajowhite")]
    for i, (name, values, color) in enumerate(bars):
        offset = (i - 1.5) * 0.2
        ax_latency.bar([x + offset for x in xs], values, 0.2, label=name, color=color)
        annotate_bars(ax_latency, [x + offset for x in xs], values)
    ax_latency.set_xticks(xs, labels)
    ax_latency.set_yscale("log")
    finite = [v for _, values, _ in bars for v in values if v == v and v > 0]
    if finite:
        ax_latency.set_ylim(min(finite) / 2, max(finite) * 20)  # room for the legend above the bars
    ax_latency.set_ylabel("µs (log scale)")
    ax_latency.set_title("Latency")
    ax_latency.legend(fontsize=7)

    values = [time_ns(r) for r in handoff]
    ax_handoff.bar(range(len(values)), values, color="tab:purple")
    annotate_bars(ax_handoff, range(len(values)), values)
    ax_handoff.axhline(HANDOFF_NS_TARGET, color="black", linestyle=":", linewidth=1, label="target (<)")
    ax_handoff.set_xticks(range(len(values)), [r.label.removeprefix("LoopHandoff").replace(" ", "\n", 1)
                                               for r in handoff])
    ax_handoff.set_ylabel("ns per message")
    ax_handoff.set_title("Loop hand-off, no network")
    ax_handoff.legend(fontsize=7)

    values = [r.get("bytes_per_endpoint") for r in density]
    ax_density.bar(range(len(values)), values, color="tab:brown")
    annotate_bars(ax_density, range(len(values)), values)
    ax_density.axhline(DENSITY_KIB_TARGET * 1024, color="black", linestyle=":", linewidth=1, label="target (<)")
    ax_density.set_xticks(range(len(values)), [f"{r.family.removeprefix('BM_EndpointDensity/')}\n"
                                               f"{int(r.get('endpoints')):,}" for r in density])
    ax_density.set_ylabel("RSS bytes per idle endpoint")
    ax_density.set_title("Endpoint density")
    ax_density.legend(fontsize=7)

    operations = list(dict.fromkeys(r.family for r in codec))
    sizes = sorted({int(r.params.get("payload_bytes", "0")) for r in codec})
    for i, op in enumerate(operations):
        by_size = {int(r.params.get("payload_bytes", "0")): r.get("bytes_per_second") / (1024 * 1024)
                   for r in codec if r.family == op}
        offset = (i - (len(operations) - 1) / 2) * 0.2
        ax_codec.bar([x + offset for x in range(len(sizes))], [by_size.get(s, float("nan")) for s in sizes], 0.2,
                     label=op.removeprefix("BM_"))
    ax_codec.set_xticks(range(len(sizes)), [f"{s:,} B" for s in sizes])
    ax_codec.set_yscale("log")
    finite = [r.get("bytes_per_second") / (1024 * 1024) for r in codec if r.get("bytes_per_second") > 0]
    if finite:
        ax_codec.set_ylim(min(finite) / 2, max(finite) * 8)
    ax_codec.set_ylabel("MiB/s (log scale)")
    ax_codec.set_title("Codec, by JSON payload size")
    if operations:
        ax_codec.legend(fontsize=7)

    for ax in axes.flat:
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle("Remote XComm benchmarks (scripts/bench.sh); see docs/benchmarks.md for the machine and run")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path, help="Google Benchmark JSON files")
    parser.add_argument("--markdown", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--plot", type=Path, default=Path("docs/benchmarks.png"))
    parser.add_argument("--merged", type=Path, help="also write every result into this one JSON file")
    parser.add_argument("--command", default="scripts/bench.sh", help="the command that reproduces the run")
    parser.add_argument("--revision", default="unknown", help="git revision measured")
    args = parser.parse_args(argv)

    contexts, entries = load(args.results)
    if args.merged:
        args.merged.parent.mkdir(parents=True, exist_ok=True)
        args.merged.write_text(json.dumps({"contexts": contexts, "benchmarks": entries}, indent=1) + "\n")

    # Normalise times to ns so every table reads the same.
    for entry in entries:
        scale = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}.get(entry.get("time_unit", "ns"), 1.0)
        for key in ("real_time", "cpu_time"):
            if key in entry and scale != 1.0:
                entry[key] = entry[key] * scale
        entry["time_unit"] = "ns"
    results = sorted(collect(entries), key=lambda r: natural_key(r.run_name))
    pairs = find_pairs(results)

    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    analysis = previous_analysis(args.markdown)
    plot(pairs, results, args.plot)
    try:
        plot_ref = os.path.relpath(args.plot, args.markdown.parent)
    except ValueError:
        plot_ref = str(args.plot)

    errors = [r for r in results if r.error]
    parts = [
        "# Benchmarks\n",
        "<!-- Written by scripts/bench_report.py from the JSON of scripts/bench.sh. Regenerating it keeps only the "
        "analysis section below; edit the rest through the script. -->\n",
        "Remote XComm's hot message path measured with the Google Benchmark suite in `bench/`, beside a raw gRPC "
        "callback-API echo built into the same binaries. Figures are medians over repetitions where the run had "
        "them (± is the coefficient of variation). A ratio is only meaningful between twins of the same run.\n",
        section_machine(contexts, args.command, args.revision),
        f"![Ratios and absolute figures]({plot_ref})\n",
        section_targets(results, pairs),
        "## Targets and where the time goes\n",
        ANALYSIS_BEGIN + "\n" + analysis + ANALYSIS_END + "\n",
        section_pairs(pairs),
        section_capture(results),
        section_network(results, pairs),
        section_fan_out(results),
        section_unix(results),
        section_overload(results),
        section_handoff(results),
        section_codec(results),
        section_density(results),
    ]
    if errors:
        parts.append("## Errors\n\n" + "\n".join(f"- `{r.run_name}`: {r.error}" for r in errors) + "\n")
    parts.append(
        "## How the benchmarks work\n\n"
        "- `bench/bm_roundtrip.cpp`: loopback 127.0.0.1, servers and clients built once outside the timed region. "
        "Each completion issues the next request, so N stay in flight; every request of the budget is waited for "
        "inside the timed region (real time). Twins put the same bytes on the wire and report the same counters. "
        "`processes:2` runs the server in a child process (`bench/bench_server.cpp`), started once per server kind "
        "and stopped at exit; both processes' CPU is counted (the child reports its own `getrusage`).\n"
        "- `bench/bm_capture.cpp`: poller capture, two busy loops in a server process, a probe that needs no loop "
        "work.\n"
        "- `bench/bm_handoff.cpp`: `detail::EndpointState` with a fake reply sink; the loop runs on the benchmark "
        "thread.\n"
        "- `bench/bm_codec.cpp`: realistic XCom payloads (annotations, a table of records) of exact JSON sizes.\n"
        "- `bench/bm_density.cpp`: VmRSS difference after `malloc_trim`, each case in a process of its own.\n"
        "- CI runs every benchmark once in a smoke mode (`ctest -L bench_smoke`); that checks they work, "
        "not how fast.\n")
    args.markdown.write_text("\n".join(p for p in parts if p))
    print(f"wrote {args.markdown} and {args.plot} from {len(results)} benchmarks ({len(pairs)} pairs of twins)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
