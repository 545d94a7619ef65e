#!/usr/bin/env python3
"""Times cimage, skopeo, podman and the machine's limits on the benchmark images.

Called by bench/run.sh (which builds everything and starts the registry). Every measurement is
one line of RESULTS/results.jsonl:

    {"image", "fs", "kind", "tool", "round", "wall", "user", "sys", "maxrss_kib", "rc"}

kind is cold (empty store), warm (image present), limit (curl, sha256sum, gzip -dc, tar -x,
pipeline), micro (in-process calls, from bench/micro) or cycle-cli (the containers-storage
CLI). Tools are run in turns, the order rotating every round, so that they see the same machine.
Wall, CPU and peak RSS come from wait4(2) on each process (its waited-for children included),
called by bench/spawn: Linux carries a process's peak RSS across exec, so a command forked from
this interpreter would report at least the interpreter's own.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# Unrelated data left unwritten on the store's file system during the micro-dirty cycles (as a
# running container's writes would be): what a durable step's flush has to wait for.
DIRTY_MIB = 512


def log(msg):
    print("[measure %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()


class Run:
    """One timed process: wall time, CPU time and peak RSS, from wait4 in bench/spawn (a child
    of this interpreter would report at least the interpreter's own peak RSS)."""

    spawn = None  # path of the built bench/spawn, set by main()

    def __init__(self, argv, env=None, log_path=None, cwd=None):
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        with tempfile.NamedTemporaryFile(prefix="cimage-bench-rusage-") as report:
            p = subprocess.run([Run.spawn, report.name] + list(argv), stdout=out, stderr=out,
                               stdin=subprocess.DEVNULL, env=env, cwd=cwd)
            fields = open(report.name).read().split()
        if log_path:
            out.close()
        self.rc = p.returncode
        if len(fields) != 4:  # spawn itself failed: the run counts as failed
            self.rc = self.rc or 1
            fields = ["0", "0", "0", "0"]
        self.wall, self.user, self.sys = (float(x) for x in fields[:3])
        self.maxrss_kib = int(fields[3])


def mounts_below(path):
    path = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == path or mp.startswith(path + "/"):
                found.append(mp)
    return sorted(found, key=len, reverse=True)


def clean(*paths):
    """Unmounts whatever is mounted below each path, then removes it."""
    for p in paths:
        for mp in mounts_below(p):
            if subprocess.run(["umount", mp], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", mp], capture_output=True)
        if os.path.lexists(p):
            subprocess.run(["rm", "-rf", "--one-file-system", p], check=True)


class Bench:
    def __init__(self, a):
        self.a = a
        self.reg = a.registry
        self.work = a.work
        self.results = a.results
        self.out = open(os.path.join(a.results, "results.jsonl"), "a")
        self.logs = os.path.join(a.results, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.meta = {i["ref"]: i for i in json.load(open(os.path.join(a.work, "images", "images.json")))["images"]}
        self.blob_dir = os.path.join(a.work, "images", "blobs", "sha256")
        self.fs_img = os.path.join(a.work, "storefs.img")
        self.mnt = os.path.join(a.work, "mnt")
        self.conf = os.path.join(a.work, "storage.conf")
        self.quick = a.quick == "1"
        self.runroots = "/run/cimage-bench"

    # ------------------------------------------------------------------ bookkeeping
    def record(self, image, fs, kind, tool, rnd, r, **extra):
        row = {"image": image, "fs": fs, "kind": kind, "tool": tool, "round": rnd, "wall": r.wall,
               "user": r.user, "sys": r.sys, "maxrss_kib": r.maxrss_kib, "rc": r.rc}
        row.update(extra)
        self.out.write(json.dumps(row) + "\n")
        self.out.flush()
        flag = "" if r.rc == 0 else "  FAILED rc=%d (log: %s)" % (r.rc, self.log_path(image, tool))
        log("  %-6s %-5s %-22s %7.3fs  cpu %6.2fs  rss %6.1f MiB%s" % (
            fs, kind, tool, r.wall, r.user + r.sys, r.maxrss_kib / 1024, flag))

    def log_path(self, image, tool):
        return os.path.join(self.logs, "%s__%s.log" % (image.replace(":", "-").replace("/", "-"), tool))

    # ------------------------------------------------------------------ file systems
    def fresh_fs(self, fs):
        clean(self.mnt)
        os.makedirs(self.mnt)
        if fs == "ext4":
            if os.path.exists(self.fs_img):
                os.unlink(self.fs_img)
            subprocess.run(["truncate", "-s", "24G", self.fs_img], check=True)
            subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1",
                            self.fs_img], check=True)
            subprocess.run(["mount", "-o", "loop,noinit_itable", self.fs_img, self.mnt], check=True)
        else:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12g,mode=0755", "cimage-bench", self.mnt],
                           check=True)
        os.makedirs(os.path.join(self.mnt, "tmp"))

    def drop_fs(self):
        clean(self.mnt, self.runroots)
        if os.path.exists(self.fs_img):
            os.unlink(self.fs_img)

    def write_confs(self):
        base = ('[storage]\ndriver = "overlay"\nrunroot = "%s/run"\ngraphroot = "%s/root"\n'
                '[storage.options]\npull_options = {enable_partial_images = "false", '
                'use_hard_links = "false", ostree_repos = ""}\n[storage.options.overlay]\nmountopt = "nodev"\n'
                % (self.runroots, self.mnt))
        with open(self.conf, "w") as f:
            f.write(base)

    def env(self, tool=None):
        e = dict(os.environ)
        e["CONTAINERS_STORAGE_CONF"] = self.conf
        e["TMPDIR"] = os.path.join(self.mnt, "tmp")  # c/image stages blobs there: same fs as the store
        e.pop("CIMAGE_LOG", None)
        return e

    # ------------------------------------------------------------------ the tools
    def store(self, tool):
        """Graph root and temp dir on the store fs; the run root on a tmpfs, as /run is."""
        d = os.path.join(self.mnt, "stores", tool)
        return os.path.join(d, "root"), os.path.join(self.runroots, tool), os.path.join(d, "tmp")

    def pull_argv(self, tool, image):
        ref = "%s/bench/%s" % (self.reg, image)
        root, run, tmp = self.store(tool)
        if tool.startswith("cimage"):
            # cimage-nosync: the same build with durable writes off (cimage_store_options_set_sync).
            sync = ["--sync=false"] if tool == "cimage-nosync" else []
            return [self.a.cimagectl, "-d", "overlay", "-r", root, "-R", run] + sync + [
                "pull", "--tls-verify=false", "docker://" + ref]
        if tool == "skopeo":
            return ["skopeo", "copy", "-q", "--src-tls-verify=false", "docker://" + ref,
                    "containers-storage:[overlay@%s+%s]%s" % (root, run, ref)]
        if tool == "podman":
            return ["podman", "--root", root, "--runroot", run, "--tmpdir", tmp, "--storage-driver", "overlay",
                    "pull", "-q", "--tls-verify=false", ref]
        raise ValueError(tool)

    def pipeline_argv(self, image, dest, tool):
        """tool: pipeline-MODE-DECOMPRESSOR, e.g. pipeline-seq-gzip (zstd layers: zstd)."""
        meta = self.meta["bench/" + image]
        _, mode, dec = tool.split("-")
        if "zstd" in meta["layers"][0]["mediaType"]:
            dec = "zstd"
        argv = ["bash", os.path.join(HERE, "pipeline.sh"), dest, mode, dec]
        for l in meta["layers"]:
            argv += ["http://%s/v2/bench/%s/blobs/%s" % (self.reg, image.split(":")[0], l["digest"]), l["digest"]]
        return argv

    def cold(self, image, fs, tool, rnd):
        root, run, tmp = self.store(tool)
        dest = os.path.join(self.mnt, "pipeline")
        clean(root, run, tmp, dest)
        os.makedirs(tmp)
        subprocess.run(["sync"])  # no write-back of the previous run during this one
        if tool.startswith("pipeline"):
            r = Run(self.pipeline_argv(image, dest, tool), log_path=self.log_path(image, tool))
        else:
            r = Run(self.pull_argv(tool, image), env=self.env(tool), log_path=self.log_path(image, tool))
        self.record(image, fs, "cold", tool, rnd, r)

    # ------------------------------------------------------------------ per image and fs
    def image_on_fs(self, image, fs, first_fs):
        meta = self.meta["bench/" + image]
        log("%s on %s" % (image, fs))
        self.fresh_fs(fs)
        self.write_confs()
        # The pipeline with gzip, and with pigz (whose reader, writer and CRC threads make it the
        # faster of the two); for zstd layers one zstd pipeline. Two layers at once if several.
        tools = ["cimage", "skopeo", "podman"]
        if "zstd" in meta["layers"][0]["mediaType"]:
            tools.append("pipeline-seq-zstd")
        else:
            tools += ["pipeline-seq-gzip", "pipeline-seq-pigz"]
        if len(meta["layers"]) > 1:
            tools.append("pipeline-par-zstd" if "zstd" in tools[-1] else "pipeline-par-pigz")
        tools.append("cimage-nosync")
        for rnd in range(self.a.rounds):
            k = rnd % len(tools)
            for tool in tools[k:] + tools[:k]:
                self.cold(image, fs, tool, rnd)
        clean(os.path.join(self.mnt, "pipeline"))
        # Warm: each store still holds the image from its last cold pull.
        warm_tools = ["cimage", "skopeo", "podman"]
        for rnd in range(self.a.rounds * 2):
            k = rnd % len(warm_tools)
            for tool in warm_tools[k:] + warm_tools[:k]:
                r = Run(self.pull_argv(tool, image), env=self.env(), log_path=self.log_path(image, tool))
                self.record(image, fs, "warm", tool, rnd, r)
        self.limits(image, fs, first_fs)
        if image == self.a.images.split()[0]:
            self.micro(image, fs, "micro")
            self.micro(image, fs, "micro-nosync")
            self.micro(image, fs, "micro-dirty")
            self.cycle_cli(image, fs)
        for tool in warm_tools + ["cimage-nosync"]:
            clean(*self.store(tool))

    def limits(self, image, fs, first_fs):
        meta = self.meta["bench/" + image]
        files = [os.path.join(self.blob_dir, l["digest"][7:]) for l in meta["layers"]]
        zstd = "zstd" in meta["layers"][0]["mediaType"]
        reps = min(self.a.rounds, 3)  # one process each, steady: fewer repetitions suffice
        lp = self.log_path(image, "limits")
        if first_fs:
            repo = image.split(":")[0]
            urls = ["http://%s/v2/bench/%s/blobs/%s" % (self.reg, repo, d)
                    for d in [meta["config"]] + [l["digest"] for l in meta["layers"]]]
            curl = ["curl", "-sf"]
            for u in urls:
                curl += ["-o", "/dev/null", u]
            dec = ["zstd", "-dcq"] if zstd else ["gzip", "-dc"]
            for rnd in range(reps):
                self.record(image, fs, "limit", "curl", rnd, Run(curl, log_path=lp))
                self.record(image, fs, "limit", "sha256sum", rnd, Run(["sha256sum"] + files, log_path=lp))
                self.record(image, fs, "limit", dec[0] + " -dc",
                            rnd, Run(["sh", "-c", " ".join(dec + files) + " > /dev/null"], log_path=lp))
                if not zstd:
                    self.record(image, fs, "limit", "pigz -dc", rnd,
                                Run(["sh", "-c", "pigz -dc %s > /dev/null" % " ".join(files)], log_path=lp))
        # tar -x of the uncompressed layers (kept on the host fs, read once so they are cached)
        tars = os.path.join(self.work, "tars")
        clean(tars)
        os.makedirs(tars)
        tar_files = []
        for i, f in enumerate(files):
            t = os.path.join(tars, "%d.tar" % i)
            subprocess.run("%s -dc %s > %s" % ("zstd -q" if zstd else "gzip", f, t), shell=True, check=True)
            tar_files.append(t)
        dest = os.path.join(self.mnt, "untar")
        script = "set -e; i=0; for t in %s; do mkdir -p %s/$i; tar --numeric-owner -xf $t -C %s/$i; " \
                 "i=$((i+1)); done" % (" ".join(tar_files), dest, dest)
        for rnd in range(reps):
            clean(dest)
            subprocess.run(["sync"])
            self.record(image, fs, "limit", "tar -x", rnd, Run(["bash", "-c", script], log_path=lp))
        clean(dest, tars)

    # micro variants: the bench/micro argument and the label of their rows.
    MICRO = {"micro": ([], "cimage"), "micro-nosync": (["nosync"], "cimage-nosync"),
             "micro-dirty": (["dirty=%d" % DIRTY_MIB], "cimage-dirty")}

    def micro(self, image, fs, variant):
        """In-process: store open, warm pull, create/mount/unmount/delete (bench/micro); with
        micro-dirty only the container cycle, beside DIRTY_MIB MiB of unwritten data."""
        root, run, _ = self.store(variant)
        clean(root, run)
        n = 10 if self.quick else 30
        if variant == "micro-dirty":
            n = 3 if self.quick else 5  # each cycle writes DIRTY_MIB MiB
        ref = "%s/bench/%s" % (self.reg, image)
        log("  micro-benchmark %s (%d iterations, in-process)" % (variant, n))
        extra, label = self.MICRO[variant]
        argv = [self.a.micro, root, run, ref, str(n)] + extra
        p = subprocess.run(argv, env=self.env(variant), capture_output=True, text=True)
        if p.returncode != 0:
            log("  micro FAILED: %s" % p.stderr.strip())
        for i, line in enumerate(p.stdout.splitlines()):
            name, secs = line.split()
            self.out.write(json.dumps({"image": image, "fs": fs, "kind": "micro", "tool": label + " " + name,
                                       "round": i, "wall": float(secs), "rc": 0}) + "\n")
        self.out.flush()
        clean(root, run)

    def cycle_cli(self, image, fs):
        """The containers-storage CLI's container cycle, four processes, on skopeo's store."""
        root, run, _ = self.store("skopeo")
        ref = "%s/bench/%s" % (self.reg, image)
        cs = ["containers-storage", "--graph", root, "--run", run, "--storage-driver", "overlay"]
        image_id = self.meta["bench/" + image]["config"][7:]
        n = 10 if self.quick else 30
        log("  containers-storage CLI cycle (%d iterations)" % n)
        env = self.env()
        for i in range(n):
            t0 = time.perf_counter()
            p = subprocess.run(cs + ["create-container", image_id], capture_output=True, text=True, env=env)
            t1 = time.perf_counter()
            if p.returncode != 0:
                log("  create-container failed: %s" % p.stderr.strip())
                return
            cid = p.stdout.split()[0]
            m = subprocess.run(cs + ["mount", cid], capture_output=True, text=True, env=env)
            t2 = time.perf_counter()
            u = subprocess.run(cs + ["unmount", cid], capture_output=True, text=True, env=env)
            t3 = time.perf_counter()
            d = subprocess.run(cs + ["delete-container", cid], capture_output=True, text=True, env=env)
            t4 = time.perf_counter()
            for step, q in (("mount", m), ("unmount", u), ("delete-container", d)):
                if q.returncode != 0:
                    log("  containers-storage %s failed (%s): %s" % (step, ref, q.stderr.strip()))
                    return
            for name, secs in (("create", t1 - t0), ("mount", t2 - t1), ("unmount", t3 - t2),
                               ("delete", t4 - t3), ("cycle", t4 - t0)):
                self.out.write(json.dumps({"image": image, "fs": fs, "kind": "cycle-cli",
                                           "tool": "containers-storage " + name, "round": i,
                                           "wall": secs, "rc": 0}) + "\n")
        self.out.flush()

    # ------------------------------------------------------------------ run
    def machine(self):
        info = {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "nproc": os.cpu_count(),
            "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
            "kernel": platform.release(),
            "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "loadavg_start": open("/proc/loadavg").read().split()[:3],
            "versions": {
                "cimage": sh("git -C %s describe --always --dirty" % os.path.dirname(HERE)),
                "skopeo": sh("skopeo --version"),
                "podman": sh("podman --version"),
                "containers-storage": sh("dpkg-query -W -f='${Version}' containers-storage"),
                "docker-registry": sh("dpkg-query -W -f='${Version}' docker-registry"),
                "gzip": sh("gzip --version | head -1"),
                "curl": sh("curl --version | head -1 | cut -d' ' -f1-2"),
            },
            "rounds": self.a.rounds,
            "quick": self.quick,
            "images": {ref: {k: v for k, v in m.items() if k != "layers"} | {"layer_count": len(m["layers"])}
                       for ref, m in self.meta.items()},
        }
        return info

    def main(self):
        info = self.machine()
        steal0 = self.steal()
        t0 = time.time()
        fss = self.a.filesystems.split()
        clean(self.runroots)
        os.makedirs(self.runroots)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "cimage-bench-run", self.runroots],
                       check=True)
        try:
            for image in self.a.images.split():
                for i, fs in enumerate(fss):
                    self.image_on_fs(image, fs, i == 0)
        finally:
            self.drop_fs()
        info["duration_s"] = round(time.time() - t0)
        info["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
        info["steal_pct"] = round(100 * (self.steal() - steal0) / os.sysconf("SC_CLK_TCK")
                                  / (time.time() - t0) / os.cpu_count(), 1)
        with open(os.path.join(self.results, "machine.json"), "w") as f:
            json.dump(info, f, indent=1)

    @staticmethod
    def steal():
        with open("/proc/stat") as f:
            return int(f.readline().split()[8])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--registry", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--filesystems", default="ext4 tmpfs")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", default="0")
    ap.add_argument("--cimagectl", required=True)
    ap.add_argument("--micro", required=True)
    ap.add_argument("--spawn", required=True)
    a = ap.parse_args()
    Run.spawn = a.spawn
    Bench(a).main()


if __name__ == "__main__":
    main()
