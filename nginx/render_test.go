package nginx

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/config"
)

func TestLocationPitfalls(t *testing.T) {
	for name, c := range testConfigs(t) {
		t.Run(name, func(t *testing.T) {
			loc, err := Location(&c)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(loc, "location = "+c.Location+" {\n") {
				t.Errorf("does not start with the location %s:\n%s", c.Location, loc)
			}
			for _, d := range []string{
				"proxy_pass http://wsgate_ws;",
				"proxy_http_version 1.1;",
				"proxy_set_header Upgrade $http_upgrade;",
				"proxy_set_header Connection $wsgate_connection_upgrade;",
				"proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
				"proxy_buffering off;",
				"proxy_buffer_size 1k;",
				"proxy_next_upstream error timeout;",
				fmt.Sprintf("proxy_next_upstream_tries %d;", c.Instances),
			} {
				if !hasDirective(loc, d) {
					t.Errorf("missing %q", d)
				}
			}
			for _, d := range []string{"proxy_read_timeout", "proxy_send_timeout"} {
				m := regexp.MustCompile(`(?m)^\s*` + d + ` (\d+)s;$`).FindStringSubmatch(loc)
				if m == nil {
					t.Fatalf("no %s in seconds", d)
				}
				if s, _ := strconv.Atoi(m[1]); time.Duration(s)*time.Second < c.WebSocket.IdleTimeout.D()+30*time.Second {
					t.Errorf("%s %ss does not outlast idle_timeout %s", d, m[1], c.WebSocket.IdleTimeout.D())
				}
			}
		})
	}
}

func TestPushServers(t *testing.T) {
	for name, c := range testConfigs(t) {
		t.Run(name, func(t *testing.T) {
			h, err := HTTP(&c)
			if err != nil {
				t.Fatal(err)
			}
			all := blocks(h)
			if m := block(t, all, "map $http_upgrade $wsgate_connection_upgrade"); !hasDirective(m, "default upgrade;") || !hasDirective(m, "''      close;") {
				t.Errorf("bad Upgrade map:\n%s", m)
			}
			ws := block(t, all, "upstream wsgate_ws")
			if !hasDirective(ws, "least_conn;") {
				t.Error("wsgate_ws is not least_conn")
			}
			var servers []string
			for _, b := range all {
				if strings.HasPrefix(b, "server {") {
					servers = append(servers, b)
				}
			}
			if len(servers) != c.Instances {
				t.Fatalf("%d push servers for %d instances", len(servers), c.Instances)
			}
			for i := 1; i <= c.Instances; i++ {
				if !hasDirective(ws, "server unix:"+c.WSSocket(i)+" max_fails=2 fail_timeout=5s;") {
					t.Errorf("wsgate_ws lacks instance %d", i)
				}
				up := block(t, all, fmt.Sprintf("upstream wsgate_push_%d", i))
				if !hasDirective(up, "server unix:"+c.PushSocket(i)+";") {
					t.Errorf("wsgate_push_%d does not point at %s:\n%s", i, c.PushSocket(i), up)
				}
				s := servers[i-1]
				var listens []string
				for _, m := range regexp.MustCompile(`(?m)^    listen (\S+?)(?: ipv6only=on)?;$`).FindAllStringSubmatch(s, -1) {
					listens = append(listens, m[1])
				}
				if got, want := strings.Join(listens, " "), strings.Join(c.PushListenAddrs(i), " "); got != want {
					t.Errorf("push server %d listens on %s, want %s", i, got, want)
				}
				for _, d := range []string{
					fmt.Sprintf("proxy_pass http://wsgate_push_%d;", i),
					fmt.Sprintf("client_max_body_size %d;", c.Push.MaxBody),
					fmt.Sprintf("client_body_buffer_size %d;", c.Push.MaxBody),
					"proxy_http_version 1.1;",
					`proxy_set_header Connection "";`,
					"proxy_next_upstream error non_idempotent;",
					"access_log off;",
					fmt.Sprintf(`return 413 '{"error":"body exceeds push.max_body (%d bytes)"}\n';`, c.Push.MaxBody),
				} {
					if !hasDirective(s, d) {
						t.Errorf("push server %d lacks %q", i, d)
					}
				}
				if got := strings.Contains(s, "location = /nginx_status {\n        stub_status;\n    }"); got != (i == 1) {
					t.Errorf("push server %d has stub_status: %v, want it on instance 1 only", i, got)
				}
			}
		})
	}
}

