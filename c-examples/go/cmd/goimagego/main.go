// goimagego is the seed demo (a podman/skopeo-like tool that containers/image and
// containers/storage made possible in Go) ported onto the cimage Go package. It has exactly
// cimagectl's commands, flags, output and exit statuses (c-examples/cimagectl.c, notes/CLI.md):
//
//	goimagego [-d|--driver overlay|vfs] [-r|--root DIR] [-R|--run-root DIR] [--json] COMMAND [ARGS]
//
// Errors are one line on stderr, `goimagego: STATUS_NAME: message`, and exit status 1; bad usage
// exits 2 with the usage text.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"example.com/cimage"
)

const (
	program    = "goimagego"
	exitOK     = 0
	exitFail   = 1
	exitUsage  = 2
	shortIDLen = 12
)

const usageText = "Usage: " + program + ` [-d|--driver overlay|vfs] [-r|--root DIR] [-R|--run-root DIR] [--json] COMMAND [ARGS]

Commands:
  store                                  store info and driver status
  pull [--tls-verify=true|false] [--platform OS/ARCH[/VARIANT]] [--policy always|missing|never] REF
                                         REF: docker://..., oci:DIR[:TAG], or a bare name
  images | layers | containers           lists
  container [--name NAME] IMAGE          create a container from an image (id, prefix or name)
  mount ID|NAME                          mount a container; prints the mount point
  unmount ID|NAME
  delete ID|NAME                         a container, image or layer (looked up in that order)
  wipe                                   remove everything in the store

With --json each command prints one JSON document on stdout.
`

// globalOptions are parsed once in main.
type globalOptions struct {
	driver, root, runRoot string
	json                  bool
}

var options globalOptions

// ---------------------------------------------------------------------------------------------
// errors and usage

// oneLine replaces line breaks, so that an error is always exactly one line.
func oneLine(s string) string {
	return strings.NewReplacer("\n", " ", "\r", " ").Replace(s)
}

// reportError prints a failed call as `goimagego: STATUS: message`; returns the exit status.
func reportError(err error) int {
	var e *cimage.Error
	if errors.As(err, &e) {
		message := e.Message
		if message == "" {
			message = "(no error details)"
		}
		fmt.Fprintf(os.Stderr, "%s: %s: %s\n", program, e.Status.String(), oneLine(message))
	} else {
		fmt.Fprintf(os.Stderr, "%s: %s: %s\n", program, cimage.StatusInternal.String(), oneLine(err.Error()))
	}
	return exitFail
}

// reportFailure reports a failure found by goimagego itself (a bad option value, nothing to delete).
func reportFailure(status cimage.Status, format string, args ...interface{}) int {
	fmt.Fprintf(os.Stderr, "%s: %s: %s\n", program, status.String(), oneLine(fmt.Sprintf(format, args...)))
	return exitFail
}

func usageError(format string, args ...interface{}) int {
	fmt.Fprintf(os.Stderr, "%s: %s\n\n%s", program, fmt.Sprintf(format, args...), usageText)
	return exitUsage
}

// ---------------------------------------------------------------------------------------------
// argument parsing

type matchResult int

const (
	optionNoMatch matchResult = iota
	optionMatch
	optionMissingValue
)

// matchValueOption matches args[*i] against an option with a value: "-d VALUE" (short, may be
// ""), "--driver VALUE" or "--driver=VALUE". On a match *i moves past the value.
func matchValueOption(args []string, i *int, short, long string, value *string) matchResult {
	arg := args[*i]
	if strings.HasPrefix(arg, long+"=") {
		*value = arg[len(long)+1:]
		return optionMatch
	}
	if arg != long && (short == "" || arg != short) {
		return optionNoMatch
	}
	if *i+1 >= len(args) {
		return optionMissingValue
	}
	*i++
	*value = args[*i]
	return optionMatch
}

