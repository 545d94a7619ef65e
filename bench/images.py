#!/usr/bin/env python3
"""Builds the benchmark images as plain blobs and pushes them to a registry.

    images.py build --rootfs ROOTFS.tar --out DIR   # blobs + DIR/images.json (cached by content)
    images.py push  --out DIR --registry HOST:PORT  # blobs and manifests, skipping what is there

Images (repository:tag under bench/):
  debian:bookworm  the debootstrap minbase tree, one gzip layer
  debian:4layer    the same tree as usr/ | var/ | the rest | a layer of whiteouts (a file, a
                   populated directory, an opaque directory) with a few new files
  synthetic:8x32   8 layers of 32 MiB uncompressed (~3x gzip), ~300 files each
  smallfiles:50k   one layer of 50,000 files of 100 B - 4 KiB
  debian:zstd      debian:bookworm's tar compressed with zstd

Output is deterministic: fixed seeds and mtimes, no gzip name/time, entries in a fixed order,
canonical JSON; so the digests only change when the rootfs tarball does. Standard library only
(zstd through the zstd command).
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request

GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
EPOCH = 1704067200  # 2024-01-01, mtime of synthetic entries
GENERATOR_VERSION = 1  # bump when the content below changes: the cache key includes it


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class Blobs:
    """A content-addressed directory of blobs: DIR/sha256/<hex>."""

    def __init__(self, root):
        self.root = os.path.join(root, "sha256")
        os.makedirs(self.root, exist_ok=True)

    def path(self, digest):
        return os.path.join(self.root, digest.split(":", 1)[1])

    def put(self, data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        p = self.path(digest)
        if not os.path.exists(p):
            with open(p + ".tmp", "wb") as f:
                f.write(data)
            os.replace(p + ".tmp", p)
        return digest, len(data)

    def put_file(self, tmp_path):
        h = hashlib.sha256()
        with open(tmp_path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        digest = "sha256:" + h.hexdigest()
        size = os.path.getsize(tmp_path)
        os.replace(tmp_path, self.path(digest))
        return digest, size


class Layer:
    """An uncompressed layer tar being written to a temporary file."""

    def __init__(self, tmp_dir):
        self.tar_path = os.path.join(tmp_dir, "layer.tar")
        self.raw = open(self.tar_path, "wb")
        self.tar = tarfile.open(fileobj=self.raw, mode="w", format=tarfile.PAX_FORMAT)
        self.entries = 0
        self.files = 0

    def add(self, info, data=None):
        info.uname = info.gname = ""
        info.pax_headers = {}
        if info.isreg():
            if isinstance(data, bytes):
                info.size = len(data)
                data = io.BytesIO(data)
            self.tar.addfile(info, data)
            self.files += 1
        else:
            self.tar.addfile(info)
        self.entries += 1

    def dir(self, name, mode=0o755, mtime=EPOCH, uid=0, gid=0):
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.mtime, ti.uid, ti.gid = tarfile.DIRTYPE, mode, mtime, uid, gid
        self.add(ti)

    def file(self, name, data, mode=0o644, mtime=EPOCH):
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.mtime = tarfile.REGTYPE, mode, mtime
        self.add(ti, data)

    def finish(self, blobs, compressions=("gzip",)):
        """Closes the tar; returns {compression: descriptor+stats} for each compression."""
        self.tar.close()
        self.raw.close()
        h = hashlib.sha256()
        with open(self.tar_path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        common = {
            "diff_id": "sha256:" + h.hexdigest(),
            "uncompressed": os.path.getsize(self.tar_path),
            "entries": self.entries,
            "files": self.files,
        }
        out = {}
        for c in compressions:
            z = self.tar_path + "." + c
            if c == "gzip":
                with open(self.tar_path, "rb") as src, open(z, "wb") as raw:
                    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as g:
                        for chunk in iter(lambda: src.read(1 << 20), b""):
                            g.write(chunk)
                media = GZIP
            else:
                subprocess.run(["zstd", "-q", "-3", "-f", "-o", z, self.tar_path], check=True)
                media = ZSTD
            digest, size = blobs.put_file(z)
            out[c] = dict(common, digest=digest, size=size, mediaType=media)
        os.unlink(self.tar_path)
        return out


def image(blobs, ref, layers, comment, cmd=("/bin/sh",)):
    """Writes config + manifest blobs; returns the image's description."""
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": list(cmd)},
        "rootfs": {"type": "layers", "diff_ids": [l["diff_id"] for l in layers]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": comment} for _ in layers],
    }
    cdigest, csize = blobs.put(canonical(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": cdigest, "size": csize},
        "layers": [{"mediaType": l["mediaType"], "digest": l["digest"], "size": l["size"]} for l in layers],
    }
    mdigest, _ = blobs.put(canonical(manifest))
    return {
        "ref": ref,
        "manifest": mdigest,
        "config": cdigest,
        "layers": layers,
        "compressed": sum(l["size"] for l in layers),
        "uncompressed": sum(l["uncompressed"] for l in layers),
        "entries": sum(l["entries"] for l in layers),
        "files": sum(l["files"] for l in layers),
    }


# ------------------------------------------------------------------------------------ debian

def rootfs_members(path):
    """The rootfs tar's entries with './' stripped and the root itself left out."""
    src = tarfile.open(path, "r")
    members = []
    for m in src.getmembers():
        name = m.name
        while name.startswith("./"):
            name = name[2:]
        name = name.rstrip("/")
        if name in ("", "."):
            continue
        m.name = name
        if m.islnk():
            m.linkname = m.linkname[2:] if m.linkname.startswith("./") else m.linkname
        members.append(m)
    return src, members


def copy_into(layer, src, members, by_name):
    """Copies entries; a hard link whose target is in another layer becomes a regular file."""
    present = set()
    for m in members:
        ti = tarfile.TarInfo(m.name)
        for attr in ("type", "mode", "uid", "gid", "linkname", "devmajor", "devminor"):
            setattr(ti, attr, getattr(m, attr))
        ti.mtime = int(m.mtime)
        if m.islnk() and m.linkname not in present:
            target = by_name[m.linkname]
            ti.type, ti.linkname, ti.size = tarfile.REGTYPE, "", target.size
            layer.add(ti, src.extractfile(target))
        elif m.isreg():
            ti.size = m.size
            layer.add(ti, src.extractfile(m))
        else:
            layer.add(ti)
        present.add(m.name)


def build_debian(blobs, tmp, rootfs):
    src, members = rootfs_members(rootfs)
    by_name = {m.name: m for m in members}
    out = []

    one = Layer(tmp)
    copy_into(one, src, members, by_name)
    variants = one.finish(blobs, ("gzip", "zstd"))
    out.append(image(blobs, "bench/debian:bookworm", [variants["gzip"]], "debootstrap --variant=minbase"))
    out.append(image(blobs, "bench/debian:zstd", [variants["zstd"]], "debootstrap --variant=minbase, zstd"))

    def top(name):
        return name.split("/", 1)[0]

    groups = [
        [m for m in members if top(m.name) == "usr"],
        [m for m in members if top(m.name) == "var"],
        [m for m in members if top(m.name) not in ("usr", "var")],
    ]
    layers = []
    for g in groups:
        lw = Layer(tmp)
        copy_into(lw, src, g, by_name)
        layers.append(lw.finish(blobs)["gzip"])

    # Layer 4 changes the tree below it the three ways a whiteout can.
    lw = Layer(tmp)

    def parent_dir(name):
        m = by_name[name]
        lw.dir(name, m.mode, int(m.mtime), m.uid, m.gid)

    changes = {"deleted_files": [], "deleted_dirs": [], "opaque_dirs": []}
    parent_dir("etc")
    for f in ("etc/motd", "etc/issue.net", "etc/debian_version"):
        if f in by_name:
            lw.file(os.path.dirname(f) + "/.wh." + os.path.basename(f), b"")
            changes["deleted_files"].append(f)
    lw.file("etc/cimage-bench", b"debian:4layer, layer 4\n")
    parent_dir("usr")
    parent_dir("usr/share")
    for d in ("usr/share/doc", "usr/share/info", "usr/share/man"):
        if d in by_name and by_name[d].isdir():
            lw.file("usr/share/.wh." + os.path.basename(d), b"")
            changes["deleted_dirs"].append(d)
            break
    parent_dir("var")
    lw.dir("var/log", by_name["var/log"].mode, EPOCH)
    lw.file("var/log/.wh..wh..opq", b"")
    lw.file("var/log/bench.log", b"the only file left in var/log\n")
    changes["opaque_dirs"].append("var/log")
    layers.append(lw.finish(blobs)["gzip"])
    img = image(blobs, "bench/debian:4layer", layers, "minbase split usr|var|rest + whiteouts")
    img["whiteouts"] = changes
    out.append(img)
    src.close()
    return out


# ------------------------------------------------------------------------------------ synthetic

class Text:
    """Deterministic, compressible bytes: words of a skewed vocabulary, and some noise."""

    def __init__(self, seed):
        rng = random.Random(seed)
        alphabet = "abcdefghijklmnopqrstuvwxyz"
        vocab = ["".join(rng.choice(alphabet) for _ in range(rng.randint(2, 11))) for _ in range(4000)]
        weights = [1.0 / (r + 3) for r in range(len(vocab))]
        words = rng.choices(vocab, weights, k=600_000)
        lines = [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)]
        self.corpus = "\n".join(lines).encode()

    def bytes(self, rng, n, noise=0.07):
        parts, have = [], 0
        while have < n:
            k = min(n - have, rng.randint(2048, 49152))
            if rng.random() < noise:
                parts.append(rng.randbytes(k))
            else:
                at = rng.randrange(0, len(self.corpus) - k)
                parts.append(self.corpus[at:at + k])
            have += k
        return b"".join(parts)


