package nginx

import (
	"embed"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/wsgate/wsgate/config"
)

//go:embed templates/*.conf
var templateFS embed.FS

var templates = template.Must(template.New("").Funcs(template.FuncMap{
	"tok":    token,
	"indent": indent,
}).ParseFS(templateFS, "templates/*.conf"))

// timeoutMargin is how much longer nginx waits on a quiet WebSocket than
// websocket.idle_timeout, after which the sidecar closes it itself.
const timeoutMargin = 60 * time.Second

// view is what the templates see.
type view struct {
	Location    string
	IdleTimeout time.Duration
	Timeout     int      // proxy_read_timeout and proxy_send_timeout, seconds
	Tries       int      // proxy_next_upstream_tries: every sidecar once
	MaxBody     int64    // push.max_body, bytes
	MaxBatch    int64    // push.max_batch, bytes
	ZoneKiB     int      // size of the wsgate_ws zone
	WS          []string // ws-<i>.sock paths
	Auth        string   // proxy_pass target of the auth_request subrequest; "" without auth.url
	Push        []push
	Stream      bool     // nginx.client_proxy = "stream"
	HTTPPush    bool     // nginx.push_proxy = "http"
	StreamPush  bool     // nginx.push_proxy = "stream"
	Listen      []string // client listen directive arguments (standalone, stream)
}

// push is one instance's push server.
type push struct {
	ID     int
	Socket string
	Listen []string // listen directive arguments
}

func newView(c *config.Config) (*view, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	idle := c.WebSocket.IdleTimeout.D()
	var err error
	v := &view{
		Location:    c.Location,
		IdleTimeout: idle,
		Timeout:     int((idle + timeoutMargin + time.Second - 1) / time.Second),
		Tries:       c.Instances,
		MaxBody:     int64(c.Push.MaxBody),
		MaxBatch:    int64(c.Push.MaxBatch),
		// Measured: a peer takes under 1KiB of the zone, even with the
		// longest runtime_dir.
		ZoneKiB:    64 + c.Instances,
		Stream:     c.Stream(),
		HTTPPush:   c.Nginx.PushProxy == "http",
		StreamPush: c.StreamPush(),
	}
	if v.Listen, err = listenAll(c.Listen); err != nil {
		return nil, err
	}
	if c.Auth.URL != "" {
		v.Auth = authPass(c.Auth.URL)
	}
	for i := 1; i <= c.Instances; i++ {
		p := push{ID: i, Socket: c.PushSocket(i)}
		for _, a := range c.PushListenAddrs(i) {
			l, err := listen(a)
			if err != nil {
				return nil, fmt.Errorf("push.listen: %w", err)
			}
			p.Listen = append(p.Listen, l)
		}
		v.WS = append(v.WS, c.WSSocket(i))
		v.Push = append(v.Push, p)
	}
	return v, nil
}

// authPass is auth.url as proxy_pass takes it, always with a URI ("/" when
// it has none): without one, nginx would send the auth subrequest's own
// URI, the internal location's name. A unix socket is nginx's own form,
// http://unix:/path.sock:/uri.
func authPass(s string) string {
	if rest, ok := strings.CutPrefix(s, "unix:"); ok {
		if !strings.Contains(rest, ":") {
			rest += ":/"
		}
		return "http://unix:" + rest
	}
	if u, err := url.Parse(s); err == nil && u.Path == "" {
		u.Path = "/"
		return u.String()
	}
	return s
}

// HTTP renders the http{}-level snippet: the Upgrade map and the wsgate_ws
// upstream over every instance's ws socket (not with client_proxy =
// "stream"), and for each instance a wsgate_push_<i> upstream and the
// server{} that serves its push port (only with push_proxy = "http").
// Empty when client_proxy is "stream" and push_proxy is not "http".
func HTTP(c *config.Config) (string, error) {
	return render("http.conf", c)
}

// Location renders the location{} block that proxies WebSockets at
// c.Location to the sidecars, and with auth.url the internal location its
// auth_request calls; it belongs in the user's own server{}. Empty with
// client_proxy = "stream", whose clients Stream serves.
func Location(c *config.Config) (string, error) {
	if c.Stream() {
		return "", c.Validate()
	}
	return render("location.conf", c)
}

