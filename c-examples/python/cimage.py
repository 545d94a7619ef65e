"""cimage for Python: a ctypes binding of libcimage (include/cimage.h), standard library only.

Pull container images into a containers/storage store (the one podman, skopeo and CRI-O use),
create containers from them and mount them::

    import cimage

    with cimage.Store(graph_root="/var/lib/containers/storage") as store:
        image = store.pull("docker://quay.io/libpod/alpine:latest")
        container = store.create_container(image.id, name="demo")
        with store.mounted(container.id) as rootfs:
            print(os.listdir(rootfs))
        store.delete_container(container.id)

Failures raise CimageError, which carries the library's status (``.status``, a Status, and
``.status_name``), ``.message`` (the whole cause chain), ``.subject``, ``.errno`` and
``.http_status``.

The library is loaded from $CIMAGE_LIBRARY when set, else by its SONAME (libcimage.so.0.1) through
the system's search path (ld.so.cache, LD_LIBRARY_PATH), else by ctypes.util.find_library. A
library of another ABI version is refused at import.

Images, layers and containers are returned as immutable snapshots (plain Python objects); only the
Store and CancelToken hold library handles, and they are context managers. A Store may be used from
several threads at once (the library releases the GIL during calls).
"""

import contextlib
import ctypes
import ctypes.util
import enum
import json
import os
import threading
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

__all__ = [
    "CancelToken",
    "CimageError",
    "Container",
    "Image",
    "Layer",
    "LogLevel",
    "ProgressEvent",
    "ProgressKind",
    "PullPolicy",
    "Status",
    "Store",
    "library_path",
    "set_log_level",
    "version",
    "version_number",
]

# The ABI this module is written for: the library's major and, on 0.x, minor must match.
ABI_MAJOR, ABI_MINOR = 0, 1
_SONAME = "libcimage.so.%d.%d" % (ABI_MAJOR, ABI_MINOR)


# ------------------------------------------------------------------------------------------------
# statuses and errors


class Status(enum.IntEnum):
    """cimage_status: the outcome of a call. Values never change meaning."""

    OK = 0
    NULL_ARGUMENT = 1
    INVALID_ARGUMENT = 2
    NOT_FOUND = 3
    ALREADY_EXISTS = 4
    IN_USE = 5
    READ_ONLY = 6
    LOCKED = 7
    PERMISSION_DENIED = 8
    NO_SPACE = 9
    IO = 10
    NETWORK = 11
    TIMEOUT = 12
    AUTH_REQUIRED = 13
    AUTH_FAILED = 14
    REGISTRY = 15
    MANIFEST_UNKNOWN = 16
    DIGEST_MISMATCH = 17
    UNSAFE_ARCHIVE = 18
    UNSUPPORTED = 19
    POLICY_REJECTED = 20
    CONFIG = 21
    CANCELLED = 22
    VERSION_MISMATCH = 23
    INTERNAL = 24
    PANIC = 25


class CimageError(Exception):
    """A failed library call.

    ``status`` is a Status (or a plain int for a status newer than this module), ``status_name``
    its stable name ("NOT_FOUND"), ``message`` the library's message with its cause chain,
    ``subject`` the reference, ID or path concerned (or None), ``errno`` the failing system call's
    errno (0 if none) and ``http_status`` the failing registry request's HTTP status (0 if none).
    """

    def __init__(self, status, message, subject=None, errno=0, http_status=0):
        try:
            status = Status(status)
        except ValueError:
            pass
        self.status = status
        self.status_name = status.name if isinstance(status, Status) else _status_name(status)
        self.message = message
        self.subject = subject
        self.errno = errno
        self.http_status = http_status
        super().__init__("%s: %s" % (self.status_name, message))


# ------------------------------------------------------------------------------------------------
# loading the library


