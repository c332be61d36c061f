// Package config is wsgate's one source of truth: the TOML file that both the
// sidecars and the generated nginx configuration are derived from, so that the
// two can never disagree about sockets, ports or limits.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/BurntSushi/toml"
)

// Config is the whole wsgate configuration. Field comments name the TOML key.
type Config struct {
	Instances       int      `toml:"instances"`        // sidecars, ids 1..Instances
	RuntimeDir      string   `toml:"runtime_dir"`      // where ws-<i>.sock and push-<i>.sock live
	Location        string   `toml:"location"`         // WebSocket location; also the push path
	Listen          []string `toml:"listen"`           // client-facing host:port: `up`/-standalone; with client_proxy "stream", the stream snippet too
	ShutdownTimeout Duration `toml:"shutdown_timeout"` // bound on a sidecar's graceful stop

	Push      Push      `toml:"push"`
	WebSocket WebSocket `toml:"websocket"`
	Upstream  Upstream  `toml:"upstream"`
	Auth      Auth      `toml:"auth"`
	Log       Log       `toml:"log"`
	Nginx     Nginx     `toml:"nginx"`
}

// Push configures the push API.
type Push struct {
	Listen    []string `toml:"listen"`    // IP addresses nginx binds the push ports on
	PortBase  int      `toml:"port_base"` // instance i pushes on PortBase+i-1
	Advertise []string `toml:"advertise"` // hosts put into push URLs
	MaxBody   Size     `toml:"max_body"`  // largest push body
	MaxBatch  Size     `toml:"max_batch"` // largest batch push body
}

// WebSocket configures client connections.
type WebSocket struct {
	PingInterval   Duration `toml:"ping_interval"`    // ping after this long with no traffic
	IdleTimeout    Duration `toml:"idle_timeout"`     // close 1001 after this long with nothing received
	WriteTimeout   Duration `toml:"write_timeout"`    // bound on one frame write to a client
	MaxMessage     Size     `toml:"max_message"`      // largest client->server message
	SendQueue      int      `toml:"send_queue"`       // messages queued per client
	SendQueueBytes Size     `toml:"send_queue_bytes"` // bytes queued per client
	SlowClient     string   `toml:"slow_client"`      // "close" or "drop" when the queue is full
	AllowedOrigins []string `toml:"allowed_origins"`  // empty: any Origin
	Welcome        string   `toml:"welcome"`          // "urls" or "json"
}

// Upstream configures the optional backend that receives client events
// (see UPSTREAM.md).
type Upstream struct {
	URL            string   `toml:"url"`             // http(s)://host[:port]/path or unix:/path.sock:/path
	Timeout        Duration `toml:"timeout"`         // bound on one request
	Events         []string `toml:"events"`          // of "connect", "message", "disconnect"
	ForwardHeaders []string `toml:"forward_headers"` // request headers connect forwards
	Concurrency    int      `toml:"concurrency"`     // requests in flight per sidecar
	OnError        string   `toml:"on_error"`        // connect failing: "refuse" (502/504) or "allow"
	MessageQueue   int      `toml:"message_queue"`   // client messages waiting per client; when full, that client's reading pauses
}

// Auth makes nginx check each WebSocket handshake with auth_request.
type Auth struct {
	URL string `toml:"url"` // http://host[:port]/path or unix:/path.sock:/path; empty: off
}

// Log configures log/slog output.
type Log struct {
	Level  string `toml:"level"`  // debug, info, warn, error
	Format string `toml:"format"` // text or json
}

// Nginx configures the generated nginx configuration.
type Nginx struct {
	Binary            string `toml:"binary"`             // nginx executable for `up` and `check`
	WorkerProcesses   int    `toml:"worker_processes"`   // 0: auto
	WorkerConnections int    `toml:"worker_connections"` // per worker; a WebSocket holds two
	// WorkerShutdownTimeout bounds how long an old worker keeps its
	// WebSockets after a reload of the standalone nginx; 0: until they
	// close, which a live client never does.
	WorkerShutdownTimeout Duration `toml:"worker_shutdown_timeout"`
	// ClientProxy is how nginx carries client WebSockets: "http" (a
	// location in an http server, the default) or "stream" (a TCP proxy
	// on the listen addresses, stream module; the sidecar reads the
	// upgrade itself, after a PROXY protocol header).
	ClientProxy string `toml:"client_proxy"`
	// PushProxy is how nginx carries pushes to the sidecars: "http" (an
	// http server per push port, the default), "stream" (a TCP proxy
	// per push port, stream module: less nginx CPU per push; the sidecar
	// reads each request itself, and nginx serves no stub_status) or
	// "none" (nginx does not: each sidecar's push port is its own TCP
	// socket, passed by socket activation like the others; least CPU).
	PushProxy string `toml:"push_proxy"`
	// StreamModule is the stream module the standalone config loads when
	// client_proxy or push_proxy is "stream"; empty when nginx has it
	// built in.
	StreamModule string `toml:"stream_module"`
}

