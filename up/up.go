// Package up runs the local all-in-one gateway behind `wsgate up`: it holds
// every instance's sockets itself, starts the sidecars with systemd's
// socket-activation protocol, restarts one that dies on the same sockets (so
// nginx never sees a refused connection), runs nginx in the foreground and
// shuts everything down in order.
package up

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/nginx"
	"github.com/wsgate/wsgate/sidecar"
	"github.com/wsgate/wsgate/web"
)

// Options are what `wsgate up` takes besides the configuration.
type Options struct {
	// Binary is the wsgate executable the sidecars run.
	Binary string
	// StateDir holds the rendered configs, the demo page (www/), nginx's
	// pid, logs and temp files.
	StateDir string
	// Out receives the banner with the client URL and a push example.
	Out io.Writer
	// Log receives up's own log lines; sidecars and nginx log to stderr.
	Log *slog.Logger
}

// Defaults is the configuration `wsgate up` uses without a config file:
// the built-in defaults with 2 instances and the sockets under stateDir.
func Defaults(stateDir string) config.Config {
	c := config.Default()
	c.Instances = 2
	c.RuntimeDir = filepath.Join(stateDir, "run")
	return c
}

// Run brings the gateway up and keeps it up until ctx is done or nginx
// exits, then stops the sidecars (their clients get 1012 through nginx),
// then nginx, and removes the sockets.
func Run(ctx context.Context, c *config.Config, o Options) error {
	log := o.Log
	// SIGHUP reloads nginx, as it would a system nginx. Caught from the
	// start: its default action would kill up mid-startup, leaving the
	// sockets and the state dir behind.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	nginxBin, err := nginx.Binary(c)
	if err != nil {
		return err
	}
	if err := nginx.Modules(c); err != nil {
		return err
	}
	// nginx workers may run as another user (www-data when up runs as
	// root): they must be able to reach the sockets. Permissions are only
	// added, never taken: runtime_dir may be a shared directory such as
	// /tmp (1777).
	for _, d := range []string{o.StateDir, c.RuntimeDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := openToOthers(d); err != nil {
			return err
		}
	}
	cfgPath := filepath.Join(o.StateDir, "wsgate.toml")
	if err := writeConfig(cfgPath, c); err != nil {
		return err
	}
	no := nginx.DefaultOptions(o.StateDir)
	no.WebRoot = filepath.Join(o.StateDir, "www")
	if err := web.Write(no.WebRoot, web.Page{Location: c.Location, Upstream: c.Upstream.URL != ""}); err != nil {
		return err
	}
	nginxConf := filepath.Join(o.StateDir, "nginx.conf")
	conf, err := nginx.Standalone(c, no)
	if err != nil {
		return err
	}
	if err := os.WriteFile(nginxConf, []byte(conf), 0o644); err != nil {
		return err
	}
	if out, err := nginx.Command(nginxBin, "-t", "-q", "-p", o.StateDir, "-c", nginxConf).CombinedOutput(); err != nil {
		return fmt.Errorf("nginx -t on %s: %v\n%s", nginxConf, err, out)
	}

	// The sockets live as long as up does; sidecars come and go on them.
	sidecars := make([]*child, 0, c.Instances)
	defer func() {
		for _, s := range sidecars {
			s.closeFiles()
		}
	}()
	for i := 1; i <= c.Instances; i++ {
		ws, err := listenFile(c.WSSocket(i))
		if err != nil {
			return err
		}
		push, pushPaths, err := pushFiles(c, i)
		if err != nil {
			ws.Close()
			os.Remove(c.WSSocket(i)) // the file outlives the socket (listenFile)
			return err
		}
		files := append([]*os.File{ws}, push...)
		names := sidecar.WSSocketName + strings.Repeat(":"+sidecar.PushSocketName, len(push))
		paths := append([]string{c.WSSocket(i)}, pushPaths...)
		sidecars = append(sidecars, &child{
			name:  fmt.Sprintf("sidecar %d", i),
			log:   log,
			files: files,
			paths: paths,
			cmd: func() *exec.Cmd {
				// LISTEN_PID must be the sidecar's own pid: the shell's
				// $$ survives the exec.
				cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`,
					o.Binary, "serve", "-config", cfgPath, "-instance", fmt.Sprint(i))
				cmd.Env = append(os.Environ(), fmt.Sprintf("LISTEN_FDS=%d", len(files)), "LISTEN_FDNAMES="+names)
				cmd.ExtraFiles = files
				return cmd
			},
			restart: true,
		})
	}

	ngx := &child{
		name: "nginx",
		log:  log,
		cmd: func() *exec.Cmd {
			return nginx.Command(nginxBin, "-p", o.StateDir, "-c", nginxConf, "-e", "stderr")
		},
		// Fast shutdown: by the time nginx is stopped the sidecars have
		// closed every client, and a graceful quit would wait for idle
		// keep-alive and upgraded connections.
		stopSignal: syscall.SIGTERM,
	}
	for i, s := range sidecars {
		if err := s.start(); err != nil {
			stopAll(sidecars[:i], c.ShutdownTimeout.D()) // the ones started
			return err
		}
	}
	if err := ngx.start(); err != nil {
		stopAll(sidecars, c.ShutdownTimeout.D())
		return err
	}

	var runErr error
	if err := waitListening(ctx, c.Listen[0], no.PidFile(), ngx); err != nil {
		runErr = err
	} else if ctx.Err() != nil {
		log.Info("stopping before nginx was up")
	} else {
		// A SIGHUP before now is dropped: nginx has just read its config,
		// and might not yet handle the signal.
		select {
		case <-hup:
			log.Info("SIGHUP during startup ignored: nginx has just read its config")
		default:
		}
		banner(o.Out, c, len(sidecars), cfgPath)
	wait:
		for {
			select {
			case <-ctx.Done():
				log.Info("stopping")
				break wait
			case <-ngx.exited:
				runErr = fmt.Errorf("nginx exited: %v", ngx.exitErr)
				break wait
			case <-hup:
				log.Info("reloading nginx")
				ngx.signal(syscall.SIGHUP)
			}
		}
	}
	// Sidecars first, so that their close frames (1012) still reach the
	// clients through nginx; then nginx.
	stopAll(sidecars, c.ShutdownTimeout.D())
	ngx.stop(10 * time.Second)
	log.Info("stopped")
	return runErr
}

// openToOthers adds read and search permission for group and others to the
// directory d, keeping every other bit (sticky, setgid, write).
func openToOthers(d string) error {
	fi, err := os.Stat(d)
	if err != nil {
		return err
	}
	mode := fi.Mode() & (os.ModePerm | os.ModeSticky | os.ModeSetgid | os.ModeSetuid)
	if mode&0o055 == 0o055 {
		return nil
	}
	return os.Chmod(d, mode|0o055)
}

// stopAll stops every sidecar at once, each bounded by its shutdown timeout
// plus a grace period before it is killed.
func stopAll(cs []*child, timeout time.Duration) {
	done := make(chan struct{}, len(cs))
	for _, c := range cs {
		go func() {
			c.stop(timeout + 5*time.Second)
			done <- struct{}{}
		}()
	}
	for range cs {
		<-done
	}
}

// listenFile binds a unix socket and returns it as a file to pass to
// sidecars; up keeps it open across sidecar restarts.
func listenFile(path string) (*os.File, error) {
	l, err := sidecar.BindUnix(path)
	if err != nil {
		return nil, err
	}
	return fileOf(l)
}

// pushFiles binds instance i's push sockets (sidecar.BindPush) and returns
// them as files, with the paths of those that are unix sockets.
func pushFiles(c *config.Config, i int) (files []*os.File, paths []string, err error) {
	ls, err := sidecar.BindPush(c, i)
	if err != nil {
		return nil, nil, err
	}
	for j, l := range ls {
		if l.Addr().Network() == "unix" {
			paths = append(paths, l.Addr().String())
		}
		f, err := fileOf(l)
		if err != nil {
			for _, l := range ls[j+1:] {
				l.Close()
			}
			for _, f := range files {
				f.Close()
			}
			return nil, nil, err
		}
		files = append(files, f)
	}
	return files, paths, nil
}

// fileOf returns l's socket as a file and closes l; a unix socket's path
// stays (up removes it at the end).
func fileOf(l net.Listener) (*os.File, error) {
	if ul, ok := l.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
	}
	f, err := l.(interface{ File() (*os.File, error) }).File()
	l.Close()
	return f, err
}

func writeConfig(path string, c *config.Config) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	fmt.Fprintln(f, "# Written by `wsgate up`: the configuration its sidecars and nginx run with.")
	err = toml.NewEncoder(f).Encode(c)
	return errors.Join(err, f.Close())
}

// waitListening waits until nginx accepts connections on addr and has
// written its pid to pidFile, which it does once it handles signals.
func waitListening(ctx context.Context, addr, pidFile string, ngx *child) error {
	addr = strings.Replace(addr, "*:", "127.0.0.1:", 1)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			// nginx listens before it sets its signal handlers, and
			// writes its pid file after: until then a SIGHUP kills it.
			if b, _ := os.ReadFile(pidFile); strings.TrimSpace(string(b)) == strconv.Itoa(ngx.pid()) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ngx.exited:
			return fmt.Errorf("nginx exited at start: %v", ngx.exitErr)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// banner tells the user where to connect, how to push, and how to see the
// sidecars' state with the config they run (cfgPath).
func banner(w io.Writer, c *config.Config, n int, cfgPath string) {
	host := c.Listen[0]
	pushHost := c.AdvertiseHosts()[0]
	fmt.Fprintf(w, "wsgate is up: %d sidecars behind nginx.\n", n)
	if !c.Stream() { // a stream server has no page to serve
		fmt.Fprintf(w, "  Demo page: http://%s/\n", host)
	}
	fmt.Fprintf(w, `  WebSocket clients: ws://%s%s
  Each client's first message is its push URL, http://ID@%s:%d%s (one push port per sidecar:
  %d..%d). Push to it:
    curl -d 'hello' http://ID@%s:%d%s
  Metrics of sidecar 1: curl http://%s:%d/metrics
  State of every sidecar: wsgate status -config %s
Stop with Ctrl-C.
`, host, c.Location, pushHost, c.PushPort(1), c.Location, c.PushPort(1), c.PushPort(n),
		pushHost, c.PushPort(1), c.Location, pushHost, c.PushPort(1), cfgPath)
}
