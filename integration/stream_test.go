package integration

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/internal/testapp"
	"github.com/wsgate/wsgate/internal/wstest"
)

// With nginx.client_proxy = "stream", over IPv4 and IPv6: clients reach
// every sidecar through nginx's stream module, pushes reach them through
// the push ports (http servers, or stream servers with nginx.push_proxy =
// "stream"), the backend learns each client's address from the PROXY
// header (a client's own X-Real-IP is not believed), and SIGTERM closes
// the clients with 1012.
func TestStreamThroughNginx(t *testing.T) {
	needStreamModule(t)
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			forPushProxies(t, func(t *testing.T, pushProxy string) {
				if l, err := net.Listen("tcp", net.JoinHostPort(host, "0")); err != nil {
					t.Skipf("no %s on this machine", host)
				} else {
					l.Close()
				}
				a := testapp.Start(t, false, func(w http.ResponseWriter, r *http.Request, e testapp.Event) {
					w.WriteHeader(http.StatusNoContent)
				})
				g := startUp(t, 2, host, fmt.Sprintf(`[upstream]
url = %q
events = ["connect"]
forward_headers = ["X-Forwarded-For", "X-Real-IP"]
%sclient_proxy = "stream"
`, a.URL, pushProxy))

				conf, err := os.ReadFile(filepath.Join(g.dir, "state", "nginx.conf"))
				if err != nil || !strings.Contains(string(conf), "proxy_protocol on;") || strings.Contains(g.out.String(), "Demo page") {
					t.Fatalf("not the stream configuration (%v):\n%s", err, conf)
				}
				if strings.Contains(string(conf), "proxy_pass unix:") != strings.Contains(pushProxy, `"stream"`) {
					t.Fatalf("push servers are not as %q asks:\n%s", pushProxy, conf)
				}

				const clients = 20
				conns := make([]*websocket.Conn, clients)
				urls := make([]string, clients)
				ports := map[string]int{}
				for i := range conns {
					d := websocket.Dialer{}
					c, _, err := d.Dial(g.clientWS, http.Header{"X-Real-Ip": {"6.6.6.6"}, "X-Forwarded-For": {"10.9.8.7"}})
					if err != nil {
						t.Fatalf("dial %s: %v", g.clientWS, err)
					}
					t.Cleanup(func() { c.Close() })
					_, welcome := wstest.ReadMessage(t, c)
					conns[i], urls[i] = c, firstURL(string(welcome))
					u, err := url.Parse(urls[i])
					if err != nil || u.User.Username() == "" {
						t.Fatalf("welcome %q", welcome)
					}
					ports[u.Port()]++
					e := a.Next(t)
					if e.Header.Get("X-Real-IP") != host || e.Header.Get("X-Forwarded-For") != "10.9.8.7, "+host {
						t.Fatalf("connect: X-Real-IP %q, X-Forwarded-For %q; want %s", e.Header.Get("X-Real-IP"), e.Header.Get("X-Forwarded-For"), host)
					}
				}
				if len(ports) != 2 {
					t.Fatalf("clients on %d push ports, want both: %v", len(ports), ports)
				}
				hc := httpClient("")
				for i := range conns {
					if s, body := post(t, hc, urls[i], "", []byte(fmt.Sprint("to ", i))); s != 204 {
						t.Fatalf("push %d: %d %s", i, s, body)
					}
				}
				for i, c := range conns {
					if _, msg := wstest.ReadMessage(t, c); string(msg) != fmt.Sprint("to ", i) {
						t.Fatalf("client %d got %q", i, msg)
					}
				}

				g.stopExpecting1012(t, conns)
			})
		})
	}
}
