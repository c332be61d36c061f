package config

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
)

// WSSocket is the path of instance i's WebSocket socket.
func (c *Config) WSSocket(i int) string {
	return filepath.Join(c.RuntimeDir, fmt.Sprintf("ws-%d.sock", i))
}

// PushSocket is the path of instance i's push socket.
func (c *Config) PushSocket(i int) string {
	return filepath.Join(c.RuntimeDir, fmt.Sprintf("push-%d.sock", i))
}

// PushPort is the TCP port nginx serves instance i's pushes on.
func (c *Config) PushPort(i int) int { return c.Push.PortBase + i - 1 }

// PushListenAddrs are the host:port pairs nginx listens on for instance i's
// pushes, IPv6 in brackets.
func (c *Config) PushListenAddrs(i int) []string {
	addrs := make([]string, len(c.Push.Listen))
	for j, a := range c.Push.Listen {
		addrs[j] = net.JoinHostPort(strings.Trim(a, "[]"), strconv.Itoa(c.PushPort(i)))
	}
	return addrs
}

// AdvertiseHosts are the hosts put into push URLs, IPv6 in brackets:
// push.advertise, or else the push listen addresses, with a wildcard
// address replaced by the machine's own addresses of that family.
func (c *Config) AdvertiseHosts() []string {
	hosts := c.Push.Advertise
	if len(hosts) == 0 {
		for _, a := range c.Push.Listen {
			ip := net.ParseIP(strings.Trim(a, "[]"))
			if ip != nil && ip.IsUnspecified() {
				hosts = append(hosts, ownAddrs(ip.To4() != nil)...)
			} else {
				hosts = append(hosts, a)
			}
		}
	}
	out := make([]string, 0, len(hosts))
	for _, h := range hosts {
		h = strings.Trim(h, "[]")
		if strings.Contains(h, ":") {
			h = "[" + h + "]"
		}
		out = append(out, h)
	}
	return out
}

// ownAddrs lists the machine's unicast addresses of one family.
func ownAddrs(v4 bool) []string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []string
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || n.IP.IsLinkLocalUnicast() || (n.IP.To4() != nil) != v4 {
			continue
		}
		out = append(out, n.IP.String())
	}
	return out
}
