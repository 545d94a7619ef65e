package main

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"example.com/cimage"
)

// ---------------------------------------------------------------------------------------------
// JSON, written byte for byte as cimagectl writes it (compact, keys in a fixed order, only quotes,
// backslashes and control characters escaped), which encoding/json would not do (it sorts map
// keys and escapes <, >, & and U+2028).

type jsonWriter struct {
	b strings.Builder
	// first[i] is true while the i-th open object or array has no element yet.
	first []bool
	// afterKey is true between a key and its value, which takes no comma.
	afterKey bool
}

// separate writes the comma before an element, unless it is the first or a key's value.
func (j *jsonWriter) separate() {
	if j.afterKey {
		j.afterKey = false
		return
	}
	if n := len(j.first); n > 0 {
		if !j.first[n-1] {
			j.b.WriteByte(',')
		}
		j.first[n-1] = false
	}
}

func (j *jsonWriter) open(c byte) *jsonWriter {
	j.separate()
	j.b.WriteByte(c)
	j.first = append(j.first, true)
	return j
}

func (j *jsonWriter) close(c byte) *jsonWriter {
	j.b.WriteByte(c)
	j.first = j.first[:len(j.first)-1]
	return j
}

func (j *jsonWriter) beginObject() *jsonWriter { return j.open('{') }
func (j *jsonWriter) endObject() *jsonWriter   { return j.close('}') }
func (j *jsonWriter) beginArray() *jsonWriter  { return j.open('[') }
func (j *jsonWriter) endArray() *jsonWriter    { return j.close(']') }

func (j *jsonWriter) key(k string) *jsonWriter {
	j.separate()
	writeJSONString(&j.b, k)
	j.b.WriteByte(':')
	j.afterKey = true
	return j
}

func (j *jsonWriter) str(s string) *jsonWriter {
	j.separate()
	writeJSONString(&j.b, s)
	return j
}

// optional writes s, or null for "" (the C getters' NULL).
func (j *jsonWriter) optional(s string) *jsonWriter {
	if s == "" {
		j.separate()
		j.b.WriteString("null")
		return j
	}
	return j.str(s)
}

// size writes a size; negative (unknown) is null.
func (j *jsonWriter) size(n int64) *jsonWriter {
	j.separate()
	if n < 0 {
		j.b.WriteString("null")
	} else {
		j.b.WriteString(strconv.FormatInt(n, 10))
	}
	return j
}

func (j *jsonWriter) strings(list []string) *jsonWriter {
	j.beginArray()
	for _, s := range list {
		j.str(s)
	}
	return j.endArray()
}

// print writes the document and a newline to stdout.
func (j *jsonWriter) print() {
	fmt.Println(j.b.String())
}

func writeJSONString(b *strings.Builder, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if c < 0x20 {
				fmt.Fprintf(b, `\u%04x`, c)
			} else {
				b.WriteByte(c) // the library hands out UTF-8, which JSON takes as is
			}
		}
	}
	b.WriteByte('"')
}

// ---------------------------------------------------------------------------------------------
// tables, podman-like: columns as wide as their widest cell (in bytes, as cimagectl counts)

type table struct {
	rows [][]string
}

func newTable(header ...string) *table {
	t := &table{}
	t.add(header...)
	return t
}

// add appends a row, control characters shown as '?' so that no name can break the table.
func (t *table) add(cells ...string) {
	row := make([]string, len(cells))
	for i, cell := range cells {
		printable := []byte(cell)
		for k, c := range printable {
			if c < 0x20 || c == 0x7f {
				printable[k] = '?'
			}
		}
		row[i] = string(printable)
	}
	t.rows = append(t.rows, row)
}

func (t *table) print() {
	if len(t.rows) == 0 {
		return
	}
	widths := make([]int, len(t.rows[0]))
	for _, row := range t.rows {
		for c, cell := range row {
			if len(cell) > widths[c] {
				widths[c] = len(cell)
			}
		}
	}
	var b strings.Builder
	for _, row := range t.rows {
		for c, cell := range row {
			if c+1 < len(row) {
				b.WriteString(cell)
				b.WriteString(strings.Repeat(" ", widths[c]-len(cell)+2))
			} else {
				b.WriteString(cell)
				b.WriteByte('\n')
			}
		}
	}
	fmt.Print(b.String())
}

// shortID is the first 12 characters of an ID, or of a digest's hex part.
func shortID(id string) string {
	if i := strings.IndexByte(id, ':'); i >= 0 {
		id = id[i+1:]
	}
	if len(id) > shortIDLen {
		id = id[:shortIDLen]
	}
	return id
}

// humanSize is a size as podman shows it: three significant digits, decimal units ("7.8 MB").
func humanSize(size int64) string {
	if size < 0 {
		return "unknown"
	}
	units := []string{"B", "kB", "MB", "GB", "TB", "PB", "EB"}
	value, unit := float64(size), 0
	for value >= 1000 && unit+1 < len(units) {
		value /= 1000
		unit++
	}
	return fmt.Sprintf("%.3g %s", value, units[unit])
}

// binarySize is a byte count in binary units, as skopeo's progress bars show it ("1.5 MiB").
func binarySize(bytes uint64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	value, unit := float64(bytes), 0
	for value >= 1024 && unit+1 < len(units) {
		value /= 1024
		unit++
	}
	if unit == 0 {
		return fmt.Sprintf("%.0f %s", value, units[unit])
	}
	return fmt.Sprintf("%.1f %s", value, units[unit])
}

var rfc3339 = regexp.MustCompile(`^(\d{1,4})-(\d{1,2})-(\d{1,2})[Tt ](\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.\d*)?(?:([Zz])|([+-])(\d{1,2}):(\d{1,2}))`)