// parseCommandArgs splits a command's arguments (args[0] is the command) into options, handled by
// parseOption (may be nil), and exactly want positional arguments. Returns them, or the usage exit
// status.
func parseCommandArgs(args []string, parseOption func(args []string, i *int) matchResult, want int) ([]string, int) {
	var positional []string
	optionsDone := false
	for i := 1; i < len(args); i++ {
		arg := args[i]
		if !optionsDone && arg == "--" {
			optionsDone = true
			continue
		}
		if !optionsDone && len(arg) > 1 && arg[0] == '-' {
			m := optionNoMatch
			if parseOption != nil {
				m = parseOption(args, &i)
			}
			if m == optionNoMatch {
				return nil, usageError("%s: unknown option %s", args[0], arg)
			}
			if m == optionMissingValue {
				return nil, usageError("%s: option %s needs a value", args[0], arg)
			}
			continue
		}
		if len(positional) == want {
			return nil, usageError("%s: unexpected argument \"%s\"", args[0], arg)
		}
		positional = append(positional, arg)
	}
	if len(positional) < want {
		return nil, usageError("%s: missing argument", args[0])
	}
	return positional, 0
}

// ---------------------------------------------------------------------------------------------
// the store

// absolutePath joins a relative path to the working directory, as cimagectl does (the library
// wants absolute roots); if the directory is unknown the library judges the path.
func absolutePath(path string) string {
	if strings.HasPrefix(path, "/") {
		return path
	}
	cwd, err := os.Getwd()
	if err != nil {
		return path
	}
	return cwd + "/" + path
}

// openStore opens the store the global options describe, or reports why it cannot.
func openStore() (*cimage.Store, int) {
	opts := cimage.StoreOptions{Driver: options.driver}
	if options.root != "" {
		opts.GraphRoot = absolutePath(options.root)
	}
	if options.runRoot != "" {
		opts.RunRoot = absolutePath(options.runRoot)
	}
	store, err := cimage.Open(opts)
	if err != nil {
		return nil, reportError(err)
	}
	return store, 0
}

// ---------------------------------------------------------------------------------------------
// commands

func cmdStore(args []string) int {
	if _, rc := parseCommandArgs(args, nil, 0); rc != 0 {
		return rc
	}
	store, rc := openStore()
	if rc != 0 {
		return rc
	}
	defer store.Close()
	status := store.DriverStatus()
	if options.json {
		var j jsonWriter
		j.beginObject()
		j.key("root").str(store.GraphRoot())
		j.key("run_root").str(store.RunRoot())
		j.key("driver").str(store.DriverName())
		j.key("status").beginObject()
		for _, s := range status {
			j.key(s.Key).str(s.Value)
		}
		j.endObject().endObject().print()
		return exitOK
	}
	fmt.Printf("graphRoot: %s\n", store.GraphRoot())
	fmt.Printf("runRoot: %s\n", store.RunRoot())
	fmt.Printf("graphDriverName: %s\n", store.DriverName())
	fmt.Printf("graphStatus:\n")
	for _, s := range status {
		fmt.Printf("  %s: %s\n", s.Key, s.Value)
	}
	return exitOK
}