// Stream reports whether nginx carries client WebSockets with its stream
// module (nginx.client_proxy = "stream") rather than an http location.
func (c *Config) Stream() bool { return c.Nginx.ClientProxy == "stream" }

// StreamPush reports whether nginx carries pushes with its stream module
// (nginx.push_proxy = "stream") rather than http servers.
func (c *Config) StreamPush() bool { return c.Nginx.PushProxy == "stream" }

// DirectPush reports whether the sidecars serve their push ports themselves
// (nginx.push_proxy = "none").
func (c *Config) DirectPush() bool { return c.Nginx.PushProxy == "none" }

// UsesStream reports whether the nginx config needs the stream module.
func (c *Config) UsesStream() bool { return c.Stream() || c.StreamPush() }

// Default returns the built-in configuration, the one SPEC §3 documents.
func Default() Config {
	return Config{
		Instances:       4,
		RuntimeDir:      "/run/wsgate",
		Location:        "/ws",
		Listen:          []string{"127.0.0.1:8080"},
		ShutdownTimeout: Duration(10 * time.Second),
		Push: Push{
			Listen:   []string{"127.0.0.1"},
			PortBase: 48775,
			MaxBody:  1 << 20,
			MaxBatch: 16 << 20,
		},
		WebSocket: WebSocket{
			PingInterval:   Duration(5 * time.Minute),
			IdleTimeout:    Duration(6 * time.Minute),
			WriteTimeout:   Duration(10 * time.Second),
			MaxMessage:     1 << 20,
			SendQueue:      256,
			SendQueueBytes: 4 << 20,
			SlowClient:     "close",
			Welcome:        "urls",
		},
		Upstream: Upstream{
			Timeout:        Duration(5 * time.Second),
			Events:         []string{"connect", "message", "disconnect"},
			ForwardHeaders: []string{"Cookie", "Authorization", "Origin", "X-Forwarded-For"},
			Concurrency:    64,
			OnError:        "refuse",
			MessageQueue:   64,
		},
		Log: Log{Level: "info", Format: "text"},
		Nginx: Nginx{
			Binary:                "nginx",
			WorkerConnections:     16384,
			WorkerShutdownTimeout: Duration(time.Minute),
			ClientProxy:           "http",
			PushProxy:             "http",
			// Debian's libnginx-mod-stream.
			StreamModule: "/usr/lib/nginx/modules/ngx_stream_module.so",
		},
	}
}

// Load reads and validates the TOML file at path.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return Parse(bytes.NewReader(data), path)
}

// Parse reads TOML from r over the defaults and validates the result. name
// (usually the file path) prefixes every error, each of which names the key
// and, where it can be found, its line.
func Parse(r io.Reader, name string) (Config, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	c := Default()
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			if pe.LastKey != "" {
				return Config{}, fmt.Errorf("%s:%d: %s: %s", name, pe.Position.Line, pe.LastKey, pe.Message)
			}
			return Config{}, fmt.Errorf("%s:%d: %s", name, pe.Position.Line, pe.Message)
		}
		if m := typeErrRE.FindStringSubmatch(err.Error()); m != nil {
			return Config{}, fmt.Errorf("%s:%s: %s: %s", name, m[1], m[2], m[3])
		}
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	lines := keyLines(data)
	var errs fieldErrors
	for _, k := range md.Undecoded() {
		errs.add(k.String(), "unknown key")
	}
	if len(errs) == 0 {
		c.validate(&errs)
	}
	return c, errs.err(name, lines)
}

// Validate checks every value; errors name the key.
func (c *Config) Validate() error {
	var errs fieldErrors
	c.validate(&errs)
	return errs.err("config", nil)
}