// parseRFC3339 reads the times the library writes ("2024-05-01T12:00:00.5+02:00") as cimagectl
// does, into seconds since the epoch.
func parseRFC3339(text string) (int64, bool) {
	m := rfc3339.FindStringSubmatch(text)
	if m == nil {
		return 0, false
	}
	n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
	month, day := n(2), n(3)
	if month < 1 || month > 12 || day < 1 || day > 31 {
		return 0, false
	}
	seconds := time.Date(n(1), time.Month(month), day, n(4), n(5), n(6), 0, time.UTC).Unix()
	if m[7] == "" {
		offset := int64(n(9)*60+n(10)) * 60
		if m[8] == "-" {
			offset = -offset
		}
		seconds -= offset
	}
	return seconds, true
}

// humanAge is "3 weeks ago", in the words podman uses (Docker's units.HumanDuration).
func humanAge(created string) string {
	then, ok := parseRFC3339(created)
	if !ok {
		if created == "" {
			return "unknown"
		}
		return created
	}
	age := time.Now().Unix() - then
	if age < 0 {
		age = 0
	}
	hours := (age + 1800) / 3600
	switch {
	case age < 1:
		return "Less than a second ago"
	case age == 1:
		return "1 second ago"
	case age < 60:
		return fmt.Sprintf("%d seconds ago", age)
	case age/60 == 1:
		return "About a minute ago"
	case age/60 < 60:
		return fmt.Sprintf("%d minutes ago", age/60)
	case hours == 1:
		return "About an hour ago"
	case hours < 48:
		return fmt.Sprintf("%d hours ago", hours)
	case hours < 24*7*2:
		return fmt.Sprintf("%d days ago", hours/24)
	case hours < 24*30*2:
		return fmt.Sprintf("%d weeks ago", hours/24/7)
	case hours < 24*365*2:
		return fmt.Sprintf("%d months ago", hours/24/30)
	default:
		return fmt.Sprintf("%d years ago", hours/24/365)
	}
}

// splitImageName splits "registry/repo:tag" (or "repo@sha256:...") into repository and tag.
func splitImageName(name string) (repository, tag string) {
	if at := strings.IndexByte(name, '@'); at >= 0 {
		return name[:at], "<none>"
	}
	slash, colon := strings.LastIndexByte(name, '/'), strings.LastIndexByte(name, ':')
	if colon >= 0 && colon > slash {
		return name[:colon], name[colon+1:]
	}
	return name, "<none>"
}

// ---------------------------------------------------------------------------------------------
// pull progress, as skopeo prints it on stderr

type pullProgress struct {
	live            bool // stderr is a terminal: redraw a status line while downloading
	lineOpen        bool // a live line is on screen and must be cleared first
	configDigest    string
	manifestWritten bool
}

func newPullProgress() *pullProgress {
	info, err := os.Stderr.Stat()
	return &pullProgress{live: err == nil && info.Mode()&os.ModeCharDevice != 0}
}

// clearLine clears the live status line, if one is on screen.
func (p *pullProgress) clearLine() {
	if p.lineOpen {
		fmt.Fprint(os.Stderr, "\r\033[K")
		p.lineOpen = false
	}
}

func (p *pullProgress) line(format string, args ...interface{}) {
	p.clearLine()
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

func (p *pullProgress) drawDownload(hex string, done, total uint64) {
	const barWidth = 30
	if total > 0 {
		filled := int((minUint64(done, total) * barWidth) / total)
		bar := make([]byte, barWidth)
		for i := range bar {
			switch {
			case i < filled:
				bar[i] = '='
			case i == filled:
				bar[i] = '>'
			default:
				bar[i] = '-'
			}
		}
		fmt.Fprintf(os.Stderr, "\r\033[KCopying blob %s [%s] %s / %s", hex, bar, binarySize(done), binarySize(total))
	} else {
		fmt.Fprintf(os.Stderr, "\r\033[KCopying blob %s %s", hex, binarySize(done))
	}
	p.lineOpen = true
}

func minUint64(a, b uint64) uint64 {
	if a < b {
		return a
	}
	return b
}

func (p *pullProgress) isConfig(digest string) bool {
	return digest != "" && p.configDigest != "" && digest == p.configDigest
}

// event is the Progress callback of the pull: it runs on the goroutine that called Pull.
func (p *pullProgress) event(ev cimage.Progress) {
	hex := shortID(ev.Digest)
	switch ev.Kind {
	case cimage.ProgressDownloading:
		if p.live && ev.Digest != "" {
			p.drawDownload(hex, ev.BytesDone, ev.BytesTotal)
		}
	case cimage.ProgressDone:
		if ev.Digest != "" && !p.isConfig(ev.Digest) {
			p.line("Copying blob %s done", hex)
		}
	case cimage.ProgressSkipped:
		if ev.Digest != "" && !p.isConfig(ev.Digest) {
			p.line("Copying blob %s skipped: already exists", hex)
		}
	case cimage.ProgressConfig:
		if ev.Digest != "" && !p.isConfig(ev.Digest) {
			p.configDigest = ev.Digest
			p.line("Copying config %s done", hex)
		}
	case cimage.ProgressCommitting:
		if !p.manifestWritten {
			p.manifestWritten = true
			p.line("Writing manifest to image destination")
		}
	case cimage.ProgressRetrying:
		if ev.Message != "" {
			blob := ""
			if ev.Digest != "" {
				blob = " blob "
			}
			p.line("Retrying%s%s: %s", blob, hex, ev.Message)
		}
	}
}