// Stream renders the stream{}-level snippet: with client_proxy = "stream",
// the wsgate_ws upstream and the server on the listen addresses that
// carries client WebSockets; with push_proxy = "stream", the server of
// each push port. Empty when neither is "stream" (push_proxy = "none":
// the sidecars serve their push ports themselves).
func Stream(c *config.Config) (string, error) {
	if !c.UsesStream() {
		return "", c.Validate()
	}
	return render("stream.conf", c)
}

// snippets are the rendered parts of a configuration.
type snippets struct {
	HTTP, Loc, Stream string
}

// parts renders each snippet of c; those c's client_proxy and push_proxy
// have no use for are empty.
func parts(c *config.Config) (snippets, error) {
	var p snippets
	var err error
	if p.HTTP, err = HTTP(c); err != nil {
		return p, err
	}
	if p.Loc, err = Location(c); err != nil {
		return p, err
	}
	p.Stream, err = Stream(c)
	return p, err
}

// Snippets renders what `wsgate nginx` prints: Stream, HTTP and Location,
// those that are not empty, each introduced by a comment telling where to
// include it.
func Snippets(c *config.Config) (string, error) {
	p, err := parts(c)
	if err != nil {
		return "", err
	}
	return execute("snippets.conf", p)
}

// render executes the template name for c; what it renders, if anything,
// ends in exactly one newline.
func render(name string, c *config.Config) (string, error) {
	v, err := newView(c)
	if err != nil {
		return "", err
	}
	s, err := execute(name, v)
	if s = strings.TrimRight(s, "\n"); s != "" {
		s += "\n"
	}
	return s, err
}

func execute(name string, data any) (string, error) {
	var b strings.Builder
	if err := templates.ExecuteTemplate(&b, name, data); err != nil {
		var ue unsafeError
		if errors.As(err, &ue) {
			return "", ue
		}
		return "", fmt.Errorf("nginx: %w", err)
	}
	return b.String(), nil
}

// safeToken is what a value may look like where it becomes one unquoted
// nginx token: no whitespace, quotes, braces, semicolon, comment, escape or
// variable sign.
var safeToken = regexp.MustCompile(`^[^\s"'{};#\\$]+$`)

// token returns s unchanged when it is safe as one nginx token; rendering
// fails otherwise. It guards every string that comes from outside.
func token(s string) (string, error) {
	if !safeToken.MatchString(s) {
		return "", unsafeError(s)
	}
	return s, nil
}

// unsafeError is a value that token refused.
type unsafeError string

func (e unsafeError) Error() string {
	return fmt.Sprintf(`nginx: %q cannot be written into nginx.conf (it may not contain whitespace, quotes, braces, ";", "#", "\" or "$")`, string(e))
}

// listen turns host:port into the arguments of a listen directive: IPv6 in
// brackets, "*" for an empty host, and ipv6only=on on the IPv6 wildcard so
// that it can sit beside the IPv4 wildcard on the same port.
func listen(hostport string) (string, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", err
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", fmt.Errorf("%q: bad port", hostport)
	}
	if host == "" {
		host = "*"
	}
	opt := ""
	if strings.Contains(host, ":") {
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			opt = " ipv6only=on"
		}
		host = "[" + host + "]"
	}
	if _, err := token(host); err != nil {
		return "", err
	}
	return host + ":" + port + opt, nil
}

// listenAll is listen for each of the client listen addresses.
func listenAll(addrs []string) ([]string, error) {
	var ls []string
	for _, a := range addrs {
		l, err := listen(a)
		if err != nil {
			return nil, fmt.Errorf("listen: %w", err)
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// indent prefixes every non-empty line of s with n spaces.
func indent(n int, s string) string {
	pad := strings.Repeat(" ", n)
	lines := strings.SplitAfter(s, "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) != "" {
			lines[i] = pad + l
		}
	}
	return strings.Join(lines, "")
}