var (
	// typeErrRE matches BurntSushi/toml's type mismatch errors, which are
	// not ParseErrors.
	typeErrRE  = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]+)"\): (.*)$`)
	locationRE = regexp.MustCompile(`^(/[A-Za-z0-9._~-]+)+$`)
	hostRE     = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)
	// reservedPaths are served on the push ports besides the push API.
	reservedPaths = map[string]bool{"/metrics": true, "/status": true, "/nginx_status": true}
	// clientPaths are exact locations the generated nginx config serves on
	// the client listener: auth.url's auth_request location, and under
	// `wsgate up` the demo page's scripts (web.Scripts). The WebSocket's
	// exact location of the same path would make a config nginx refuses,
	// and `wsgate check` (which renders no demo page) would not see it.
	clientPaths = map[string]bool{"/_wsgate_auth": true, "/wsgate.js": true, "/demo.js": true}
)

func (c *Config) validate(e *fieldErrors) {
	if c.Instances < 1 || c.Instances > 1024 {
		e.add("instances", "%d is out of range 1..1024", c.Instances)
	}
	if !nginxPath(c.RuntimeDir) {
		e.add("runtime_dir", "%q must be an absolute path without spaces or nginx metacharacters", c.RuntimeDir)
	} else if len(filepath.Join(c.RuntimeDir, "push-1024.sock")) > 100 {
		e.add("runtime_dir", "%q is too long for a unix socket path (at most 100 bytes with the socket name)", c.RuntimeDir)
	}
	if !locationRE.MatchString(c.Location) || strings.Contains(c.Location+"/", "/./") || strings.Contains(c.Location+"/", "/../") {
		e.add("location", "%q must be a path such as \"/ws\" (letters, digits, ._~- segments, no trailing slash)", c.Location)
	} else if reservedPaths[c.Location] {
		e.add("location", "%q is reserved on the push ports (/metrics, /status, /nginx_status)", c.Location)
	} else if clientPaths[c.Location] {
		e.add("location", "%q is reserved on the client listener (/_wsgate_auth, /wsgate.js, /demo.js)", c.Location)
	}
	if len(c.Listen) == 0 {
		e.add("listen", "needs at least one host:port")
	}
	seen := map[string]bool{}
	for _, l := range c.Listen {
		if err := checkHostPort(l); err != nil {
			e.add("listen", "%q: %v", l, err)
			continue
		}
		host, port, _ := net.SplitHostPort(l)
		key := canonicalHost(host) + " " + port
		if seen[key] {
			e.add("listen", "%q is listed twice", l)
		}
		seen[key] = true
		if p, _ := strconv.Atoi(port); p >= c.Push.PortBase && p < c.Push.PortBase+c.Instances {
			e.addRel("listen", []string{"push.port_base", "instances"}, "%q: port %d is one of the push ports %d..%d", l, p, c.Push.PortBase, c.Push.PortBase+c.Instances-1)
		}
	}
	if c.ShutdownTimeout <= 0 || c.ShutdownTimeout.D() > time.Hour {
		e.add("shutdown_timeout", "%s is out of range (0s, 1h]", c.ShutdownTimeout.D())
	}

	if len(c.Push.Listen) == 0 {
		e.add("push.listen", "needs at least one IP address")
	}
	seenPush := map[string]bool{}
	for _, a := range c.Push.Listen {
		if net.ParseIP(strings.Trim(a, "[]")) == nil {
			e.add("push.listen", "%q is not an IP address", a)
		} else if h := canonicalHost(a); seenPush[h] {
			e.add("push.listen", "%q is listed twice", a)
		} else {
			seenPush[h] = true
		}
	}
	if c.DirectPush() {
		// The sidecars bind every address; a wildcard takes its
		// family's port on all addresses, so another of that family
		// cannot be bound beside it (nginx, which binds only the
		// wildcard then, takes both).
		for _, a := range c.Push.Listen {
			ip := net.ParseIP(strings.Trim(a, "[]"))
			for _, w := range c.Push.Listen {
				wip := net.ParseIP(strings.Trim(w, "[]"))
				if ip != nil && wip != nil && wip.IsUnspecified() && !ip.IsUnspecified() && (ip.To4() != nil) == (wip.To4() != nil) {
					e.addRel("push.listen", []string{"nginx.push_proxy"}, "%q is covered by %q, which the sidecars cannot bind beside it with nginx.push_proxy = \"none\": list %q alone", a, w, w)
				}
			}
		}
	}
	if c.Push.PortBase < 1 || c.Push.PortBase > 65535 || c.Push.PortBase+c.Instances-1 > 65535 {
		e.addRel("push.port_base", []string{"instances"}, "%d: ports %d..%d must lie in 1..65535", c.Push.PortBase, c.Push.PortBase, c.Push.PortBase+c.Instances-1)
	}
	for _, h := range c.Push.Advertise {
		if net.ParseIP(strings.Trim(h, "[]")) == nil && !hostRE.MatchString(h) {
			e.add("push.advertise", "%q is not a host name or IP address", h)
		}
	}
	if c.Push.MaxBody < 1 || c.Push.MaxBody > 1<<30 {
		e.add("push.max_body", "%d is out of range 1..1GiB", c.Push.MaxBody)
	}

	if c.Push.MaxBatch < c.Push.MaxBody || c.Push.MaxBatch > 1<<30 {
		e.addRel("push.max_batch", []string{"push.max_body"}, "%d must lie in push.max_body (%d)..1GiB", c.Push.MaxBatch, c.Push.MaxBody)
	}

	w := &c.WebSocket
	if w.PingInterval <= 0 {
		e.add("websocket.ping_interval", "must be positive")
	}
	if w.IdleTimeout <= w.PingInterval {
		e.addRel("websocket.idle_timeout", []string{"websocket.ping_interval"}, "%s must be longer than websocket.ping_interval (%s) so that a pong can arrive", w.IdleTimeout.D(), w.PingInterval.D())
	} else if w.IdleTimeout.D() > 24*time.Hour {
		e.add("websocket.idle_timeout", "%s is over 24h", w.IdleTimeout.D())
	}
	if w.WriteTimeout <= 0 || w.WriteTimeout.D() > time.Hour {
		e.add("websocket.write_timeout", "%s is out of range (0s, 1h]", w.WriteTimeout.D())
	}
	if w.MaxMessage < 1 || w.MaxMessage > 1<<30 {
		e.add("websocket.max_message", "%d is out of range 1..1GiB", w.MaxMessage)
	}
	if w.SendQueue < 1 || w.SendQueue > 1<<16 {
		e.add("websocket.send_queue", "%d is out of range 1..65536", w.SendQueue)
	}
	if w.SendQueueBytes < c.Push.MaxBody {
		e.addRel("websocket.send_queue_bytes", []string{"push.max_body"}, "%d must be at least push.max_body (%d) so that one largest push fits", w.SendQueueBytes, c.Push.MaxBody)
	}
	if w.SlowClient != "close" && w.SlowClient != "drop" {
		e.add("websocket.slow_client", "%q is not one of \"close\", \"drop\"", w.SlowClient)
	}
	for _, o := range w.AllowedOrigins {
		if u, err := url.Parse(o); err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			e.add("websocket.allowed_origins", "%q is not an origin such as \"https://example.com\"", o)
		}
	}
	if w.Welcome != "urls" && w.Welcome != "json" {
		e.add("websocket.welcome", "%q is not one of \"urls\", \"json\"", w.Welcome)
	}

	c.Upstream.validate(e)
	if c.Auth.URL != "" {
		if _, _, err := SplitURL(c.Auth.URL); err != nil || strings.ContainsAny(c.Auth.URL, " ;{}'\"\\$#") {
			e.add("auth.url", "%q is not an http(s):// URL or unix:/path.sock:/path without nginx metacharacters", c.Auth.URL)
		}
	}

	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		e.add("log.level", "%q is not one of \"debug\", \"info\", \"warn\", \"error\"", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		e.add("log.format", "%q is not one of \"text\", \"json\"", c.Log.Format)
	}

	if c.Nginx.Binary == "" {
		e.add("nginx.binary", "must name the nginx executable")
	}
	if c.Nginx.WorkerProcesses < 0 || c.Nginx.WorkerProcesses > 64 {
		e.add("nginx.worker_processes", "%d is out of range 0 (auto)..64", c.Nginx.WorkerProcesses)
	}
	if c.Nginx.WorkerConnections < 64 || c.Nginx.WorkerConnections > 1<<19 {
		e.add("nginx.worker_connections", "%d is out of range 64..524288", c.Nginx.WorkerConnections)
	}
	if d := c.Nginx.WorkerShutdownTimeout.D(); d < 0 || d > 24*time.Hour || d%time.Second != 0 {
		e.add("nginx.worker_shutdown_timeout", "%s must be whole seconds in 0 (none)..24h", d)
	}
	switch c.Nginx.ClientProxy {
	case "http":
	case "stream":
		if c.Auth.URL != "" {
			e.addRel("nginx.client_proxy", []string{"auth.url"}, "\"stream\" cannot check handshakes with auth.url (auth_request is an http location's); use \"http\" or drop auth.url")
		}
	default:
		e.add("nginx.client_proxy", "%q is not one of \"http\", \"stream\"", c.Nginx.ClientProxy)
	}
	if p := c.Nginx.PushProxy; p != "http" && p != "stream" && p != "none" {
		e.add("nginx.push_proxy", "%q is not one of \"http\", \"stream\", \"none\"", p)
	}
	if m := c.Nginx.StreamModule; m != "" && !nginxPath(m) {
		e.add("nginx.stream_module", "%q must be an absolute path without spaces or nginx metacharacters, or empty (stream built into nginx)", m)
	}
}

