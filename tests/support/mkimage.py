#!/usr/bin/env python3
"""Build the cimage test images as OCI image layouts (python3 standard library only).

usage: mkimage.py OUTDIR [--sentinel DIR]

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


# ----------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--sentinel", help="directory the hostile images aim at "
                    "(default: OUTDIR/../sentinel)")
    args = ap.parse_args()
    out = os.path.abspath(args.outdir)
    os.makedirs(out, exist_ok=True)
    sentinel = os.path.abspath(args.sentinel or os.path.join(out, "..", "sentinel"))
    os.makedirs(sentinel, exist_ok=True)
    with open(sentinel + ".target", "wb") as fh:
        fh.write(b"sentinel target: must never change\n")

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
