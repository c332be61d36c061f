package sidecar

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
)

// maxProxyHeader is the longest PROXY protocol v1 header, CRLF included.
const maxProxyHeader = 107

// errProxyHeader is a connection that did not start with a valid PROXY
// protocol v1 header.
var errProxyHeader = errors.New("not a PROXY protocol v1 header")

// readProxyHeader reads the PROXY protocol v1 header that nginx's stream
// module sends ahead of each client connection (proxy_protocol on) and
// returns the client's address: "PROXY TCP4 SRC DST SPORT DPORT\r\n" (or
// TCP6), or "PROXY UNKNOWN ...\r\n" for a client nginx has no address of,
// which gives the zero AddrPort. Version 2 (binary) is not accepted: nginx
// does not send it.
func readProxyHeader(br *bufio.Reader) (netip.AddrPort, error) {
	for n := 1; ; {
		// Look at what has arrived, up to the longest header, waiting
		// for more only while there is no line end and room for one.
		if _, err := br.Peek(n); err != nil {
			return netip.AddrPort{}, err
		}
		buf, _ := br.Peek(min(br.Buffered(), maxProxyHeader))
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			client, err := parseProxyHeader(buf[:i+1])
			br.Discard(i + 1)
			return client, err
		}
		if len(buf) == maxProxyHeader {
			return netip.AddrPort{}, fmt.Errorf("%w: longer than %d bytes", errProxyHeader, maxProxyHeader)
		}
		n = len(buf) + 1
	}
}

// parseProxyHeader parses one PROXY protocol v1 line, CRLF included.
func parseProxyHeader(line []byte) (netip.AddrPort, error) {
	var zero netip.AddrPort
	if len(line) > maxProxyHeader {
		return zero, fmt.Errorf("%w: longer than %d bytes", errProxyHeader, maxProxyHeader)
	}
	rest, ok := bytes.CutSuffix(line, []byte("\r\n"))
	if !ok {
		return zero, fmt.Errorf("%w: no CRLF", errProxyHeader)
	}
	f := bytes.Split(rest, []byte(" "))
	if string(f[0]) != "PROXY" || len(f) < 2 {
		return zero, errProxyHeader
	}
	if string(f[1]) == "UNKNOWN" {
		return zero, nil // the rest of the line is to be ignored
	}
	if len(f) != 6 {
		return zero, fmt.Errorf("%w: %d fields", errProxyHeader, len(f))
	}
	var want4 bool
	switch string(f[1]) {
	case "TCP4":
		want4 = true
	case "TCP6":
	default:
		return zero, fmt.Errorf("%w: protocol %q", errProxyHeader, f[1])
	}
	var addrs [2]netip.Addr
	for i, a := range f[2:4] {
		ip, err := netip.ParseAddr(string(a))
		if err != nil || ip.Zone() != "" || ip.Is4() != want4 {
			return zero, fmt.Errorf("%w: %s address %q", errProxyHeader, f[1], a)
		}
		addrs[i] = ip
	}
	var ports [2]uint16
	for i, p := range f[4:6] {
		n, err := strconv.ParseUint(string(p), 10, 16)
		if err != nil || (len(p) > 1 && p[0] == '0') {
			return zero, fmt.Errorf("%w: port %q", errProxyHeader, p)
		}
		ports[i] = uint16(n)
	}
	return netip.AddrPortFrom(addrs[0], ports[0]), nil
}

// setClientAddr makes r tell the client's address as an http location's
// proxy_set_header lines would (X-Real-IP $remote_addr, X-Forwarded-For
// $proxy_add_x_forwarded_for), replacing what the client itself sent as
// X-Real-IP. A zero client (PROXY UNKNOWN) removes X-Real-IP and is
// "unknown" in the logs. X-Forwarded-Proto is removed: the location sets
// it to $scheme, but a sidecar cannot tell whether the stream server had
// TLS, and what the client sent is not to be trusted.
func setClientAddr(r *http.Request, client netip.AddrPort) {
	r.Header.Del("X-Real-IP")
	r.Header.Del("X-Forwarded-Proto")
	if !client.IsValid() {
		r.RemoteAddr = "unknown"
		return
	}
	ip := client.Addr().String()
	r.RemoteAddr = client.String()
	r.Header.Set("X-Real-IP", ip)
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		if v = strings.TrimSpace(v); v != "" {
			hops = append(hops, v)
		}
	}
	r.Header.Set("X-Forwarded-For", strings.Join(append(hops, ip), ", "))
}