// nginxPath reports whether p is an absolute path nginx's config can hold
// as a bare token: no spaces, control characters or nginx metacharacters.
func nginxPath(p string) bool {
	return filepath.IsAbs(p) && !strings.ContainsAny(p, ";{}'\"\\$#") &&
		!strings.ContainsFunc(p, unicode.IsSpace) && !strings.ContainsFunc(p, unicode.IsControl)
}

func checkHostPort(hp string) error {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return errors.New("not host:port (an IPv6 host goes in brackets: \"[::1]:8080\")")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("port %q is out of range 1..65535", port)
	}
	if host != "" && host != "*" && net.ParseIP(host) == nil && !hostRE.MatchString(host) {
		return fmt.Errorf("host %q is not a host name or IP address", host)
	}
	return nil
}

// canonicalHost makes equal addresses compare equal: "[::1]" and "::1",
// "127.0.0.1" and "::ffff:127.0.0.1".
func canonicalHost(h string) string {
	h = strings.Trim(h, "[]")
	if ip := net.ParseIP(h); ip != nil {
		return ip.String()
	}
	return strings.ToLower(h)
}

// fieldError is one invalid key.
type fieldError struct {
	key, msg string
	related  []string // other keys the rule involves
}

type fieldErrors []fieldError

func (e *fieldErrors) add(key, format string, args ...any) {
	*e = append(*e, fieldError{key: key, msg: fmt.Sprintf(format, args...)})
}