func cmdPull(args []string) int {
	var tlsVerify, platform, policy string
	tlsVerifySet := false
	parseOption := func(args []string, i *int) matchResult {
		switch {
		case args[*i] == "--tls-verify":
			tlsVerify, tlsVerifySet = "true", true
			return optionMatch
		case strings.HasPrefix(args[*i], "--tls-verify="):
			tlsVerify, tlsVerifySet = args[*i][len("--tls-verify="):], true
			return optionMatch
		}
		if m := matchValueOption(args, i, "", "--platform", &platform); m != optionNoMatch {
			return m
		}
		return matchValueOption(args, i, "", "--policy", &policy)
	}
	positional, rc := parseCommandArgs(args, parseOption, 1)
	if rc != 0 {
		return rc
	}
	reference := positional[0]

	progress := newPullProgress()
	opts := &cimage.PullOptions{Platform: platform, Progress: progress.event}
	if tlsVerifySet {
		switch tlsVerify {
		case "true":
		case "false":
			opts.SkipTLSVerify = true
		default:
			return reportFailure(cimage.StatusInvalidArgument, "invalid --tls-verify value \"%s\": want true or false", tlsVerify)
		}
	}
	switch policy {
	case "", "always":
		opts.Policy = cimage.PullAlways
	case "missing":
		opts.Policy = cimage.PullMissing
	case "never":
		opts.Policy = cimage.PullNever
	default:
		return reportFailure(cimage.StatusInvalidArgument, "invalid --policy value \"%s\": want always, missing or never", policy)
	}

	store, rc := openStore()
	if rc != 0 {
		return rc
	}
	defer store.Close()
	// Ctrl-C cancels the pull, which then leaves the store as it was.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	image, err := store.Pull(ctx, reference, opts)
	progress.clearLine()
	if err != nil {
		return reportError(err)
	}
	defer image.Close()
	if options.json {
		var j jsonWriter
		j.beginObject()
		j.key("id").optional(image.ID())
		j.key("digest").optional(image.Digest())
		j.key("names").strings(image.Names())
		j.endObject().print()
	} else {
		fmt.Println(image.ID())
	}
	return exitOK
}

func cmdImages(args []string) int {
	if _, rc := parseCommandArgs(args, nil, 0); rc != 0 {
		return rc
	}
	store, rc := openStore()
	if rc != 0 {
		return rc
	}
	defer store.Close()
	images, err := store.Images()
	if err != nil {
		return reportError(err)
	}
	defer closeAll(images)
	if options.json {
		var j jsonWriter
		j.beginArray()
		for _, image := range images {
			j.beginObject()
			j.key("id").optional(image.ID())
			j.key("names").strings(image.Names())
			j.key("digest").optional(image.Digest())
			j.key("size").size(image.Size())
			j.key("created").optional(image.Created())
			j.endObject()
		}
		j.endArray().print()
		return exitOK
	}
	t := newTable("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")
	for _, image := range images {
		id, created, size := shortID(image.ID()), humanAge(image.Created()), humanSize(image.Size())
		names := image.Names()
		if len(names) == 0 {
			t.add("<none>", "<none>", id, created, size)
		}
		// One row per name, as podman does.
		for _, name := range names {
			repository, tag := splitImageName(name)
			t.add(repository, tag, id, created, size)
		}
	}
	t.print()
	return exitOK
}

func cmdLayers(args []string) int {
	if _, rc := parseCommandArgs(args, nil, 0); rc != 0 {
		return rc
	}
	store, rc := openStore()
	if rc != 0 {
		return rc
	}
	defer store.Close()
	layers, err := store.Layers()
	if err != nil {
		return reportError(err)
	}
	defer closeAll(layers)
	if options.json {
		var j jsonWriter
		j.beginArray()
		for _, layer := range layers {
			j.beginObject()
			j.key("id").optional(layer.ID())
			j.key("parent").optional(layer.Parent())
			j.key("diff_digest").optional(layer.DiffDigest())
			j.key("compressed_digest").optional(layer.CompressedDigest())
			j.key("size").size(layer.DiffSize())
			j.endObject()
		}
		j.endArray().print()
		return exitOK
	}
	t := newTable("ID", "PARENT", "DIFF DIGEST", "CREATED", "SIZE")
	for _, layer := range layers {
		parent, diff := shortID(layer.Parent()), shortID(layer.DiffDigest())
		if parent == "" {
			parent = "-"
		}
		if diff == "" {
			diff = "-"
		}
		t.add(shortID(layer.ID()), parent, diff, humanAge(layer.Created()), humanSize(layer.DiffSize()))
	}
	t.print()
	return exitOK
}

