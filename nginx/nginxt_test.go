package nginx

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/wsgate/wsgate/config"
)

// testConfigs are the configurations nginx -t must accept.
func testConfigs(t *testing.T) map[string]config.Config {
	t.Helper()
	parse := func(toml string) config.Config {
		c, err := config.Parse(strings.NewReader(toml), "test.toml")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	longest := "/" + strings.Repeat("r", 84) // the longest runtime_dir config accepts
	return map[string]config.Config{
		"default": config.Default(),
		"ipv6": parse(`instances = 4
listen = ["[::1]:18080"]
[push]
listen = ["::1", "127.0.0.1"]
[auth]
url = "http://[::1]:9000/auth?from=wsgate"
`),
		"custom": parse(`location = "/socket/v1.live"
runtime_dir = "/tmp/wsgate-test/run"
listen = ["*:18081", "localhost:18082"]
[push]
listen = ["0.0.0.0", "::"]
max_body = "64KiB"
[websocket]
ping_interval = "30s"
idle_timeout = "90500ms"
[nginx]
worker_processes = 2
worker_connections = 1024
[auth]
url = "unix:/tmp/wsgate-test/app.sock:/auth"
`),
		"max": parse(`instances = 1024
runtime_dir = "` + longest + `"
[push]
listen = ["0.0.0.0", "::"]
port_base = 20000
`),
	}
}

// nginxBinary skips the test when nginx is not installed.
func nginxBinary(t *testing.T) string {
	t.Helper()
	c := config.Default()
	bin, err := Binary(&c)
	if err != nil {
		t.Skipf("skipping nginx -t: %v", err)
	}
	return bin
}

// nginxTest renders the standalone config for c into a fresh state
// directory and runs nginx -t on it, as the user cred names (nil: this
// process's user).
func nginxTest(t *testing.T, bin string, c config.Config, cred *syscall.Credential) {
	t.Helper()
	dir := t.TempDir()
	o := DefaultOptions(dir)
	if cred != nil {
		// t.TempDir's parent is private to this user.
		var err error
		if dir, err = os.MkdirTemp("", "wsgate-nginx-test-"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
		o = Options{StateDir: dir}
	}
	o.WebRoot = filepath.Join(dir, "www") // as up sets it; TestLive runs without
	conf, err := Standalone(&c, o)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := Command(bin, "-t", "-q", "-p", dir+"/", "-c", file)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nginx -t: %v\n%s\nconfig:\n%s", err, out, conf)
	}
	if len(out) > 0 {
		t.Errorf("nginx -t warned:\n%s", out)
	}
}

func TestNginxAcceptsStandalone(t *testing.T) {
	bin := nginxBinary(t)
	for name, c := range testConfigs(t) {
		t.Run(name, func(t *testing.T) {
			nginxTest(t, bin, c, nil)
		})
	}
}

func TestNginxAcceptsStandaloneUnprivileged(t *testing.T) {
	bin := nginxBinary(t)
	if os.Geteuid() != 0 {
		t.Skip("skipping: running as an unprivileged user needs root to switch to it (TestNginxAcceptsStandalone already ran nginx -t as this user)")
	}
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	for name, c := range testConfigs(t) {
		t.Run(name, func(t *testing.T) {
			nginxTest(t, bin, c, nobody)
		})
	}
}

// nginx -t accepts the stream configurations (clients, pushes or both
// through the stream module), as root and unprivileged, when the stream
// module is installed (.ci/run installs it).
func TestNginxAcceptsStream(t *testing.T) {
	bin := nginxBinary(t)
	for _, proxies := range [][2]string{{"stream", "http"}, {"http", "stream"}, {"stream", "stream"}, {"stream", "none"}} {
		t.Run(proxies[0]+"-"+proxies[1], func(t *testing.T) {
			c := config.Default()
			c.Nginx.ClientProxy, c.Nginx.PushProxy = proxies[0], proxies[1]
			c.Listen = []string{"127.0.0.1:18083", "[::1]:18083"}
			c.Push.Listen = []string{"127.0.0.1", "::1"}
			if _, err := os.Stat(c.Nginx.StreamModule); err != nil {
				t.Skipf("skipping: no stream module (apt-get install libnginx-mod-stream): %v", err)
			}
			nginxTest(t, bin, c, nil)
			if os.Geteuid() == 0 {
				nginxTest(t, bin, c, &syscall.Credential{Uid: 65534, Gid: 65534})
			}
		})
	}
}

// nginx -t accepts the snippets included as a user's own nginx.conf does:
// http{} and the location in a server of the user's, or the stream part
// inside a stream{} that already has a server of the user's, beside which
// a second server (TLS in real life) reaches the same upstream.
func TestNginxAcceptsSnippets(t *testing.T) {
	bin := nginxBinary(t)
	for _, proxies := range [][2]string{{"http", "http"}, {"stream", "http"}, {"http", "stream"}, {"stream", "stream"}, {"http", "none"}, {"stream", "none"}} {
		t.Run(proxies[0]+"-"+proxies[1], func(t *testing.T) {
			c := config.Default()
			c.Nginx.ClientProxy, c.Nginx.PushProxy = proxies[0], proxies[1]
			c.Listen = []string{"127.0.0.1:18084"}
			dir := t.TempDir()
			write := func(name, text string) {
				t.Helper()
				if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			httpPart, err := HTTP(&c)
			if err != nil {
				t.Fatal(err)
			}
			write("wsgate-http.conf", httpPart)
			conf := "pid " + dir + "/nginx.pid;\nerror_log " + dir + "/error.log;\nevents {}\n"
			site := "server {\n    listen 127.0.0.1:18085;\n    location / { return 204; }\n"
			if c.UsesStream() {
				if _, err := os.Stat(c.Nginx.StreamModule); err != nil {
					t.Skipf("skipping: no stream module (apt-get install libnginx-mod-stream): %v", err)
				}
				part, err := Stream(&c)
				if err != nil {
					t.Fatal(err)
				}
				write("wsgate-stream.conf", part)
				conf = "load_module " + c.Nginx.StreamModule + ";\n" + conf + `stream {
    server { listen 127.0.0.1:18086; return "the user's own"; }
    include wsgate-stream.conf;
`
				if c.Stream() {
					conf += "    server { listen 127.0.0.1:18087; proxy_pass wsgate_ws; proxy_protocol on; }\n"
				}
				conf += "}\n"
			}
			if !c.Stream() {
				loc, err := Location(&c)
				if err != nil {
					t.Fatal(err)
				}
				write("wsgate-location.conf", loc)
				site += "    include wsgate-location.conf;\n"
			}
			conf += "http {\n    include wsgate-http.conf;\n" + site + "}\n}\n"
			write("nginx.conf", conf)
			if out, err := Command(bin, "-t", "-q", "-p", dir+"/", "-c", filepath.Join(dir, "nginx.conf")).CombinedOutput(); err != nil {
				t.Fatalf("nginx -t: %v\n%s\nnginx.conf:\n%s", err, out, conf)
			}
		})
	}
}
