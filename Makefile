# Builds and installs cimage like a C library: the shared library with its SONAME and links, the
# static library, the header and a pkg-config file. cargo does the building; this file only adds
# what cargo does not do (cargo-c's `cargo cinstall` does the same from [package.metadata.capi]).
#
#   make                                    build (release) libcimage.so, libcimage.a, cimage.pc
#   make install [PREFIX=/usr/local] [DESTDIR=] [LIBDIR=$(PREFIX)/lib] [INCLUDEDIR=...]
#   make uninstall                          remove what `make install` installed (same variables)
#
# PROFILE=debug builds and installs the debug build instead (the tests use it: it is already built).
# After installing into a system directory, run `ldconfig`.
#
# Installed (PREFIX=/usr/local, version 0.1.0):
#   lib/libcimage.so.0.1.0                  the library; its SONAME is libcimage.so.0.1
#   lib/libcimage.so.0.1 -> libcimage.so.0.1.0   the name the loader looks for
#   lib/libcimage.so -> libcimage.so.0.1    the name `cc ... -lcimage` links against
#   lib/libcimage.a                         the static library (bundles Rust's std)
#   lib/pkgconfig/cimage.pc
#   include/cimage.h

CARGO ?= cargo
# Extra cargo flags, e.g. CARGOFLAGS=--locked.
CARGOFLAGS ?=
PROFILE ?= release
PREFIX ?= /usr/local
EXEC_PREFIX ?= $(PREFIX)
LIBDIR ?= $(EXEC_PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DESTDIR ?=
INSTALL ?= install

# The crate's version is the library's: the header's CIMAGE_VERSION_* macros (build.rs),
# cimage_version() and the .pc file all come from it.
VERSION := $(shell awk -F'"' '/^\[/ { in_package = ($$0 == "[package]") } in_package && /^version *=/ { print $$2; exit }' Cargo.toml)
DESCRIPTION := $(shell awk -F'"' '/^\[/ { in_package = ($$0 == "[package]") } in_package && /^description *=/ { print $$2; exit }' Cargo.toml)
VERSION_PARTS := $(subst ., ,$(VERSION))
MAJOR := $(word 1,$(VERSION_PARTS))
MINOR := $(word 2,$(VERSION_PARTS))
# cargo-c's rule, which build.rs also follows: libcimage.so.0.<minor> on 0.x, libcimage.so.<major> after.
SOVERSION := $(if $(filter 0,$(MAJOR)),0.$(MINOR),$(MAJOR))
SONAME := libcimage.so.$(SOVERSION)

TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
ifeq ($(PROFILE),debug)
CARGO_PROFILE :=
OUT := $(TARGET_DIR)/debug
else
CARGO_PROFILE := --profile $(PROFILE)
OUT := $(TARGET_DIR)/$(PROFILE)
endif

# What static users link besides libcimage.a (rustc --print native-static-libs on Linux/glibc).
LIBS_PRIVATE := -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc

# Paths in the .pc relative to ${prefix} when they are under it, so the file can be relocated.
PC_LIBDIR := $(patsubst $(EXEC_PREFIX)/%,$${exec_prefix}/%,$(LIBDIR))
PC_INCLUDEDIR := $(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))

.PHONY: all build shared static pc install uninstall check-soname

all: build

build: shared static pc

shared:
	$(CARGO) build --lib $(CARGO_PROFILE) $(CARGOFLAGS)

# The static library is built on demand instead of through Cargo.toml's crate-type, so that
# ordinary `cargo build`s do not pay for it. Its artefacts are cached apart from the cdylib's.
static:
	$(CARGO) rustc --lib $(CARGO_PROFILE) $(CARGOFLAGS) --crate-type staticlib

pc:
	@test -n "$(VERSION)" || { echo "make: no version found in Cargo.toml" >&2; exit 1; }
	@mkdir -p $(OUT)
	@{ \
	  echo 'prefix=$(PREFIX)'; \
	  echo 'exec_prefix=$(patsubst $(PREFIX)%,$${prefix}%,$(EXEC_PREFIX))'; \
	  echo 'libdir=$(PC_LIBDIR)'; \
	  echo 'includedir=$(PC_INCLUDEDIR)'; \
	  echo; \
	  echo 'Name: cimage'; \
	  echo 'Description: $(DESCRIPTION)'; \
	  echo 'Version: $(VERSION)'; \
	  echo 'Libs: -L$${libdir} -lcimage'; \
	  echo 'Libs.private: $(LIBS_PRIVATE)'; \
	  echo 'Cflags: -I$${includedir}'; \
	} > $(OUT)/cimage.pc
	@echo "wrote $(OUT)/cimage.pc (prefix $(PREFIX), version $(VERSION))"

# The SONAME is set by build.rs; a library built otherwise (e.g. with the capi feature outside
# cargo-c) would install under a name the loader never asks for.
check-soname: shared
	@readelf -d $(OUT)/libcimage.so | grep -q 'Library soname: \[$(SONAME)\]' || { \
	  echo "make: $(OUT)/libcimage.so does not have the SONAME $(SONAME)" >&2; exit 1; }

install: build check-soname
	$(INSTALL) -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	$(INSTALL) -m 0755 $(OUT)/libcimage.so $(DESTDIR)$(LIBDIR)/libcimage.so.$(VERSION)
	ln -sfn libcimage.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sfn $(SONAME) $(DESTDIR)$(LIBDIR)/libcimage.so
	$(INSTALL) -m 0644 $(OUT)/libcimage.a $(DESTDIR)$(LIBDIR)/libcimage.a
	$(INSTALL) -m 0644 include/cimage.h $(DESTDIR)$(INCLUDEDIR)/cimage.h
	$(INSTALL) -m 0644 $(OUT)/cimage.pc $(DESTDIR)$(PKGCONFIGDIR)/cimage.pc

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libcimage.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME) \
	  $(DESTDIR)$(LIBDIR)/libcimage.so $(DESTDIR)$(LIBDIR)/libcimage.a \
	  $(DESTDIR)$(INCLUDEDIR)/cimage.h $(DESTDIR)$(PKGCONFIGDIR)/cimage.pc