func TestListen(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8080":      "127.0.0.1:8080",
		"*:8080":              "*:8080",
		":8080":               "*:8080",
		"localhost:8080":      "localhost:8080",
		"[::1]:8080":          "[::1]:8080",
		"[::]:8080":           "[::]:8080 ipv6only=on",
		"0.0.0.0:8080":        "0.0.0.0:8080",
		"[::ffff:1.2.3.4]:80": "[::ffff:1.2.3.4]:80",
	} {
		if got, err := listen(in); err != nil || got != want {
			t.Errorf("listen(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestStandalone(t *testing.T) {
	c := config.Default()
	c.Listen = []string{"[::]:80", "0.0.0.0:80"}
	c.Nginx.WorkerProcesses = 3
	c.Nginx.WorkerConnections = 1000
	s, err := Standalone(&c, Options{StateDir: "/var/lib/wsgate", User: "www-data", Group: "www-data"})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{
		"daemon off;", "master_process on;", "user www-data www-data;",
		"worker_processes 3;", "worker_rlimit_nofile 2024;", "worker_connections 1000;",
		"pid /var/lib/wsgate/nginx.pid;", "error_log /var/lib/wsgate/error.log warn;",
		"client_body_temp_path /var/lib/wsgate/client_body;", "proxy_temp_path /var/lib/wsgate/proxy;",
		"listen [::]:80 ipv6only=on;", "listen 0.0.0.0:80;", "location = /ws {", "location = / {",
		`return 200 "wsgate: connect a WebSocket to /ws\n";`, "upstream wsgate_ws {",
	} {
		if !hasDirective(s, d) {
			t.Errorf("missing %q", d)
		}
	}
	if strings.Contains(s, "include") {
		t.Error("standalone config includes another file")
	}
	c = config.Default()
	s, err = Standalone(&c, Options{StateDir: "/tmp/x"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(s, "user ") || !hasDirective(s, "worker_processes auto;") {
		t.Errorf("want no user directive and worker_processes auto:\n%s", s)
	}
	if strings.Contains(s, "root ") {
		t.Errorf("no web root given, but a root directive:\n%s", s)
	}

	s, err = Standalone(&c, Options{StateDir: "/tmp/x", WebRoot: "/tmp/x/www"})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{
		"location = / {", "try_files /index.html =404;", "location = /wsgate.js {", "location = /demo.js {",
		"root /tmp/x/www;", "types { text/javascript js; }", "location = /ws {",
	} {
		if !hasDirective(s, d) {
			t.Errorf("with a web root: missing %q", d)
		}
	}
	if strings.Contains(s, "return 200") {
		t.Errorf("with a web root: still the text page:\n%s", s)
	}
}

// TestRejects checks that nothing unvalidated or unsafe reaches nginx.conf,
// whether config validation catches it or the renderer's own check.
func TestRejects(t *testing.T) {
	for name, mod := range map[string]func(*config.Config){
		"invalid config":      func(c *config.Config) { c.Instances = 0 },
		"comment in path":     func(c *config.Config) { c.RuntimeDir = "/run/ws#x" },
		"newline in path":     func(c *config.Config) { c.RuntimeDir = "/run/ws\nx" },
		"tab in path":         func(c *config.Config) { c.RuntimeDir = "/run/ws\tx" },
		"semicolon in listen": func(c *config.Config) { c.Listen = []string{"a;b:80"} },
	} {
		c := config.Default()
		mod(&c)
		if s, err := HTTP(&c); err == nil {
			if s, err = Standalone(&c, Options{StateDir: "/tmp/x"}); err == nil {
				t.Errorf("%s: rendered:\n%s", name, s)
			}
		}
	}
	c := config.Default()
	for _, o := range []Options{
		{StateDir: "relative"},
		{StateDir: "/tmp/a b"},
		{StateDir: "/tmp/x", User: "root;daemon on"},
		{StateDir: "/tmp/x", User: "www-data", Group: "a b"},
		{StateDir: "/tmp/x", WebRoot: "www"},
		{StateDir: "/tmp/x", WebRoot: "/tmp/x/w w"},
	} {
		if s, err := Standalone(&c, o); err == nil {
			t.Errorf("%+v: rendered:\n%s", o, s)
		}
	}
}

// hasDirective reports whether conf has line d, indented any amount.
func hasDirective(conf, d string) bool {
	for _, l := range strings.Split(conf, "\n") {
		if strings.TrimSpace(l) == d {
			return true
		}
	}
	return false
}

// blocks returns the top-level blocks of conf in order, each from its
// "head {" line to its closing brace.
func blocks(conf string) []string {
	var out []string
	start := -1
	lines := strings.SplitAfter(conf, "\n")
	for i, l := range lines {
		switch {
		case start < 0 && strings.HasSuffix(l, " {\n") && l[0] != ' ':
			start = i
		case start >= 0 && strings.TrimRight(l, "\n") == "}":
			out = append(out, strings.Join(lines[start:i+1], ""))
			start = -1
		}
	}
	return out
}

// block returns the top-level block of conf that starts with head.
func block(t *testing.T, all []string, head string) string {
	t.Helper()
	for _, b := range all {
		if strings.HasPrefix(b, head+" {\n") {
			return b
		}
	}
	t.Fatalf("no %s block", head)
	return ""
}

// auth.url adds auth_request to the WebSocket location and the internal
// location it calls; without it there is neither.
func TestAuthRequest(t *testing.T) {
	for url, pass := range map[string]string{
		"":                                "",
		"http://127.0.0.1:9000/auth":      "http://127.0.0.1:9000/auth",
		"https://app.example/auth?x=1":    "https://app.example/auth?x=1",
		"unix:/run/app/app.sock:/session": "http://unix:/run/app/app.sock:/session",
		// Without a path, "/": nginx would otherwise send the
		// subrequest's own URI, /_wsgate_auth.
		"http://127.0.0.1:9000":   "http://127.0.0.1:9000/",
		"https://app.example?x=1": "https://app.example/?x=1",
		"unix:/run/app/app.sock":  "http://unix:/run/app/app.sock:/",
	} {
		c := config.Default()
		c.Auth.URL = url
		loc, err := Location(&c)
		if err != nil {
			t.Fatal(err)
		}
		all := blocks(loc)
		ws := block(t, all, "location = /ws")
		if hasDirective(ws, "auth_request /_wsgate_auth;") != (url != "") {
			t.Errorf("%q: auth_request in\n%s", url, ws)
		}
		if url == "" {
			if len(all) != 1 {
				t.Errorf("no auth.url, yet %d blocks:\n%s", len(all), loc)
			}
			continue
		}
		auth := block(t, all, "location = /_wsgate_auth")
		for _, d := range []string{"internal;", "proxy_pass " + pass + ";", "proxy_pass_request_body off;",
			`proxy_set_header Content-Length "";`, "proxy_set_header X-Original-URI $request_uri;"} {
			if !hasDirective(auth, d) {
				t.Errorf("%q: missing %q in\n%s", url, d, auth)
			}
		}
		if strings.Contains(auth, "proxy_set_header Cookie") {
			t.Errorf("%q: the subrequest must pass Cookie unchanged:\n%s", url, auth)
		}
	}
}

// With client_proxy = "stream", clients are a stream server on the listen
// addresses sending PROXY headers; http keeps only the push servers, and
// there is no location to include.
func TestStream(t *testing.T) {
	c := config.Default()
	c.Nginx.ClientProxy = "stream"
	c.Listen = []string{"[::]:8443", "0.0.0.0:8443"}
	s, err := Standalone(&c, Options{StateDir: "/tmp/x", WebRoot: "/tmp/x/www"})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{
		"load_module /usr/lib/nginx/modules/ngx_stream_module.so;", "stream {", "upstream wsgate_ws {", "least_conn;",
		"server unix:/run/wsgate/ws-4.sock max_fails=2 fail_timeout=5s;", "listen [::]:8443 ipv6only=on;", "listen 0.0.0.0:8443;",
		"proxy_pass wsgate_ws;", "proxy_protocol on;", "proxy_next_upstream_tries 4;", "proxy_timeout 420s;",
		"proxy_buffer_size 1k;", "upstream wsgate_push_4 {", "listen 127.0.0.1:48778;",
	} {
		if !hasDirective(s, d) {
			t.Errorf("missing %q", d)
		}
	}
	for _, absent := range []string{"location = /ws {", "location = / {", "map $http_upgrade", "request_pool_size"} {
		if strings.Contains(s, absent) {
			t.Errorf("has %q:\n%s", absent, s)
		}
	}
	if strings.Index(s, "load_module") > strings.Index(s, "events {") || strings.Index(s, "stream {") > strings.Index(s, "http {") {
		t.Errorf("load_module must come first, stream{} outside http{}:\n%s", s)
	}

	c.Nginx.StreamModule = "/nonexistent/ngx_stream_module.so"
	if err := Modules(&c); err == nil || !strings.Contains(err.Error(), "libnginx-mod-stream") {
		t.Errorf("a missing stream module: %v", err)
	}
	c.Nginx.ClientProxy = "http"
	if err := Modules(&c); err != nil {
		t.Errorf("http needs no module: %v", err)
	}
	c.Nginx.ClientProxy = "stream"
	c.Nginx.StreamModule = "" // built into nginx
	if err := Modules(&c); err != nil {
		t.Errorf("stream built in: %v", err)
	}
	if s, err = Standalone(&c, Options{StateDir: "/tmp/x"}); err != nil || strings.Contains(s, "load_module") {
		t.Errorf("stream built in: %v\n%s", err, s)
	}

	snip, err := Snippets(&c)
	if err != nil {
		t.Fatal(err)
	}
	stream, http, ok := strings.Cut(snip, "# --- http{} level")
	if !ok || !strings.Contains(stream, "# --- stream{} level") || !strings.Contains(stream, "upstream wsgate_ws {") ||
		!strings.Contains(stream, "proxy_protocol on;") || !strings.Contains(http, "upstream wsgate_push_1 {") ||
		strings.Contains(snip, "stream {\n") || strings.Contains(snip, "location = /ws {") || strings.Contains(snip, "load_module") {
		t.Errorf("snippets:\n%s", snip)
	}
	if l, err := Location(&c); err != nil || l != "" {
		t.Errorf("location snippet %q, %v; want none", l, err)
	}
}

// With nginx.push_proxy = "stream", each push port is a stream server
// passing connections to its instance's push socket, with the clients'
// location (client_proxy = "http") or stream server (client_proxy =
// "stream") as before, and no http push servers.
func TestStreamPush(t *testing.T) {
	c := config.Default()
	c.Nginx.PushProxy = "stream"
	c.Push.Listen = []string{"127.0.0.1", "::1"}
	s, err := Standalone(&c, Options{StateDir: "/tmp/x", WebRoot: "/tmp/x/www"})
	if err != nil {
		t.Fatal(err)
	}
	stream, http, ok := strings.Cut(s, "\nhttp {")
	if !ok {
		t.Fatalf("no http{}:\n%s", s)
	}
	for _, d := range []string{
		"load_module /usr/lib/nginx/modules/ngx_stream_module.so;", "stream {",
		"listen 127.0.0.1:48775;", "listen [::1]:48775;", "proxy_pass unix:/run/wsgate/push-1.sock;",
		"listen 127.0.0.1:48778;", "listen [::1]:48778;", "proxy_pass unix:/run/wsgate/push-4.sock;",
		"proxy_timeout 10m;",
	} {
		if !hasDirective(stream, d) {
			t.Errorf("stream{} lacks %q:\n%s", d, stream)
		}
	}
	for _, d := range []string{"map $http_upgrade $wsgate_connection_upgrade {", "upstream wsgate_ws {", "location = /ws {", "location = / {"} {
		if !strings.Contains(http, d) {
			t.Errorf("http{} lacks %q:\n%s", d, http)
		}
	}
	for _, absent := range []string{"wsgate_push_", "48775", "nginx_status", "proxy_protocol", "client_max_body_size"} {
		if strings.Contains(http, absent) {
			t.Errorf("http{} has %q:\n%s", absent, http)
		}
	}
	if strings.Contains(stream, "proxy_protocol") || strings.Contains(stream, "upstream wsgate_ws") {
		t.Errorf("client stream server without client_proxy = \"stream\":\n%s", stream)
	}
	c.Nginx.StreamModule = "/nonexistent/ngx_stream_module.so"
	if err := Modules(&c); err == nil || !strings.Contains(err.Error(), "libnginx-mod-stream") {
		t.Errorf("a missing stream module with push_proxy = \"stream\": %v", err)
	}

	// Both through the stream module: nothing for http{}.
	c.Nginx.ClientProxy = "stream"
	snip, err := Snippets(&c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(snip, "# --- stream{} level") || strings.Contains(snip, "http{} level") || strings.Contains(snip, "server{} level") ||
		!strings.Contains(snip, "proxy_protocol on;") || !strings.Contains(snip, "proxy_pass unix:/run/wsgate/push-4.sock;") {
		t.Errorf("snippets:\n%s", snip)
	}
	if h, err := HTTP(&c); err != nil || h != "" {
		t.Errorf("http snippet %q, %v; want none", h, err)
	}
}

// With nginx.push_proxy = "none", nginx serves no push port: no http push
// server, no stream push server, no stub_status, and no stream module
// unless the clients go through it.
func TestDirectPush(t *testing.T) {
	c := config.Default()
	c.Nginx.PushProxy = "none"
	c.Nginx.StreamModule = "/nonexistent/ngx_stream_module.so"
	s, err := Standalone(&c, Options{StateDir: "/tmp/x", WebRoot: "/tmp/x/www"})
	if err != nil {
		t.Fatal(err)
	}
	for _, absent := range []string{"wsgate_push_", "48775", "48778", "push-1.sock", "nginx_status", "stream {", "load_module"} {
		if strings.Contains(s, absent) {
			t.Errorf("standalone config has %q:\n%s", absent, s)
		}
	}
	for _, d := range []string{"upstream wsgate_ws {", "location = /ws {", "location = / {"} {
		if !strings.Contains(s, d) {
			t.Errorf("standalone config lacks %q:\n%s", d, s)
		}
	}
	if err := Modules(&c); err != nil {
		t.Errorf("the stream module asked for with push_proxy = \"none\" alone: %v", err)
	}

	// Clients through the stream module: its client server only.
	c.Nginx.ClientProxy = "stream"
	snip, err := Snippets(&c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(snip, "proxy_protocol on;") || strings.Contains(snip, "push-1.sock") || strings.Contains(snip, "48775") || strings.Contains(snip, "http{} level") {
		t.Errorf("snippets:\n%s", snip)
	}
	if h, err := HTTP(&c); err != nil || h != "" {
		t.Errorf("http snippet %q, %v; want none", h, err)
	}
}

// Every combination of client_proxy and push_proxy renders tidy configs:
// no run of blank lines, no blank line before a closing brace, no brace
// closing on a directive's line.
func TestProxyCombinationsAreTidy(t *testing.T) {
	for _, proxies := range [][2]string{{"http", "http"}, {"stream", "http"}, {"http", "stream"}, {"stream", "stream"}, {"http", "none"}, {"stream", "none"}} {
		c := config.Default()
		c.Nginx.ClientProxy, c.Nginx.PushProxy = proxies[0], proxies[1]
		standalone, err := Standalone(&c, Options{StateDir: "/tmp/x"})
		if err != nil {
			t.Fatal(err)
		}
		snippets, err := Snippets(&c)
		if err != nil {
			t.Fatal(err)
		}
		for name, s := range map[string]string{"standalone": standalone, "snippets": snippets} {
			for _, bad := range []string{"\n\n\n", "\n\n}", "\n\n    }", ";}"} {
				if i := strings.Index(s, bad); i >= 0 {
					t.Errorf("%s, client_proxy %s, push_proxy %s: %q at %d:\n%s", name, proxies[0], proxies[1], bad, i, s)
				}
			}
			if !strings.HasSuffix(s, "}\n") || strings.HasSuffix(s, "\n\n") {
				t.Errorf("%s, client_proxy %s, push_proxy %s: does not end in one newline after a brace", name, proxies[0], proxies[1])
			}
		}
	}
}
