#!/usr/bin/env python3
"""Build the cimage test images as OCI image layouts (python3 standard library only).

usage: mkimage.py OUTDIR [--sentinel DIR] [--corpus]

Writes OUTDIR/<name>/ for every image below, each an OCI image layout (oci-layout, index.json,
blobs/sha256/...) whose index.json tags the image "t" (annotation org.opencontainers.image.ref.name),
and OUTDIR/images.json describing them (digests, diff IDs, what the hostile ones try) for the tests.

Output is deterministic: fixed mtimes, fixed uid/gid, sorted entries, gzip header mtime 0, canonical
JSON; the same OUTDIR and sentinel give the same digests on every run.

Images:
  fixture        3 layers: gzip (files, dirs, hard link, symlink, fifo, uid 1000 files), plain tar
                 (file and dir whiteouts, an opaque dir, a replaced file), gzip (a file that becomes a
                 directory, an absolute symlink, a setuid file, a PAX xattr)
  sibling        fixture's first two layers + one more (shares layers with fixture)
  zstd           one zstd-compressed layer (needs the zstd CLI; skipped with a message without it)
  multi          an OCI index for linux/amd64 and linux/arm64/v8 (two different images)
  big            one uncompressed layer of ~24 MiB (for slow / interrupted pulls)
  hostile-*      one layer each, valid digests, content that tries to escape the layer directory;
                 hostile-lying-digest has a layer blob whose bytes do not match its digest (its
                 honest twin, OUTDIR/hostile-lying-digest.honest, is what can be pushed to a
                 registry; publish.sh then swaps the blob bytes inside the registry's storage)

--corpus builds only the hostile corpus instead: OUTDIR/corpus/<case>/ (one OCI layout per case,
many with wrong digests or sizes on purpose, to be served verbatim) and OUTDIR/corpus.json (per case:
layout, attack, expected statuses, extra pull arguments, what a successful case must show). See
tests/hostile_corpus.rs.

The hostile images aim at a sentinel directory (default OUTDIR/../sentinel, made absolute):
SENTINEL/ must stay empty and SENTINEL.target must keep its content and link count 1.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tarfile

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MTIME = 1700000000  # 2023-11-14T22:13:20Z
CREATED = "2024-01-01T00:00:00Z"
TAG = "t"


def cjson(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def host_arch():
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
            "s390x": "s390x", "riscv64": "riscv64"}.get(m, m)


# ----------------------------------------------------------------------------- tar entries

def entry(name, kind, mode, data=b"", uid=0, gid=0, link="", xattrs=None):
    return {"name": name, "kind": kind, "mode": mode, "data": data, "uid": uid, "gid": gid,
            "link": link, "xattrs": xattrs or {}}


def d(name, mode=0o755, uid=0, gid=0):
    return entry(name, "dir", mode, uid=uid, gid=gid)


def f(name, data, mode=0o644, uid=0, gid=0, xattrs=None):
    return entry(name, "file", mode, data=data, uid=uid, gid=gid, xattrs=xattrs)


def sym(name, target):
    return entry(name, "symlink", 0o777, link=target)


def hard(name, target):
    return entry(name, "hardlink", 0o644, link=target)


def fifo(name, mode=0o644):
    return entry(name, "fifo", mode)


TYPES = {"dir": tarfile.DIRTYPE, "file": tarfile.REGTYPE, "symlink": tarfile.SYMTYPE,
         "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE}


def make_tar(entries, sort=True):
    """An uncompressed tar (PAX format, end-of-archive blocks included) of the entries.

    sort=True orders by path (parents before children, hard-link targets before links when they
    sort earlier); hostile layers keep their given order because the order is the attack."""
    if sort:
        entries = sorted(entries, key=lambda e: e["name"])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            ti = tarfile.TarInfo(e["name"])
            ti.type = TYPES[e["kind"]]
            ti.mode = e["mode"]
            ti.uid, ti.gid = e["uid"], e["gid"]
            ti.uname, ti.gname = "", ""
            ti.mtime = MTIME
            ti.linkname = e["link"]
            if e["xattrs"]:
                ti.pax_headers = {"SCHILY.xattr." + k: v for k, v in sorted(e["xattrs"].items())}
            if e["kind"] == "file":
                ti.size = len(e["data"])
                tar.addfile(ti, io.BytesIO(e["data"]))
            else:
                tar.addfile(ti)
    return buf.getvalue()


def gzip_bytes(raw):
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=6, mtime=0) as gz:
        gz.write(raw)
    return out.getvalue()


def zstd_bytes(raw):
    zstd = shutil.which("zstd")
    if not zstd:
        return None
    return subprocess.run([zstd, "-q", "-c", "-3", "--no-progress"], input=raw,
                          stdout=subprocess.PIPE, check=True).stdout


# ----------------------------------------------------------------------------- layouts

class Layout:
    def __init__(self, path):
        self.path = path
        if os.path.exists(path):
            shutil.rmtree(path)
        os.makedirs(os.path.join(path, "blobs", "sha256"))
        with open(os.path.join(path, "oci-layout"), "wb") as fh:
            fh.write(cjson({"imageLayoutVersion": "1.0.0"}))

    def blob_path(self, digest):
        return os.path.join(self.path, "blobs", "sha256", digest.split(":", 1)[1])

    def put(self, data, media_type, digest=None):
        digest = digest or sha256(data)
        with open(self.blob_path(digest), "wb") as fh:
            fh.write(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def finish(self, desc):
        tagged = dict(desc)
        tagged["annotations"] = {"org.opencontainers.image.ref.name": TAG}
        with open(os.path.join(self.path, "index.json"), "wb") as fh:
            fh.write(cjson({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [tagged]}))


def layer_blob(raw, compression):
    """(blob bytes, media type) of an uncompressed tar under the given compression."""
    if compression == "gzip":
        return gzip_bytes(raw), MT_LAYER_GZ
    if compression == "zstd":
        return zstd_bytes(raw), MT_LAYER_ZSTD
    return raw, MT_LAYER


def write_image(layout, layers, config_extra=None, arch=None, variant=None):
    """layers: [(uncompressed tar, compression)]. Returns (manifest descriptor, description)."""
    descs, diff_ids, layer_info = [], [], []
    for raw, compression in layers:
        blob, media_type = layer_blob(raw, compression)
        descs.append(layout.put(blob, media_type))
        diff_ids.append(sha256(raw))
        layer_info.append({"digest": descs[-1]["digest"], "diff_id": diff_ids[-1],
                           "compressed_size": len(blob), "diff_size": len(raw),
                           "media_type": media_type})
    config = {
        "created": CREATED,
        "architecture": arch or host_arch(),
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": CREATED, "created_by": "mkimage.py layer %d" % (i + 1)}
                    for i in range(len(layers))],
    }
    if variant:
        config["variant"] = variant
    if config_extra:
        config["config"] = config_extra
    config_desc = layout.put(cjson(config), MT_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": config_desc, "layers": descs}
    manifest_desc = layout.put(cjson(manifest), MT_MANIFEST)
    info = {"manifest_digest": manifest_desc["digest"], "config_digest": config_desc["digest"],
            "id": config_desc["digest"].split(":", 1)[1], "diff_ids": diff_ids,
            "layers": layer_info, "architecture": config["architecture"],
            "created": CREATED}
    if variant:
        info["variant"] = variant
    return manifest_desc, info


def single_image(out, name, layers, config_extra=None):
    layout = Layout(os.path.join(out, name))
    desc, info = write_image(layout, layers, config_extra)
    layout.finish(desc)
    info["layout"] = layout.path
    return info


# ----------------------------------------------------------------------------- content

def pseudo_random(seed, n):
    return random.Random(seed).randbytes(n)


PASSWD = b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n"

FIXTURE_LAYER1 = [
    d("bin"),
    f("bin/hello", b"#!/bin/sh\necho hello from the cimage fixture\n", mode=0o755),
    d("data"),
    f("data/a.txt", b"a: deleted by a whiteout in layer 2\n"),
    f("data/b.txt", b"b: hard-linked as data/hard.txt\n"),
    f("data/big.bin", pseudo_random(7, 200 * 1024)),
    f("data/empty", b""),
    hard("data/hard.txt", "data/b.txt"),
    d("etc"),
    f("etc/hostname", b"cimage-fixture\n"),
    f("etc/motd", b"motd of layer 1, replaced in layer 2\n"),
    f("etc/passwd", PASSWD),
    d("gone"),
    f("gone/inside.txt", b"the whole directory is whited out in layer 2\n"),
    d("home"),
    d("home/user", mode=0o700, uid=1000, gid=1000),
    f("home/user/owned.txt", b"owned by 1000:1000\n", mode=0o640, uid=1000, gid=1000),
    sym("link", "etc/hostname"),
    d("opqdir"),
    f("opqdir/old1.txt", b"hidden by the opaque dir of layer 2\n"),
    f("opqdir/old2.txt", b"hidden by the opaque dir of layer 2\n"),
    f("replaced", b"a file in layer 1, a directory in layer 3\n"),
    d("run"),
    fifo("run/fifo"),
]

FIXTURE_LAYER2 = [
    f(".wh.gone", b"", mode=0o600),
    d("data"),
    f("data/.wh.a.txt", b"", mode=0o600),
    d("etc"),
    f("etc/added", b"added in layer 2\n"),
    f("etc/motd", b"motd of layer 2\n", mode=0o600),
    d("opqdir"),
    f("opqdir/.wh..wh..opq", b"", mode=0o600),
    f("opqdir/new.txt", b"the only file left in opqdir\n"),
]

FIXTURE_LAYER3 = [
    d("bin"),
    f("bin/suid", b"#!/bin/sh\necho setuid\n", mode=0o4755),
    d("etc"),
    f("etc/xattr.txt", b"carries user.test\n", xattrs={"user.test": "fixture-xattr"}),
    d("replaced"),
    f("replaced/inside.txt", b"replaced is a directory now\n"),
    d("usr"),
    d("usr/bin"),
    sym("usr/bin/sh", "/bin/hello"),
]

FIXTURE_CONFIG = {
    "Env": ["PATH=/usr/bin:/bin", "FIXTURE=cimage"],
    "Entrypoint": ["/bin/hello"],
    "Cmd": ["--greeting", "hi"],
    "WorkingDir": "/data",
    "User": "1000:1000",
    "Labels": {"org.example.fixture": "yes", "org.example.purpose": "cimage tests"},
}

# What the fixture's root file system looks like after all three layers (relative paths,
# type letter); the tests use it as a cross-check independent of umoci.
FIXTURE_EXPECTED = {
    "present": {
        "bin/hello": "f", "bin/suid": "f", "data/b.txt": "f", "data/hard.txt": "f",
        "data/big.bin": "f", "data/empty": "f", "etc/hostname": "f", "etc/passwd": "f",
        "etc/motd": "f", "etc/added": "f", "etc/xattr.txt": "f", "home/user": "d",
        "home/user/owned.txt": "f", "link": "l", "opqdir/new.txt": "f", "replaced": "d",
        "replaced/inside.txt": "f", "run/fifo": "p", "usr/bin/sh": "l",
    },
    "absent": ["data/a.txt", "opqdir/old1.txt", "opqdir/old2.txt", "gone", "gone/inside.txt",
               "data/.wh.a.txt", "opqdir/.wh..wh..opq", ".wh.gone"],
    "opaque_dir": "opqdir",
    "opaque_dir_entries": ["new.txt"],
}


def build_fixture(out):
    layers = [(make_tar(FIXTURE_LAYER1), "gzip"), (make_tar(FIXTURE_LAYER2), None),
              (make_tar(FIXTURE_LAYER3), "gzip")]
    info = single_image(out, "fixture", layers, FIXTURE_CONFIG)
    info["expected"] = FIXTURE_EXPECTED
    info["config"] = FIXTURE_CONFIG
    return info


def build_sibling(out):
    layers = [(make_tar(FIXTURE_LAYER1), "gzip"), (make_tar(FIXTURE_LAYER2), None),
              (make_tar([d("sibling"), f("sibling/only-here.txt", b"sibling's own layer\n")]),
               "gzip")]
    return single_image(out, "sibling", layers, {"Cmd": ["/bin/hello"]})


def build_zstd(out):
    raw = make_tar([d("zstd"), f("zstd/hello.txt", b"from a zstd layer\n"),
                    f("zstd/data.bin", pseudo_random(11, 64 * 1024))])
    if zstd_bytes(b"") is None:
        print("mkimage.py: zstd CLI not found: not building the 'zstd' image", file=sys.stderr)
        return None
    return single_image(out, "zstd", [(raw, "zstd")], {"Cmd": ["/bin/sh"]})


def build_multi(out):
    layout = Layout(os.path.join(out, "multi"))
    platforms, manifests = [], {}
    for arch, variant in (("amd64", None), ("arm64", "v8")):
        raw = make_tar([d("etc"), f("etc/arch", ("built for %s\n" % arch).encode())])
        desc, info = write_image(layout, [(raw, "gzip")], {"Cmd": ["/bin/sh"]}, arch, variant)
        plat = {"architecture": arch, "os": "linux"}
        if variant:
            plat["variant"] = variant
        desc = dict(desc)
        desc["platform"] = plat
        platforms.append(desc)
        manifests["linux/" + arch + ("/" + variant if variant else "")] = info
    index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": platforms}
    index_desc = layout.put(cjson(index), MT_INDEX)
    layout.finish(index_desc)
    return {"layout": layout.path, "index_digest": index_desc["digest"], "platforms": manifests}


def build_big(out, mib=24):
    # Incompressible content in an uncompressed layer: the pull's time is all transfer and
    # extraction, which the crash and concurrency tests slow down with a throttling proxy.
    entries = [d("big")]
    for i in range(mib):
        entries.append(f("big/chunk%02d.bin" % i, pseudo_random(100 + i, 1 << 20)))
    return single_image(out, "big", [(make_tar(entries), None)], {"Cmd": ["/bin/sh"]})


# ----------------------------------------------------------------------------- hostile

def up_to_root(path):
    """A relative path that climbs from any directory up to / and then down to `path`."""
    return "../" * 40 + path.lstrip("/")


def build_hostile(out, sentinel):
    target = sentinel + ".target"
    images = {}

    def one(name, entries, attack):
        raw = make_tar(entries, sort=False)
        info = single_image(out, name, [(raw, "gzip")], {"Cmd": ["/bin/sh"]})
        info["attack"] = attack
        info["expected_status"] = "UNSAFE_ARCHIVE"
        images[name] = info

    one("hostile-traversal",
        [f(up_to_root(sentinel) + "/escape", b"escaped by ../\n"),
         f("../escape", b"escaped by ../\n")],
        "entry names climbing out with ../ (into the sentinel dir, and ../escape)")
    one("hostile-absolute",
        [f(sentinel + "/abs-escape", b"escaped by an absolute name\n"),
         f("/abs-escape", b"escaped by an absolute name\n")],
        "absolute entry names (SENTINEL/abs-escape, /abs-escape)")
    one("hostile-symlink",
        [sym("evil", sentinel), f("evil/pwned", b"written through a symlink to outside\n")],
        "symlink evil -> SENTINEL, then the file evil/pwned")
    one("hostile-hardlink",
        [hard("stolen", "/etc/passwd"), f("stolen", b"overwrite through a hard link\n")],
        "hard link stolen -> /etc/passwd, then a file of that name")
    one("hostile-hardlink-dotdot",
        [hard("stolen", up_to_root(target)), hard("outside", "../../outside"),
         f("stolen", b"overwrite through a hard link\n")],
        "hard link stolen -> ../../…/SENTINEL.target, outside -> ../../outside")
    one("hostile-write-through-symlink",
        [d("somedir-inside"), sym("dirlink", "somedir-inside"),
         f("dirlink/file", b"written through a symlink\n")],
        "symlink dirlink -> somedir-inside, then the file dirlink/file")

    # Lying digest: the manifest names the honest layer (digest and size), the blob stored under
    # that digest has one byte changed. Uncompressed, so the tar still parses and only the digest
    # check can catch it.
    raw = make_tar([d("lie"), f("lie/file.txt", b"A" * 600)])
    honest = single_image(out, "hostile-lying-digest.honest", [(raw, None)], {"Cmd": ["/bin/sh"]})
    lying_dir = os.path.join(out, "hostile-lying-digest")
    if os.path.exists(lying_dir):
        shutil.rmtree(lying_dir)
    shutil.copytree(honest["layout"], lying_dir)
    layer_digest = honest["layers"][0]["digest"]
    blob = bytearray(raw)
    pos = raw.index(b"A" * 600) + 300
    blob[pos] = ord("B")
    with open(os.path.join(lying_dir, "blobs", "sha256", layer_digest.split(":", 1)[1]), "wb") as fh:
        fh.write(bytes(blob))
    info = dict(honest)
    info["layout"] = lying_dir
    info["honest_layout"] = honest["layout"]
    info["lying_blob"] = layer_digest
    info["attack"] = "layer blob bytes differ from the manifest's digest (same size)"
    info["expected_status"] = "DIGEST_MISMATCH"
    images["hostile-lying-digest"] = info
    return images


# ----------------------------------------------------------------------------- corpus

def raw_tar(members, fmt=tarfile.PAX_FORMAT):
    """A tar of (TarInfo fields, data) pairs exactly as given: any order, duplicates, device
    nodes, raw-byte names (surrogate-escaped), extra PAX records."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8",
                      errors="surrogateescape") as tar:
        for fields, data in members:
            ti = tarfile.TarInfo(fields["name"])
            ti.mtime = MTIME
            ti.uname, ti.gname = "", ""
            ti.mode = fields.get("mode", 0o644)
            ti.type = fields.get("type", tarfile.REGTYPE)
            ti.linkname = fields.get("link", "")
            ti.devmajor, ti.devminor = fields.get("dev", (0, 0))
            if fields.get("pax"):
                ti.pax_headers = dict(fields["pax"])
            if ti.type == tarfile.REGTYPE:
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
            else:
                tar.addfile(ti)
    return buf.getvalue()


