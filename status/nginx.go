package status

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/wsgate/wsgate/config"
)

// Nginx is nginx's stub_status: connection counts over all its workers.
type Nginx struct {
	URL      string `json:"url"`
	Up       bool   `json:"up"`
	Error    string `json:"error,omitempty"`
	Active   int64  `json:"active"` // open client connections, WebSockets and pushes included
	Accepts  int64  `json:"accepts"`
	Handled  int64  `json:"handled"`
	Requests int64  `json:"requests"`
	Reading  int64  `json:"reading"`
	Writing  int64  `json:"writing"`
	Waiting  int64  `json:"waiting"`
}

// NginxURL is where the generated config serves stub_status: instance 1's
// push port on the first push address (loopback for a wildcard). Empty
// unless nginx.push_proxy is "http": with "stream" the push ports are
// stream servers, with "none" the sidecars'.
func NginxURL(c *config.Config) string {
	if c.Nginx.PushProxy != "http" {
		return ""
	}
	return "http://" + net.JoinHostPort(localHost(c), strconv.Itoa(c.PushPort(1))) + "/nginx_status"
}

// noStubStatus is Nginx.Error when the config serves no stub_status.
func noStubStatus(c *config.Config) string {
	return fmt.Sprintf("not served with nginx.push_proxy = %q (stub_status is on an http push server of nginx's)", c.Nginx.PushProxy)
}

func queryNginx(ctx context.Context, c *config.Config, timeout time.Duration) Nginx {
	n := Nginx{URL: NginxURL(c)}
	if n.URL == "" {
		n.Error = noStubStatus(c)
		return n
	}
	if err := n.fetch(ctx, timeout); err != nil {
		n.Error = err.Error()
	} else {
		n.Up = true
	}
	return n
}

func (n *Nginx) fetch(ctx context.Context, timeout time.Duration) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.URL, nil)
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err != nil {
		return unwrapURL(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	return n.parse(string(body))
}

// parse reads stub_status's text:
//
//	Active connections: 2
//	server accepts handled requests
//	 5 5 7
//	Reading: 0 Writing: 1 Waiting: 1
func (n *Nginx) parse(body string) error {
	f := strings.Fields(body)
	if len(f) != 16 || f[0] != "Active" || f[3] != "server" || f[10] != "Reading:" || f[12] != "Writing:" || f[14] != "Waiting:" {
		return fmt.Errorf("not a stub_status page: %.60q", body)
	}
	for i, dst := range map[int]*int64{2: &n.Active, 7: &n.Accepts, 8: &n.Handled, 9: &n.Requests, 11: &n.Reading, 13: &n.Writing, 15: &n.Waiting} {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return fmt.Errorf("stub_status: %q is not a number", f[i])
		}
		*dst = v
	}
	return nil
}

// unwrapURL drops net/http's `Get "url":` prefix: callers name the target.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