// addRel adds an error of a rule between key and related keys: when the
// file does not set key, the error has the line of a related key it sets.
func (e *fieldErrors) addRel(key string, related []string, format string, args ...any) {
	*e = append(*e, fieldError{key, fmt.Sprintf(format, args...), related})
}

// err joins the errors, each as "name:line: key: message", ordered by line.
// The line is the key's, else a related key's, else that of the table the
// key is in (an inline one, say); none when the file sets none of them.
func (e fieldErrors) err(name string, lines map[string]int) error {
	if len(e) == 0 {
		return nil
	}
	line := func(fe fieldError) (int, bool) {
		keys := append([]string{fe.key}, fe.related...)
		for _, k := range keys {
			if l, ok := lines[k]; ok {
				return l, true
			}
		}
		for _, k := range append(slices.Clone(fe.related), fe.key) {
			for strings.Contains(k, ".") {
				k = k[:strings.LastIndex(k, ".")]
				if l, ok := lines[k]; ok {
					return l, true
				}
			}
		}
		return 0, false
	}
	sort.SliceStable(e, func(i, j int) bool {
		li, _ := line(e[i])
		lj, _ := line(e[j])
		return li < lj
	})
	errs := make([]error, len(e))
	for i, fe := range e {
		if l, ok := line(fe); ok {
			errs[i] = fmt.Errorf("%s:%d: %s: %s", name, l, fe.key, fe.msg)
		} else {
			errs[i] = fmt.Errorf("%s: %s: %s", name, fe.key, fe.msg)
		}
	}
	return errors.Join(errs...)
}

// keyLines maps each dotted key ("push.max_body") to the line it is set on.
// BurntSushi/toml keeps key positions private, so this reads the lines itself;
// it understands [table] headers and dotted keys, which is all wsgate's
// schema uses.
func keyLines(data []byte) map[string]int {
	lines := map[string]int{}
	table := ""
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "[") && !strings.HasPrefix(line, "[["):
			if end := strings.Index(line, "]"); end > 0 {
				table = normalizeKey(line[1:end])
				if _, ok := lines[table]; !ok {
					lines[table] = i + 1
				}
			}
		case strings.Contains(line, "=") && !strings.HasPrefix(line, "#"):
			key := normalizeKey(line[:strings.Index(line, "=")])
			if key == "" || strings.ContainsAny(key, " \t\"'[],{}") {
				continue // a continuation line of a multi-line value
			}
			if table != "" {
				key = table + "." + key
			}
			if _, ok := lines[key]; !ok {
				lines[key] = i + 1
			}
		}
	}
	return lines
}

func normalizeKey(k string) string {
	parts := strings.Split(k, ".")
	for i, p := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(p), `"'`)
	}
	return strings.Join(parts, ".")
}