func cmdContainers(args []string) int {
	if _, rc := parseCommandArgs(args, nil, 0); rc != 0 {
		return rc
	}
	store, rc := openStore()
	if rc != 0 {
		return rc
	}
	defer store.Close()
	containers, err := store.Containers()
	if err != nil {
		return reportError(err)
	}
	defer closeAll(containers)
	if options.json {
		var j jsonWriter
		j.beginArray()
		for _, c := range containers {
			j.beginObject()
			j.key("id").optional(c.ID())
			j.key("names").strings(c.Names())
			j.key("image").optional(c.ImageID())
			j.key("layer").optional(c.LayerID())
			j.key("mount_point").optional(c.MountPoint())
			j.endObject()
		}
		j.endArray().print()
		return exitOK
	}
	// The table shows image names, which only the image list knows.
	images, err := store.Images()
	if err != nil {
		return reportError(err)
	}
	defer closeAll(images)
	t := newTable("CONTAINER ID", "IMAGE", "CREATED", "MOUNTED", "NAMES")
	for _, c := range containers {
		mounted := "no"
		if c.MountPoint() != "" {
			mounted = "yes"
		}
		t.add(shortID(c.ID()), imageDisplayName(images, c.ImageID()), humanAge(c.Created()), mounted,
			strings.Join(c.Names(), ","))
	}
	t.print()
	return exitOK
}

// imageDisplayName is what podman shows for an image ID: its first name, else its short ID.
func imageDisplayName(images []*cimage.Image, id string) string {
	for _, image := range images {
		if id != "" && image.ID() == id {
			if names := image.Names(); len(names) > 0 {
				return names[0]
			}
		}
	}
	if short := shortID(id); short != "" {
		return short
	}
	return "-"
}

func cmdContainer(args []string) int {
	var name string
	parseOption := func(args []string, i *int) matchResult {
		return matchValueOption(args, i, "", "--name", &name)
	}
	positional, rc := parseCommandArgs(args, parseOption, 1)
	if rc != 0 {
		return rc
	}
	store, rc := openStore()
	if rc != 0 {
		return rc
	}
	defer store.Close()
	container, err := store.CreateContainer(positional[0], &cimage.ContainerOptions{Name: name})
	if err != nil {
		return reportError(err)
	}
	defer container.Close()
	if options.json {
		var j jsonWriter
		j.beginObject()
		j.key("id").optional(container.ID())
		j.key("layer").optional(container.LayerID())
		j.endObject().print()
	} else {
		fmt.Println(container.ID())
	}
	return exitOK
}

func cmdMount(args []string) int {
	positional, rc := parseCommandArgs(args, nil, 1)
	if rc != 0 {
		return rc
	}
	store, rc := openStore()
	if rc != 0 {
		return rc
	}
	defer store.Close()
	path, err := store.Mount(positional[0])
	if err != nil {
		return reportError(err)
	}
	if options.json {
		var j jsonWriter
		j.beginObject()
		j.key("path").str(path)
		j.endObject().print()
	} else {
		fmt.Println(path)
	}
	return exitOK
}

// printEmptyJSON prints the empty document of commands that have nothing to say.
func printEmptyJSON() {
	if options.json {
		fmt.Println("{}")
	}
}

func cmdUnmount(args []string) int {
	positional, rc := parseCommandArgs(args, nil, 1)
	if rc != 0 {
		return rc
	}
	store, rc := openStore()
	if rc != 0 {
		return rc
	}
	defer store.Close()
	if err := store.Unmount(positional[0], false); err != nil {
		return reportError(err)
	}
	printEmptyJSON()
	return exitOK
}

// deletable is one kind of thing delete can remove, tried in the order of deletables.
type deletable struct {
	find   func(store *cimage.Store, name string) (id string, err error)
	remove func(store *cimage.Store, id string) error
}

