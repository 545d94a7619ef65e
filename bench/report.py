#!/usr/bin/env python3
"""Summarizes a bench/measure.py run: medians (min–max), ratios, the issue's targets.

    report.py --results DIR [--report FILE.md]

Prints the markdown report and writes it to FILE.md. Ratios are of medians measured in the same
run: cimage/skopeo, and cimage/limit where the limit is the best single-pass shell pipeline
(curl | tee >(sha256sum) | gzip -dc | tar -x; the faster of one layer at a time and two at once).
"""
import argparse
import json
import os
import statistics
from collections import defaultdict


def fmt_s(x):
    if x is None:
        return "–"
    if x < 0.1:
        return "%.1f ms" % (x * 1000)
    return "%.2f s" % x


def cell(xs):
    """median (min–max)"""
    if not xs:
        return "–"
    m = statistics.median(xs)
    if m < 0.1:
        return "%.1f ms (%.1f–%.1f)" % (m * 1000, min(xs) * 1000, max(xs) * 1000)
    return "%.2f s (%.2f–%.2f)" % (m, min(xs), max(xs))


def ratio(a, b):
    return "%.2f×" % (a / b) if a and b else "–"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--report")
    a = ap.parse_args()
    rows = [json.loads(l) for l in open(os.path.join(a.results, "results.jsonl"))]
    machine_path = os.path.join(a.results, "machine.json")
    machine = json.load(open(machine_path)) if os.path.exists(machine_path) else {}
    ok = defaultdict(list)  # (image, fs, kind, tool) -> [row]
    failures = defaultdict(int)
    for r in rows:
        if r.get("rc", 0) == 0:
            ok[(r["image"], r["fs"], r["kind"], r["tool"])].append(r)
        else:
            failures[(r["image"], r["fs"], r["kind"], r["tool"])] += 1
    images = list(dict.fromkeys(r["image"] for r in rows))
    fss = list(dict.fromkeys(r["fs"] for r in rows if r["kind"] in ("cold", "warm")))

    def walls(image, fs, kind, tool):
        return [r["wall"] for r in ok.get((image, fs, kind, tool), [])]

    def med(image, fs, kind, tool):
        w = walls(image, fs, kind, tool)
        return statistics.median(w) if w else None

    pipelines = ["pipeline-seq-gzip", "pipeline-seq-pigz", "pipeline-seq-zstd", "pipeline-par-pigz",
                 "pipeline-par-zstd"]

    def best_pipeline(image, fs):
        c = [m for m in (med(image, fs, "cold", t) for t in pipelines) if m]
        return min(c) if c else None

    out = []
    p = out.append
    p("# cimage benchmark")
    p("")
    if machine:
        p("%s · %s cores (%s) · kernel %s · %s GiB · %s rounds%s · load %s → %s · steal %s%% · %s s" % (
            machine.get("date"), machine.get("nproc"), machine.get("cpu", "").strip(), machine.get("kernel"),
            machine.get("mem_gib"), machine.get("rounds"), " (QUICK)" if machine.get("quick") else "",
            " ".join(machine.get("loadavg_start", [])), " ".join(machine.get("loadavg_end", [])),
            machine.get("steal_pct"), machine.get("duration_s")))
        v = machine.get("versions", {})
        p("")
        p("cimage %s · %s · %s · containers-storage %s · docker-registry %s" % (
            v.get("cimage"), v.get("skopeo"), v.get("podman"), v.get("containers-storage"),
            v.get("docker-registry")))
        p("")
        p("| image | layers | compressed | uncompressed | entries |")
        p("|---|---|---|---|---|")
        for ref, m in machine.get("images", {}).items():
            if ref.split("/", 1)[1] in images:
                p("| %s | %d | %.1f MiB | %.1f MiB | %d |" % (ref.split("/", 1)[1], m["layer_count"],
                                                             m["compressed"] / 2**20, m["uncompressed"] / 2**20,
                                                             m["entries"]))
        p("")
    p("Medians of wall time with (min–max). Cold: empty store; warm: the image is present. "
      "pipeline-MODE-DEC = `curl | tee >(sha256sum) | DEC -dc | tar -x` per layer (seq: one layer at a "
      "time, par: two at once); the best pipeline is the fastest of them.")
    for fs in fss:
        p("")
        p("## Store on %s" % ("a fresh loop-mounted ext4" if fs == "ext4" else fs))
        p("")
        tools = ["cimage", "cimage-nosync", "skopeo", "podman"] + pipelines
        present = [t for t in tools if any(walls(i, fs, "cold", t) for i in images)]
        p("| cold pull | " + " | ".join(present) + " | cimage/skopeo | cimage/pipeline |")
        p("|---" * (len(present) + 3) + "|")
        for i in images:
            c, s, pl = med(i, fs, "cold", "cimage"), med(i, fs, "cold", "skopeo"), best_pipeline(i, fs)
            p("| %s | %s | %s | %s |" % (i, " | ".join(cell(walls(i, fs, "cold", t)) for t in present),
                                         ratio(c, s), ratio(c, pl)))
        p("")
        p("| warm pull | cimage | skopeo | podman | cimage/skopeo |")
        p("|---|---|---|---|---|")
        for i in images:
            c, s = med(i, fs, "warm", "cimage"), med(i, fs, "warm", "skopeo")
            p("| %s | %s | %s | %s | %s |" % (i, cell(walls(i, fs, "warm", "cimage")),
                                              cell(walls(i, fs, "warm", "skopeo")),
                                              cell(walls(i, fs, "warm", "podman")), ratio(c, s)))
        p("")
        p("| limits | curl (all blobs) | sha256sum | gzip/zstd -dc | pigz -dc | tar -x | best pipeline |")
        p("|---|---|---|---|---|---|---|")
        for i in images:
            dec = walls(i, fss[0], "limit", "gzip -dc") or walls(i, fss[0], "limit", "zstd -dc")
            p("| %s | %s | %s | %s | %s | %s | %s |" % (i, cell(walls(i, fss[0], "limit", "curl")),
                                                   cell(walls(i, fss[0], "limit", "sha256sum")), cell(dec),
                                                   cell(walls(i, fss[0], "limit", "pigz -dc")),
                                                   cell(walls(i, fs, "limit", "tar -x")),
                                                   fmt_s(best_pipeline(i, fs))))
        p("")
        p("| CPU (user+sys) and peak RSS, cold, medians | cimage | skopeo | podman | pipeline-seq-gzip |")
        p("|---|---|---|---|---|")
        for i in images:
            cells = []
            for t in ("cimage", "skopeo", "podman", "pipeline-seq-gzip"):
                rs = ok.get((i, fs, "cold", t), [])
                if rs:
                    cells.append("%.2f s · %.0f MiB" % (statistics.median(r["user"] + r["sys"] for r in rs),
                                                        statistics.median(r["maxrss_kib"] for r in rs) / 1024))
                else:
                    cells.append("–")
            p("| %s | %s |" % (i, " | ".join(cells)))
        micro = sorted({t for (i, f, k, t) in ok if f == fs and k in ("micro", "cycle-cli")})
        if micro:
            p("")
            p("| small operations (%s) | median (min–max) |" % images[0])
            p("|---|---|")
            order = ["open", "missing", "warm", "create", "mount", "unmount", "delete", "cycle", "fdatasync",
                     "syncfs"]
            micro.sort(key=lambda t: (t.split()[0], order.index(t.split()[1]) if t.split()[1] in order else 99))
            for t in micro:
                p("| %s | %s |" % (t, cell(walls(images[0], fs, "micro" if t.startswith("cimage") else "cycle-cli",
                                                 t))))

    # Targets of issue 5.
    p("")
    p("## Targets (issue 5)")
    p("")
    p("| target | measured | met |")
    p("|---|---|---|")

    def target(name, value, limit, shown):
        if value is None:
            p("| %s | – | – |" % name)
        else:
            p("| %s | %s | %s |" % (name, shown, "yes" if value <= limit else "**no**"))

    for i in images:
        if "tmpfs" in fss:
            c, s, pl = med(i, "tmpfs", "cold", "cimage"), med(i, "tmpfs", "cold", "skopeo"), best_pipeline(i, "tmpfs")
            target("cold, tmpfs, %s: ≤ 0.4× skopeo" % i, c / s if c and s else None, 0.4, ratio(c, s))
            target("cold, tmpfs, %s: ≤ 1.3× pipeline" % i, c / pl if c and pl else None, 1.3, ratio(c, pl))
        if "ext4" in fss:
            c, s = med(i, "ext4", "cold", "cimage"), med(i, "ext4", "cold", "skopeo")
            target("cold, ext4, %s: ≤ 0.5× skopeo" % i, c / s if c and s else None, 0.5, ratio(c, s))
    for fs in fss:
        w = med(images[0], fs, "micro", "cimage warm")
        target("warm pull in-process (%s): ≤ 10 ms" % fs, w, 0.010, fmt_s(w))
        c, s = med(images[0], fs, "warm", "cimage"), med(images[0], fs, "warm", "skopeo")
        target("warm cimagectl (%s): ≤ 0.3× skopeo" % fs, c / s if c and s else None, 0.3, ratio(c, s))
        cy = med(images[0], fs, "micro", "cimage cycle")
        target("create+mount+unmount+delete in-process (%s): ≤ 10 ms" % fs, cy, 0.010, fmt_s(cy))
    for fs in fss:
        rs = ok.get(("synthetic:8x32", fs, "cold", "cimage"), [])
        if rs:
            m = max(r["maxrss_kib"] for r in rs) / 1024
            target("peak RSS cimagectl, synthetic:8x32 (%s, max of runs): ≤ 40 MiB" % fs, m, 40, "%.1f MiB" % m)
    if failures:
        p("")
        p("Failed runs (left out of the medians): " + ", ".join(
            "%s/%s/%s/%s ×%d" % (k + (n,)) for k, n in sorted(failures.items())))
    text = "\n".join(out) + "\n"
    print(text)
    if a.report:
        with open(a.report, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
