package cimage

/*
#include <stdlib.h>
#include <string.h>
#include <cimage.h>
*/
import "C"

import (
	"runtime"
	"sync"
	"unsafe"
)

// StoreOptions say which store to open. Empty fields take their values from storage.conf
// ($CONTAINERS_STORAGE_CONF, /etc/containers/storage.conf, ...) and then the built-in defaults.
type StoreOptions struct {
	// GraphRoot is the persistent store directory (absolute), e.g. /var/lib/containers/storage.
	GraphRoot string
	// RunRoot holds volatile state such as mount counts (absolute; normally on tmpfs).
	RunRoot string
	// Driver is "overlay" or "vfs".
	Driver string
	// ConfigFile is a storage.conf to read instead of the system's.
	ConfigFile string
}

// Store is an open containers/storage store. It is safe for concurrent use by many goroutines;
// other processes (podman, skopeo, CRI-O) are coordinated through the store's lock files.
type Store struct {
	mu      sync.Mutex
	idle    sync.Cond // signalled when calls drops to 0
	ptr     *C.cimage_store
	calls   int  // library calls in progress
	closing bool // Close was called: no new calls
}

// Open opens (and creates, if needed) the store, cleaning up what interrupted writers left behind.
func Open(opts StoreOptions) (*Store, error) {
	copts := C.cimage_store_options_new()
	defer C.cimage_store_options_free(copts)
	setters := []struct {
		what, value string
		set         func(*C.char, **C.cimage_error) C.cimage_status
	}{
		{"graph root", opts.GraphRoot, func(s *C.char, e **C.cimage_error) C.cimage_status {
			return C.cimage_store_options_set_graph_root(copts, s, e)
		}},
		{"run root", opts.RunRoot, func(s *C.char, e **C.cimage_error) C.cimage_status {
			return C.cimage_store_options_set_run_root(copts, s, e)
		}},
		{"driver", opts.Driver, func(s *C.char, e **C.cimage_error) C.cimage_status {
			return C.cimage_store_options_set_driver(copts, s, e)
		}},
		{"config file", opts.ConfigFile, func(s *C.char, e **C.cimage_error) C.cimage_status {
			return C.cimage_store_options_set_config_file(copts, s, e)
		}},
	}
	for _, setter := range setters {
		if setter.value == "" {
			continue
		}
		cs, err := cString(setter.what, setter.value)
		if err != nil {
			return nil, err
		}
		var cerr *C.cimage_error
		status := setter.set(cs, &cerr)
		C.free(unsafe.Pointer(cs))
		if err := newError(status, cerr); err != nil {
			return nil, err
		}
	}
	var ptr *C.cimage_store
	var cerr *C.cimage_error
	if err := newError(C.cimage_store_open(copts, &ptr, &cerr), cerr); err != nil {
		return nil, err
	}
	s := &Store{ptr: ptr}
	s.idle.L = &s.mu
	runtime.SetFinalizer(s, (*Store).Close)
	return s, nil
}

// Close closes the store handle after the calls in progress return; later calls return ErrClosed.
// Mounts stay mounted (they belong to the store on disk). Images, layers and containers read from
// the store stay valid. Do not call Close from a pull's progress callback. Closing twice is fine.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ptr == nil {
		return nil
	}
	s.closing = true
	for s.calls > 0 {
		s.idle.Wait()
	}
	C.cimage_store_free(s.ptr)
	s.ptr = nil
	runtime.SetFinalizer(s, nil)
	return nil
}

// acquire returns the handle for one call, which must be ended with release.
func (s *Store) acquire() (*C.cimage_store, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ptr == nil || s.closing {
		return nil, ErrClosed
	}
	s.calls++
	return s.ptr, nil
}

func (s *Store) release() {
	s.mu.Lock()
	s.calls--
	if s.calls == 0 {
		s.idle.Broadcast()
	}
	s.mu.Unlock()
	runtime.KeepAlive(s)
}