var deletables = []deletable{
	{
		find: func(s *cimage.Store, name string) (string, error) {
			c, err := s.Container(name)
			if err != nil {
				return "", err
			}
			defer c.Close()
			return c.ID(), nil
		},
		remove: (*cimage.Store).DeleteContainer,
	},
	{
		find: func(s *cimage.Store, name string) (string, error) {
			i, err := s.Image(name)
			if err != nil {
				return "", err
			}
			defer i.Close()
			return i.ID(), nil
		},
		remove: (*cimage.Store).DeleteImage,
	},
	{
		find: func(s *cimage.Store, name string) (string, error) {
			l, err := s.Layer(name)
			if err != nil {
				return "", err
			}
			defer l.Close()
			return l.ID(), nil
		},
		remove: (*cimage.Store).DeleteLayer,
	},
}

func cmdDelete(args []string) int {
	positional, rc := parseCommandArgs(args, nil, 1)
	if rc != 0 {
		return rc
	}
	name := positional[0]
	store, rc := openStore()
	if rc != 0 {
		return rc
	}
	defer store.Close()
	for _, kind := range deletables {
		id, err := kind.find(store, name)
		if errors.Is(err, cimage.ErrNotFound) {
			continue // look further
		}
		if err != nil {
			return reportError(err)
		}
		// Delete by full ID: the name or prefix found it, the ID cannot be ambiguous.
		if err := kind.remove(store, id); err != nil {
			return reportError(err)
		}
		printEmptyJSON()
		return exitOK
	}
	return reportFailure(cimage.StatusNotFound, "no container, image or layer matches \"%s\"", name)
}

func cmdWipe(args []string) int {
	if _, rc := parseCommandArgs(args, nil, 0); rc != 0 {
		return rc
	}
	store, rc := openStore()
	if rc != 0 {
		return rc
	}
	defer store.Close()
	if err := store.Wipe(); err != nil {
		return reportError(err)
	}
	printEmptyJSON()
	return exitOK
}

// closeAll closes the images, layers or containers of a list.
func closeAll[T interface{ Close() }](items []T) {
	for _, item := range items {
		item.Close()
	}
}

// ---------------------------------------------------------------------------------------------
// main

var commands = map[string]func(args []string) int{
	"store":      cmdStore,
	"pull":       cmdPull,
	"images":     cmdImages,
	"layers":     cmdLayers,
	"containers": cmdContainers,
	"container":  cmdContainer,
	"mount":      cmdMount,
	"unmount":    cmdUnmount,
	"delete":     cmdDelete,
	"wipe":       cmdWipe,
}

// parseGlobalOptions returns the index of the command in args, or the usage exit status.
func parseGlobalOptions(args []string) (int, int) {
	i := 1
	for ; i < len(args) && strings.HasPrefix(args[i], "-"); i++ {
		switch args[i] {
		case "--json":
			options.json = true
			continue
		case "-h", "--help":
			fmt.Print(usageText)
			os.Exit(exitOK)
		}
		m := matchValueOption(args, &i, "-d", "--driver", &options.driver)
		if m == optionNoMatch {
			m = matchValueOption(args, &i, "-r", "--root", &options.root)
		}
		if m == optionNoMatch {
			m = matchValueOption(args, &i, "-R", "--run-root", &options.runRoot)
		}
		if m == optionNoMatch {
			return 0, usageError("unknown option %s", args[i])
		}
		if m == optionMissingValue {
			return 0, usageError("option %s needs a value", args[i])
		}
	}
	if i >= len(args) {
		return 0, usageError("no command given")
	}
	return i, 0
}

func run(args []string) int {
	index, rc := parseGlobalOptions(args)
	if rc != 0 {
		return rc
	}
	command, ok := commands[args[index]]
	if !ok {
		return usageError("unknown command \"%s\"", args[index])
	}
	return command(args[index:])
}

func main() {
	os.Exit(run(os.Args))
}