def _load():
    explicit = os.environ.get("CIMAGE_LIBRARY")
    candidates = [explicit] if explicit else [_SONAME, ctypes.util.find_library("cimage")]
    errors = []
    for candidate in candidates:
        if not candidate:
            continue
        try:
            return ctypes.CDLL(candidate), candidate
        except OSError as e:
            errors.append(str(e))
    raise ImportError(
        "cimage: cannot load the library (%s); install it (make install) or set CIMAGE_LIBRARY"
        % "; ".join(errors or ["ctypes.util.find_library('cimage') found nothing"])
    )


_lib, library_path = _load()

_p = ctypes.c_void_p  # every handle is opaque
_pp = ctypes.POINTER(ctypes.c_void_p)
_str = ctypes.c_char_p
_i32 = ctypes.c_int32
_size = ctypes.c_size_t


def _declare(name, restype, *argtypes):
    f = getattr(_lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


class _CProgress(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("kind", ctypes.c_int32),
        ("digest", ctypes.c_char_p),
        ("message", ctypes.c_char_p),
        ("bytes_done", ctypes.c_uint64),
        ("bytes_total", ctypes.c_uint64),
    ]


_progress_cb = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.POINTER(_CProgress))

_C = {}
for _name, _restype, _argtypes in [
    ("cimage_version", _str, ()),
    ("cimage_version_number", ctypes.c_uint32, ()),
    ("cimage_status_name", _str, (_i32,)),
    ("cimage_error_free", None, (_p,)),
    ("cimage_error_code", _i32, (_p,)),
    ("cimage_error_message", _str, (_p,)),
    ("cimage_error_os_errno", _i32, (_p,)),
    ("cimage_error_http_status", _i32, (_p,)),
    ("cimage_error_subject", _str, (_p,)),
    ("cimage_string_free", None, (_p,)),
    ("cimage_log_set_level", _i32, (_i32, _pp)),
    ("cimage_store_options_new", _p, ()),
    ("cimage_store_options_free", None, (_p,)),
    ("cimage_store_options_set_graph_root", _i32, (_p, _str, _pp)),
    ("cimage_store_options_set_run_root", _i32, (_p, _str, _pp)),
    ("cimage_store_options_set_config_file", _i32, (_p, _str, _pp)),
    ("cimage_store_options_set_driver", _i32, (_p, _str, _pp)),
    ("cimage_store_open", _i32, (_p, _pp, _pp)),
    ("cimage_store_free", None, (_p,)),
    ("cimage_store_graph_root", _str, (_p,)),
    ("cimage_store_run_root", _str, (_p,)),
    ("cimage_store_driver_name", _str, (_p,)),
    ("cimage_store_driver_status_len", _size, (_p,)),
    ("cimage_store_driver_status_key", _str, (_p, _size)),
    ("cimage_store_driver_status_value", _str, (_p, _size)),
    ("cimage_store_wipe", _i32, (_p, _pp)),
    ("cimage_pull_options_new", _p, ()),
    ("cimage_pull_options_free", None, (_p,)),
    ("cimage_pull_options_set_tls_verify", _i32, (_p, ctypes.c_bool, _pp)),
    ("cimage_pull_options_set_platform", _i32, (_p, _str, _pp)),
    ("cimage_pull_options_set_policy", _i32, (_p, _i32, _pp)),
    ("cimage_pull_options_set_progress", _i32, (_p, _progress_cb, _p, _pp)),
    ("cimage_pull_options_set_cancel_token", _i32, (_p, _p, _pp)),
    ("cimage_cancel_token_new", _p, ()),
    ("cimage_cancel_token_cancel", None, (_p,)),
    ("cimage_cancel_token_free", None, (_p,)),
    ("cimage_store_pull", _i32, (_p, _str, _p, _pp, _pp)),
    ("cimage_store_images", _i32, (_p, _pp, _pp)),
    ("cimage_image_list_len", _size, (_p,)),
    ("cimage_image_list_get", _p, (_p, _size)),
    ("cimage_image_list_free", None, (_p,)),
    ("cimage_store_image_lookup", _i32, (_p, _str, _pp, _pp)),
    ("cimage_image_free", None, (_p,)),
    ("cimage_image_id", _str, (_p,)),
    ("cimage_image_digest", _str, (_p,)),
    ("cimage_image_names_len", _size, (_p,)),
    ("cimage_image_name", _str, (_p, _size)),
    ("cimage_image_size", ctypes.c_int64, (_p,)),
    ("cimage_image_created", _str, (_p,)),
    ("cimage_image_top_layer", _str, (_p,)),
    ("cimage_store_image_manifest", _i32, (_p, _str, _pp, _pp)),
    ("cimage_store_image_config", _i32, (_p, _str, _pp, _pp)),
    ("cimage_store_image_delete", _i32, (_p, _str, _pp)),
    ("cimage_store_layers", _i32, (_p, _pp, _pp)),
    ("cimage_layer_list_len", _size, (_p,)),
    ("cimage_layer_list_get", _p, (_p, _size)),
    ("cimage_layer_list_free", None, (_p,)),
    ("cimage_store_layer_lookup", _i32, (_p, _str, _pp, _pp)),
    ("cimage_layer_free", None, (_p,)),
    ("cimage_layer_id", _str, (_p,)),
    ("cimage_layer_parent", _str, (_p,)),
    ("cimage_layer_diff_digest", _str, (_p,)),
    ("cimage_layer_compressed_digest", _str, (_p,)),
    ("cimage_layer_diff_size", ctypes.c_int64, (_p,)),
    ("cimage_layer_compressed_size", ctypes.c_int64, (_p,)),
    ("cimage_layer_created", _str, (_p,)),
    ("cimage_store_layer_delete", _i32, (_p, _str, _pp)),
    ("cimage_container_options_new", _p, ()),
    ("cimage_container_options_free", None, (_p,)),
    ("cimage_container_options_set_name", _i32, (_p, _str, _pp)),
    ("cimage_container_options_set_metadata", _i32, (_p, _str, _pp)),
    ("cimage_store_container_create", _i32, (_p, _str, _p, _pp, _pp)),
    ("cimage_store_containers", _i32, (_p, _pp, _pp)),
    ("cimage_container_list_len", _size, (_p,)),
    ("cimage_container_list_get", _p, (_p, _size)),
    ("cimage_container_list_free", None, (_p,)),
    ("cimage_store_container_lookup", _i32, (_p, _str, _pp, _pp)),
    ("cimage_container_free", None, (_p,)),
    ("cimage_container_id", _str, (_p,)),
    ("cimage_container_names_len", _size, (_p,)),
    ("cimage_container_name", _str, (_p, _size)),
    ("cimage_container_image_id", _str, (_p,)),
    ("cimage_container_layer_id", _str, (_p,)),
    ("cimage_container_mount_point", _str, (_p,)),
    ("cimage_container_created", _str, (_p,)),
    ("cimage_store_container_mount", _i32, (_p, _str, _pp, _pp)),
    ("cimage_store_container_unmount", _i32, (_p, _str, ctypes.c_bool, _pp)),
    ("cimage_store_container_delete", _i32, (_p, _str, _pp)),
]:
    _C[_name] = _declare(_name, _restype, *_argtypes)