def rf(name, data=b"x\n", **kw):
    return (dict(name=name, **kw), data)


def rd(name, mode=0o755):
    return (dict(name=name, type=tarfile.DIRTYPE, mode=mode), b"")


def rsym(name, target):
    return (dict(name=name, type=tarfile.SYMTYPE, link=target, mode=0o777), b"")


def rhard(name, target, mode=0o644):
    return (dict(name=name, type=tarfile.LNKTYPE, link=target, mode=mode), b"")


def rdev(name, kind, major, minor):
    return (dict(name=name, type=kind, dev=(major, minor), mode=0o600), b"")


def empty_files_tar(names):
    """A ustar archive of empty files (names of at most 100 bytes), made without tarfile,
    which is too slow for tens of thousands of entries."""
    out = []
    for name in names:
        h = bytearray(512)
        n = name.encode()
        assert len(n) <= 100
        h[0:len(n)] = n
        h[100:108] = b"0000644\0"
        h[108:116] = b"0000000\0"
        h[116:124] = b"0000000\0"
        h[124:136] = b"00000000000\0"
        h[136:148] = b"%011o\0" % MTIME
        h[148:156] = b" " * 8
        h[156:157] = b"0"
        h[257:265] = b"ustar\x0000"
        h[148:156] = b"%06o\0 " % sum(h)
        out.append(bytes(h))
    out.append(bytes(1024))
    return b"".join(out)