// withName runs call with the store handle and name as a C string.
func (s *Store) withName(what, name string, call func(*C.cimage_store, *C.char) error) error {
	ptr, err := s.acquire()
	if err != nil {
		return err
	}
	defer s.release()
	cname, err := cString(what, name)
	if err != nil {
		return err
	}
	defer C.free(unsafe.Pointer(cname))
	return call(ptr, cname)
}

// GraphRoot is the store's persistent directory ("" after Close).
func (s *Store) GraphRoot() string {
	ptr, err := s.acquire()
	if err != nil {
		return ""
	}
	defer s.release()
	return goString(C.cimage_store_graph_root(ptr))
}

// RunRoot is the store's volatile directory ("" after Close).
func (s *Store) RunRoot() string {
	ptr, err := s.acquire()
	if err != nil {
		return ""
	}
	defer s.release()
	return goString(C.cimage_store_run_root(ptr))
}

// DriverName is "overlay" or "vfs" ("" after Close).
func (s *Store) DriverName() string {
	ptr, err := s.acquire()
	if err != nil {
		return ""
	}
	defer s.release()
	return goString(C.cimage_store_driver_name(ptr))
}

// DriverStatus is one line of the driver's status, such as {"Backing Filesystem", "extfs"}.
type DriverStatus struct {
	Key, Value string
}

// DriverStatus lists the driver's status in the driver's order (overlay: backing file system,
// d_type support, native diff, metacopy; vfs: nothing).
func (s *Store) DriverStatus() []DriverStatus {
	ptr, err := s.acquire()
	if err != nil {
		return nil
	}
	defer s.release()
	n := int(C.cimage_store_driver_status_len(ptr))
	status := make([]DriverStatus, 0, n)
	for i := 0; i < n; i++ {
		status = append(status, DriverStatus{
			Key:   goString(C.cimage_store_driver_status_key(ptr, C.size_t(i))),
			Value: goString(C.cimage_store_driver_status_value(ptr, C.size_t(i))),
		})
	}
	return status
}

// Images lists the store's images (also those other tools put there). Close each image, or let the
// finalizers free them.
func (s *Store) Images() ([]*Image, error) {
	ptr, err := s.acquire()
	if err != nil {
		return nil, err
	}
	defer s.release()
	var list *C.cimage_image_list
	var cerr *C.cimage_error
	if err := newError(C.cimage_store_images(ptr, &list, &cerr), cerr); err != nil {
		return nil, err
	}
	n := int(C.cimage_image_list_len(list))
	// The images are borrowed from the list: it is freed when the last of them is closed.
	o := newOwner(n, func() { C.cimage_image_list_free(list) })
	images := make([]*Image, 0, n)
	for i := 0; i < n; i++ {
		images = append(images, newImage(C.cimage_image_list_get(list, C.size_t(i)), o))
	}
	return images, nil
}

// Image finds an image by ID, ID prefix, name ("alpine" finds docker.io/library/alpine:latest) or
// manifest digest. A missing image is an error matching ErrNotFound.
func (s *Store) Image(nameOrID string) (*Image, error) {
	var image *Image
	err := s.withName("image", nameOrID, func(ptr *C.cimage_store, name *C.char) error {
		var out *C.cimage_image
		var cerr *C.cimage_error
		if err := newError(C.cimage_store_image_lookup(ptr, name, &out, &cerr), cerr); err != nil {
			return err
		}
		image = ownedImage(out)
		return nil
	})
	return image, err
}

// ImageManifest is the image's manifest, exactly the bytes pulled.
func (s *Store) ImageManifest(image string) ([]byte, error) {
	return s.document(image, func(ptr *C.cimage_store, name *C.char, out **C.char, e **C.cimage_error) C.cimage_status {
		return C.cimage_store_image_manifest(ptr, name, out, e)
	})
}

// ImageConfig is the image's config (Env, Cmd, Entrypoint, ... under "config") as JSON.
func (s *Store) ImageConfig(image string) ([]byte, error) {
	return s.document(image, func(ptr *C.cimage_store, name *C.char, out **C.char, e **C.cimage_error) C.cimage_status {
		return C.cimage_store_image_config(ptr, name, out, e)
	})
}

