package config

import (
	"strings"
	"testing"
	"time"
)

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestParseFull(t *testing.T) {
	c, err := Parse(strings.NewReader(`
instances   = 2
runtime_dir = "/run/wsgate-test"
location    = "/live/ws"
listen      = ["127.0.0.1:8080", "[::1]:8080"]

[push]
listen    = ["127.0.0.1", "::1"]
port_base = 50000
advertise = ["push.example.net"]
max_body  = "64KiB"

[websocket]
ping_interval   = "30s"
idle_timeout    = "45s"
max_message     = 4096
send_queue      = 16
slow_client     = "drop"
allowed_origins = ["https://app.example"]
welcome         = "json"

[upstream]
url             = "http://127.0.0.1:9000/events"
timeout         = "2s"
events          = ["connect"]
forward_headers = ["Cookie"]
concurrency     = 8
on_error        = "allow"
message_queue   = 4

[auth]
url = "unix:/run/app.sock:/auth"
`), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Instances != 2 || c.Location != "/live/ws" || c.Push.PortBase != 50000 || c.Push.MaxBody != 64<<10 ||
		c.WebSocket.PingInterval.D() != 30*time.Second || c.WebSocket.MaxMessage != 4096 ||
		c.WebSocket.SlowClient != "drop" || c.WebSocket.Welcome != "json" || c.Upstream.URL == "" {
		t.Fatalf("parsed %+v", c)
	}
	if u := c.Upstream; u.Timeout.D() != 2*time.Second || !u.Has("connect") || u.Has("message") || u.ForwardHeaders[0] != "Cookie" ||
		u.Concurrency != 8 || u.OnError != "allow" || u.MessageQueue != 4 || c.Auth.URL != "unix:/run/app.sock:/auth" {
		t.Errorf("upstream %+v auth %+v", u, c.Auth)
	}
	if c.WebSocket.SendQueueBytes != Default().WebSocket.SendQueueBytes {
		t.Error("an unset key lost its default")
	}
	if got := c.PushListenAddrs(2); strings.Join(got, " ") != "127.0.0.1:50001 [::1]:50001" {
		t.Errorf("push listen addrs %v", got)
	}
	if got := c.AdvertiseHosts(); len(got) != 1 || got[0] != "push.example.net" {
		t.Errorf("advertise %v", got)
	}
	if c.WSSocket(2) != "/run/wsgate-test/ws-2.sock" || c.PushSocket(1) != "/run/wsgate-test/push-1.sock" {
		t.Errorf("socket paths %s %s", c.WSSocket(2), c.PushSocket(1))
	}
}

func TestParseStream(t *testing.T) {
	c, err := Parse(strings.NewReader("[nginx]\nclient_proxy = \"stream\"\nstream_module = \"\"\n"), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	if !c.Stream() || c.Nginx.StreamModule != "" {
		t.Errorf("nginx %+v", c.Nginx)
	}
	if d := Default(); d.Stream() || d.StreamPush() || d.UsesStream() {
		t.Errorf("the default is stream: %+v", d.Nginx)
	}
	if c.StreamPush() || !c.UsesStream() {
		t.Errorf("client_proxy alone: StreamPush %v, UsesStream %v", c.StreamPush(), c.UsesStream())
	}
	c, err = Parse(strings.NewReader("[nginx]\npush_proxy = \"stream\"\n"), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Stream() || !c.StreamPush() || !c.UsesStream() || c.DirectPush() {
		t.Errorf("push_proxy alone: Stream %v, StreamPush %v, UsesStream %v, DirectPush %v", c.Stream(), c.StreamPush(), c.UsesStream(), c.DirectPush())
	}
	c, err = Parse(strings.NewReader("[nginx]\npush_proxy = \"none\"\n"), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.StreamPush() || c.UsesStream() || !c.DirectPush() {
		t.Errorf("push_proxy = \"none\": StreamPush %v, UsesStream %v, DirectPush %v", c.StreamPush(), c.UsesStream(), c.DirectPush())
	}
	// A wildcard beside an address of the other family is fine, and
	// beside one of its own family when nginx binds them.
	for _, toml := range []string{
		"[push]\nlisten = [\"0.0.0.0\", \"::1\"]\n[nginx]\npush_proxy = \"none\"\n",
		"[push]\nlisten = [\"0.0.0.0\", \"::\"]\n[nginx]\npush_proxy = \"none\"\n",
		"[push]\nlisten = [\"0.0.0.0\", \"127.0.0.1\"]\n[nginx]\npush_proxy = \"stream\"\n",
	} {
		if _, err := Parse(strings.NewReader(toml), "t.toml"); err != nil {
			t.Errorf("%q: %v", toml, err)
		}
	}
}

func TestAdvertiseDefaultsToPushListen(t *testing.T) {
	c := Default()
	c.Push.Listen = []string{"127.0.0.1", "[::1]"}
	if got := strings.Join(c.AdvertiseHosts(), " "); got != "127.0.0.1 [::1]" {
		t.Fatalf("advertise %q", got)
	}
	c.Push.Listen = []string{"0.0.0.0"}
	for _, h := range c.AdvertiseHosts() {
		if h == "0.0.0.0" || strings.Contains(h, ":") {
			t.Fatalf("wildcard advertised as %q", h)
		}
	}
}

// Every invalid value is an error naming its key and line.
func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		toml, want string
	}{
		{"instances = 0", "t.toml:1: instances: 0 is out of range"},
		{"\ninstances = 2000", "t.toml:2: instances: 2000 is out of range"},
		{`runtime_dir = "relative"`, "t.toml:1: runtime_dir:"},
		{`runtime_dir = "/run/my dir"`, "t.toml:1: runtime_dir:"},
		{`runtime_dir = "/` + strings.Repeat("x", 100) + `"`, "too long"},
		{"runtime_dir = \"/run/a#b\"", "t.toml:1: runtime_dir:"},
		{"runtime_dir = \"/run/a\\tb\"", "t.toml:1: runtime_dir:"},
		{`location = "/ws/.."`, "t.toml:1: location:"},
		{`location = "/./ws"`, "t.toml:1: location:"},
		{`location = "/status"`, "t.toml:1: location: \"/status\" is reserved"},
		{`location = "/metrics"`, "t.toml:1: location: \"/metrics\" is reserved"},
		{`location = "/nginx_status"`, "t.toml:1: location: \"/nginx_status\" is reserved"},
		{`location = "/wsgate.js"`, "t.toml:1: location: \"/wsgate.js\" is reserved"},
		{`location = "/demo.js"`, "t.toml:1: location: \"/demo.js\" is reserved"},
		{`location = "/_wsgate_auth"`, "t.toml:1: location: \"/_wsgate_auth\" is reserved"},
		{`listen = ["127.0.0.1:8080", "127.0.0.1:8080"]`, "listed twice"},
		{`listen = ["[::1]:8080", "[0:0::1]:8080"]`, "listed twice"},
		{`listen = ["127.0.0.1:48776"]`, "is one of the push ports 48775..48778"},
		{"[push]\nlisten = [\"::1\", \"[::1]\"]", "t.toml:2: push.listen: \"[::1]\" is listed twice"},
		{"[nginx]\nworker_connections = 600000", "t.toml:2: nginx.worker_connections:"},
		{`location = "ws"`, "t.toml:1: location:"},
		{`location = "/ws/"`, "t.toml:1: location:"},
		{`location = "/w s"`, "t.toml:1: location:"},
		{`location = "/ws;evil"`, "t.toml:1: location:"},
		{`listen = []`, "t.toml:1: listen: needs at least one"},
		{`listen = ["8080"]`, "t.toml:1: listen: \"8080\""},
		{`listen = ["::1:8080"]`, "brackets"},
		{`listen = ["127.0.0.1:0"]`, "out of range"},
		{`shutdown_timeout = "0s"`, "t.toml:1: shutdown_timeout: 0s is out of range"},
		{`shutdown_timeout = "soon"`, `t.toml:1: shutdown_timeout: "soon" is not a duration`},
		{"[push]\nlisten = [\"localhost\"]", `t.toml:2: push.listen: "localhost" is not an IP address`},
		{"[push]\nlisten = []", "t.toml:2: push.listen: needs at least one"},
		{"[push]\nport_base = 65535\n", "t.toml:2: push.port_base:"},
		{"[push]\nport_base = 0", "t.toml:2: push.port_base:"},
		{"[push]\nadvertise = [\"http://x\"]", "t.toml:2: push.advertise:"},
		{"[push]\nmax_body = 0", "t.toml:2: push.max_body:"},
		{"[push]\nmax_body = \"2GiB\"", "t.toml:2: push.max_body:"},
		{"[push]\nmax_batch = 100", "t.toml:2: push.max_batch:"},
		{"[push]\nmax_body = \"lots\"", `t.toml:2: push.max_body: "lots" is not a size`},
		{"[push]\n\nmax_body = -1", `t.toml:3: push.max_body: "-1" is not a size`},
		{"[websocket]\nping_interval = \"0s\"", "t.toml:2: websocket.ping_interval: must be positive"},
		{"[websocket]\nidle_timeout = \"1m\"", "t.toml:2: websocket.idle_timeout: 1m0s must be longer than websocket.ping_interval"},
		{"[websocket]\nwrite_timeout = \"-1s\"", "t.toml:2: websocket.write_timeout: -1s is out of range"},
		{"[websocket]\nmax_message = 0", "t.toml:2: websocket.max_message:"},
		{"[websocket]\nsend_queue = 0", "t.toml:2: websocket.send_queue:"},
		{"[websocket]\nsend_queue = 100000", "t.toml:2: websocket.send_queue:"},
		{"[websocket]\nsend_queue_bytes = 10", "t.toml:2: websocket.send_queue_bytes:"},
		{"[websocket]\nslow_client = \"block\"", `t.toml:2: websocket.slow_client: "block" is not one of "close", "drop"`},
		{"[websocket]\nallowed_origins = [\"example.com\"]", "t.toml:2: websocket.allowed_origins:"},
		{"[websocket]\nallowed_origins = [\"https://a.example/path\"]", "t.toml:2: websocket.allowed_origins:"},
		{"[websocket]\nwelcome = \"xml\"", "t.toml:2: websocket.welcome:"},
		{"[upstream]\nurl = \"ftp://x\"", "t.toml:2: upstream.url:"},
		{"[upstream]\nurl = \"unix:relative.sock:/e\"", "t.toml:2: upstream.url:"},
		{"[upstream]\nurl = \"unix:/run/b.sock:events\"", "t.toml:2: upstream.url:"},
		{"[upstream]\nurl = \"http://u:p@h/e\"", "t.toml:2: upstream.url:"},
		{"[upstream]\ntimeout = \"0s\"", "t.toml:2: upstream.timeout: 0s is out of range"},
		{"[upstream]\ntimeout = \"1h\"", "t.toml:2: upstream.timeout:"},
		{"[upstream]\nevents = [\"connect\", \"close\"]", `t.toml:2: upstream.events: "close" is not one of`},
		{"[upstream]\nforward_headers = [\"X Bad\"]", `t.toml:2: upstream.forward_headers: "X Bad" is not a header name`},
		{"[upstream]\nforward_headers = [\"wsgate-id\"]", "t.toml:2: upstream.forward_headers: \"wsgate-id\": Wsgate- headers"},
		{"[upstream]\nconcurrency = 0", "t.toml:2: upstream.concurrency:"},
		{"[upstream]\non_error = \"ignore\"", `t.toml:2: upstream.on_error: "ignore" is not one of "refuse", "allow"`},
		{"[upstream]\nmessage_queue = 0", "t.toml:2: upstream.message_queue:"},
		{"[auth]\nurl = \"/auth\"", "t.toml:2: auth.url:"},
		{"[auth]\nurl = \"http://127.0.0.1/a;b\"", "t.toml:2: auth.url:"},
		{"[log]\nlevel = \"loud\"", "t.toml:2: log.level:"},
		{"[log]\nformat = \"xml\"", "t.toml:2: log.format:"},
		{"[nginx]\nbinary = \"\"", "t.toml:2: nginx.binary:"},
		{"[nginx]\nworker_processes = -1", "t.toml:2: nginx.worker_processes:"},
		{"[nginx]\nworker_connections = 10", "t.toml:2: nginx.worker_connections:"},
		// A rule between two keys, the file setting only the other: its line.
		{"[websocket]\nping_interval = \"7m\"", "t.toml:2: websocket.idle_timeout: 6m0s must be longer than websocket.ping_interval"},
		{"\n[push]\nmax_body = \"8MiB\"", "t.toml:3: websocket.send_queue_bytes:"},
		{"push = {bogus = 1}", "t.toml:1: push.bogus: unknown key"},
		{"push = {max_body = \"8MiB\"}\n[websocket]\nslow_client = \"drop\"", "t.toml:1: websocket.send_queue_bytes:"},
		{"[nginx]\nworker_shutdown_timeout = \"-1s\"", "t.toml:2: nginx.worker_shutdown_timeout:"},
		{"[nginx]\nworker_shutdown_timeout = \"1500ms\"", "t.toml:2: nginx.worker_shutdown_timeout:"},
		{"[nginx]\nworker_shutdown_timeout = \"25h\"", "t.toml:2: nginx.worker_shutdown_timeout:"},
		{"[nginx]\nclient_proxy = \"tcp\"", `t.toml:2: nginx.client_proxy: "tcp" is not one of "http", "stream"`},
		{"[nginx]\npush_proxy = \"\"", `t.toml:2: nginx.push_proxy: "" is not one of "http", "stream", "none"`},
		{"[push]\nlisten = [\"0.0.0.0\", \"127.0.0.1\", \"::1\"]\n[nginx]\npush_proxy = \"none\"", `t.toml:2: push.listen: "127.0.0.1" is covered by "0.0.0.0", which the sidecars cannot bind beside it with nginx.push_proxy = "none": list "0.0.0.0" alone`},
		{"[auth]\nurl = \"http://127.0.0.1/a\"\n[nginx]\nclient_proxy = \"stream\"", "t.toml:4: nginx.client_proxy: \"stream\" cannot check handshakes with auth.url"},
		{"[nginx]\nstream_module = \"ngx_stream_module.so\"", "t.toml:2: nginx.stream_module:"},
		{"[nginx]\nstream_module = \"/m/a b.so\"", "t.toml:2: nginx.stream_module:"},
		{"[nginx]\nstream_module = \"/m/a\\u0000b.so\"", "t.toml:2: nginx.stream_module:"},
		// Out of range, and so no overflow where they are added up.
		{"instances = 2\n[push]\nport_base = 9223372036854775807", "t.toml:3: push.port_base:"},
		{"[websocket]\nidle_timeout = \"2562047h\"", "t.toml:2: websocket.idle_timeout: 2562047h0m0s is over 24h"},
		{"[websocket]\nwrite_timeout = \"2h\"", "t.toml:2: websocket.write_timeout: 2h0m0s is out of range"},
		{"shutdown_timeout = \"2562047h\"", "t.toml:1: shutdown_timeout: 2562047h0m0s is out of range"},
		{"instance = 3", "t.toml:1: instance: unknown key"},
		{"[push]\nmaxbody = 3", "t.toml:2: push.maxbody: unknown key"},
		{"[pusj]\nmax_body = 3", "t.toml:1: pusj: unknown key"},
		{"websocket.sendqueue = 3", "t.toml:1: websocket.sendqueue: unknown key"},
		{`instances = "four"`, "t.toml:1: instances: incompatible types"},
		{"instances = ", "t.toml:1:"},
	} {
		_, err := Parse(strings.NewReader(tc.toml), "t.toml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q:\n got %v\nwant containing %q", tc.toml, err, tc.want)
		}
	}
}

func TestParseReportsEveryErrorInLineOrder(t *testing.T) {
	_, err := Parse(strings.NewReader("[websocket]\nwelcome = \"x\"\nslow_client = \"y\"\n[push]\nmax_body = 0\n"), "t.toml")
	if err == nil {
		t.Fatal("accepted")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "t.toml:2:") || !strings.HasPrefix(lines[1], "t.toml:3:") || !strings.HasPrefix(lines[2], "t.toml:5:") {
		t.Fatalf("errors:\n%v", err)
	}
}

func TestSplitURL(t *testing.T) {
	for in, want := range map[string][2]string{
		"http://127.0.0.1:9000/events":  {"", "http://127.0.0.1:9000/events"},
		"https://app.example/ws-events": {"", "https://app.example/ws-events"},
		"unix:/run/app.sock:/events":    {"/run/app.sock", "http://localhost/events"},
		"unix:/run/app.sock":            {"/run/app.sock", "http://localhost/"},
		"unix:/run/app.sock:/e?x=1":     {"/run/app.sock", "http://localhost/e?x=1"},
	} {
		sock, target, err := SplitURL(in)
		if err != nil || sock != want[0] || target != want[1] {
			t.Errorf("%q: %q %q %v, want %q", in, sock, target, err, want)
		}
	}
	for _, bad := range []string{"", "/events", "127.0.0.1:9000", "unix:", "unix:app.sock", "unix:/a.sock:events", "ftp://x/"} {
		if _, _, err := SplitURL(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestSize(t *testing.T) {
	for in, want := range map[string]Size{
		"0": 0, "512": 512, "1KiB": 1024, "64KiB": 64 << 10, "1MiB": 1 << 20, "2GiB": 2 << 30,
		"1KB": 1000, "1MB": 1000000, "10B": 10, " 3 MiB ": 3 << 20,
	} {
		var s Size
		if err := s.UnmarshalText([]byte(in)); err != nil || s != want {
			t.Errorf("%q: %d, %v; want %d", in, s, err, want)
		}
	}
	for _, bad := range []string{"", "x", "1.5MiB", "-1", "1TiB", "MiB", "99999999999999999999"} {
		var s Size
		if err := s.UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("%q accepted as %d", bad, s)
		}
	}
	for s, want := range map[Size]string{1 << 20: "1MiB", 1536: "1536", 3 << 10: "3KiB", 0: "0"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", s, s.String(), want)
		}
	}
}

// FuzzParse: no input makes Parse panic, and whatever it accepts is valid.
func FuzzParse(f *testing.F) {
	f.Add("instances = 2\n[push]\nmax_body = \"1MiB\"\n")
	f.Add("[websocket]\nping_interval = \"1s\"\nidle_timeout = \"2s\"\n")
	f.Add("listen = [\"[::1]:80\"]\n[push]\nlisten = [\"::1\"]\n")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse(strings.NewReader(s), "f.toml")
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted an invalid config: %v", err)
		}
	})
}