def zero_file_tar_stream(name, size, chunk=1 << 20):
    """Yields an uncompressed tar of one file of `size` zero bytes, in pieces."""
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode = size, MTIME, 0o644
    yield ti.tobuf(format=tarfile.GNU_FORMAT)
    zeros = bytes(chunk)
    left = size
    while left > 0:
        n = min(left, chunk)
        yield zeros[:n]
        left -= n
    yield bytes(1024)


def gzip_stream(pieces):
    import zlib
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)  # 31: gzip wrapper
    out = []
    for p in pieces:
        out.append(comp.compress(p))
    out.append(comp.flush())
    return b"".join(out)


def zstd_stream(pieces):
    zstd = shutil.which("zstd")
    if not zstd:
        return None
    proc = subprocess.Popen([zstd, "-q", "-c", "-3", "--no-progress"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    import threading
    result = {}
    reader = threading.Thread(target=lambda: result.update(out=proc.stdout.read()))
    reader.start()
    for p in pieces:
        proc.stdin.write(p)
    proc.stdin.close()
    reader.join()
    proc.wait()
    return result["out"]


class Corpus:
    """Hostile images and documents, one OCI layout per case under OUT/corpus/<case>, served
    verbatim (wrong digests included) by the hostile-corpus test's own registry."""

    def __init__(self, out, sentinel):
        self.dir = os.path.join(out, "corpus")
        self.sentinel = sentinel
        self.target = sentinel + ".target"
        self.cases = {}

    def case(self, name, attack, expect, **extra):
        info = {"layout": os.path.join(self.dir, name), "attack": attack, "expect": expect}
        info.update(extra)
        self.cases[name] = info
        return Layout(info["layout"])

    def image(self, name, attack, expect, layers, **extra):
        """layers: [(uncompressed tar, compression)] -> a valid image (right digests)."""
        layout = self.case(name, attack, expect, **extra)
        desc, info = write_image(layout, layers, {"Cmd": ["/bin/sh"]})
        layout.finish(desc)
        self.cases[name]["id"] = info["id"]
        return layout

    def documents(self, name, attack, expect, manifest, blobs=(), media_type=MT_MANIFEST,
                  digest=None, **extra):
        """A layout whose tag points at `manifest` (bytes, served as they are; `digest`
        overrides the digest the index announces) with extra blobs [(bytes, digest or None)]."""
        layout = self.case(name, attack, expect, **extra)
        for data, d in blobs:
            layout.put(data, "application/octet-stream", d)
        desc = layout.put(manifest, media_type, digest)
        layout.finish(desc)
        return layout

    def manifest_for(self, layout, layer_descs, diff_ids, config_extra=None):
        config = {"created": CREATED, "architecture": host_arch(), "os": "linux", "config": {},
                  "rootfs": {"type": "layers", "diff_ids": diff_ids}}
        if config_extra:
            config.update(config_extra)
        config_desc = layout.put(cjson(config), MT_CONFIG)
        return {"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": config_desc,
                "layers": layer_descs}


def build_corpus(out, sentinel):
    c = Corpus(out, sentinel)
    if os.path.exists(c.dir):
        shutil.rmtree(c.dir)
    os.makedirs(c.dir)
    sdir, tgt = c.sentinel, c.target
    tdir, tname = os.path.dirname(tgt), os.path.basename(tgt)
    UNSAFE = ["UNSAFE_ARCHIVE"]
    OK = ["OK"]

    def tarcase(name, attack, expect, members, compression="gzip", fmt=tarfile.PAX_FORMAT,
                **extra):
        # fs: the case is about what reaches the file system (run on every driver).
        c.image(name, attack, expect, [(raw_tar(members, fmt), compression)], fs=True, **extra)

    # A well-formed control image: the corpus server and the store work.
    tarcase("control", "a normal image", OK, [rd("etc"), rf("etc/hello", b"hello\n")])

    # Escapes.
    tarcase("traversal", "../ names climbing out", UNSAFE,
            [rf(up_to_root(sdir) + "/escape"), rf("../escape")])
    tarcase("absolute", "absolute names", UNSAFE, [rf(sdir + "/abs-escape")])
    tarcase("symlink-escape", "symlink to outside, then a file through it", UNSAFE,
            [rsym("evil", sdir), rf("evil/pwned")])
    tarcase("symlink-parent-escape", "symlink to .., then a file through it", UNSAFE,
            [rsym("up", "../../../../../../../../../../.." + sdir), rf("up/pwned")])
    tarcase("hardlink-escape", "hard link to /etc/passwd, then a file of that name", UNSAFE,
            [rhard("stolen", "/etc/passwd"), rf("stolen", b"overwritten\n")])
    tarcase("hardlink-dotdot", "hard link climbing out", UNSAFE,
            [rhard("stolen", up_to_root(tgt))])
    tarcase("hardlink-through-symlink", "hard link whose target path crosses a symlink", UNSAFE,
            [rsym("s", tdir), rhard("stolen", "s/" + tname)])
    tarcase("write-through-symlink", "a file written through an in-layer symlink", UNSAFE,
            [rd("inside"), rsym("dirlink", "inside"), rf("dirlink/file")])
    tarcase("symlink-replaced-dir", "directory entry over a symlink to outside", UNSAFE,
            [rsym("etc", sdir), rd("etc"), rf("etc/pwned")])
    tarcase("chmod-through-symlink", "a directory entry naming a symlink to a host file "
            "(would chmod it)", UNSAFE, [rsym("lnk", tgt), rd("lnk", 0o777)])
    tarcase("hardlink-to-symlink-chmod", "hard link to an in-layer symlink with mode 0777 "
            "(must not chmod the symlink's target)", OK,
            [rsym("lnk", tgt), rhard("h", "lnk", 0o777)])
    # Whiteouts (vfs deletes what they name).
    tarcase("whiteout-traversal", "a whiteout climbing out", UNSAFE,
            [rf("../.wh." + tname, b"")])
    tarcase("whiteout-through-symlink", "a whiteout reached through a symlink to outside",
            UNSAFE, [rsym("s", tdir), rf("s/.wh." + tname, b"")])
    tarcase("opaque-through-symlink", "an opaque marker reached through a symlink to outside",
            UNSAFE, [rsym("s", sdir), rf("s/.wh..wh..opq", b"")])
    tarcase("whiteout-dotdot-name", "whiteout of \"..\"", UNSAFE, [rd("d"), rf("d/.wh..", b"")])
    # Device nodes: allowed inside the layer as root, never outside.
    tarcase("devices-inside", "character and block devices inside the layer", OK,
            [rd("dev"), rdev("dev/null", tarfile.CHRTYPE, 1, 3),
             rdev("dev/sda", tarfile.BLKTYPE, 8, 0)], root_only_ok=True)
    tarcase("device-traversal", "a device node climbing out", UNSAFE,
            [rdev("../../evil-dev", tarfile.CHRTYPE, 1, 3)])
    tarcase("device-through-symlink", "a device node through a symlink to outside", UNSAFE,
            [rsym("s", sdir), rdev("s/node", tarfile.CHRTYPE, 1, 3)])
    # Names.
    tarcase("long-name", "a 5000-byte name (PAX)", UNSAFE, [rf("a/" * 2500 + "x")])
    tarcase("long-component", "a 300-byte path component", ["UNSAFE_ARCHIVE", "IO"],
            [rf("c" * 300)])
    tarcase("long-link-target", "a 5000-byte symlink target", UNSAFE,
            [rsym("l", "t/" * 2500)])
    tarcase("non-utf8-names", "names that are not UTF-8", OK,
            [rd("caf\udce9"), rf("caf\udce9/na\udcefve", b"bytes\n")], fmt=tarfile.GNU_FORMAT,
            raw_names=["caf\xe9/na\xefve"])
    tarcase("duplicate-entries", "the same file twice", UNSAFE,
            [rf("dup", b"first\n"), rf("dup", b"second\n")])
    tarcase("nul-in-pax-name", "a PAX path with a NUL byte", ["UNSAFE_ARCHIVE", "IO"],
            [rf("x", pax={"path": "a\x00b"})])
    # Extended attributes: only user.* and security.capability may be set.
    tarcase("xattrs", "xattrs in trusted.*, security.* and user.*", OK,
            [rf("xattr-file", b"x\n", pax={
                "SCHILY.xattr.trusted.overlay.opaque": "y",
                "SCHILY.xattr.trusted.evil": "1",
                "SCHILY.xattr.security.selinux": "system_u:object_r:shadow_t:s0",
                "SCHILY.xattr.user.ok": "kept"})],
            xattrs_file="xattr-file", xattrs_allowed=["user.ok"])
    # Malformed streams.
    good = raw_tar([rd("t"), rf("t/file", b"A" * 5000)])
    gz = gzip_bytes(good)
    for name, blob, attack in (
            ("truncated-gzip", gz[:len(gz) // 2], "a gzip stream cut in half"),
            ("trailing-gzip-garbage", gz + b"garbage after the gzip member",
             "bytes after the gzip member"),
            ("truncated-tar", good[:700], "a tar cut inside a header"),
            ("not-a-tar", b"this is not a tar archive at all" * 40, "text instead of a tar"),
            ("bzip2-layer", b"BZh91AY&SY" + bytes(100), "bzip2 magic")):
        layout = c.case(name, attack, UNSAFE if name != "bzip2-layer" else ["UNSUPPORTED"])
        ldesc = layout.put(blob, MT_LAYER_GZ if "gzip" in name else MT_LAYER)
        manifest = c.manifest_for(layout, [ldesc], [sha256(blob)])
        layout.finish(layout.put(cjson(manifest), MT_MANIFEST))
    raw = raw_tar([rf("trailing-ok")]) + b"trailing bytes after the archive"
    c.image("trailing-tar-data", "bytes after the end-of-archive blocks (accepted, as Go does)",
            OK, [(raw, None)])
    # Bombs: many entries (memory), and gzip/zstd streams of zeros (disk), stopped by the
    # unpacked-size cap the test passes (--max-unpacked-size 8M).
    c.image("many-entries", "10000 entries", OK,
            [(empty_files_tar(["many/f%06d-%s" % (i, "n" * 80) for i in range(10000)]), "gzip")])
    bomb = gzip_stream(zero_file_tar_stream("bomb", 256 << 20))
    layout = c.case("gzip-bomb", "256 MiB of zeros in %d bytes of gzip" % len(bomb), UNSAFE,
                    pull_args=["--max-unpacked-size", "8M"], fs=True)
    manifest = c.manifest_for(layout, [layout.put(bomb, MT_LAYER_GZ)], [sha256(b"unknown")])
    layout.finish(layout.put(cjson(manifest), MT_MANIFEST))
    zbomb = zstd_stream(zero_file_tar_stream("bomb", 256 << 20))
    if zbomb is not None:
        layout = c.case("zstd-bomb", "256 MiB of zeros in %d bytes of zstd" % len(zbomb), UNSAFE,
                        pull_args=["--max-unpacked-size", "8M"], fs=True)
        manifest = c.manifest_for(layout, [layout.put(zbomb, MT_LAYER_ZSTD)], [sha256(b"x")])
        layout.finish(layout.put(cjson(manifest), MT_MANIFEST))
    # Digests and sizes.
    honest = gzip_bytes(raw_tar([rf("lie", b"A" * 600)]))
    lying = bytearray(honest)
    lying[len(lying) // 2] ^= 0xFF

    def layer_case(name, attack, expect, blob, desc_digest=None, desc_size=None,
                   diff_ids=None, media_type=MT_LAYER_GZ):
        layout = c.case(name, attack, expect)
        d = desc_digest or sha256(blob)
        layout.put(blob, media_type, d)
        ldesc = {"mediaType": media_type, "digest": d,
                 "size": len(blob) if desc_size is None else desc_size}
        manifest = c.manifest_for(layout, [ldesc], diff_ids or [sha256(b"whatever")])
        layout.finish(layout.put(cjson(manifest), MT_MANIFEST))

    MISMATCH = ["DIGEST_MISMATCH"]
    raw_honest = raw_tar([rf("lie", b"A" * 600)])
    # The flipped byte breaks the deflate stream, which the extractor may notice before the
    # digest check at the end of the blob.
    layer_case("lying-blob", "blob bytes differ from the digest", MISMATCH + UNSAFE, bytes(lying),
               desc_digest=sha256(honest), diff_ids=[sha256(raw_honest)])
    layer_case("short-size", "descriptor size smaller than the blob", MISMATCH, honest,
               desc_size=len(honest) - 10, diff_ids=[sha256(raw_honest)])
    layer_case("long-size", "descriptor size larger than the blob",
               MISMATCH + ["NETWORK", "IO"],
               honest, desc_size=len(honest) + 1000, diff_ids=[sha256(raw_honest)])
    layer_case("wrong-diff-id", "the config's diff_id does not match the layer", MISMATCH,
               honest, diff_ids=[sha256(b"not this layer")])
    layer_case("diff-id-count", "two diff_ids for one layer", MISMATCH + ["REGISTRY"], honest,
               diff_ids=[sha256(raw_honest), sha256(b"extra")])
    layer_case("negative-size", "a layer descriptor with a negative size",
               ["INVALID_ARGUMENT", "MANIFEST_UNKNOWN", "REGISTRY", "UNSUPPORTED"], honest,
               desc_size=-5, diff_ids=[sha256(raw_honest)])
    # Bogus digest algorithms and digests that would make paths or URLs.
    BOGUS = ["UNSUPPORTED", "INVALID_ARGUMENT"]
    for name, bogus in (("digest-md5", "md5:d41d8cd98f00b204e9800998ecf8427e"),
                        ("digest-sha512", "sha512:" + "ab" * 64),
                        ("digest-traversal", "sha256:../../../../etc/passwd"),
                        ("digest-uppercase", "sha256:" + "AB" * 32),
                        ("digest-query", "sha256:" + "a" * 63 + "?x=1")):
        layout = c.case(name, "layer digest %r" % bogus, BOGUS, bogus=bogus)
        ldesc = {"mediaType": MT_LAYER_GZ, "digest": bogus, "size": 10}
        manifest = c.manifest_for(layout, [ldesc], [sha256(b"x")])
        layout.finish(layout.put(cjson(manifest), MT_MANIFEST))
    layout = c.case("config-digest-md5", "config digest md5:…", BOGUS, bogus="md5:")
    manifest = {"schemaVersion": 2, "mediaType": MT_MANIFEST,
                "config": {"mediaType": MT_CONFIG, "digest": "md5:" + "0" * 32, "size": 2},
                "layers": []}
    layout.finish(layout.put(cjson(manifest), MT_MANIFEST))
    layout = c.case("diff-id-bogus", "a diff_id that is not a digest", BOGUS)
    manifest = c.manifest_for(layout, [layout.put(honest, MT_LAYER_GZ)], ["sha256:../../x"])
    layout.finish(layout.put(cjson(manifest), MT_MANIFEST))
    # Documents: size, depth, self reference, layer count.
    DOC = ["UNSUPPORTED", "INVALID_ARGUMENT", "MANIFEST_UNKNOWN", "REGISTRY", "DIGEST_MISMATCH"]
    layout = c.case("config-lying", "config bytes differ from the config digest", MISMATCH)
    config = cjson({"architecture": host_arch(), "os": "linux", "rootfs": {"type": "layers",
                    "diff_ids": []}})
    cdesc = layout.put(config + b" ", MT_CONFIG, sha256(config))
    cdesc["size"] = len(config) + 1
    manifest = {"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": cdesc, "layers": []}
    layout.finish(layout.put(cjson(manifest), MT_MANIFEST))
    layout = c.case("manifest-lying", "manifest bytes differ from the digest the index gives",
                    MISMATCH)
    manifest = cjson(c.manifest_for(layout, [], []))
    desc = layout.put(manifest + b" ", MT_MANIFEST, sha256(manifest))
    layout.finish(desc)
    layout = c.case("huge-manifest", "a 6 MiB manifest", DOC)
    manifest = c.manifest_for(layout, [], [])
    manifest["annotations"] = {"pad": "x" * (6 << 20)}
    layout.finish(layout.put(cjson(manifest), MT_MANIFEST))
    layout = c.case("huge-config", "a config descriptor of 100 MiB", DOC)
    manifest = c.manifest_for(layout, [], [])
    manifest["config"]["size"] = 100 << 20
    layout.finish(layout.put(cjson(manifest), MT_MANIFEST))
    deep = b'{"schemaVersion":2,"mediaType":"' + MT_MANIFEST.encode() + b'","x":' + \
        b"[" * 100000 + b"]" * 100000 + b"}"
    c.documents("deep-json", "JSON nested 100000 deep", DOC, deep)
    c.documents("not-json", "a manifest that is not JSON", DOC, b"\x00\x01garbage{{{")
    # An index whose entry is the index itself: served under that digest, the bytes cannot
    # match it (a document cannot contain its own hash).
    layout = c.case("index-self", "an index whose only entry names the index itself", DOC)
    fake = sha256(b"the index itself")
    index = cjson({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [
        {"mediaType": MT_INDEX, "digest": fake, "size": 400,
         "platform": {"architecture": host_arch(), "os": "linux"}}]})
    layout.put(index, MT_INDEX, fake)
    desc = layout.put(index, MT_INDEX)
    layout.finish(desc)
    layout = c.case("index-nested", "an index pointing at another index", DOC)
    inner = cjson({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": []})
    idesc = layout.put(inner, MT_INDEX)
    idesc["platform"] = {"architecture": host_arch(), "os": "linux"}
    outer = cjson({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [idesc]})
    layout.finish(layout.put(outer, MT_INDEX))
    layout = c.case("many-layers", "1500 layers (all the same small blob)", DOC)
    ldesc = layout.put(honest, MT_LAYER_GZ)
    manifest = c.manifest_for(layout, [ldesc] * 1500, [sha256(raw_honest)] * 1500)
    layout.finish(layout.put(cjson(manifest), MT_MANIFEST))
    return c.cases


# ----------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--sentinel", help="directory the hostile images aim at "
                    "(default: OUTDIR/../sentinel)")
    ap.add_argument("--corpus", action="store_true",
                    help="build only the hostile corpus (OUTDIR/corpus/, OUTDIR/corpus.json)")
    args = ap.parse_args()
    out = os.path.abspath(args.outdir)
    os.makedirs(out, exist_ok=True)
    sentinel = os.path.abspath(args.sentinel or os.path.join(out, "..", "sentinel"))
    os.makedirs(sentinel, exist_ok=True)
    with open(sentinel + ".target", "wb") as fh:
        fh.write(b"sentinel target: must never change\n")
    if args.corpus:
        cases = build_corpus(out, sentinel)
        meta = {"sentinel": sentinel, "sentinel_target": sentinel + ".target", "cases": cases}
        with open(os.path.join(out, "corpus.json"), "w") as fh:
            json.dump(meta, fh, indent=1, sort_keys=True)
        print("mkimage.py: %d corpus cases in %s" % (len(cases), os.path.join(out, "corpus")),
              file=sys.stderr)
        return

    images = {"fixture": build_fixture(out), "sibling": build_sibling(out),
              "multi": build_multi(out), "big": build_big(out)}
    z = build_zstd(out)
    if z:
        images["zstd"] = z
    images.update(build_hostile(out, sentinel))
    meta = {"tag": TAG, "sentinel": sentinel, "sentinel_target": sentinel + ".target",
            "host_arch": host_arch(), "images": images}
    with open(os.path.join(out, "images.json"), "w") as fh:
        json.dump(meta, fh, indent=1, sort_keys=True)
    for name in sorted(images):
        print("mkimage.py: %-32s %s" % (name, images[name].get("manifest_digest")
                                          or images[name].get("index_digest")), file=sys.stderr)


if __name__ == "__main__":
    main()