func (s *Store) document(image string, get func(*C.cimage_store, *C.char, **C.char, **C.cimage_error) C.cimage_status) ([]byte, error) {
	var doc []byte
	err := s.withName("image", image, func(ptr *C.cimage_store, name *C.char) error {
		var out *C.char
		var cerr *C.cimage_error
		if err := newError(get(ptr, name, &out, &cerr), cerr); err != nil {
			return err
		}
		doc = C.GoBytes(unsafe.Pointer(out), C.int(C.strlen(out)))
		C.cimage_string_free(out)
		return nil
	})
	return doc, err
}

// DeleteImage deletes an image and the layers nothing else uses. It fails with ErrInUse while a
// container uses the image.
func (s *Store) DeleteImage(image string) error {
	return s.withName("image", image, func(ptr *C.cimage_store, name *C.char) error {
		var cerr *C.cimage_error
		return newError(C.cimage_store_image_delete(ptr, name, &cerr), cerr)
	})
}

// Layers lists the store's layers: images' layers and containers' writable layers.
func (s *Store) Layers() ([]*Layer, error) {
	ptr, err := s.acquire()
	if err != nil {
		return nil, err
	}
	defer s.release()
	var list *C.cimage_layer_list
	var cerr *C.cimage_error
	if err := newError(C.cimage_store_layers(ptr, &list, &cerr), cerr); err != nil {
		return nil, err
	}
	n := int(C.cimage_layer_list_len(list))
	o := newOwner(n, func() { C.cimage_layer_list_free(list) })
	layers := make([]*Layer, 0, n)
	for i := 0; i < n; i++ {
		layers = append(layers, newLayer(C.cimage_layer_list_get(list, C.size_t(i)), o))
	}
	return layers, nil
}

// Layer finds a layer by ID, name or ID prefix.
func (s *Store) Layer(nameOrID string) (*Layer, error) {
	var layer *Layer
	err := s.withName("layer", nameOrID, func(ptr *C.cimage_store, name *C.char) error {
		var out *C.cimage_layer
		var cerr *C.cimage_error
		if err := newError(C.cimage_store_layer_lookup(ptr, name, &out, &cerr), cerr); err != nil {
			return err
		}
		layer = newLayer(out, newOwner(1, func() { C.cimage_layer_free(out) }))
		return nil
	})
	return layer, err
}

// DeleteLayer deletes a layer; ErrInUse while an image, container or child layer uses it.
func (s *Store) DeleteLayer(layer string) error {
	return s.withName("layer", layer, func(ptr *C.cimage_store, name *C.char) error {
		var cerr *C.cimage_error
		return newError(C.cimage_store_layer_delete(ptr, name, &cerr), cerr)
	})
}

// ContainerOptions are the optional settings of a new container.
type ContainerOptions struct {
	// Name must be unique among the store's containers ("" for none).
	Name string
	// Metadata is stored with the container record as is.
	Metadata string
}

// CreateContainer creates a container (a writable layer over the image's layers) from an image
// given by ID, ID prefix or name. opts may be nil.
func (s *Store) CreateContainer(image string, opts *ContainerOptions) (*Container, error) {
	copts := C.cimage_container_options_new()
	defer C.cimage_container_options_free(copts)
	if opts != nil {
		if err := setContainerOption(copts, "name", opts.Name, func(v *C.char, e **C.cimage_error) C.cimage_status {
			return C.cimage_container_options_set_name(copts, v, e)
		}); err != nil {
			return nil, err
		}
		if err := setContainerOption(copts, "metadata", opts.Metadata, func(v *C.char, e **C.cimage_error) C.cimage_status {
			return C.cimage_container_options_set_metadata(copts, v, e)
		}); err != nil {
			return nil, err
		}
	}
	var container *Container
	err := s.withName("image", image, func(ptr *C.cimage_store, name *C.char) error {
		var out *C.cimage_container
		var cerr *C.cimage_error
		if err := newError(C.cimage_store_container_create(ptr, name, copts, &out, &cerr), cerr); err != nil {
			return err
		}
		container = ownedContainer(out)
		return nil
	})
	return container, err
}