def _status_name(status):
    return _C["cimage_status_name"](int(status)).decode()


def version():
    """The loaded library's version, e.g. "0.1.0"."""
    return _C["cimage_version"]().decode()


def version_number():
    """The loaded library's version as MAJOR*1000000 + MINOR*1000 + PATCH."""
    return _C["cimage_version_number"]()


def _check_version():
    number = version_number()
    major, minor = number // 1000000, number // 1000 % 1000
    if major != ABI_MAJOR or (major == 0 and minor != ABI_MINOR):
        raise ImportError(
            "cimage: %s is version %s; this module needs %d.%d"
            % (library_path, version(), ABI_MAJOR, ABI_MINOR)
        )


_check_version()


# ------------------------------------------------------------------------------------------------
# calling


def _text(value):
    return value.decode("utf-8", "replace") if value is not None else None


def _arg(what, value):
    """A str (or path-like) argument as NUL-terminated UTF-8; an embedded NUL is refused."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, bytes):
        raise TypeError("cimage: %s must be a str, not %s" % (what, type(value).__name__))
    if b"\0" in value:
        raise CimageError(Status.INVALID_ARGUMENT, "%s contains a NUL byte" % what)
    return value


def _call(name, *args):
    """Calls a fallible function (its error out-parameter is added) and raises on failure."""
    err = ctypes.c_void_p()
    status = _C[name](*args, ctypes.byref(err))
    if status != Status.OK:
        _raise(status, err)


def _raise(status, err):
    if not err:
        raise CimageError(status, "(no error details)")
    try:
        error = CimageError(
            status,
            _text(_C["cimage_error_message"](err)) or "",
            _text(_C["cimage_error_subject"](err)),
            _C["cimage_error_os_errno"](err),
            _C["cimage_error_http_status"](err),
        )
    finally:
        _C["cimage_error_free"](err)
    raise error


def _owned_string(pointer):
    """Copies and frees a `char *` the library handed over."""
    try:
        return ctypes.string_at(pointer.value)
    finally:
        _C["cimage_string_free"](pointer)


# ------------------------------------------------------------------------------------------------
# snapshots


@dataclass(frozen=True)
class Image:
    """An image record as it was read."""

    id: str
    digest: Optional[str]
    names: Tuple[str, ...]
    size: Optional[int]  # uncompressed bytes of all layers; None when unknown
    created: Optional[str]  # RFC 3339
    top_layer: Optional[str]

    @classmethod
    def _from(cls, h):
        size = _C["cimage_image_size"](h)
        return cls(
            id=_text(_C["cimage_image_id"](h)),
            digest=_text(_C["cimage_image_digest"](h)),
            names=tuple(
                _text(_C["cimage_image_name"](h, n)) for n in range(_C["cimage_image_names_len"](h))
            ),
            size=size if size >= 0 else None,
            created=_text(_C["cimage_image_created"](h)),
            top_layer=_text(_C["cimage_image_top_layer"](h)),
        )


@dataclass(frozen=True)
class Layer:
    """A layer record as it was read."""

    id: str
    parent: Optional[str]
    diff_digest: Optional[str]
    compressed_digest: Optional[str]
    diff_size: Optional[int]
    compressed_size: int
    created: Optional[str]

    @classmethod
    def _from(cls, h):
        size = _C["cimage_layer_diff_size"](h)
        return cls(
            id=_text(_C["cimage_layer_id"](h)),
            parent=_text(_C["cimage_layer_parent"](h)),
            diff_digest=_text(_C["cimage_layer_diff_digest"](h)),
            compressed_digest=_text(_C["cimage_layer_compressed_digest"](h)),
            diff_size=size if size >= 0 else None,
            compressed_size=_C["cimage_layer_compressed_size"](h),
            created=_text(_C["cimage_layer_created"](h)),
        )


@dataclass(frozen=True)
class Container:
    """A container record as it was read."""

    id: str
    names: Tuple[str, ...]
    image_id: Optional[str]
    layer_id: Optional[str]
    mount_point: Optional[str]  # where it was mounted when read, or None
    created: Optional[str]

    @classmethod
    def _from(cls, h):
        return cls(
            id=_text(_C["cimage_container_id"](h)),
            names=tuple(
                _text(_C["cimage_container_name"](h, n))
                for n in range(_C["cimage_container_names_len"](h))
            ),
            image_id=_text(_C["cimage_container_image_id"](h)),
            layer_id=_text(_C["cimage_container_layer_id"](h)),
            mount_point=_text(_C["cimage_container_mount_point"](h)),
            created=_text(_C["cimage_container_created"](h)),
        )


# ------------------------------------------------------------------------------------------------
# pulling


class PullPolicy(enum.IntEnum):
    """When pull uses the network."""

    ALWAYS = 0  # ask the registry, fetch what is missing (default)
    MISSING = 1  # no network when the store has an image of that name
    NEVER = 2  # never: NOT_FOUND when the image is not in the store


class ProgressKind(enum.IntEnum):
    """What a ProgressEvent reports (CIMAGE_PROGRESS_*); other values are informational."""

    RESOLVING = 0
    DOWNLOADING = 1
    VERIFYING = 2
    EXTRACTING = 3
    DONE = 4
    SKIPPED = 5
    RETRYING = 6
    FAILED = 7
    CONFIG = 8
    COMMITTING = 9


@dataclass(frozen=True)
class ProgressEvent:
    kind: object  # a ProgressKind, or an int for a kind newer than this module
    digest: Optional[str]
    message: Optional[str]
    bytes_done: int
    bytes_total: int  # 0 when unknown


def _event(c):
    try:
        kind = ProgressKind(c.kind)
    except ValueError:
        kind = c.kind
    has_bytes = c.struct_size >= _CProgress.bytes_total.offset + ctypes.sizeof(ctypes.c_uint64)
    return ProgressEvent(
        kind=kind,
        digest=_text(c.digest),
        message=_text(c.message),
        bytes_done=c.bytes_done if has_bytes else 0,
        bytes_total=c.bytes_total if has_bytes else 0,
    )


class CancelToken:
    """Cancels the pulls it is given (``store.pull(..., cancel=token)``): ``cancel()`` may be
    called from any thread. Close it (or use ``with``) when done."""

    def __init__(self):
        self._handle = _C["cimage_cancel_token_new"]()

    def cancel(self):
        if self._handle:
            _C["cimage_cancel_token_cancel"](self._handle)

    def close(self):
        handle, self._handle = self._handle, None
        if handle:
            _C["cimage_cancel_token_free"](handle)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


# ------------------------------------------------------------------------------------------------
# the store


class Store:
    """An open containers/storage store; a context manager. Thread-safe.

    Arguments left None come from storage.conf ($CONTAINERS_STORAGE_CONF,
    /etc/containers/storage.conf, ...) and then the built-in defaults.
    """

    def __init__(self, graph_root=None, run_root=None, driver=None, config_file=None):
        self._handle = None
        self._lock = threading.Condition()
        self._calls = 0
        options = _C["cimage_store_options_new"]()
        try:
            for what, value in [
                ("graph_root", graph_root),
                ("run_root", run_root),
                ("config_file", config_file),
                ("driver", driver),
            ]:
                if value is not None:
                    _call("cimage_store_options_set_" + what, options, _arg(what, value))
            handle = ctypes.c_void_p()
            _call("cimage_store_open", options, ctypes.byref(handle))
            self._handle = handle.value
        finally:
            _C["cimage_store_options_free"](options)

    # -- lifetime: close() waits for the calls of other threads, later calls raise

    def close(self):
        """Closes the handle once other threads' calls return. Mounts stay mounted."""
        with self._lock:
            handle, self._handle = self._handle, None
            while self._calls:
                self._lock.wait()
        if handle:
            _C["cimage_store_free"](handle)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_handle", None):
            self.close()

    @contextlib.contextmanager
    def _using(self):
        with self._lock:
            if not self._handle:
                raise ValueError("cimage: operation on a closed Store")
            self._calls += 1
            handle = self._handle
        try:
            yield handle
        finally:
            with self._lock:
                self._calls -= 1
                self._lock.notify_all()

    # -- the store itself

    @property
    def graph_root(self) -> str:
        with self._using() as h:
            return _text(_C["cimage_store_graph_root"](h))

    @property
    def run_root(self) -> str:
        with self._using() as h:
            return _text(_C["cimage_store_run_root"](h))

    @property
    def driver(self) -> str:
        with self._using() as h:
            return _text(_C["cimage_store_driver_name"](h))

    @property
    def driver_status(self) -> List[Tuple[str, str]]:
        """The driver's status as (key, value) pairs, in the driver's order."""
        with self._using() as h:
            return [
                (
                    _text(_C["cimage_store_driver_status_key"](h, i)),
                    _text(_C["cimage_store_driver_status_value"](h, i)),
                )
                for i in range(_C["cimage_store_driver_status_len"](h))
            ]

    def wipe(self):
        """Removes every container, image and layer (mounted containers are unmounted first)."""
        with self._using() as h:
            _call("cimage_store_wipe", h)

    # -- pulling

    def pull(
        self,
        reference,
        *,
        tls_verify: bool = True,
        platform: Optional[str] = None,
        policy=PullPolicy.ALWAYS,
        progress: Optional[Callable[[ProgressEvent], None]] = None,
        cancel: Optional[CancelToken] = None,
    ) -> Image:
        """Pulls "docker://host/repo:tag", "oci:DIR[:TAG]" or a bare name and returns the image.

        ``tls_verify=False`` reaches a plain-HTTP registry. ``policy`` is a PullPolicy or its name
        ("always", "missing", "never"). ``progress`` is called with ProgressEvents on this thread
        while the pull runs; an exception raised by it (KeyboardInterrupt included) cancels the
        pull and is raised again here. ``cancel`` stops the pull from another thread. A cancelled
        pull raises CimageError with status CANCELLED and leaves the store as it was.
        """
        if isinstance(policy, str):
            try:
                policy = PullPolicy[policy.upper()]
            except KeyError:
                raise CimageError(Status.INVALID_ARGUMENT, "unknown pull policy %r" % policy)
        raised = []

        def on_progress(_user_data, event):
            # Exceptions must not reach ctypes (it would print and ignore them): keep the first,
            # cancel the pull (non-zero), raise it once the call returned.
            if raised:
                return 1
            try:
                if progress is not None:
                    progress(_event(event.contents))
                return 0
            except BaseException as e:  # noqa: B902 - KeyboardInterrupt too: it cancels
                raised.append(e)
                return 1

        # Always registered, even without `progress`: Python runs signal handlers between
        # bytecodes only, so a callback is what lets Ctrl-C cancel a long pull.
        callback = _progress_cb(on_progress)
        options = _C["cimage_pull_options_new"]()
        try:
            _call("cimage_pull_options_set_tls_verify", options, bool(tls_verify))
            _call("cimage_pull_options_set_policy", options, int(policy))
            if platform is not None:
                _call("cimage_pull_options_set_platform", options, _arg("platform", platform))
            _call("cimage_pull_options_set_progress", options, callback, None)
            if cancel is not None:
                _call("cimage_pull_options_set_cancel_token", options, cancel._handle)
            image = ctypes.c_void_p()
            with self._using() as h:
                err = ctypes.c_void_p()
                status = _C["cimage_store_pull"](
                    h, _arg("reference", reference), options, ctypes.byref(image), ctypes.byref(err)
                )
            if raised:
                _C["cimage_image_free"](image)
                _C["cimage_error_free"](err)
                raise raised[0]
            if status != Status.OK:
                _raise(status, err)
            try:
                return Image._from(image)
            finally:
                _C["cimage_image_free"](image)
        finally:
            _C["cimage_pull_options_free"](options)

    # -- images

    def images(self) -> List[Image]:
        return self._list("cimage_store_images", "cimage_image_list", Image)

    def image(self, name_or_id) -> Image:
        """Finds an image by ID, ID prefix, name or manifest digest (CimageError NOT_FOUND)."""
        return self._lookup("cimage_store_image_lookup", "cimage_image_free", Image, name_or_id)

    def image_manifest(self, image) -> bytes:
        """The image's manifest, exactly the bytes pulled."""
        return self._document("cimage_store_image_manifest", image)

    def image_config(self, image) -> dict:
        """The image's config (Env, Cmd, Entrypoint, ... under "config")."""
        return json.loads(self._document("cimage_store_image_config", image))

    def delete_image(self, image):
        """Deletes an image and the layers nothing else uses (IN_USE while a container uses it)."""
        with self._using() as h:
            _call("cimage_store_image_delete", h, _arg("image", image))

    # -- layers

    def layers(self) -> List[Layer]:
        return self._list("cimage_store_layers", "cimage_layer_list", Layer)

    def layer(self, name_or_id) -> Layer:
        return self._lookup("cimage_store_layer_lookup", "cimage_layer_free", Layer, name_or_id)

    def delete_layer(self, layer):
        with self._using() as h:
            _call("cimage_store_layer_delete", h, _arg("layer", layer))

    # -- containers

    def create_container(self, image, name=None, metadata=None) -> Container:
        """Creates a container (a writable layer over the image's) from an image ID, prefix or
        name."""
        options = _C["cimage_container_options_new"]()
        try:
            if name is not None:
                _call("cimage_container_options_set_name", options, _arg("name", name))
            if metadata is not None:
                _call("cimage_container_options_set_metadata", options, _arg("metadata", metadata))
            out = ctypes.c_void_p()
            with self._using() as h:
                _call(
                    "cimage_store_container_create", h, _arg("image", image), options,
                    ctypes.byref(out),
                )
            try:
                return Container._from(out)
            finally:
                _C["cimage_container_free"](out)
        finally:
            _C["cimage_container_options_free"](options)

    def containers(self) -> List[Container]:
        return self._list("cimage_store_containers", "cimage_container_list", Container)

    def container(self, name_or_id) -> Container:
        return self._lookup(
            "cimage_store_container_lookup", "cimage_container_free", Container, name_or_id
        )

    def mount(self, container) -> str:
        """Mounts the container's root file system; returns the mount point. Mounts are counted:
        each needs an unmount."""
        path = ctypes.c_void_p()
        with self._using() as h:
            _call(
                "cimage_store_container_mount", h, _arg("container", container), ctypes.byref(path)
            )
        return _owned_string(path).decode()

    def unmount(self, container, force=False):
        """Drops one mount (all of them with force); unmounting an unmounted container is fine."""
        with self._using() as h:
            _call("cimage_store_container_unmount", h, _arg("container", container), bool(force))

    @contextlib.contextmanager
    def mounted(self, container):
        """``with store.mounted(id) as rootfs:`` mounts for the block, unmounts after it."""
        path = self.mount(container)
        try:
            yield path
        finally:
            self.unmount(container)

    def delete_container(self, container):
        """Deletes a container and its layer (IN_USE while mounted)."""
        with self._using() as h:
            _call("cimage_store_container_delete", h, _arg("container", container))

    # -- helpers

    def _list(self, function, list_prefix, cls):
        out = ctypes.c_void_p()
        with self._using() as h:
            _call(function, h, ctypes.byref(out))
        try:
            return [
                cls._from(_C[list_prefix + "_get"](out, i))
                for i in range(_C[list_prefix + "_len"](out))
            ]
        finally:
            _C[list_prefix + "_free"](out)

    def _lookup(self, function, free, cls, name_or_id):
        out = ctypes.c_void_p()
        with self._using() as h:
            _call(function, h, _arg("name or ID", name_or_id), ctypes.byref(out))
        try:
            return cls._from(out)
        finally:
            _C[free](out)

    def _document(self, function, image):
        out = ctypes.c_void_p()
        with self._using() as h:
            _call(function, h, _arg("image", image), ctypes.byref(out))
        return _owned_string(out)


class LogLevel(enum.IntEnum):
    OFF = 0
    ERROR = 1
    WARN = 2
    INFO = 3
    DEBUG = 4


def set_log_level(level):
    """Sets the library's log level (a LogLevel); CIMAGE_LOG=debug sets it from the environment."""
    _call("cimage_log_set_level", int(level))
