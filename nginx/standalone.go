package nginx

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/web"
)

// Options are the parts of a standalone nginx.conf that come from the
// machine rather than from the wsgate config.
type Options struct {
	// StateDir holds nginx's pid file, error log and temp directories;
	// an absolute path.
	StateDir string
	// User is the user nginx workers run as; empty omits the user
	// directive, as nginx running unprivileged requires.
	User string
	// Group is the workers' group; empty lets nginx take the group named
	// like User.
	Group string
	// WebRoot is an absolute directory holding the demo page (package
	// web) to serve at "/"; empty serves a one-line text page instead.
	WebRoot string
}

// PidFile is where the standalone nginx writes its pid, in StateDir: once
// it does, it handles signals (it listens before).
func (o Options) PidFile() string { return filepath.Join(o.StateDir, "nginx.pid") }

// DefaultOptions are the Options for running nginx as the current user:
// when that is root, workers run as www-data, or else nobody, with the
// user's primary group.
func DefaultOptions(stateDir string) Options {
	o := Options{StateDir: stateDir}
	if os.Geteuid() != 0 {
		return o
	}
	for _, name := range []string{"www-data", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		o.User = u.Username
		if g, err := user.LookupGroupId(u.Gid); err == nil {
			o.Group = g.Name
		}
		break
	}
	return o
}

// extraFiles are the descriptors a worker needs beyond its connections:
// listening sockets, logs and temp files.
const extraFiles = 1024

// standalone is what the standalone template sees.
type standalone struct {
	Options
	WorkerProcesses   string
	WorkerConnections int
	ShutdownTimeout   int // worker_shutdown_timeout, seconds; 0: none
	RlimitNofile      int
	Listen            []string
	Location          string
	LoadModule        string // stream module to load; "" for none
	snippets
	Scripts []string // served from WebRoot
}

// Standalone renders a complete nginx.conf that runs in the foreground with
// everything it writes under o.StateDir: the HTTP snippet, and one server on
// every c.Listen address with the Location snippet and, at "/", the demo
// page in o.WebRoot or a one-line text page; with client_proxy = "stream",
// the Stream snippet on the c.Listen addresses instead of that server. Test it with
// `nginx -t -p STATEDIR -c FILE`.
func Standalone(c *config.Config, o Options) (string, error) {
	if !filepath.IsAbs(o.StateDir) {
		return "", fmt.Errorf("nginx: state directory %q is not an absolute path", o.StateDir)
	}
	if o.WebRoot != "" && !filepath.IsAbs(o.WebRoot) {
		return "", fmt.Errorf("nginx: web root %q is not an absolute path", o.WebRoot)
	}
	p, err := parts(c)
	if err != nil {
		return "", err
	}
	s := standalone{
		Options:           o,
		WorkerProcesses:   "auto",
		WorkerConnections: c.Nginx.WorkerConnections,
		ShutdownTimeout:   int(c.Nginx.WorkerShutdownTimeout.D() / time.Second),
		// A connection is a descriptor (a proxied WebSocket holds two
		// connections, both counted by worker_connections); the rest is
		// headroom for listening sockets, logs and temp files.
		RlimitNofile: c.Nginx.WorkerConnections + extraFiles,
		Location:     c.Location,
		snippets:     p,
		Scripts:      web.Scripts,
	}
	if c.UsesStream() {
		s.LoadModule = c.Nginx.StreamModule
	}
	if n := c.Nginx.WorkerProcesses; n > 0 {
		s.WorkerProcesses = fmt.Sprint(n)
	}
	if s.Listen, err = listenAll(c.Listen); err != nil {
		return "", err
	}
	return execute("standalone.conf", s)
}

// Modules checks that the dynamic modules the standalone config loads are
// installed: with client_proxy or push_proxy "stream", nginx.stream_module.
func Modules(c *config.Config) error {
	if m := c.Nginx.StreamModule; c.UsesStream() && m != "" {
		if _, err := os.Stat(m); err != nil {
			return fmt.Errorf("nginx.stream_module: %w (Debian: apt-get install libnginx-mod-stream; \"\" when nginx has the stream module built in)", err)
		}
	}
	return nil
}

// ErrNoNginx is Binary's error when nginx is not installed, as opposed to
// nginx.binary naming a path that is not an executable.
var ErrNoNginx = errors.New("nginx is not installed")

// Binary finds the nginx executable: nginx.binary looked up in PATH, or,
// when it is a bare name, /usr/sbin/nginx, which is often missing from a
// user's PATH. A path in nginx.binary is used as it is or not at all.
func Binary(c *config.Config) (string, error) {
	p, err := exec.LookPath(c.Nginx.Binary)
	if err == nil {
		return p, nil
	}
	if strings.Contains(c.Nginx.Binary, "/") {
		return "", fmt.Errorf("nginx.binary: %w", err)
	}
	if p, err := exec.LookPath("/usr/sbin/nginx"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%w (nginx.binary = %q, nor /usr/sbin/nginx)", ErrNoNginx, c.Nginx.Binary)
}

// Command is the command that runs the nginx binary bin with args. It first
// lifts this process's soft limit on open files to the hard limit, which
// nginx then inherits: Go lifts its own at start but gives the processes it
// starts the limit it found, often 1024, and nginx's master holds a
// listening socket for each push port on each listen address, over 2,000
// at the most instances. When the limit cannot be lifted nginx says what
// it lacks itself.
func Command(bin string, args ...string) *exec.Cmd {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
	return exec.Command(bin, args...)
}
