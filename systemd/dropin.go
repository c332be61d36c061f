package systemd

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/wsgate/wsgate/config"
)

// PushPortDropIn is the file name of the drop-ins that WriteDropIns puts in
// wsgate-push@<i>.socket.d directories.
const PushPortDropIn = "wsgate-push-port.conf"

// PushDropIns returns, with nginx.push_proxy = "none", the drop-in of each
// instance that makes its wsgate-push@<i>.socket listen on its push port
// at every push.listen address instead of on the unix socket, keyed by its
// path relative to a unit directory; none otherwise.
func PushDropIns(c *config.Config) map[string]string {
	if !c.DirectPush() {
		return nil
	}
	out := map[string]string{}
	for i := 1; i <= c.Instances; i++ {
		var b strings.Builder
		fmt.Fprintf(&b, "# Written by `wsgate systemd` (make install) from the wsgate TOML: with\n"+
			"# nginx.push_proxy = \"none\" systemd holds instance %d's push port itself.\n", i)
		b.WriteString("[Socket]\nListenStream=\n")
		freeBind := false
		for _, a := range c.PushListenAddrs(i) {
			fmt.Fprintf(&b, "ListenStream=%s\n", a)
			host, _, _ := net.SplitHostPort(a)
			ip := net.ParseIP(host)
			freeBind = freeBind || !ip.IsLoopback() && !ip.IsUnspecified()
		}
		// Each address in its own family, as the sidecar binds it
		// without systemd: "::" beside "0.0.0.0".
		b.WriteString("BindIPv6Only=ipv6-only\n")
		if freeBind { // the sockets bind early in boot, maybe before the address is up
			b.WriteString("FreeBind=yes\n")
		}
		out[filepath.Join(fmt.Sprintf("wsgate-push@%d.socket.d", i), PushPortDropIn)] = b.String()
	}
	return out
}

// WriteDropIns makes the wsgate drop-ins in the unit directory dir what c
// needs: it writes PushDropIns and removes every other PushPortDropIn in a
// wsgate-push@*.socket.d directory (left from another push_proxy or more
// instances), and the directory once empty. It returns the paths written
// and removed.
func WriteDropIns(dir string, c *config.Config) (wrote, removed []string, err error) {
	want := PushDropIns(c)
	stale, err := filepath.Glob(filepath.Join(dir, "wsgate-push@*.socket.d", PushPortDropIn))
	if err != nil {
		return nil, nil, err
	}
	for _, p := range stale {
		rel, _ := filepath.Rel(dir, p)
		if _, ok := want[rel]; ok {
			continue
		}
		if err := os.Remove(p); err != nil {
			return wrote, removed, err
		}
		removed = append(removed, p)
		if left, err := os.ReadDir(filepath.Dir(p)); err == nil && len(left) == 0 {
			os.Remove(filepath.Dir(p)) // a drop-in of the admin's stays, and so does its directory
		}
	}
	rels := make([]string, 0, len(want))
	for rel := range want {
		rels = append(rels, rel)
	}
	sort.Strings(rels)
	for _, rel := range rels {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return wrote, removed, err
		}
		if err := writeFile(p, want[rel]); err != nil {
			return wrote, removed, err
		}
		wrote = append(wrote, p)
	}
	return wrote, removed, nil
}

// writeFile replaces path with text, mode 0644, through a temporary file.
func writeFile(path, text string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o644); err != nil { // whatever the umask
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}