func setContainerOption(copts *C.cimage_container_options, what, value string, set func(*C.char, **C.cimage_error) C.cimage_status) error {
	if value == "" {
		return nil
	}
	cs, err := cString(what, value)
	if err != nil {
		return err
	}
	defer C.free(unsafe.Pointer(cs))
	var cerr *C.cimage_error
	return newError(set(cs, &cerr), cerr)
}

// Containers lists the store's containers (also those podman or CRI-O made).
func (s *Store) Containers() ([]*Container, error) {
	ptr, err := s.acquire()
	if err != nil {
		return nil, err
	}
	defer s.release()
	var list *C.cimage_container_list
	var cerr *C.cimage_error
	if err := newError(C.cimage_store_containers(ptr, &list, &cerr), cerr); err != nil {
		return nil, err
	}
	n := int(C.cimage_container_list_len(list))
	o := newOwner(n, func() { C.cimage_container_list_free(list) })
	containers := make([]*Container, 0, n)
	for i := 0; i < n; i++ {
		containers = append(containers, newContainer(C.cimage_container_list_get(list, C.size_t(i)), o))
	}
	return containers, nil
}

// Container finds a container by ID, name or ID prefix.
func (s *Store) Container(nameOrID string) (*Container, error) {
	var container *Container
	err := s.withName("container", nameOrID, func(ptr *C.cimage_store, name *C.char) error {
		var out *C.cimage_container
		var cerr *C.cimage_error
		if err := newError(C.cimage_store_container_lookup(ptr, name, &out, &cerr), cerr); err != nil {
			return err
		}
		container = ownedContainer(out)
		return nil
	})
	return container, err
}

// Mount mounts a container's root file system and returns the mount point. Mounts are counted
// (in the run root, where podman counts its own): each Mount needs an Unmount.
func (s *Store) Mount(container string) (string, error) {
	var path string
	err := s.withName("container", container, func(ptr *C.cimage_store, name *C.char) error {
		var out *C.char
		var cerr *C.cimage_error
		if err := newError(C.cimage_store_container_mount(ptr, name, &out, &cerr), cerr); err != nil {
			return err
		}
		path = C.GoString(out)
		C.cimage_string_free(out)
		return nil
	})
	return path, err
}

// Unmount drops one mount of the container; the file system is unmounted when the count reaches
// zero, or at once with force. Unmounting a container that is not mounted succeeds.
func (s *Store) Unmount(container string, force bool) error {
	return s.withName("container", container, func(ptr *C.cimage_store, name *C.char) error {
		var cerr *C.cimage_error
		return newError(C.cimage_store_container_unmount(ptr, name, C.bool(force), &cerr), cerr)
	})
}

// DeleteContainer deletes a container and its writable layer; ErrInUse while it is mounted.
func (s *Store) DeleteContainer(container string) error {
	return s.withName("container", container, func(ptr *C.cimage_store, name *C.char) error {
		var cerr *C.cimage_error
		return newError(C.cimage_store_container_delete(ptr, name, &cerr), cerr)
	})
}

// Wipe removes every container, image and layer of the store, unmounting mounted containers first.
func (s *Store) Wipe() error {
	ptr, err := s.acquire()
	if err != nil {
		return err
	}
	defer s.release()
	var cerr *C.cimage_error
	return newError(C.cimage_store_wipe(ptr, &cerr), cerr)
}

// LogLevel is how much the library logs (to stderr, or as CIMAGE_LOG=debug|info|warn|error sets).
type LogLevel int32

// The log levels.
const (
	LogOff   LogLevel = C.CIMAGE_LOG_OFF
	LogError LogLevel = C.CIMAGE_LOG_ERROR
	LogWarn  LogLevel = C.CIMAGE_LOG_WARN
	LogInfo  LogLevel = C.CIMAGE_LOG_INFO
	LogDebug LogLevel = C.CIMAGE_LOG_DEBUG
)

// SetLogLevel sets the library's log level for the whole process.
func SetLogLevel(level LogLevel) error {
	var cerr *C.cimage_error
	return newError(C.cimage_log_set_level(C.int32_t(level), &cerr), cerr)
}