def build_synthetic(blobs, tmp, text, layers=8, layer_bytes=32 << 20, files=300):
    descs = []
    for n in range(layers):
        rng = random.Random(7000 + n)
        weights = [rng.paretovariate(1.6) for _ in range(files)]
        total = sum(weights)
        sizes = [max(1, int(layer_bytes * w / total)) for w in weights]
        sizes[0] += layer_bytes - sum(sizes)
        lw = Layer(tmp)
        base = "opt/bench/l%d" % n
        for d in ("opt", "opt/bench", base):
            lw.dir(d)
        for i, size in enumerate(sizes):
            sub = "%s/g%02d" % (base, i % 16)
            if i < 16:
                lw.dir(sub)
            lw.file("%s/blob%04d.bin" % (sub, i), text.bytes(rng, size))
        descs.append(lw.finish(blobs)["gzip"])
    return [image(blobs, "bench/synthetic:8x32", descs, "8 synthetic layers of 32 MiB")]


def build_smallfiles(blobs, tmp, text, count=50_000):
    rng = random.Random(50_000)
    lw = Layer(tmp)
    lw.dir("data")
    per_dir = 250
    for i in range(count):
        d = "data/d%03d" % (i // per_dir)
        if i % per_dir == 0:
            lw.dir(d)
        size = int(100 * (4096 / 100) ** rng.random())  # log-uniform in [100, 4096)
        lw.file("%s/f%05d" % (d, i), text.bytes(rng, size, noise=0.1))
    return [image(blobs, "bench/smallfiles:50k", [lw.finish(blobs)["gzip"]], "50,000 small files")]


# ------------------------------------------------------------------------------------ push

def http(method, url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def push(out, registry):
    meta = json.load(open(os.path.join(out, "images.json")))
    blobs = Blobs(os.path.join(out, "blobs"))
    base = "http://" + registry
    for img in meta["images"]:
        repo, tag = img["ref"].rsplit(":", 1)
        status, headers, _ = http("HEAD", "%s/v2/%s/manifests/%s" % (base, repo, tag),
                                  headers={"Accept": MANIFEST})
        if status == 200 and headers.get("Docker-Content-Digest") == img["manifest"]:
            print("  %s is in the registry" % img["ref"], file=sys.stderr)
            continue
        for digest in [img["config"]] + [l["digest"] for l in img["layers"]]:
            if http("HEAD", "%s/v2/%s/blobs/%s" % (base, repo, digest))[0] == 200:
                continue
            status, headers, body = http("POST", "%s/v2/%s/blobs/uploads/" % (base, repo), b"")
            if status != 202:
                sys.exit("upload of %s refused: %d %s" % (digest, status, body[:200]))
            loc = headers["Location"]
            if loc.startswith("/"):
                loc = base + loc
            loc += ("&" if "?" in loc else "?") + "digest=" + digest
            with open(blobs.path(digest), "rb") as f:
                data = f.read()
            status, _, body = http("PUT", loc, data, {"Content-Type": "application/octet-stream"})
            if status != 201:
                sys.exit("upload of %s failed: %d %s" % (digest, status, body[:200]))
        with open(blobs.path(img["manifest"]), "rb") as f:
            status, headers, body = http("PUT", "%s/v2/%s/manifests/%s" % (base, repo, tag), f.read(),
                                         {"Content-Type": MANIFEST})
        if status != 201 or headers.get("Docker-Content-Digest") != img["manifest"]:
            sys.exit("manifest of %s: %d %s" % (img["ref"], status, body[:200]))
        print("  pushed %s (%s)" % (img["ref"], img["manifest"][:19]), file=sys.stderr)


def build(out, rootfs):
    st = os.stat(rootfs)
    key = {"generator": GENERATOR_VERSION, "rootfs_size": st.st_size, "rootfs_mtime": int(st.st_mtime)}
    meta_path = os.path.join(out, "images.json")
    if os.path.exists(meta_path):
        old = json.load(open(meta_path))
        if old.get("key") == key and all(os.path.exists(Blobs(os.path.join(out, "blobs")).path(l["digest"]))
                                         for i in old["images"] for l in i["layers"]):
            print("  images are up to date", file=sys.stderr)
            return
    blobs = Blobs(os.path.join(out, "blobs"))
    tmp = os.path.join(out, "tmp")
    os.makedirs(tmp, exist_ok=True)
    text = Text(2024)
    images = build_debian(blobs, tmp, rootfs)
    images += build_synthetic(blobs, tmp, text)
    images += build_smallfiles(blobs, tmp, text)
    order = ["bench/debian:bookworm", "bench/debian:4layer", "bench/synthetic:8x32",
             "bench/smallfiles:50k", "bench/debian:zstd"]
    images.sort(key=lambda i: order.index(i["ref"]))
    with open(meta_path + ".tmp", "w") as f:
        json.dump({"key": key, "images": images}, f, indent=1, sort_keys=True)
    os.replace(meta_path + ".tmp", meta_path)
    for i in images:
        print("  %-22s %d layer(s)  %6.1f MiB compressed  %6.1f MiB  %6d entries" % (
            i["ref"], len(i["layers"]), i["compressed"] / 2**20, i["uncompressed"] / 2**20, i["entries"]),
            file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["build", "push"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--rootfs")
    ap.add_argument("--registry")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if a.command == "build":
        build(a.out, a.rootfs)
    else:
        push(a.out, a.registry)


if __name__ == "__main__":
    main()
